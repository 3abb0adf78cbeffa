//! The source side behind the process boundary: with `source_side: node`, a `sendense-sna
//! source` process drives the live VM (discover, snapshot, checkpoints, finish, repair) and the
//! hub never talks to QEMU itself; the backups are exact and nothing is left.

mod common;

use common::*;

#[test]
fn sendense_sna_runs_the_source_side_of_a_live_vm_backup() {
    let lab = Lab::new(&[32, 16], "source_side: node\ntransfer: process\n");
    lab.write(0, "write -P 0x31 0 4M");
    lab.write(1, "write -P 0x32 1M 2M");
    let (code, _, full, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    lab.assert_point(&full);
    lab.write(0, "write -P 0x33 8M 1M");
    lab.write(1, "write -z 1M 64k");
    let (code, _, inc, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(inc["disks"][0]["mode"], "incremental", "{inc}");
    lab.assert_point(&inc);
    // The snapshot was taken on the node's side of the boundary: its log lines came back
    // through the session.
    let job = inc["job"].as_i64().unwrap().to_string();
    let log = json(&lab.state, &["job", "log", &job]);
    assert!(
        log.to_string()
            .contains("node: QMP transaction with 6 actions for 2 disk(s)"),
        "the snapshot's QMP transaction was not the node's: {log}"
    );
    lab.assert_nothing_left();
    lab.assert_restores(&inc);
}

#[test]
fn a_killed_hub_or_node_leaves_nothing_in_the_vm_and_the_chain_goes_on() {
    use std::os::unix::process::ExitStatusExt;
    let lab = Lab::new(&[32], "source_side: node\n");
    lab.write(0, "write -P 0x41 0 2M");
    let (code, _, _, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    // The hub killed after the node's snapshot; then the node killed inside its snapshot (the
    // crash points reach the node too: it inherits the hub's environment).
    for (i, (point, hub_dies)) in [
        ("backup.snapshot-taken", true),
        ("qemu.snapshot-taken", false),
    ]
    .iter()
    .enumerate()
    {
        lab.write(0, &format!("write -P {} 4M 64k", 0x42 + i));
        let out = sendense_cmd(&lab.state, &["backup", "start", "pgtest1"])
            .env("SENDENSE_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        if *hub_dies {
            assert_eq!(out.status.signal(), Some(9), "{point}");
        } else {
            assert_eq!(
                out.status.code(),
                Some(1),
                "{point}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The next command repairs the VM through a node of its own.
        json(&lab.state, &["cleanup"]);
        lab.assert_nothing_left();
    }
    lab.write(0, "write -P 0x4f 6M 64k");
    let (code, _, inc, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(inc["disks"][0]["mode"], "incremental", "{inc}");
    lab.assert_point(&inc);
}
