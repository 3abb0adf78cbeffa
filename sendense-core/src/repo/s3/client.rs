//! The S3 calls an S3 repository makes, on `aws-sdk-s3` with rustls (ring), path-style or
//! virtual-hosted addressing, and integrity checked on every write:
//!
//! - every body is signed with its SHA-256 (SigV4 `x-amz-content-sha256`, computed once: the
//!   same digest goes as `x-amz-checksum-sha256`), and a whole-object write also carries its
//!   `Content-MD5` — Ceph RGW checks the signed hash and the MD5 and ignores the checksum
//!   header, AWS checks all (and requires the MD5 or the checksum for Object Lock buckets).
//!   Parts go without the MD5: their SHA-256 is checked either way, and hashing every byte a
//!   third time is what bounded the upload rate. The SDK's own streaming checksums
//!   (`aws-chunked` with a trailer) are off: RGW 16.2 refuses them.
//! - uploads are multipart with parts read into memory one at a time per worker (at most
//!   [`UPLOAD_WORKERS`] parts of [`part_size`] in flight), so memory is bounded whatever the
//!   file's size; an upload that fails is aborted, and one a killed process left is found by
//!   [`S3Client::multipart_uploads`].
//!
//! Everything read from a bucket is untrusted: keys are checked against the repository's
//! prefix by the callers, lengths against what was asked.

use super::{S3Keys, S3Location};
use crate::error::{Error, ErrorKind, Result};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode,
};
use base64::Engine;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Parts uploaded at once per file.
pub const UPLOAD_WORKERS: usize = 4;

/// The most part buffers of one upload hold at once.
const UPLOAD_BUFFER: u64 = 256 << 20;

/// The smallest part (S3 takes 5 MiB; larger parts mean fewer requests).
const MIN_PART: u64 = 16 << 20;

/// S3 allows at most this many parts.
const MAX_PARTS: u64 = 10_000;

/// How long one attempt of a call may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// Object Lock retention mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// No one can delete a version or shorten its retention before its date, not even root.
    Compliance,
    /// Users allowed to bypass governance may.
    Governance,
}

impl LockMode {
    /// `compliance` or `governance`.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
        }
    }

    /// Parses `compliance` or `governance`.
    pub fn parse(s: &str) -> Result<LockMode> {
        match s.to_ascii_lowercase().as_str() {
            "compliance" => Ok(LockMode::Compliance),
            "governance" => Ok(LockMode::Governance),
            _ => Err(Error::invalid(format!(
                "{s:?} is no Object Lock mode (compliance or governance)"
            ))),
        }
    }

    fn object(self) -> ObjectLockMode {
        match self {
            LockMode::Compliance => ObjectLockMode::Compliance,
            LockMode::Governance => ObjectLockMode::Governance,
        }
    }

    fn retention(self) -> ObjectLockRetentionMode {
        match self {
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
            LockMode::Governance => ObjectLockRetentionMode::Governance,
        }
    }
}

/// A lock to write an object with: its mode and the instant (Unix seconds) it holds until.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    /// The mode.
    pub mode: LockMode,
    /// Retained until (Unix seconds).
    pub until: i64,
}

/// How to reach an S3 repository.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Where.
    pub location: S3Location,
    /// The region (`us-east-1` when the service has none).
    pub region: String,
    /// Path-style addressing (`https://host/bucket/key`), as RGW and MinIO often need.
    pub path_style: bool,
    /// Extra CA certificates (PEM) to trust, for a service with a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size.
    pub size: u64,
    /// Its ETag, without quotes.
    pub etag: String,
}

/// A version as `ListObjectVersions` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Its key.
    pub key: String,
    /// Its version id (`null` on an unversioned bucket).
    pub version: String,
    /// Whether it is a delete marker.
    pub delete_marker: bool,
    /// Whether it is the latest.
    pub latest: bool,
    /// Its size (0 for a delete marker).
    pub size: u64,
}

/// A multipart upload not completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The key it would write.
    pub key: String,
    /// Its id.
    pub upload_id: String,
    /// When it was started (Unix seconds), when the service says.
    pub started: Option<i64>,
}

