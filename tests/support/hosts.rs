//! Two hosts on one machine, for tests of what crosses a network: two network namespaces (a
//! hub and a node) joined by a veth pair, with addresses that exist only inside them, and a real
//! OpenSSH `sshd` on the node with its own configuration, host key and authorized key. The test
//! creates them and removes them on drop, also when it fails; no traffic leaves the namespaces.

use super::{require, run, Proc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The hub's address on the link between the two namespaces.
pub const HUB_ADDR: &str = "10.77.0.1";
/// The node's address on that link.
pub const NODE_ADDR: &str = "10.77.0.2";

/// A hub namespace and a node namespace joined by a veth pair; removed on drop.
#[derive(Debug)]
pub struct TwoHosts {
    /// The hub's namespace.
    pub hub: String,
    /// The node's namespace.
    pub node: String,
}

impl TwoHosts {
    /// Creates the two namespaces, the link between them (`HUB_ADDR` and `NODE_ADDR`, /30) and
    /// their loopback interfaces.
    pub fn create() -> TwoHosts {
        require("ip", "iproute2");
        remove_stale_namespaces();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id());
        let hosts = TwoHosts {
            hub: format!("sdhub{tag}"),
            node: format!("sdnode{tag}"),
        };
        // Interface names are at most 15 bytes; each lives in its own namespace once moved.
        let (vh, vn) = (format!("vh{tag}"), format!("vn{tag}"));
        for ns in [&hosts.hub, &hosts.node] {
            run("ip", &["netns", "add", ns]);
        }
        run(
            "ip",
            &[
                "link",
                "add",
                &vh,
                "netns",
                &hosts.hub,
                "type",
                "veth",
                "peer",
                "name",
                &vn,
                "netns",
                &hosts.node,
            ],
        );
        for (ns, dev, addr) in [(&hosts.hub, &vh, HUB_ADDR), (&hosts.node, &vn, NODE_ADDR)] {
            let with = |args: &[&str]| {
                let mut all = vec!["-n", ns.as_str()];
                all.extend_from_slice(args);
                run("ip", &all);
            };
            with(&["addr", "add", &format!("{addr}/30"), "dev", dev]);
            with(&["link", "set", dev, "up"]);
            with(&["link", "set", "lo", "up"]);
        }
        hosts
    }

    /// `program` run inside the hub's namespace.
    pub fn in_hub(&self, program: &str) -> Command {
        in_ns(&self.hub, program)
    }

    /// `program` run inside the node's namespace.
    pub fn in_node(&self, program: &str) -> Command {
        in_ns(&self.node, program)
    }
}

