//! govmomi's vCenter simulator (vcsim) for the VMware tests: built at first use from Debian's
//! packaged Go sources (`golang-go`, `golang-github-vmware-govmomi-dev`; GOPATH mode) with the
//! small command in `vcsim/main.go`, cached outside the clone, and started per test on
//! 127.0.0.1 with a port of its own.

use super::{require, Proc};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's govmomi sources.
const GOVMOMI: &str = "/usr/share/gocode/src/github.com/vmware/govmomi/simulator";

/// The simulator's command, as compiled into the test kit.
const MAIN_GO: &str = include_str!("vcsim/main.go");

/// Where built fixtures are kept between runs: `$SENDENSE_TEST_CACHE`, else
/// `/var/tmp/sendense-test-cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SENDENSE_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/sendense-test-cache"))
}

/// FNV-1a of `bytes`, for cache keys.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// A directory name of its own for one build (tests build side by side, in threads of one
/// process and in several processes).
pub(crate) fn build_dir(cache: &Path, what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    cache.join(format!("{what}-build-{}-{n}", std::process::id()))
}

/// The simulator binary: built once per command source and Go version (once per process: the
/// tests of a process wait for one build).
pub fn binary() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
    require("go", "golang-go");
    assert!(
        Path::new(GOVMOMI).is_dir(),
        "{GOVMOMI} is missing: install golang-github-vmware-govmomi-dev (make test does)"
    );
    let version = Command::new("go")
        .arg("version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let key = fnv(&[MAIN_GO.as_bytes(), &version].concat());
    let cache = cache_dir();
    let bin = cache.join(format!("vcsim-{key:016x}"));
    if bin.is_file() {
        return bin;
    }
    let work = build_dir(&cache, "vcsim");
    let src = work.join("gopath/src/sendensevcsim");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.go"), MAIN_GO).unwrap();
    let partial = work.join("vcsim");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&partial)
        .arg("sendensevcsim")
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:/usr/share/gocode", work.join("gopath").display()),
        )
        .env("GOCACHE", cache.join("gocache"))
        .output()
        .expect("running go build");
    assert!(
        out.status.success(),
        "building vcsim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Whole or not at all, also when tests build it side by side.
    std::fs::rename(&partial, &bin).unwrap();
    let _ = std::fs::remove_dir_all(&work);
    bin
}

/// A running simulator.
#[derive(Debug)]
pub struct Vcsim {
    /// The process; stopped on drop.
    pub proc: Proc,
    /// `https://127.0.0.1:PORT/sdk`.
    pub url: String,
    /// Its certificate's SHA-1 thumbprint (`AA:BB:...`).
    pub thumbprint: String,
    /// The account.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl Vcsim {
    /// Starts a simulator whose account is `user` with `password`, its datastore files under
    /// `dir`.
    pub fn start(dir: &Path, user: &str, password: &str) -> Vcsim {
        Vcsim::start_with(dir, user, password, &[])
    }

    /// [`Vcsim::start`] with more flags: `-layout` gives `DC0_H0_VM0` vSphere's own device
    /// layout (disks 2000 and 2001 of 64 and 32 MiB on SCSI controller 1000, bus 0; 2016 of
    /// 16 MiB on controller 1001, bus 1; each with a backing uuid; and 2002 of 8 MiB on
    /// controller 1000, independent, so not in snapshots).
    pub fn start_with(dir: &Path, user: &str, password: &str, flags: &[&str]) -> Vcsim {
        Vcsim::start_in(Command::new(binary()), dir, user, password, flags)
    }

    /// [`Vcsim::start_with`] as `command` (the simulator, perhaps run in a network namespace:
    /// `ip netns exec NS BINARY`; `-address` among the flags to listen on another address).
    pub fn start_in(
        mut command: Command,
        dir: &Path,
        user: &str,
        password: &str,
        flags: &[&str],
    ) -> Vcsim {
        std::fs::create_dir_all(dir).unwrap();
        let mut child = command
            .args(["-username", user, "-password", password])
            .args(flags)
            .env("TMPDIR", dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting vcsim");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let url = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        let thumbprint = lines.next().and_then(|l| l.ok()).unwrap_or_default();
        assert!(
            url.starts_with("https://") && thumbprint.len() == 59,
            "vcsim said {url:?} {thumbprint:?}"
        );
        Vcsim {
            proc: Proc::adopt("vcsim", child),
            url,
            thumbprint,
            user: user.to_string(),
            password: password.to_string(),
        }
    }
}

impl Vcsim {
    /// The arguments of `sendense vcenter add NAME` for this simulator, its password in
    /// `password_file`, its certificate pinned by thumbprint.
    pub fn add_args(&self, name: &str, password_file: &str) -> Vec<String> {
        [
            "vcenter",
            "add",
            name,
            "--url",
            &self.url,
            "--user",
            &self.user,
            "--password-file",
            password_file,
            "--thumbprint",
            &self.thumbprint,
        ]
        .map(String::from)
        .to_vec()
    }
}

/// Writes `password` (and a line end) to `path` with `mode`; returns the path.
pub fn password_file(path: &Path, password: &str, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("{password}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}
