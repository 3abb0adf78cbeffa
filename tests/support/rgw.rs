//! A real S3 server for the object-storage tests: Ceph RGW from Debian's packages (`radosgw`,
//! `ceph-mon`, `ceph-osd`, `ceph-common`) — one monitor, one memstore OSD, one radosgw on
//! 127.0.0.1, cephx off, pools of size 1, everything in one directory (`rgw/start.sh`,
//! `rgw/stop.sh`).
//!
//! Started once per test run: `scripts/cargo-test.sh` (what `make test` runs) starts one and
//! names it in `SENDENSE_TEST_RGW` (`http://127.0.0.1:PORT`); a test process started without it
//! starts its own at first use, stopped by a watchdog when the process ends. Each test makes
//! buckets of its own ([`Rgw::bucket`]).

use super::{free_port_range, require};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The S3 user the tests use (the server is on loopback and lives for one test run).
pub const ACCESS_KEY: &str = "sendense-test-access";
/// Its secret.
pub const SECRET_KEY: &str = "sendense-test-secret";

/// The scripts, as compiled into the test kit.
const START: &str = include_str!("rgw/start.sh");
const STOP: &str = include_str!("rgw/stop.sh");

/// A running RGW.
#[derive(Debug)]
pub struct Rgw {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

/// The run's RGW: the one `SENDENSE_TEST_RGW` names, else one this process starts.
pub fn shared() -> &'static Rgw {
    static RGW: std::sync::OnceLock<Rgw> = std::sync::OnceLock::new();
    RGW.get_or_init(|| match std::env::var("SENDENSE_TEST_RGW") {
        Ok(endpoint) if !endpoint.is_empty() => Rgw { endpoint },
        _ => start_own(),
    })
}

