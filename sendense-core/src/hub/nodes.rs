//! Nodes: hosts whose `sendense-sna` the hub drives over SSH — added with their host key
//! pinned and their version checked, tested, listed, removed.

use crate::catalog::{NewNode, NodeRecord};
use crate::error::{Error, Result};
use crate::node::ssh::{HostKey, SshSession, SshTarget};
use crate::node::Hello;
use crate::sendense::Sendense;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// What `node add` is given.
#[derive(Debug, Clone, Default)]
pub struct AddNode {
    /// Name.
    pub name: String,
    /// `[USER@]HOST[:PORT]`.
    pub ssh: String,
    /// Private key file (none: the ssh-agent).
    pub identity: Option<PathBuf>,
    /// The host key fingerprint to pin (`SHA256:...`), checked on the node beforehand.
    pub host_key: Option<String>,
    /// Pin whichever host key the node presents (it is reported).
    pub accept_host_key: bool,
    /// `sendense-sna` on the node (default: `sendense-sna` on the account's PATH).
    pub sna_path: Option<String>,
    /// Install this hub's `sendense-sna` on the node when it lacks one of this version.
    pub install: bool,
}

/// Where `node install` puts `sendense-sna`, relative to the node account's home directory
/// (commands run there): user-writable, private to the account.
pub const INSTALL_PATH: &str = ".local/lib/sendense/sendense-sna";

/// What `node test` found. Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeCheck {
    /// The node.
    pub node: String,
    /// Its host key, as pinned and presented.
    pub host_key: String,
    /// Its `sendense-sna`.
    pub hello: Hello,
    /// Milliseconds to connect, sign in and ask.
    pub millis: u64,
    /// What the node sent to the hub through a forward on its loopback, when asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
}

/// A measured transfer from a node to the hub through the SSH connection (the backup
/// direction). Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// Bytes the hub received.
    pub bytes: u64,
    /// Seconds from the node's connection to the end of its data.
    pub seconds: f64,
    /// MiB per second.
    pub mib_per_sec: f64,
}

impl Eq for Throughput {}

/// The most `node test --throughput` sends.
pub const MAX_TEST_MIB: u64 = 4096;

impl Sendense {
    /// Adds a node: connects, pins its host key (the one given, or the one presented when
    /// accepted explicitly; never silently), checks its `sendense-sna` version, and records it.
    pub fn add_node(&mut self, req: &AddNode) -> Result<NodeRecord> {
        crate::vm::validate_name("node", &req.name)?;
        if self.catalog().node(&req.name).is_ok() {
            return Err(Error::already_exists(format!(
                "a node named `{}` exists already",
                req.name
            ))
            .with_help("Choose another name, or see `sendense node list`."));
        }
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let target = SshTarget::parse(&req.ssh, &user, req.identity.clone())?;
        if let Some(path) = &target.identity {
            crate::fsutil::require_utf8("--identity", path)?;
        }
        let expect = match (&req.host_key, req.accept_host_key) {
            (Some(fp), _) => HostKey::Pinned(check_fingerprint(fp)?),
            (None, true) => HostKey::Accept,
            (None, false) => HostKey::Show,
        };
        let sna = req
            .sna_path
            .clone()
            .unwrap_or_else(|| "sendense-sna".into());
        crate::node::check_sna_path(&sna)?;
        let session = SshSession::connect(&req.name, &target, &expect)?;
        let (sna, hello) = match hello(&session, &req.name, &sna) {
            Ok(h) => (sna, h),
            Err(e) if req.install && e.kind() != crate::ErrorKind::External => {
                let program = crate::backup::process::sna_binary(self.config().sna_path.as_deref());
                // A bare name is looked up on the account's PATH: installed, it goes to the
                // install path.
                let to = req
                    .sna_path
                    .as_deref()
                    .filter(|p| p.contains('/'))
                    .unwrap_or(INSTALL_PATH);
                let h = install(&session, &req.name, &program, to)?;
                (to.to_string(), h)
            }
            Err(e) => return Err(e),
        };
        self.catalog_mut().insert_node(&NewNode {
            name: req.name.clone(),
            host: target.host,
            port: target.port,
            user: target.user,
            host_key: session.host_key.clone(),
            identity: target.identity,
            sna_path: sna,
            sna_version: hello.version,
        })
    }