/// Namespaces of earlier test runs that were killed before they could remove theirs: named
/// `sdhub<pid>x<n>` / `sdnode<pid>x<n>` after a process that is gone.
fn remove_stale_namespaces() {
    let listed = Command::new("ip").args(["netns", "list"]).output();
    let Ok(listed) = listed else { return };
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name
            .strip_prefix("sdhub")
            .or_else(|| name.strip_prefix("sdnode"))
        else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('x') else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in [&self.node, &self.hub] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// An OpenSSH `sshd` in the node's namespace, listening on `NODE_ADDR`, with a host key and one
/// authorized client key of its own (root's account, the key's options as the test gives them).
#[derive(Debug)]
pub struct Sshd {
    /// The server; stopped on drop.
    pub proc: Proc,
    /// Its port on `NODE_ADDR`.
    pub port: u16,
    /// The client's private key (ed25519, no passphrase).
    pub client_key: PathBuf,
    /// The server's host key fingerprint, as OpenSSH prints it (`SHA256:...`).
    pub fingerprint: String,
    /// Its log (stderr).
    pub log: PathBuf,
    config: PathBuf,
}

impl Sshd {
    /// Starts sshd in `hosts`' node namespace with its files in `dir`; `key_options` go in
    /// front of the client key in `authorized_keys` (`""` for none).
    pub fn start(hosts: &TwoHosts, dir: &Path, key_options: &str) -> Sshd {
        Sshd::start_with_env(hosts, dir, key_options, &[])
    }

    /// [`Sshd::start`], with `env` set for every command the node runs (sshd's `SetEnv`).
    pub fn start_with_env(
        hosts: &TwoHosts,
        dir: &Path,
        key_options: &str,
        env: &[(&str, &str)],
    ) -> Sshd {
        require("sshd", "openssh-server");
        require("ssh-keygen", "openssh-client");
        std::fs::create_dir_all(dir).expect("sshd directory");
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        for key in [&host_key, &client_key] {
            let _ = std::fs::remove_file(key);
            run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
            );
        }
        let public = std::fs::read_to_string(client_key.with_extension("pub")).unwrap();
        let authorized = dir.join("authorized_keys");
        let line = match key_options {
            "" => public,
            o => format!("{o} {public}"),
        };
        std::fs::write(&authorized, line).unwrap();
        let port = 22;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress {NODE_ADDR}\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile none\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 AllowTcpForwarding remote\nAllowStreamLocalForwarding remote\nPermitOpen none\n\
                 ClientAliveInterval 15\nClientAliveCountMax 4\n\
                 LogLevel VERBOSE\n{}",
                host_key.display(),
                authorized.display(),
                // One line: sshd takes the first of each keyword only.
                match env.is_empty() {
                    true => String::new(),
                    false => format!(
                        "SetEnv {}\n",
                        env.iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                }
            ),
        )
        .unwrap();
        let log = dir.join("sshd.log");
        let proc = listen(hosts, &config, &log);
        let listed = run(
            "ssh-keygen",
            &[
                "-l",
                "-E",
                "sha256",
                "-f",
                host_key.with_extension("pub").to_str().unwrap(),
            ],
        );
        let fingerprint = listed
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_string();
        Sshd {
            proc,
            port,
            client_key,
            fingerprint,
            log,
            config,
        }
    }

    /// Starts the server again (after [`Sshd::stop`]), with the same keys and settings.
    pub fn restart(&mut self, hosts: &TwoHosts) {
        self.proc = listen(hosts, &self.config, &self.log);
    }

    /// Kills the server and the sshd process of every session it serves: the node drops off
    /// the network at once. The commands the sessions ran live on and see their input end.
    pub fn stop(&mut self) {
        let family = descendants(self.proc.pid());
        self.proc.kill();
        for (pid, command) in family {
            if command.starts_with("sshd") {
                kill9(pid);
            }
        }
    }

    /// Kills the sshd session process that runs a command whose command line contains
    /// `command` (the session's connection drops; the others stay). Returns whether one ran.
    pub fn drop_session_of(&self, command: &str) -> bool {
        let family = descendants(self.proc.pid());
        let Some((pid, _)) = family.iter().find(|(_, c)| c.contains(command)) else {
            return false;
        };
        let Some(parent) = parent_of(*pid) else {
            return false;
        };
        kill9(parent)
    }

    /// The command lines of the commands sessions run now.
    pub fn commands(&self) -> Vec<String> {
        descendants(self.proc.pid())
            .into_iter()
            .map(|(_, c)| c)
            .filter(|c| !c.starts_with("sshd"))
            .collect()
    }
}

/// sshd `-D -e -f config` in the node's namespace, its log in `log`, listening.
fn listen(hosts: &TwoHosts, config: &Path, log: &Path) -> Proc {
    let mut cmd = hosts.in_node("/usr/sbin/sshd");
    cmd.args(["-D", "-e", "-f"]).arg(config);
    cmd.stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    );
    let mut proc = Proc::spawn_keeping_output("sshd", cmd);
    let before = std::fs::read_to_string(log).unwrap_or_default().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text[before.min(text.len())..].contains("Server listening on") {
            return proc;
        }
        assert!(proc.alive(), "sshd exited: {text}");
        assert!(Instant::now() < deadline, "sshd did not listen: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -9 PID`; whether it was delivered.
fn kill9(pid: u32) -> bool {
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The parent of `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: state, then the parent.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Every descendant of `pid`, with its command line (arguments joined by spaces).
pub fn descendants(pid: u32) -> Vec<(u32, String)> {
    let all: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, parent_of(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
        .into_iter()
        .skip(1)
        .map(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            (p, text)
        })
        .collect()
}

/// A relay in the hub's namespace that adds a round trip of latency on the way to an address
/// of the node (`sendense-delay-relay`, built with the tests).
#[derive(Debug)]
pub struct DelayRelay {
    /// The relay; stopped on drop.
    pub proc: Proc,
    /// Its port on the hub's loopback.
    pub port: u16,
}

impl DelayRelay {
    /// Relays 127.0.0.1:PORT in the hub's namespace to `to` (`ADDR:PORT` of the node) with
    /// `rtt` of round trip.
    pub fn start(hosts: &TwoHosts, to: &str, rtt: Duration) -> DelayRelay {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("the test's executable");
        let relay = exe
            .ancestors()
            .skip(1)
            .take(2)
            .map(|d| d.join("sendense-delay-relay"))
            .find(|p| p.is_file())
            .expect(
                "sendense-delay-relay is built with the tests (cargo build -p sendense-testkit)",
            );
        let mut cmd = hosts.in_hub(relay.to_str().unwrap());
        cmd.args(["--listen", "127.0.0.1:0", "--to", to, "--rtt-ms"])
            .arg(rtt.as_millis().to_string())
            .stdout(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("starting the delay relay");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the delay relay said {line:?}"));
        DelayRelay {
            proc: Proc::adopt("delay relay", child),
            port,
        }
    }
}