/// What a finished write left: the object's version (when the bucket keeps versions) and ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Its version id.
    pub version: Option<String>,
    /// Its size.
    pub size: u64,
}

/// A client of one S3 repository.
#[derive(Debug, Clone)]
pub struct S3Client {
    client: aws_sdk_s3::Client,
    location: S3Location,
}

/// The part size for a file of `size` bytes: at least [`MIN_PART`], whole MiB, and few enough
/// parts for S3's limit.
pub fn part_size(size: u64) -> u64 {
    let need = size.div_ceil(MAX_PARTS);
    need.div_ceil(1 << 20).max(MIN_PART >> 20) << 20
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What a body is sent with: its `Content-MD5`, its `x-amz-checksum-sha256`, and the same
/// SHA-256 in hex, which the request is signed with (the SDK does not hash the body again).
#[derive(Debug, Clone)]
struct BodyDigests {
    md5: String,
    sha: String,
    sha_hex: String,
}

/// The digests of `data`.
fn digests(data: &[u8]) -> BodyDigests {
    use md5::Digest;
    BodyDigests {
        md5: b64(&md5::Md5::digest(data)),
        ..sha256(data)
    }
}

/// The SHA-256 digests of `data` (no MD5: a part goes with its SHA-256 as checksum and as the
/// signed payload hash, which the server checks either way).
fn sha256(data: &[u8]) -> BodyDigests {
    let sha = ring::digest::digest(&ring::digest::SHA256, data);
    BodyDigests {
        md5: String::new(),
        sha: b64(sha.as_ref()),
        sha_hex: sha.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Signs a request's body with a SHA-256 computed already (see [`BodyDigests`]).
#[derive(Debug)]
struct SignedWith(String);

impl SignedWith {
    fn sha256(hex: &str) -> SignedWith {
        SignedWith(hex.to_string())
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for SignedWith {
    fn name(&self) -> &'static str {
        "SignedWith"
    }

    fn modify_before_signing(
        &self,
        _context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> std::result::Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        cfg.interceptor_state()
            .store_put(aws_runtime::auth::PayloadSigningOverride::Precomputed(
                self.0.clone(),
            ));
        Ok(())
    }
}

/// The markers of a listing's next page (a key or token, and an id).
type Marker = (Option<String>, Option<String>);

/// Every item of a paged listing: `page(marker)` gives one page's items and, when more
/// follow, the next page's marker. A page without a marker to go on from ends it.
async fn pages<T, F, Fut>(mut page: F) -> Result<Vec<T>>
where
    F: FnMut(Marker) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<Marker>)>>,
{
    let mut out = Vec::new();
    let mut marker: Marker = (None, None);
    loop {
        let (items, next) = page(marker.clone()).await?;
        out.extend(items);
        match next {
            // A service that names the same page again would be asked forever.
            Some(m) if m.0.is_some() && m != marker => marker = m,
            Some(m) if m.0.is_some() => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("a listing named the page {:?} again", m.0),
                ))
            }
            _ => return Ok(out),
        }
    }
}

fn date(secs: i64) -> DateTime {
    DateTime::from_secs(secs)
}

