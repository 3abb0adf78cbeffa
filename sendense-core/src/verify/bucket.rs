//! `backup verify` of backups in S3 repositories: each disk's restore point read from the
//! bucket by range — every object's length and QCOW2 header checked against the catalog, the
//! packed digest files against their recorded digests — and every block it reads (data and
//! zeroes) compared with the record of the link it comes from. A backup's own data hidden by a
//! newer backup is checked when that older backup is verified. The manifest object is read
//! and compared with the catalog as a directory's is.

use super::{ImageCheck, Problems};
use crate::catalog::BackupRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::repo::chain_check::ChainCheck;
use crate::repo::chain_read::ChainReader;
use crate::sendense::Sendense;
use crate::transfer::{BlockCheck, BLOCK};
use tokio_util::sync::CancellationToken;

/// Guest bytes each reader takes at a time.
const SLICE: u64 = 64 << 20;
/// Bytes per read inside a slice (the chain's objects are fetched in chunks this size).
const READ: u64 = 4 << 20;
/// Readers side by side.
const READERS: usize = 4;

/// The largest manifest read.
const MANIFEST_LIMIT: u64 = 4 << 20;

impl Sendense {
    /// Checks disk `key` of backup `b` in its bucket, and whether the bucket could be read at
    /// all (a problem of a bucket out of reach is not damage); an error only when cancelled.
    pub(crate) fn check_bucket_disk(
        &mut self,
        b: &BackupRecord,
        key: u32,
        cancel: &CancellationToken,
    ) -> Result<(ImageCheck, bool)> {
        let rel = b
            .disks
            .iter()
            .find(|d| d.key == key)
            .map(|d| d.rel_file.clone())
            .unwrap_or_default();
        let mut check = ImageCheck {
            backup: b.id.clone(),
            disk: key,
            file: format!(
                "{}/{rel}",
                self.catalog()
                    .s3_repo(&b.repo)
                    .map(|r| r.url)
                    .unwrap_or_default()
            ),
            bytes_verified: 0,
            problems: Vec::new(),
        };
        let client = match self.s3_client_of(b) {
            Ok(c) => c,
            Err(e) => {
                check.problems.push(format!(
                    "repository `{}` is not available, nothing in it was checked: {}",
                    b.repo,
                    e.message()
                ));
                return Ok((check, false));
            }
        };
        let links = self.bucket_links(&b.id, key)?;
        // Every block is checked against a record in the bucket: a link without one (a
        // manifest that names no digest, or one of an older scheme) cannot be verified there.
        for l in &links {
            if !crate::repo::digests::is_records_form(l.expected.digest.as_deref()) {
                check.problems.push(format!(
                    "backup {}: no digest of its blocks was recorded that the bucket can be checked against",
                    l.expected.backup
                ));
                return Ok((check, true));
            }
        }
        let opened = crate::repo::s3::chain::open_chain(&client, key, &links, true);
        let (reader, chain_check) = match opened {
            Ok((reader, Some(c))) => (reader, c),
            Ok((_, None)) => {
                return Err(Error::internal("a bucket chain opened without its check"))
            }
            // Damage: an object missing, cut, or not as recorded.
            Err(e) if e.kind() == ErrorKind::External => {
                check.problems.push(e.message().to_string());
                return Ok((check, true));
            }
            // Not checked here (a layout only QEMU reads, keys refused): not damage.
            Err(e) if e.kind() == ErrorKind::Refused => {
                check.problems.push(format!("not checked: {}", e.message()));
                return Ok((check, false));
            }
            Err(e) => {
                check
                    .problems
                    .push(format!("reading the bucket: {}", e.message()));
                return Ok((check, false));
            }
        };
        let (bytes, problems, reached) = read_all(&reader, &chain_check, cancel)?;
        let unchecked = chain_check.unchecked_bytes();
        check.bytes_verified = bytes.saturating_sub(unchecked);
        // Each names the disk, the backup read and the backup whose record differs.
        check.problems.extend(problems.into_list());
        if unchecked > 0 && reached {
            check.problems.push(format!(
                "{unchecked} bytes could not be checked: no record decides them"
            ));
        }
        Ok((check, reached))
    }