    /// Every node.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.catalog().nodes()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Result<NodeRecord> {
        self.catalog().node(name)
    }

    /// Connects to a node with its pinned host key, signs in and asks its `sendense-sna` who it
    /// is; refused when the host key or the version differ. With `throughput_mib`, the node
    /// then sends that many MiB to the hub through a forward on its loopback — the way backup
    /// data travels — and the rate is measured.
    pub fn test_node(&mut self, name: &str, throughput_mib: Option<u64>) -> Result<NodeCheck> {
        let n = self.catalog().node(name)?;
        if let Some(mib) = throughput_mib {
            if mib == 0 || mib > MAX_TEST_MIB {
                return Err(Error::invalid(format!(
                    "--throughput {mib}: give 1 to {MAX_TEST_MIB} MiB"
                )));
            }
        }
        let started = Instant::now();
        let session = self.connect_node(&n)?;
        let hello = hello(&session, name, &n.sna_path)?;
        let millis = started.elapsed().as_millis() as u64;
        self.catalog_mut().set_node_checked(name, &hello.version)?;
        let throughput = match throughput_mib {
            Some(mib) => Some(measure(&session, name, &n.sna_path, mib << 20)?),
            None => None,
        };
        Ok(NodeCheck {
            node: name.to_string(),
            host_key: session.host_key.clone(),
            hello,
            millis,
            throughput,
        })
    }

    /// Copies this hub's own `sendense-sna` to the node — to `to`, else where the node's is
    /// (a path), else [`INSTALL_PATH`] of the node account — streamed over the SSH
    /// connection and renamed into place once whole; checks that it runs there and says this
    /// hub's version, and records it as the node's.
    pub fn install_node(&mut self, name: &str, to: Option<&str>) -> Result<NodeCheck> {
        let n = self.catalog().node(name)?;
        let to = match to {
            Some(p) if !p.contains('/') => {
                return Err(Error::invalid(format!(
                    "--to `{p}` is a name, not a path: the node would look it up on its PATH"
                ))
                .with_help("Give a path, e.g. bin/sendense-sna (in the account's home) or /opt/sendense/sendense-sna."))
            }
            Some(p) => p.to_string(),
            None if n.sna_path.contains('/') => n.sna_path.clone(),
            None => INSTALL_PATH.to_string(),
        };
        crate::node::check_sna_path(&to)?;
        let started = Instant::now();
        let session = self.connect_node(&n)?;
        let program = crate::backup::process::sna_binary(self.config().sna_path.as_deref());
        let hello = install(&session, name, &program, &to)?;
        self.catalog_mut().set_node_sna(name, &to, &hello.version)?;
        Ok(NodeCheck {
            node: name.to_string(),
            host_key: session.host_key.clone(),
            hello,
            millis: started.elapsed().as_millis() as u64,
            throughput: None,
        })
    }

    /// Removes a node; refused while VMs run there.
    pub fn remove_node(&mut self, name: &str) -> Result<NodeRecord> {
        self.catalog_mut().delete_node(name)
    }

    /// An SSH session to node `n`, its host key checked against the pinned one.
    pub(crate) fn connect_node(&self, n: &NodeRecord) -> Result<SshSession> {
        let target = SshTarget {
            host: n.host.clone(),
            port: n.port,
            user: n.user.clone(),
            identity: n.identity.clone(),
        };
        SshSession::connect_with_window(
            &n.name,
            &target,
            &HostKey::Pinned(n.host_key.clone()),
            self.config().node_window_mib.saturating_mul(1 << 20),
        )
    }
}

/// `sendense-sna hello` on the node, checked against this hub.
fn hello(session: &SshSession, node: &str, sna: &str) -> Result<Hello> {
    let out = session.exec(&format!("{} hello", crate::node::shell_word(sna)), &[])?;
    if out.status != Some(0) {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(Error::not_found(format!(
            "node `{node}`: `{sna} hello` failed ({}): {}",
            out.status
                .map(|s| format!("exit status {s}"))
                .unwrap_or_else(|| "no exit status".into()),
            said.trim()
        ))
        .with_help(format!(
            "Install this hub's sendense-sna there: `sendense node install {node}` (or `node add ... --install`), or give its path with --sna-path."
        )));
    }
    let hello = Hello::parse(node, &String::from_utf8_lossy(&out.stdout))?;
    hello.check(node)?;
    Ok(hello)
}

