//! Remote nodes: the hub reaches a node's `sendense-sna` over SSH — here two hosts in network
//! namespaces, a real OpenSSH sshd on the node, `sendense` in the hub's namespace.

use sendense_testkit::hosts::{Sshd, TwoHosts, NODE_ADDR};
use sendense_testkit::output_text;
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
    let doc = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), output_text(&o), doc)
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
        let dir = tempfile::tempdir().unwrap();
        let state = sendense_testkit::cli_hub(BIN, dir.path(), "r");
        let hosts = TwoHosts::create();
        let sshd = Sshd::start(&hosts, &dir.path().join("sshd"), "");
        Rig {
            dir,
            state,
            hosts,
            sshd,
        }
    }

    /// `sendense node add NAME --ssh root@NODE --identity KEY EXTRA...` in the hub.
    fn add(&self, name: &str, extra: &[&str]) -> (i32, String, Value) {
        let ssh = format!("root@{NODE_ADDR}");
        let key = self.sshd.client_key.to_str().unwrap();
        let mut args = vec!["node", "add", name, "--ssh", &ssh, "--identity", key];
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
    // Backups through nodes are not there yet: refused, nothing started on the node.
    let (c, out, _) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("not available"), "{out}");
    let bitmaps = vm.qmp("query-block", serde_json::json!({}));
    assert!(
        !bitmaps.to_string().contains("sendense-"),
        "nothing of a backup in the VM: {bitmaps}"
    );
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