    /// What is wrong with backup `b`'s manifest object (see `manifest_problems`).
    pub(crate) fn bucket_manifest_problems(&self, b: &BackupRecord) -> Vec<String> {
        use crate::repo::manifest::{manifest_rel, Manifest};
        let rel = manifest_rel(&b.vm, &b.id);
        let Ok(client) = self.s3_client_of(b) else {
            // Reported with the disks.
            return Vec::new();
        };
        let key = client.location().key(&rel);
        // The version written (or found committed at import), not one written over it since.
        let version = self
            .catalog()
            .s3_objects(&b.id)
            .ok()
            .and_then(|objects| objects.into_iter().find(|o| o.rel == rel))
            .and_then(|o| o.version);
        let version = version.as_deref();
        let text = match crate::rt::block_on(async {
            match client.size_of_version(&key, version).await? {
                None => Ok(None),
                Some(_) => client.get_of(&key, version, MANIFEST_LIMIT).await.map(Some),
            }
        }) {
            Ok(Ok(Some(t))) => t,
            Ok(Ok(None)) => {
                return vec![format!(
                "its manifest {rel} is missing: the bucket alone no longer describes this backup"
            )]
            }
            Ok(Err(e)) | Err(e) => return vec![format!("reading its manifest: {}", e.message())],
        };
        match Manifest::parse(&text, &key).and_then(|m| m.validate(&rel).map(|()| m)) {
            Ok(m) => super::manifest_agreement(b, &m),
            Err(e) => vec![format!("its manifest: {}", e.message())],
        }
    }
}

/// Reads the whole disk through `reader`, every block checked by `check`; returns the bytes
/// read or checked as zeroes and what differs.
fn read_all(
    reader: &ChainReader,
    check: &ChainCheck,
    cancel: &CancellationToken,
) -> Result<(u64, Problems, bool)> {
    let size = reader.size();
    let next = std::sync::atomic::AtomicU64::new(0);
    let found = std::sync::Mutex::new((0u64, Problems::default(), None::<Error>));
    std::thread::scope(|s| {
        for _ in 0..READERS {
            s.spawn(|| loop {
                if cancel.is_cancelled() {
                    return;
                }
                let start = next.fetch_add(SLICE, std::sync::atomic::Ordering::Relaxed);
                if start >= size {
                    return;
                }
                let len = SLICE.min(size - start);
                let (bytes, problems) = check_slice(reader, check, start, len);
                let mut f = found.lock().unwrap_or_else(|p| p.into_inner());
                f.0 += bytes;
                match problems {
                    Ok(list) => list.into_iter().for_each(|p| f.1.push(p)),
                    Err(e) => {
                        f.2.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if cancel.is_cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, "verify cancelled"));
    }
    let (bytes, mut problems, failed) = found.into_inner().unwrap_or_else(|p| p.into_inner());
    let reached = failed.is_none();
    if let Some(e) = failed {
        problems.push(format!("reading the bucket: {}", e.message()));
    }
    Ok((bytes, problems, reached))
}

/// Checks `[start, start + len)`: the bytes covered, and the blocks that differ (an error when
/// the bucket cannot be read).
fn check_slice(
    reader: &ChainReader,
    check: &ChainCheck,
    start: u64,
    len: u64,
) -> (u64, Result<Vec<String>>) {
    let mut bytes = 0;
    let mut problems = Vec::new();
    let extents = match reader.extents(start, len) {
        Ok(e) => e,
        Err(e) => return (0, Ok(vec![e.message().to_string()])),
    };
    let mut buf = vec![0u8; READ as usize];
    for e in extents {
        if e.flags != 0 {
            if let Err(err) = check.check_zeroes(e.offset, e.length) {
                problems.push(err.message().to_string());
            }
            bytes += e.length;
            continue;
        }
        // Data: read in block-aligned pieces, each block compared with its record.
        let mut at = e.offset / BLOCK * BLOCK;
        let end = e.offset + e.length;
        while at < end {
            let n = READ
                .min(end.div_ceil(BLOCK) * BLOCK - at)
                .min(reader.size() - at);
            let piece = &mut buf[..n as usize];
            if let Err(err) = reader.read(at, piece) {
                return (bytes, Err(err));
            }
            if let Err(err) = check.check_data(at, piece) {
                problems.push(err.message().to_string());
            }
            bytes += n;
            at += n;
        }
    }
    (bytes, Ok(problems))
}