/// `bytes` from the node to a listener of the hub's loopback, through a forward on the node's
/// loopback; the rate as the hub received them.
fn measure(session: &SshSession, node: &str, sna: &str, bytes: u64) -> Result<Throughput> {
    use crate::node::ssh::LocalTarget;
    use std::io::Read;
    let failed = |what: &str, e: std::io::Error| {
        Error::new(
            crate::ErrorKind::External,
            format!("node `{node}`: {what}: {e}"),
        )
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| failed("a listener on the hub's loopback", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| failed("a listener on the hub's loopback", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| failed("a listener on the hub's loopback", e))?;
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let give_up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let giving_up = give_up.clone();
    let receiver = std::thread::spawn(move || -> std::io::Result<(u64, f64)> {
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let over = giving_up.load(std::sync::atomic::Ordering::SeqCst);
                    if over || Instant::now() > deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "nothing arrived",
                        ));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        let started = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match conn.read(&mut buf)? {
                0 => break,
                n => got += n as u64,
            }
        }
        Ok((got, started.elapsed().as_secs_f64()))
    });
    let port = session.forward(LocalTarget::Tcp(addr))?;
    let sent = session.exec(
        &format!("{} send-test {port} {bytes}", crate::node::shell_word(sna)),
        &[],
    );
    let _ = session.cancel_forward(port);
    if !matches!(&sent, Ok(out) if out.status == Some(0)) {
        // Nothing more comes: the receiver stops waiting for a connection.
        give_up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    let sent = sent?;
    let received = receiver
        .join()
        .map_err(|_| Error::internal("the throughput receiver failed"))?
        .map_err(|e| failed("receiving through the forward", e))?;
    if sent.status != Some(0) || received.0 != bytes {
        return Err(Error::new(
            crate::ErrorKind::External,
            format!(
                "node `{node}`: {} of {bytes} bytes arrived through the forward: {}",
                received.0,
                String::from_utf8_lossy(&sent.stderr).trim()
            ),
        ));
    }
    let (got, seconds) = received;
    Ok(Throughput {
        bytes: got,
        seconds,
        mib_per_sec: got as f64 / 1048576.0 / seconds.max(1e-9),
    })
}

/// Streams `program` to `to` on the node and checks it there.
fn install(session: &SshSession, node: &str, program: &std::path::Path, to: &str) -> Result<Hello> {
    let arch = session.exec("uname -m", &[])?;
    if arch.status != Some(0) {
        // An account whose key may run only sendense-sna (`command=`) says so here.
        let said = String::from_utf8_lossy(&arch.stderr);
        return Err(Error::refused(format!(
            "node `{node}` runs no install command for this hub: {}",
            said.lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("`uname -m` failed")
                .trim()
        ))
        .with_help(
            "Install sendense-sna on the node by hand (or lift the node account's command= \
             restriction while `sendense node install` runs).",
        ));
    }
    let theirs = String::from_utf8_lossy(&arch.stdout).trim().to_string();
    if theirs != std::env::consts::ARCH {
        return Err(Error::refused(format!(
            "node `{node}` is a {theirs} machine; this hub's sendense-sna is built for {}",
            std::env::consts::ARCH
        ))
        .with_help(
            "Install a sendense-sna built for the node there, and give its path with --sna-path.",
        ));
    }
    let size = std::fs::metadata(program)
        .map_err(|e| {
            Error::io("reading", program, e).with_help(
                "Install sendense-sna next to sendense, or set `sna_path` in the config.",
            )
        })?
        .len();
    let dir = match to.rsplit_once('/') {
        Some(("", _)) => "/",
        Some(("~", _)) => "~/.",
        Some((d, _)) => d,
        None => ".",
    };
    let (dir_w, to_w) = (crate::node::shell_word(dir), crate::node::shell_word(to));
    // Written under a name of its own, run there, and only then renamed into place: a binary
    // that does not run there never replaces a working one.
    let command = format!(
        "umask 077 && mkdir -p -- {dir_w} && t=$(mktemp -- {dir_w}/.sendense-sna.XXXXXX) && \
         {{ cat > \"$t\" && chmod 700 \"$t\" && wc -c < \"$t\" && \"$t\" hello > /dev/null && \
         mv -f -- \"$t\" {to_w}; }} || {{ rm -f -- \"$t\"; exit 1; }}"
    );
    let out = session.exec_file(&command, program)?;
    let landed = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<u64>()
        .ok();
    if out.status != Some(0) || landed != Some(size) {
        return Err(Error::new(
            crate::ErrorKind::External,
            format!(
                "node `{node}`: installing sendense-sna as {to} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )
        .with_help("Check that the node account's home directory is writable and has space."));
    }
    hello(session, node, to)
}

/// A fingerprint as OpenSSH prints it: `SHA256:` and 43 characters of unpadded base64.
fn check_fingerprint(fp: &str) -> Result<String> {
    let ok = fp.strip_prefix("SHA256:").is_some_and(|b| {
        b.len() == 43
            && b.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    });
    if ok {
        Ok(fp.to_string())
    } else {
        Err(Error::invalid(format!(
            "--host-key `{fp}` is not a SHA256 fingerprint as OpenSSH prints it"
        ))
        .with_help("On the node: `ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub` prints `256 SHA256:... (ED25519)`; pass the SHA256:... part."))
    }
}
