//! Remote nodes: the hub reaches a node's `sendense-sna` over SSH. Two hosts in network
//! namespaces, a real OpenSSH sshd on the node.

use sendense_testkit::hosts::{Sshd, TwoHosts, NODE_ADDR};

#[test]
fn the_rig_reaches_the_node_over_openssh() {
    let dir = tempfile::tempdir().unwrap();
    let hosts = TwoHosts::create();
    let sshd = Sshd::start(&hosts, &dir.path().join("sshd"), "");
    let known = dir.path().join("known_hosts");
    let host_pub = std::fs::read_to_string(dir.path().join("sshd/host_key.pub")).unwrap();
    std::fs::write(&known, format!("{NODE_ADDR} {host_pub}")).unwrap();
    let out = hosts
        .in_hub("ssh")
        .args(["-i", sshd.client_key.to_str().unwrap()])
        .args(["-o", &format!("UserKnownHostsFile={}", known.display())])
        .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
        .arg(format!("root@{NODE_ADDR}"))
        .arg("echo hello from $(cat /proc/sys/kernel/hostname)")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&sshd.log).unwrap_or_default()
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello from"));
    assert!(sshd.fingerprint.starts_with("SHA256:"));
}
