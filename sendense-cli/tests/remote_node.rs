//! Remote nodes: the hub reaches a node's `sendense-sna` over SSH — here two hosts in network
//! namespaces, a real OpenSSH sshd on the node, `sendense` in the hub's namespace.

use sendense_testkit::hosts::{DelayRelay, Sshd, TwoHosts, NODE_ADDR};
use sendense_testkit::vcsim::{self, Vcsim};
use sendense_testkit::vddk;
use sendense_testkit::{output_text, RestorePoint};
use serde_json::Value;
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

/// The `sendense-sna` built beside `sendense` (the node shares this machine's files).
fn sna() -> PathBuf {
    Path::new(BIN).with_file_name("sendense-sna")
}

/// `sendense ARGS --json` run in the hub's namespace: exit code, output, JSON document.
fn hub(hosts: &TwoHosts, state: &Path, args: &[&str]) -> (i32, String, Value) {
    let o = hosts
        .in_hub(BIN)
        .args(args)
        .arg("--json")
        .env("SENDENSE_HOME", state)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        output_text(&o),
        sendense_testkit::json_document(&o.stdout),
    )
}

/// A hub (state in a temporary directory) and a node with sshd, in two namespaces.
/// Dropped in this order: the server, the namespaces, the files.
struct Rig {
    sshd: Sshd,
    hosts: TwoHosts,
    state: PathBuf,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_env(&[])
    }

    /// [`Rig::new`] with `env` set for the commands the node runs.
    fn with_env(env: &[(&str, &str)]) -> Rig {
        Rig::with(env, "")
    }

    /// [`Rig::with_env`], the hub's key with `key_options` in the node's authorized_keys.
    fn with(env: &[(&str, &str)], key_options: &str) -> Rig {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Rig::set_up(key_options, |_, _| (env, ())).0
    }

    /// A rig whose node commands get the environment `setup` returns, with what else it made
    /// (a server in the node's network); `setup` runs once the hosts exist, before the node's
    /// sshd starts (given the hosts and the rig's directory).
    fn set_up<T>(
        key_options: &str,
        setup: impl FnOnce(&TwoHosts, &Path) -> (Vec<(String, String)>, T),
    ) -> (Rig, T) {
        let dir = tempfile::tempdir().unwrap();
        let state = sendense_testkit::cli_hub(BIN, dir.path(), "r");
        let hosts = TwoHosts::create();
        let (env, made) = setup(&hosts, dir.path());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let sshd = Sshd::start_with_env(&hosts, &dir.path().join("sshd"), key_options, &env);
        (
            Rig {
                dir,
                state,
                hosts,
                sshd,
            },
            made,
        )
    }

    /// `sendense node add NAME --ssh root@NODE --identity KEY EXTRA...` in the hub.
    fn add(&self, name: &str, extra: &[&str]) -> (i32, String, Value) {
        self.add_via(name, &format!("root@{NODE_ADDR}"), extra)
    }

    /// [`Rig::add`] with `--ssh SSH`.
    fn add_via(&self, name: &str, ssh: &str, extra: &[&str]) -> (i32, String, Value) {
        let key = self.sshd.client_key.to_str().unwrap();
        let mut args = vec!["node", "add", name, "--ssh", ssh, "--identity", key];
        args.extend_from_slice(extra);
        hub(&self.hosts, &self.state, &args)
    }

    fn hub(&self, args: &[&str]) -> (i32, String, Value) {
        hub(&self.hosts, &self.state, args)
    }
}