/// Writes the scripts into `dir` and returns the start script's path.
pub fn scripts(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in [("start.sh", START), ("stop.sh", STOP)] {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir.join("start.sh")
}

fn start_own() -> Rgw {
    require("radosgw", "radosgw");
    require("ceph-mon", "ceph-mon");
    require("ceph-osd", "ceph-osd");
    // A directory of its own (mkdtemp), kept: the watchdog removes it.
    let base = tempfile::Builder::new()
        .prefix("sendense-rgw-")
        .tempdir()
        .expect("a directory for RGW")
        .keep();
    let start = scripts(&base.join("bin"));
    let data = base.join("data");
    let port = free_port_range(2);
    let out = Command::new("bash")
        .arg(&start)
        .arg(&data)
        .arg(port.to_string())
        .arg((port + 1).to_string())
        .env("RGW_ACCESS_KEY", ACCESS_KEY)
        .env("RGW_SECRET_KEY", SECRET_KEY)
        .output()
        .expect("running rgw/start.sh");
    assert!(
        out.status.success(),
        "RGW did not start: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Stopped when this process ends, however it ends.
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; bash '{stop}' '{data}'; rm -rf '{base}'",
        pid = std::process::id(),
        stop = base.join("bin/stop.sh").display(),
        data = data.display(),
        base = base.display()
    );
    // `setsid -f` forks it into a session of its own and returns at once.
    let started = Command::new("setsid")
        .args(["-f", "bash", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("starting the RGW watchdog");
    assert!(started.success(), "starting the RGW watchdog");
    Rgw {
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// The SHA-256 of nothing, for `x-amz-content-sha256` of bodiless requests.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Rgw {
    /// A new bucket named after `name` (and this process, and a counter), with Object Lock
    /// (and so versioning) when `lock`.
    pub fn bucket(&self, name: &str, lock: bool) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let bucket = format!(
            "{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut args = vec!["-X".to_string(), "PUT".into()];
        if lock {
            args.extend(["-H".into(), "x-amz-bucket-object-lock-enabled: true".into()]);
        }
        let code = self.curl(&args, &bucket);
        assert_eq!(code, "200", "creating bucket {bucket}");
        bucket
    }

    /// A new bucket with versioning enabled (and no Object Lock).
    pub fn versioned_bucket(&self, name: &str) -> String {
        let bucket = self.bucket(name, false);
        let code = self.put(
            &format!("{bucket}?versioning="),
            "<VersioningConfiguration><Status>Enabled</Status></VersioningConfiguration>",
        );
        assert_eq!(code, "200", "enabling versioning of {bucket}");
        bucket
    }

    /// A signed request to `path` (no body): the HTTP status.
    pub fn curl(&self, extra: &[String], path: &str) -> String {
        self.curl_with(extra, path, EMPTY_SHA256)
    }

    /// A signed PUT of `body` to `path` (its hash unsigned): the HTTP status.
    pub fn put(&self, path: &str, body: &str) -> String {
        let args: Vec<String> = ["-X", "PUT", "--data-binary", body]
            .iter()
            .map(|a| a.to_string())
            .collect();
        self.curl_with(&args, path, "UNSIGNED-PAYLOAD")
    }

    fn curl_with(&self, extra: &[String], path: &str, payload: &str) -> String {
        self.curl_to(extra, path, payload, Path::new("/dev/null"))
    }

    fn curl_to(&self, extra: &[String], path: &str, payload: &str, body: &Path) -> String {
        require("curl", "curl");
        let out = Command::new("curl")
            .args(["-s", "-w", "%{http_code}", "-m", "120"])
            .arg("-o")
            .arg(body)
            .args(["-H", &format!("x-amz-content-sha256: {payload}")])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
            .args(extra)
            .arg(format!("{}/{path}", self.endpoint))
            .output()
            .expect("running curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The keys of every version and delete marker in `bucket`, in the order listed.
    pub fn list_versions(&self, bucket: &str) -> Vec<String> {
        self.versions(bucket).into_iter().map(|(k, _)| k).collect()
    }

    /// Every version and delete marker in `bucket` as (key, version id), in the order listed.
    pub fn versions(&self, bucket: &str) -> Vec<(String, String)> {
        let xml = self.get_text(&format!("{bucket}?versions="));
        xml.split("<Key>")
            .skip(1)
            .filter_map(|part| {
                let (key, rest) = part.split_once("</Key>")?;
                let version = rest
                    .split_once("<VersionId>")
                    .and_then(|(_, v)| v.split_once("</VersionId>"))
                    .map_or("null", |(v, _)| v);
                Some((key.to_string(), version.to_string()))
            })
            .collect()
    }

    /// The multipart uploads not completed or aborted in `bucket`, by key.
    pub fn uploads(&self, bucket: &str) -> Vec<String> {
        let xml = self.get_text(&format!("{bucket}?uploads="));
        xml.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split_once("</Key>").map(|(k, _)| k.to_string()))
            .collect()
    }

    /// The retain-until date of version `version` of `path` (`BUCKET/KEY`), as the server
    /// writes it; empty when it has none.
    pub fn retain_until(&self, path: &str, version: &str) -> String {
        let xml = self.get_text(&format!("{path}?retention=&versionId={version}"));
        xml.split_once("<RetainUntilDate>")
            .and_then(|(_, r)| r.split_once("</RetainUntilDate>"))
            .map(|(d, _)| d.to_string())
            .unwrap_or_default()
    }

    /// A signed GET of `path`: the body.
    pub fn get_text(&self, path: &str) -> String {
        require("curl", "curl");
        let out = Command::new("curl")
            .args(["-s", "-m", "30"])
            .args(["-H", &format!("x-amz-content-sha256: {EMPTY_SHA256}")])
            .args(["--aws-sigv4", "aws:amz:us-east-1:s3"])
            .args(["--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
            .arg(format!("{}/{path}", self.endpoint))
            .output()
            .expect("running curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Downloads object `path` (`BUCKET/KEY`) into `out`: the HTTP status.
    pub fn get_file(&self, path: &str, out: &Path) -> String {
        self.curl_to(&[], path, EMPTY_SHA256, out)
    }

    /// Uploads the file `file` as object `path` (`BUCKET/KEY`): the HTTP status.
    pub fn put_file(&self, path: &str, file: &Path) -> String {
        let args: Vec<String> = vec![
            "-X".into(),
            "PUT".into(),
            "--data-binary".into(),
            format!("@{}", file.display()),
        ];
        self.curl_with(&args, path, "UNSIGNED-PAYLOAD")
    }

    /// A credentials file (0600) for the test user in `dir`.
    pub fn credentials_file(&self, dir: &Path) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join("s3-credentials");
        std::fs::write(
            &p,
            format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }
}
