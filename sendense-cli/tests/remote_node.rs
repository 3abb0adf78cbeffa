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

#[test]
fn nodes_are_added_with_their_host_key_pinned_and_their_version_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = sendense_testkit::cli_hub(BIN, d, "r");
    let hosts = TwoHosts::create();
    let sshd = Sshd::start(&hosts, &d.join("sshd"), "");
    let key = sshd.client_key.to_str().unwrap().to_string();
    let ssh = format!("root@{NODE_ADDR}");
    let sna = sna();
    let add = |name: &str, extra: &[&str]| {
        let mut args = vec!["node", "add", name, "--ssh", &ssh, "--identity", &key];
        args.extend_from_slice(extra);
        hub(&hosts, &state, &args)
    };
    let sna_path = sna.to_str().unwrap();

    // First contact: nothing is pinned silently; the error shows the node's key.
    let (c, out, _) = add("n1", &["--sna-path", sna_path]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(&sshd.fingerprint) && out.contains("--host-key"),
        "{out}"
    );
    // A fingerprint that is not the node's: refused, both named.
    let wrong = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (c, out, _) = add("n1", &["--sna-path", sna_path, "--host-key", wrong]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(wrong) && out.contains(&sshd.fingerprint),
        "{out}"
    );
    let (c, out, _) = add("n1", &["--sna-path", sna_path, "--host-key", "md5:00"]);
    assert_eq!(c, 2, "{out}");
    let (_, _, list) = hub(&hosts, &state, &["node", "list"]);
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
    let fp = sshd.fingerprint.as_str();
    let (c, out, _) = add(
        "n1",
        &["--sna-path", fake.to_str().unwrap(), "--host-key", fp],
    );
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains("0.0.1") && out.contains("sendense node install n1"),
        "{out}"
    );
    let (c, out, _) = add(
        "n1",
        &["--sna-path", "/nowhere/sendense-sna", "--host-key", fp],
    );
    assert_eq!(c, 4, "{out}");
    assert!(out.contains("node install"), "{out}");

    // Accepted explicitly: pinned, and shown.
    let (c, out, n) = add("n1", &["--sna-path", sna_path, "--accept-host-key"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(n["host_key"], sshd.fingerprint.as_str());
    assert_eq!(n["sna_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(n["user"], "root");
    assert_eq!(n["port"], 22);
    let (c, out, t) = hub(&hosts, &state, &["node", "test", "n1"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(t["hello"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(t["host_key"], sshd.fingerprint.as_str());
    let (c, out, _) = add("n2", &["--sna-path", sna_path, "--host-key", fp]);
    assert_eq!(c, 0, "{out}");

    // The node's host key changes: refused, both fingerprints named, nothing sent.
    let before = sshd.fingerprint.clone();
    drop(sshd);
    let sshd = Sshd::start(&hosts, &d.join("sshd2"), "");
    assert_ne!(sshd.fingerprint, before);
    let (c, out, _) = hub(&hosts, &state, &["node", "test", "n1"]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(&before) && out.contains(&sshd.fingerprint),
        "{out}"
    );
    let log = std::fs::read_to_string(&sshd.log).unwrap();
    assert!(!log.contains("Accepted publickey"), "{log}");

    for name in ["n1", "n2"] {
        let (c, out, _) = hub(&hosts, &state, &["node", "remove", name]);
        assert_eq!(c, 0, "{out}");
    }
    let (_, _, list) = hub(&hosts, &state, &["node", "list"]);
    assert_eq!(list, serde_json::json!([]));
}