#[test]
fn nodes_are_added_with_their_host_key_pinned_and_their_version_checked() {
    let mut rig = Rig::new();
    let d = rig.dir.path().to_path_buf();
    let sna = sna();
    let sna_path = sna.to_str().unwrap();

    // First contact: nothing is pinned silently; the error shows the node's key.
    let (c, out, _) = rig.add("n1", &["--sna-path", sna_path]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(&rig.sshd.fingerprint) && out.contains("--host-key"),
        "{out}"
    );
    // A fingerprint that is not the node's: refused, both named.
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (c, out, _) = rig.add("n1", &["--sna-path", sna_path, "--host-key", wrong]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(wrong) && out.contains(&rig.sshd.fingerprint),
        "{out}"
    );
    let (c, out, _) = rig.add("n1", &["--sna-path", sna_path, "--host-key", "md5:00"]);
    assert_eq!(c, 2, "{out}");
    let (_, _, list) = rig.hub(&["node", "list"]);
    assert_eq!(list, serde_json::json!([]));

    // The node's sendense-sna must be this hub's version.
    let fake = d.join("old-sna");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho '{\"version\": \"0.0.1\", \"node_protocol\": 1, \"source_protocol\": 1}'\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", fake.to_str().unwrap()])
        .status()
        .unwrap();
    let fp = rig.sshd.fingerprint.clone();
    let fp = fp.as_str();
    let (c, out, _) = rig.add(
        "n1",
        &["--sna-path", fake.to_str().unwrap(), "--host-key", fp],
    );
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains("0.0.1") && out.contains("sendense node install n1"),
        "{out}"
    );
    let (c, out, _) = rig.add(
        "n1",
        &["--sna-path", "/nowhere/sendense-sna", "--host-key", fp],
    );
    assert_eq!(c, 4, "{out}");
    assert!(out.contains("node install"), "{out}");

    // Accepted explicitly: pinned, and shown.
    let (c, out, n) = rig.add("n1", &["--sna-path", sna_path, "--accept-host-key"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(n["host_key"], rig.sshd.fingerprint.as_str());
    assert_eq!(n["sna_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(n["user"], "root");
    assert_eq!(n["port"], 22);
    let (c, out, t) = rig.hub(&["node", "test", "n1"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(t["hello"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(t["host_key"], rig.sshd.fingerprint.as_str());
    let (c, out, _) = rig.add("n2", &["--sna-path", sna_path, "--host-key", fp]);
    assert_eq!(c, 0, "{out}");

    // The node's host key changes: refused, both fingerprints named, nothing sent.
    let before = rig.sshd.fingerprint.clone();
    // The old server goes first: the new one listens on the same address.
    rig.sshd.proc.stop();
    rig.sshd = Sshd::start(&rig.hosts, &d.join("sshd2"), "");
    assert_ne!(rig.sshd.fingerprint, before);
    let (c, out, _) = rig.hub(&["node", "test", "n1"]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(&before) && out.contains(&rig.sshd.fingerprint),
        "{out}"
    );
    let log = std::fs::read_to_string(&rig.sshd.log).unwrap();
    assert!(!log.contains("Accepted publickey"), "{log}");

    for name in ["n1", "n2"] {
        let (c, out, _) = rig.hub(&["node", "remove", name]);
        assert_eq!(c, 0, "{out}");
    }
    let (_, _, list) = rig.hub(&["node", "list"]);
    assert_eq!(list, serde_json::json!([]));
}

#[test]
fn node_install_copies_the_hubs_sendense_sna_and_checks_it_there() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::new();
    // A path of the node account's own (the node shares this machine's files).
    let there = rig.dir.path().join("node-home/lib/sendense-sna");
    let there_s = there.to_str().unwrap();
    let add = |extra: &[&str]| {
        let mut args = vec!["--accept-host-key", "--sna-path", there_s];
        args.extend_from_slice(extra);
        rig.add("n1", &args)
    };
    let (c, out, _) = add(&[]);
    assert_eq!(c, 4, "{out}");
    assert!(out.contains("--install"), "{out}");
    let (c, out, n) = add(&["--install"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(n["sna_path"], there_s);
    assert_eq!(n["sna_version"], env!("CARGO_PKG_VERSION"));
    let same = |a: &Path, b: &Path| std::fs::read(a).unwrap() == std::fs::read(b).unwrap();
    assert!(same(&there, &sna()), "the node's copy is the hub's binary");
    let mode = std::fs::metadata(&there).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);

    // An older sendense-sna there: refused until `node install` brings the hub's.
    std::fs::write(
        &there,
        "#!/bin/sh\necho '{\"version\": \"0.0.1\", \"node_protocol\": 1, \"source_protocol\": 1}'\n",
    )
    .unwrap();
    let (c, out, _) = rig.hub(&["node", "test", "n1"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("sendense node install n1"), "{out}");
    let (c, out, r) = rig.hub(&["node", "install", "n1"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(r["hello"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(same(&there, &sna()));
    let (c, out, _) = rig.hub(&["node", "test", "n1"]);
    assert_eq!(c, 0, "{out}");
    // Somewhere it cannot be written: an error, and the node keeps its sendense-sna.
    let (c, out, _) = rig.hub(&["node", "install", "n1", "--to", "/proc/x/sna"]);
    assert_eq!(c, 1, "{out}");
    assert!(
        out.contains("installing sendense-sna as /proc/x/sna failed"),
        "{out}"
    );
    let (_, _, n) = rig.hub(&["node", "show", "n1"]);
    assert_eq!(n["sna_path"], there_s);
    let (c, out, _) = rig.hub(&["node", "install", "n1", "--to", "sendense-sna"]);
    assert_eq!(c, 2, "{out}");
    // A binary that does not run there never replaces the one that does.
    let broken = rig.dir.path().join("broken-sna");
    std::fs::write(&broken, b"not a program").unwrap();
    let config = rig.state.join("config.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("sna_path: {}\n", broken.display()));
    std::fs::write(&config, text).unwrap();
    let (c, out, _) = rig.hub(&["node", "install", "n1"]);
    assert_eq!(c, 1, "{out}");
    assert!(same(&there, &sna()), "the working sendense-sna stays");
    let leftovers: Vec<_> = std::fs::read_dir(there.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("sendense-sna")]);
}

#[test]
fn a_vm_on_a_node_is_discovered_and_registered_through_its_sendense_sna() {
    let rig = Rig::new();
    let d = rig.dir.path();
    let sna = sna();
    let (c, out, _) = rig.add(
        "n1",
        &["--accept-host-key", "--sna-path", sna.to_str().unwrap()],
    );
    assert_eq!(c, 0, "{out}");
    let disks = [
        sendense_testkit::create_image(&d.join("a.qcow2"), "qcow2", "16M"),
        sendense_testkit::create_image(&d.join("b.qcow2"), "qcow2", "8M"),
    ];
    let vm = sendense_testkit::QemuVm::start(
        d,
        "pg",
        &[("qcow2", disks[0].as_path()), ("qcow2", disks[1].as_path())],
    );
    let qmp = vm.qmp.to_str().unwrap();

    let (c, out, found) = rig.hub(&["vm", "discover", "--node", "n1", "--qmp", qmp]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(found.as_array().unwrap().len(), 2, "{found:#}");
    let (c, out, added) = rig.hub(&["vm", "add", "pg", "--node", "n1", "--qmp", qmp]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(added["node"], "n1");
    let sizes: Vec<u64> = added["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["size_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [16 << 20, 8 << 20]);
    // The checkpoints are read on the node, live.
    let (c, out, shown) = rig.hub(&["vm", "show", "pg"]);
    assert_eq!(c, 0, "{out}");
    for disk in shown["disks"].as_array().unwrap() {
        assert_eq!(disk["checkpoint_state"]["state"], "none", "{shown:#}");
    }
    let (_, _, n) = rig.hub(&["node", "show", "n1"]);
    assert_eq!(n["vms"], serde_json::json!(["pg"]));
    let (c, out, _) = rig.hub(&["node", "remove", "n1"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("pg"), "{out}");

    // Paths on a node are absolute and plain; an unknown node is named.
    let (c, out, _) = rig.hub(&["vm", "add", "x", "--node", "n1", "--qmp", "run/x.sock"]);
    assert_eq!(c, 2, "{out}");
    let (c, out, _) = rig.hub(&["vm", "add", "x", "--node", "nope", "--qmp", qmp]);
    assert_eq!(c, 4, "{out}");
    vm.quit();
}

/// The node account as the guide documents it: `restrict` with only the forwards a backup
/// needs, from the hub's address only. What the hub does there still works; from elsewhere the
/// key is refused.
#[test]
fn a_node_account_restricted_as_documented_still_works() {
    use sendense_testkit::hosts::HUB_ADDR;
    let dir = tempfile::tempdir().unwrap();
    let state = sendense_testkit::cli_hub(BIN, dir.path(), "r");
    let hosts = TwoHosts::create();
    let sna = sna();
    let sna = sna.to_str().unwrap();
    let add = |sshd: &Sshd, name: &str| {
        let ssh = format!("root@{NODE_ADDR}");
        let key = sshd.client_key.to_str().unwrap();
        hub(
            &hosts,
            &state,
            &[
                "node",
                "add",
                name,
                "--ssh",
                &ssh,
                "--identity",
                key,
                "--sna-path",
                sna,
                "--accept-host-key",
            ],
        )
    };
    let options =
        format!(r#"restrict,port-forwarding,permitlisten="127.0.0.1:*",from="{HUB_ADDR}""#);
    let sshd = Sshd::start(&hosts, &dir.path().join("sshd"), &options);
    let (c, out, _) = add(&sshd, "n1");
    assert_eq!(c, 0, "{out}");
    let (c, out, _) = hub(&hosts, &state, &["node", "test", "n1"]);
    assert_eq!(c, 0, "{out}");
    // The backup direction through a forward on the node's loopback: every byte arrives.
    let (c, out, t) = hub(
        &hosts,
        &state,
        &["node", "test", "n1", "--throughput", "64"],
    );
    assert_eq!(c, 0, "{out}");
    assert_eq!(t["throughput"]["bytes"], 64u64 << 20, "{t:#}");
    assert!(t["throughput"]["mib_per_sec"].as_f64().unwrap() > 0.0);
    drop(sshd);
    // With sendense-sna as the forced command: its node commands run, nothing else does.
    let forced = format!(r#"{options},command="{sna} ssh-command""#);
    let sshd = Sshd::start(&hosts, &dir.path().join("sshd3"), &forced);
    let (c, out, _) = add(&sshd, "n4");
    assert_eq!(c, 0, "{out}");
    let (c, out, t) = hub(&hosts, &state, &["node", "test", "n4", "--throughput", "8"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(t["throughput"]["bytes"], 8u64 << 20, "{t:#}");
    let (c, out, _) = hub(
        &hosts,
        &state,
        &["node", "install", "n4", "--to", "/tmp/x/sendense-sna"],
    );
    assert_ne!(c, 0, "{out}");
    assert!(
        out.contains("runs only sendense-sna's node commands"),
        "{out}"
    );
    drop(sshd);
    // Without port-forwarding the node still answers, but no data could travel: named.
    let sshd = Sshd::start(&hosts, &dir.path().join("sshd1"), "restrict");
    let (c, out, _) = add(&sshd, "n3");
    assert_eq!(c, 0, "{out}");
    let (c, out, _) = hub(&hosts, &state, &["node", "test", "n3", "--throughput", "8"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("refused to forward"), "{out}");
    drop(sshd);
    // The same key, accepted only from another address.
    let sshd = Sshd::start(
        &hosts,
        &dir.path().join("sshd2"),
        r#"restrict,from="192.0.2.1""#,
    );
    let (c, out, _) = add(&sshd, "n2");
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("did not accept the key"), "{out}");
}

/// A live two-disk VM on the node: its disks (raw references that mirror every guest write),
/// the VM itself in the node's namespace, and the hub registered with it.
struct NodeVm {
    vm: sendense_testkit::QemuVm,
    refs: Vec<PathBuf>,
}

impl NodeVm {
    /// Reached at the node's address.
    fn start(rig: &Rig) -> NodeVm {
        NodeVm::start_via(rig, &format!("root@{NODE_ADDR}"))
    }

    /// Reached with `--ssh SSH`.
    fn start_via(rig: &Rig, ssh: &str) -> NodeVm {
        let d = rig.dir.path();
        let mut images = Vec::new();
        let mut refs = Vec::new();
        for (i, size) in ["24M", "8M"].iter().enumerate() {
            images.push(sendense_testkit::create_image(
                &d.join(format!("disk{i}.qcow2")),
                "qcow2",
                size,
            ));
            refs.push(sendense_testkit::create_image(
                &d.join(format!("ref{i}.raw")),
                "raw",
                size,
            ));
        }
        let disks: Vec<(&str, &Path)> = images.iter().map(|p| ("qcow2", p.as_path())).collect();
        let vm = sendense_testkit::QemuVm::start_with(
            rig.hosts.in_node("qemu-system-x86_64"),
            d,
            "pg",
            &disks,
        );
        let sna = sna();
        let (c, out, _) = rig.add_via(
            "n1",
            ssh,
            &["--accept-host-key", "--sna-path", sna.to_str().unwrap()],
        );
        assert_eq!(c, 0, "{out}");
        let qmp = vm.qmp.to_str().unwrap();
        let (c, out, _) = rig.hub(&["vm", "add", "pg", "--node", "n1", "--qmp", qmp]);
        assert_eq!(c, 0, "{out}");
        NodeVm { vm, refs }
    }

    /// A guest write, mirrored into the reference.
    fn write(&self, disk: usize, io: &str) {
        self.vm.guest_io(disk, io);
        sendense_testkit::qemu_io(&self.refs[disk], "raw", &[io]);
    }

    /// The references as they are now, kept for restore point `n`.
    fn keep(&self, n: usize) -> Vec<PathBuf> {
        self.refs
            .iter()
            .map(|r| {
                let kept = r.with_extension(format!("{n}.raw"));
                std::fs::copy(r, &kept).unwrap();
                kept
            })
            .collect()
    }

    /// Nothing of a backup is left in QEMU: no node, job or export of Sendense's, and each
    /// disk holds exactly the checkpoint the catalog records, recording.
    fn assert_clean(&self, rig: &Rig) {
        let nodes = self
            .vm
            .qmp("query-named-block-nodes", serde_json::json!({}));
        let names: Vec<&str> = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["node-name"].as_str())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with("sd")),
            "fleecing nodes left in QEMU: {names:?}"
        );
        assert_eq!(
            self.vm.qmp("query-block-jobs", serde_json::json!({})),
            serde_json::json!([])
        );
        assert_eq!(
            self.vm.qmp("query-block-exports", serde_json::json!({})),
            serde_json::json!([])
        );
        let (_, _, shown) = rig.hub(&["vm", "show", "pg"]);
        let block = self.vm.qmp("query-block", serde_json::json!({}));
        for (i, disk) in shown["disks"].as_array().unwrap().iter().enumerate() {
            let bitmaps: Vec<(String, bool)> = block[i]["inserted"]["dirty-bitmaps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|b| {
                    (
                        b["name"].as_str().unwrap().to_string(),
                        b["recording"].as_bool().unwrap(),
                    )
                })
                .collect();
            let recorded = disk["checkpoint"].as_str().unwrap().to_string();
            assert_eq!(bitmaps, [(recorded, true)], "disk {i}: {shown:#}");
        }
    }
}

/// Every restore point of VM `pg` restores, as raw images, to exactly its kept references.
fn assert_points(rig: &Rig, points: &[(String, Vec<PathBuf>)]) {
    assert_points_of(rig, "pg", points)
}

/// [`assert_points`] of VM `vm` (disk `i` of the references is key 2000 + i).
fn assert_points_of(rig: &Rig, vm: &str, points: &[(String, Vec<PathBuf>)]) {
    let keyed: Vec<RestorePoint> = points
        .iter()
        .map(|(id, refs)| (id.clone(), (2000..).zip(refs.iter().cloned()).collect()))
        .collect();
    sendense_testkit::assert_restore_points(
        |args| {
            let (c, text, _) = rig.hub(args);
            (c, text)
        },
        rig.dir.path(),
        vm,
        &keyed,
    );
}

/// Nothing of a job is left on the hub (exports, partial images, scratch) or in the node's
/// state (its scratch directories), and no `sendense-sna` runs on the node.
fn assert_nothing_left(rig: &Rig, node_state: &Path) {
    let (_, _, exports) = rig.hub(&["nbd", "list"]);
    assert_eq!(exports, serde_json::json!([]), "exports left");
    let partial: Vec<PathBuf> = sendense_testkit::walk(&rig.dir.path().join("repo"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");
    let jobs: Vec<_> = std::fs::read_dir(node_state.join("jobs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(jobs.is_empty(), "node scratch left: {jobs:?}");
    assert!(
        sendense_testkit::holds_within(std::time::Duration::from_secs(20), || {
            node_commands(node_state).is_empty()
        }),
        "commands still run on the node: {:?}",
        node_commands(node_state)
    );
}

/// The processes the node runs for the hub (those with `node_state` as their state), by pid:
/// still there after the sshd that started them is gone.
fn node_commands(node_state: &Path) -> Vec<u32> {
    let marker = format!("SENDENSE_SNA_STATE={}", node_state.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Full and incrementals of a live two-disk VM on the node, through the SSH connection over a
/// link with 20 ms of round trip, the node account restricted as the guide documents: each
/// restore point exact; a data connection dropped in the middle of a transfer is made again
/// and the backup completes; nothing is left on either side.
#[test]
fn a_live_vm_on_a_node_is_backed_up_through_ssh_exactly() {
    use sendense_testkit::hosts::HUB_ADDR;
    let node_state = tempfile::tempdir().unwrap();
    let restricted = format!(
        r#"restrict,port-forwarding,permitlisten="127.0.0.1:*",from="{HUB_ADDR}",command="{} ssh-command""#,
        sna().display()
    );
    let rig = Rig::with(
        &[
            ("SENDENSE_SNA_STATE", node_state.path().to_str().unwrap()),
            ("SENDENSE_TEST_PAUSE_AT", "sna.transfer-midway:2500"),
        ],
        &restricted,
    );
    let relay = DelayRelay::start(
        &rig.hosts,
        &format!("{NODE_ADDR}:22"),
        std::time::Duration::from_millis(20),
    );
    let vm = NodeVm::start_via(&rig, &format!("root@127.0.0.1:{}", relay.port));
    let mut points = Vec::new();
    vm.write(0, "write -P 0x51 0 6M");
    vm.write(1, "write -P 0x52 1M 2M");
    let (c, out, full) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(full["disks"][0]["mode"], "full", "{full:#}");
    points.push((full["backup"].as_str().unwrap().to_string(), vm.keep(1)));
    vm.assert_clean(&rig);

    // The transfer's own connection dropped while data moves: tried again, still exact.
    vm.write(0, "write -P 0x53 10M 1M");
    vm.write(1, "write -z 1M 64k");
    let mut backup = rig.hosts.in_hub(BIN);
    backup
        .args(["backup", "start", "pg", "--json"])
        .env("SENDENSE_HOME", &rig.state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let running = backup.spawn().unwrap();
    assert!(
        sendense_testkit::holds_within(std::time::Duration::from_secs(30), || {
            rig.sshd.commands().iter().any(|c| c.contains("transfer"))
        }),
        "no transfer started on the node"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        rig.sshd.drop_session_of("--json transfer"),
        "{:?}",
        rig.sshd.commands()
    );
    let o = running.wait_with_output().unwrap();
    let text = output_text(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    let inc = sendense_testkit::json_document(&o.stdout);
    assert_eq!(inc["disks"][0]["mode"], "incremental", "{inc:#}");
    assert_eq!(inc["disks"][1]["mode"], "incremental", "{inc:#}");
    let job = inc["job"].as_i64().unwrap().to_string();
    let (_, _, log) = rig.hub(&["job", "log", &job]);
    assert!(
        log.to_string().contains("trying again"),
        "the lost connection was not tried again: {log}"
    );
    points.push((inc["backup"].as_str().unwrap().to_string(), vm.keep(2)));

    vm.write(0, "write -P 0x54 20M 64k");
    let (c, out, inc2) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(inc2["disks"][0]["mode"], "incremental", "{inc2:#}");
    // Only what changed moved.
    assert_eq!(inc2["disks"][0]["bytes_read"], 64 << 10, "{inc2:#}");
    points.push((inc2["backup"].as_str().unwrap().to_string(), vm.keep(3)));
    vm.assert_clean(&rig);
    assert_nothing_left(&rig, node_state.path());
    assert_points(&rig, &points);
    vm.vm.quit();
}

/// The node drops off the network in the middle of a transfer, for longer than the transfer's
/// attempts: the backup fails; the hub removes its exports and partial images; the node's
/// `sendense-sna` notices its session ended and removes QEMU's fleecing job, export and new
/// checkpoint by itself. Back online, the next backup is incremental and exact.
#[test]
fn a_node_lost_mid_transfer_is_left_clean_and_the_chain_goes_on() {
    let node_state = tempfile::tempdir().unwrap();
    let mut rig = Rig::with_env(&[
        ("SENDENSE_SNA_STATE", node_state.path().to_str().unwrap()),
        ("SENDENSE_TEST_PAUSE_AT", "sna.transfer-midway:1500"),
    ]);
    let vm = NodeVm::start(&rig);
    vm.write(0, "write -P 0x61 0 4M");
    vm.write(1, "write -P 0x62 0 1M");
    let (c, out, full) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    let mut points = vec![(full["backup"].as_str().unwrap().to_string(), vm.keep(1))];

    vm.write(0, "write -P 0x63 4M 1M");
    let mut backup = rig.hosts.in_hub(BIN);
    backup
        .args(["backup", "start", "pg"])
        .env("SENDENSE_HOME", &rig.state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let running = backup.spawn().unwrap();
    assert!(
        sendense_testkit::holds_within(std::time::Duration::from_secs(30), || {
            rig.sshd.commands().iter().any(|c| c.contains("transfer"))
        }),
        "no transfer started on the node"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    rig.sshd.stop();
    let o = running.wait_with_output().unwrap();
    let text = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("after 3 attempt(s)"), "{text}");
    // The node's side ended by itself and left QEMU as before the backup; the hub left
    // nothing either.
    assert!(
        sendense_testkit::holds_within(std::time::Duration::from_secs(20), || {
            node_commands(node_state.path()).is_empty()
        }),
        "sendense-sna still runs on the node"
    );
    vm.assert_clean(&rig);
    assert_nothing_left(&rig, node_state.path());

    rig.sshd.restart(&rig.hosts);
    vm.write(1, "write -P 0x64 2M 64k");
    let (c, out, inc) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    for disk in inc["disks"].as_array().unwrap() {
        assert_eq!(disk["mode"], "incremental", "{inc:#}");
    }
    points.push((inc["backup"].as_str().unwrap().to_string(), vm.keep(2)));
    vm.assert_clean(&rig);
    assert_nothing_left(&rig, node_state.path());
    assert_points(&rig, &points);
    vm.vm.quit();
}

/// A stopped VM's image files on the node: registered and backed up through the node's
/// `sendense-sna` (qemu-nbd runs there, dies with it); full, then incremental, each exact;
/// nothing left on the node.
#[test]
fn an_image_vm_on_a_node_is_backed_up_through_it() {
    let node_state = tempfile::tempdir().unwrap();
    let rig = Rig::with_env(&[("SENDENSE_SNA_STATE", node_state.path().to_str().unwrap())]);
    let d = rig.dir.path();
    let qcow2 = sendense_testkit::create_image(&d.join("os.qcow2"), "qcow2", "16M");
    let raw = sendense_testkit::create_image(&d.join("data.raw"), "raw", "4M");
    sendense_testkit::qemu_io(&qcow2, "qcow2", &["write -P 0x71 1M 3M"]);
    sendense_testkit::qemu_io(&raw, "raw", &["write -P 0x72 0 1M"]);
    let sna = sna();
    let (c, out, _) = rig.add(
        "n1",
        &["--accept-host-key", "--sna-path", sna.to_str().unwrap()],
    );
    assert_eq!(c, 0, "{out}");
    let (c, out, added) = rig.hub(&[
        "vm",
        "add",
        "img",
        "--node",
        "n1",
        "--disk",
        qcow2.to_str().unwrap(),
        "--disk",
        raw.to_str().unwrap(),
    ]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(added["node"], "n1", "{added:#}");
    assert_eq!(added["disks"][0]["size_bytes"], 16 << 20, "{added:#}");
    // A file of the node is one VM's only; a relative path is no node path.
    let (c, out, _) = rig.hub(&[
        "vm",
        "add",
        "again",
        "--node",
        "n1",
        "--disk",
        qcow2.to_str().unwrap(),
    ]);
    assert_eq!(c, 5, "{out}");
    let (c, out, _) = rig.hub(&["vm", "add", "rel", "--node", "n1", "--disk", "os.qcow2"]);
    assert_eq!(c, 2, "{out}");

    let keep = |n: usize| -> Vec<PathBuf> {
        [(&qcow2, "qcow2"), (&raw, "raw")]
            .iter()
            .enumerate()
            .map(|(i, (f, fmt))| {
                let kept = d.join(format!("kept{n}-{i}.raw"));
                sendense_testkit::run(
                    "qemu-img",
                    &[
                        "convert",
                        "-f",
                        fmt,
                        "-O",
                        "raw",
                        f.to_str().unwrap(),
                        kept.to_str().unwrap(),
                    ],
                );
                kept
            })
            .collect()
    };
    let (c, out, full) = rig.hub(&["backup", "start", "img"]);
    assert_eq!(c, 0, "{out}");
    let mut points = vec![(full["backup"].as_str().unwrap().to_string(), keep(1))];
    sendense_testkit::qemu_io(&qcow2, "qcow2", &["write -P 0x73 8M 64k"]);
    sendense_testkit::qemu_io(&raw, "raw", &["write -P 0x74 2M 64k"]);
    let (c, out, inc) = rig.hub(&["backup", "start", "img"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(inc["disks"][0]["mode"], "incremental", "{inc:#}");
    assert_eq!(inc["disks"][0]["bytes_read"], 64 << 10, "{inc:#}");
    assert_eq!(inc["disks"][1]["mode"], "full", "raw: {inc:#}");
    points.push((inc["backup"].as_str().unwrap().to_string(), keep(2)));
    assert_nothing_left(&rig, node_state.path());
    assert_points_of(&rig, "img", &points);
}

/// A VMware VM backed up through a node: the vCenter (the simulator) is in the node's network,
/// the node's sendense-sna logs in to it and serves the snapshot with the node's own nbdkit and
/// VDDK (the stand-in, set by the node's environment; the hub has none). Full and two
/// incrementals exact, only the changed areas moved, the snapshots named with the hub's id and
/// removed, nothing left on the node.
#[test]
fn a_vmware_vm_is_backed_up_through_a_node() {
    let node_state = tempfile::tempdir().unwrap();
    let (rig, sim) = Rig::set_up("", |hosts, d| {
        let datastores = d.join("datastores");
        let sim = Vcsim::start_in(
            hosts.in_node(vcsim::binary().to_str().unwrap()),
            &d.join("vcsim"),
            "user",
            "pw-node",
            &[
                "-address",
                NODE_ADDR,
                "-layout",
                "-cbt",
                datastores.to_str().unwrap(),
            ],
        );
        let vars = [
            ("SENDENSE_SNA_STATE", node_state.path().to_path_buf()),
            ("SENDENSE_SNA_VDDK_LIBDIR", vddk::standin_libdir()),
            ("SENDENSE_SNA_VDDK_PLUGIN", vddk::plugin()),
            ("VDDK_STANDIN_DATASTORES", datastores),
            ("VDDK_STANDIN_LOG", d.join("vddk-standin.log")),
            ("VDDK_STANDIN_PASSWORD", "pw-node".into()),
            ("VDDK_STANDIN_THUMBPRINT", sim.thumbprint.clone().into()),
        ];
        let env = vars
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
            .collect();
        (env, sim)
    });
    let d = rig.dir.path();
    let vm_dir = d.join("datastores/LocalDS_0/DC0_H0_VM0");
    std::fs::create_dir_all(&vm_dir).unwrap();
    let disk = |key: u32| vm_dir.join(format!("disk-{key}.vmdk"));
    for (key, mib) in [(2000, 64), (2001, 32), (2016, 16)] {
        sendense_testkit::create_image(&disk(key), "raw", &format!("{mib}M"));
    }
    let write = |key: u32, io: &str| sendense_testkit::qemu_io(&disk(key), "raw", &[io]);
    let keep = |n: usize| -> Vec<(u32, PathBuf)> {
        [2000, 2001, 2016]
            .into_iter()
            .map(|key| {
                let kept = d.join(format!("kept{n}-{key}.raw"));
                std::fs::copy(disk(key), &kept).unwrap();
                (key, kept)
            })
            .collect()
    };
    let pw = vcsim::password_file(&d.join("pw"), "pw-node", 0o600);
    let sna = sna();
    let (c, out, _) = rig.add(
        "n1",
        &["--accept-host-key", "--sna-path", sna.to_str().unwrap()],
    );
    assert_eq!(c, 0, "{out}");
    let add = sim.add_args("vc", &pw);
    let (c, out, _) = rig.hub(&add.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(c, 0, "{out}");
    let (c, out, added) = rig.hub(&[
        "vm",
        "add",
        "pg",
        "--vcenter",
        "vc",
        "--path",
        "/DC0/vm/DC0_H0_VM0",
        "--node",
        "n1",
    ]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(added["node"], "n1", "{added:#}");
    let keys: Vec<&Value> = added["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["key"])
        .collect();
    assert_eq!(keys, [2000, 2001, 2016], "{added:#}");

    write(2000, "write -P 0x31 0 2M");
    write(2016, "write -P 0x32 8M 1M");
    let (c, out, full) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    let mut points = vec![(full["backup"].as_str().unwrap().to_string(), keep(1))];
    for i in 0..6 {
        write(2001, &format!("write -P 0x33 {}M 64k", 2 + 3 * i));
    }
    let (c, out, inc) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    let moved: Vec<(&str, u64)> = inc["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["mode"].as_str().unwrap(),
                d["bytes_read"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        moved,
        [
            ("incremental", 0),
            ("incremental", 6 * (64 << 10)),
            ("incremental", 0)
        ],
        "{inc:#}"
    );
    points.push((inc["backup"].as_str().unwrap().to_string(), keep(2)));
    write(2000, "write -P 0x34 40M 1M");
    let (c, out, third) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(third["disks"][0]["bytes_read"], 1 << 20, "{third:#}");
    points.push((third["backup"].as_str().unwrap().to_string(), keep(3)));

    // The node's VDDK read the snapshots: the hub's configuration names none that exists.
    let log = std::fs::read_to_string(d.join("vddk-standin.log")).unwrap();
    let connects: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(connects.len(), 9, "{log}");
    for c in &connects {
        assert_eq!(c["thumbprint"], sim.thumbprint.as_str(), "{c}");
        assert!(
            c["snapshotRef"].as_str().unwrap().starts_with("snapshot-"),
            "{c}"
        );
    }
    // Each snapshot was named with the job and this hub's id, and removed.
    let job = full["job"].as_i64().unwrap().to_string();
    let (_, _, log) = rig.hub(&["job", "log", &job]);
    let log = log.to_string();
    let named = log
        .split(&format!("snapshot `sd{job}-"))
        .nth(1)
        .and_then(|rest| rest.split_once("-sendense-"))
        .map(|(hub, _)| hub.to_string());
    let meta = std::fs::read_to_string(d.join("repo/sendense-repo.yaml")).unwrap();
    let hub_id = meta
        .lines()
        .find_map(|l| l.trim().strip_prefix("hub: "))
        .unwrap();
    assert_eq!(named.as_deref(), Some(&hub_id[..8]), "{log}");
    let snapshots = || -> Vec<PathBuf> {
        sendense_testkit::walk(&d.join("vcsim"))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "vmsn"))
            .collect()
    };
    assert!(snapshots().is_empty(), "snapshots left: {:?}", snapshots());
    assert_nothing_left(&rig, node_state.path());

    // The hub killed while the node holds the snapshot: the node's session sees its input
    // end and removes it; the next backup is exact.
    let o = rig
        .hosts
        .in_hub(BIN)
        .args(["backup", "start", "pg"])
        .env("SENDENSE_HOME", &rig.state)
        .env("SENDENSE_TEST_CRASH_AT", "backup.snapshot-taken")
        .output()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&o.status),
        Some(9),
        "{}",
        sendense_testkit::output_text(&o)
    );
    assert!(
        sendense_testkit::holds_within(std::time::Duration::from_secs(30), || snapshots()
            .is_empty()),
        "the node kept the snapshot: {:?}",
        snapshots()
    );
    write(2016, "write -P 0x35 3M 64k");
    let (c, out, after) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(after["disks"][2]["mode"], "incremental", "{after:#}");
    assert_eq!(after["disks"][2]["bytes_read"], 64 << 10, "{after:#}");
    points.push((after["backup"].as_str().unwrap().to_string(), keep(4)));
    assert_nothing_left(&rig, node_state.path());

    // The vCenter's password is in nothing the hub shows or the node keeps.
    let mut shown = log.clone();
    for args in [
        &["vm", "show", "pg"][..],
        &["job", "list"],
        &["vcenter", "show", "vc"],
    ] {
        shown.push_str(&rig.hub(args).1);
    }
    shown.push_str(&out);
    for f in sendense_testkit::walk(node_state.path()) {
        shown.push_str(&String::from_utf8_lossy(
            &std::fs::read(f).unwrap_or_default(),
        ));
    }
    assert!(!shown.contains("pw-node"), "the password shows: {shown}");
    sendense_testkit::assert_restore_points(
        |args| {
            let (c, text, _) = rig.hub(args);
            (c, text)
        },
        d,
        "pg",
        &points,
    );
}