impl S3Client {
    /// A client for `opts` with `keys`; nothing is sent yet.
    pub fn new(opts: &S3Options, keys: &S3Keys) -> Result<S3Client> {
        use aws_smithy_http_client::tls;
        let mut trust = tls::TrustStore::default();
        if let Some(ca) = &opts.ca_file {
            let pem = std::fs::read(ca).map_err(|e| Error::io("reading", ca, e))?;
            trust.add_pem_certificate(pem);
        }
        let context = tls::TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|e| Error::invalid(format!("the TLS settings: {e}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .tls_context(context)
            .build_https();
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(20))
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(opts.region.clone()))
            .endpoint_url(&opts.location.endpoint)
            .force_path_style(opts.path_style)
            .credentials_provider(Credentials::new(
                &keys.access_key,
                &keys.secret_key,
                keys.session_token.clone(),
                None,
                "sendense",
            ))
            .http_client(http)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(4))
            // Checksums are set explicitly on each call (see the module docs).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Ok(S3Client {
            client: aws_sdk_s3::Client::from_conf(config),
            location: opts.location.clone(),
        })
    }

    /// The repository's place.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    fn bucket(&self) -> &str {
        &self.location.bucket
    }

    /// Writes `data` as object `key` (a full key), with `lock` when given; `only_new` sends
    /// `If-None-Match: *` (honoured by unversioned buckets only).
    pub async fn put(
        &self,
        key: &str,
        data: Vec<u8>,
        lock: Option<Lock>,
        only_new: bool,
    ) -> Result<Written> {
        let d = digests(&data);
        let size = data.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .content_md5(d.md5)
            .checksum_sha256(d.sha)
            .body(ByteStream::from(data));
        if let Some(l) = lock {
            req = req
                .object_lock_mode(l.mode.object())
                .object_lock_retain_until_date(date(l.until));
        }
        if only_new {
            req = req.if_none_match("*");
        }
        let out = req
            .customize()
            .interceptor(SignedWith::sha256(&d.sha_hex))
            .send()
            .await
            .map_err(|e| self.error("writing", key, e))?;
        Ok(Written {
            version: out.version_id().map(str::to_string),
            size,
        })
    }

    /// Uploads the file `path` as object `key` in parts (see the module docs), with `lock` when
    /// given. A failed upload is aborted before the error returns.
    pub async fn upload_file(&self, path: &Path, key: &str, lock: Option<Lock>) -> Result<Written> {
        self.upload_file_until(path, key, lock, &CancellationToken::new())
            .await
    }

    /// [`S3Client::upload_file`] that `stop` ends between parts (the upload aborted, an error
    /// of kind `Cancelled`).
    pub async fn upload_file_until(
        &self,
        path: &Path,
        key: &str,
        lock: Option<Lock>,
        stop: &CancellationToken,
    ) -> Result<Written> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("reading", path, e))?;
        let size = file
            .metadata()
            .map_err(|e| Error::io("reading", path, e))?
            .len();
        if size <= MIN_PART {
            let data = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
            if data.len() as u64 != size {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("{} changed while it was read", path.display()),
                ));
            }
            return self.put(key, data, lock, false).await;
        }
        let upload_id = self.begin_upload(key, lock).await?;
        match self
            .upload_parts(Arc::new(file), path, key, &upload_id, size, stop)
            .await
        {
            Ok(parts) => {
                let done = self
                    .client
                    .complete_multipart_upload()
                    .bucket(self.bucket())
                    .key(key)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send()
                    .await;
                match done {
                    Ok(out) => {
                        let version = out.version_id().map(str::to_string);
                        if let Some(l) = lock {
                            // Ceph RGW 16.2 ignores the lock of a multipart upload: set it on
                            // the version written (AWS has it already; setting it again is
                            // allowed, it does not shorten it). An object that could not be
                            // locked goes again: nothing unlocked is left as if it were.
                            if let Err(e) = self.set_retention(key, version.as_deref(), l).await {
                                let _ = self.delete(key, version.as_deref()).await;
                                return Err(e);
                            }
                        }
                        Ok(Written { version, size })
                    }
                    Err(e) => {
                        let e = self.error("completing the upload of", key, e);
                        let _ = self.abort_upload(key, &upload_id).await;
                        Err(e)
                    }
                }
            }
            Err(e) => {
                let _ = self.abort_upload(key, &upload_id).await;
                Err(e)
            }
        }
    }

    /// Starts a multipart upload of `key` (parts with SHA-256 checksums), with `lock` when
    /// given: its upload id. Until it is completed or aborted nothing of it is visible, and
    /// [`S3Client::multipart_uploads`] lists it.
    pub async fn begin_upload(&self, key: &str, lock: Option<Lock>) -> Result<String> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        if let Some(l) = lock {
            req = req
                .object_lock_mode(l.mode.object())
                .object_lock_retain_until_date(date(l.until));
        }
        let created = req
            .send()
            .await
            .map_err(|e| self.error("starting the upload of", key, e))?;
        Ok(created
            .upload_id()
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "the service gave no upload id"))?
            .to_string())
    }

    /// The parts of `file`, [`UPLOAD_WORKERS`] at a time, in order.
    async fn upload_parts(
        &self,
        file: Arc<std::fs::File>,
        path: &Path,
        key: &str,
        upload_id: &str,
        size: u64,
        stop: &CancellationToken,
    ) -> Result<Vec<CompletedPart>> {
        let part = part_size(size);
        let count = size.div_ceil(part);
        // Parts in memory at once: at most UPLOAD_BUFFER in all (parts grow past 16 MiB only
        // for files over 156 GiB, S3 allowing 10,000 parts).
        let workers = (UPLOAD_BUFFER / part).clamp(1, UPLOAD_WORKERS as u64) as usize;
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.min(count as usize) {
            let (me, file, next, stop) = (self.clone(), file.clone(), next.clone(), stop.clone());
            let (path, key, upload_id) =
                (path.to_path_buf(), key.to_string(), upload_id.to_string());
            tasks.spawn(async move {
                let mut done = Vec::new();
                loop {
                    if stop.is_cancelled() {
                        return Err(Error::new(ErrorKind::Cancelled, "upload stopped"));
                    }
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return Ok::<_, Error>(done);
                    }
                    let offset = i * part;
                    let len = part.min(size - offset) as usize;
                    let f = file.clone();
                    // Read and hashed off the runtime's threads.
                    let (data, d) = tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; len];
                        f.read_exact_at(&mut buf, offset).map(|()| {
                            let d = sha256(&buf);
                            (buf, d)
                        })
                    })
                    .await
                    .map_err(|e| Error::internal(format!("a read task: {e}")))?
                    .map_err(|e| Error::io("reading", &path, e))?;
                    let number = i as i32 + 1;
                    let out = me
                        .client
                        .upload_part()
                        .bucket(me.bucket())
                        .key(&key)
                        .upload_id(&upload_id)
                        .part_number(number)
                        .checksum_sha256(&d.sha)
                        .body(ByteStream::from(data))
                        .customize()
                        .interceptor(SignedWith::sha256(&d.sha_hex))
                        .send()
                        .await
                        .map_err(|e| me.error(&format!("uploading part {number} of"), &key, e))?;
                    crate::crash::point("s3.part-uploaded");
                    done.push(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .checksum_sha256(d.sha)
                            .build(),
                    );
                }
            });
        }
        let mut parts = Vec::with_capacity(count as usize);
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(done)) => parts.extend(done),
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                    tasks.abort_all();
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    first_error.get_or_insert(Error::internal(format!("an upload task: {e}")));
                    tasks.abort_all();
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    /// Aborts multipart upload `upload_id` of `key`.
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(self.bucket())
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.error("aborting the upload of", key, e))?;
        Ok(())
    }

    /// Multipart uploads under `prefix` (a full key prefix) not completed or aborted.
    pub async fn multipart_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>> {
        pages(|(key_marker, id_marker)| async move {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(self.bucket())
                .prefix(prefix)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| self.error("listing the uploads under", prefix, e))?;
            let items = page
                .uploads()
                .iter()
                .filter_map(|u| {
                    Some(PendingUpload {
                        key: u.key()?.to_string(),
                        upload_id: u.upload_id()?.to_string(),
                        started: u.initiated().map(|d| d.secs()),
                    })
                })
                .collect();
            let next = (page.is_truncated() == Some(true)).then(|| {
                (
                    page.next_key_marker().map(str::to_string),
                    page.next_upload_id_marker().map(str::to_string),
                )
            });
            Ok((items, next))
        })
        .await
    }

    /// Bytes `[offset, offset + len)` of object `key` (exactly that many, or an error).
    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.get_range_of(key, None, offset, len).await
    }

    /// [`S3Client::get_range`] of version `version` of `key` (`None`: the latest).
    pub async fn get_range_of(
        &self,
        key: &str,
        version: Option<&str>,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .range(format!("bytes={}-{}", offset, offset + len - 1))
            .send()
            .await
            .map_err(|e| self.error("reading", key, e))?;
        // A server that ignored the range would send the whole object: not read then.
        if out
            .content_length()
            .is_none_or(|n| n < 0 || n as u64 != len)
        {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "reading {len} bytes of {key} at {offset}: the service answers {:?} bytes",
                    out.content_length()
                ),
            ));
        }
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("reading {key}: {e}")))?
            .into_bytes();
        if bytes.len() as u64 != len {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "reading {len} bytes of {key} at {offset} gave {} bytes",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes.to_vec())
    }

    /// All of object `key`, at most `limit` bytes (more is an error: nothing read from a
    /// bucket is allowed to fill memory).
    pub async fn get(&self, key: &str, limit: u64) -> Result<Vec<u8>> {
        self.get_of(key, None, limit).await
    }

    /// [`S3Client::get`] of version `version` of `key` (`None`: the latest).
    pub async fn get_of(&self, key: &str, version: Option<&str>, limit: u64) -> Result<Vec<u8>> {
        let out = self
            .client
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("reading", key, e))?;
        let too_large = || {
            Error::new(
                ErrorKind::External,
                format!("{key} is larger than {limit} bytes"),
            )
        };
        if out
            .content_length()
            .is_some_and(|n| n < 0 || n as u64 > limit)
        {
            return Err(too_large());
        }
        // Read as it comes, never past the limit (a length the service did not say is no
        // bound).
        let mut body = out.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("reading {key}: {e}")))?
        {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// The size of object `key`, or `None` when there is none.
    pub async fn size_of(&self, key: &str) -> Result<Option<u64>> {
        self.size_of_version(key, None).await
    }

    /// [`S3Client::size_of`] version `version` of `key` (`None`: the latest).
    pub async fn size_of_version(&self, key: &str, version: Option<&str>) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.error("looking at", key, e)),
        }
    }

    /// The objects under `prefix` (a full key prefix).
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        pages(|(token, _)| async move {
            let page = self
                .client
                .list_objects_v2()
                .bucket(self.bucket())
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.error("listing", prefix, e))?;
            let items = page
                .contents()
                .iter()
                .filter_map(|o| {
                    Some(ObjectInfo {
                        key: o.key()?.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        etag: o.e_tag().unwrap_or("").trim_matches('"').to_string(),
                    })
                })
                .collect();
            let next = (page.is_truncated() == Some(true))
                .then(|| (page.next_continuation_token().map(str::to_string), None));
            Ok((items, next))
        })
        .await
    }

    /// Some object under `prefix`, when there is one: its key (one request, whatever is there).
    pub async fn any_under(&self, prefix: &str) -> Result<Option<String>> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(prefix)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.error("listing", prefix, e))?;
        Ok(page
            .contents()
            .iter()
            .find_map(|o| o.key().map(str::to_string)))
    }

    /// The versions and delete markers under `prefix`.
    pub async fn versions(&self, prefix: &str) -> Result<Vec<VersionInfo>> {
        pages(|(key_marker, id_marker)| async move {
            let page = self
                .client
                .list_object_versions()
                .bucket(self.bucket())
                .prefix(prefix)
                .set_key_marker(key_marker)
                .set_version_id_marker(id_marker)
                .send()
                .await
                .map_err(|e| self.error("listing the versions under", prefix, e))?;
            let versions = page.versions().iter().filter_map(|v| {
                Some(VersionInfo {
                    key: v.key()?.to_string(),
                    version: v.version_id().unwrap_or("null").to_string(),
                    delete_marker: false,
                    latest: v.is_latest().unwrap_or(false),
                    size: v.size().unwrap_or(0).max(0) as u64,
                })
            });
            let markers = page.delete_markers().iter().filter_map(|m| {
                Some(VersionInfo {
                    key: m.key()?.to_string(),
                    version: m.version_id().unwrap_or("null").to_string(),
                    delete_marker: true,
                    latest: m.is_latest().unwrap_or(false),
                    size: 0,
                })
            });
            let items = versions.chain(markers).collect();
            let next = (page.is_truncated() == Some(true)).then(|| {
                (
                    page.next_key_marker().map(str::to_string),
                    page.next_version_id_marker().map(str::to_string),
                )
            });
            Ok((items, next))
        })
        .await
    }

    /// Deletes object `key` — the exact `version` when given (on a versioned bucket, without
    /// one a delete marker is all that is written).
    pub async fn delete(&self, key: &str, version: Option<&str>) -> Result<()> {
        match self
            .client
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Gone already (a delete cut short after the service did it): done.
            Err(e) if matches!(e.code(), Some("NoSuchVersion" | "NoSuchKey")) => Ok(()),
            Err(e) => Err(self.error("deleting", key, e)),
        }
    }

    /// Sets the retention of version `version` of `key` to `lock` (a service refuses to
    /// shorten a COMPLIANCE retention).
    pub async fn set_retention(&self, key: &str, version: Option<&str>, lock: Lock) -> Result<()> {
        self.client
            .put_object_retention()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .retention(
                ObjectLockRetention::builder()
                    .mode(lock.mode.retention())
                    .retain_until_date(date(lock.until))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error("setting the retention of", key, e))?;
        Ok(())
    }

    /// The retention of version `version` of `key`: `None` when it has none.
    pub async fn retention(&self, key: &str, version: Option<&str>) -> Result<Option<Lock>> {
        match self
            .client
            .get_object_retention()
            .bucket(self.bucket())
            .key(key)
            .set_version_id(version.map(str::to_string))
            .send()
            .await
        {
            Ok(out) => Ok(out.retention().and_then(|r| {
                let mode = match r.mode()? {
                    ObjectLockRetentionMode::Compliance => LockMode::Compliance,
                    ObjectLockRetentionMode::Governance => LockMode::Governance,
                    _ => return None,
                };
                Some(Lock {
                    mode,
                    until: r.retain_until_date()?.secs(),
                })
            })),
            Err(e) if e.code() == Some("NoSuchObjectLockConfiguration") => Ok(None),
            Err(e) => Err(self.error("reading the retention of", key, e)),
        }
    }

    /// Whether the bucket has Object Lock enabled.
    pub async fn object_lock_enabled(&self) -> Result<bool> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(self.bucket())
            .send()
            .await
        {
            Ok(out) => Ok(out
                .object_lock_configuration()
                .and_then(|c| c.object_lock_enabled())
                .is_some_and(|e| e.as_str() == "Enabled")),
            Err(e)
                if e.code() == Some("ObjectLockConfigurationNotFoundError")
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error("reading the Object Lock configuration of", self.bucket(), e)),
        }
    }

    /// The error for a failed call `what` on `key`: its kind from the service's answer, never
    /// a credential in the text.
    fn error<E: ProvideErrorMetadata + std::fmt::Debug>(
        &self,
        what: &str,
        key: &str,
        e: SdkError<E>,
    ) -> Error {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let (code, message) = match &e {
            SdkError::ServiceError(s) => (
                s.err().code().unwrap_or("").to_string(),
                s.err().message().unwrap_or("").to_string(),
            ),
            SdkError::TimeoutError(_) => ("timeout".into(), "no answer in time".into()),
            SdkError::DispatchFailure(d) => (
                "connection".into(),
                d.as_connector_error()
                    .map_or_else(|| "the request was not sent".to_string(), |c| c.to_string()),
            ),
            other => (String::new(), other.to_string()),
        };
        let detail = [code.as_str(), message.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(": ");
        let kind = match status {
            Some(403) => ErrorKind::Refused,
            Some(404) => ErrorKind::NotFound,
            Some(412) => ErrorKind::AlreadyExists,
            _ if code == "timeout" || code == "connection" => ErrorKind::Io,
            _ => ErrorKind::External,
        };
        let status = status.map_or_else(String::new, |s| format!(" (HTTP {s})"));
        Error::new(
            kind,
            format!(
                "{what} s3://{}/{key}{status}: {detail}",
                self.location.bucket
            ),
        )
    }
}
