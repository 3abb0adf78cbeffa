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

/// A source session that hears nothing from its hub (a hub whose host or network died sends no
/// end of input) ends by itself once it was idle too long, as if its input had ended; pings
/// keep an idle session alive.
#[test]
fn a_source_session_without_word_from_its_hub_ends_by_itself() {
    use std::io::Write;
    let sna = std::path::Path::new(env!("CARGO_BIN_EXE_sendense")).with_file_name("sendense-sna");
    let start = || {
        std::process::Command::new(&sna)
            .arg("source")
            .env("SENDENSE_SNA_SESSION_IDLE_SECS", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Pinged every 300 ms for 3 s: still there; then silent: gone within the idle time.
    let mut pinged = start();
    let mut input = pinged.stdin.take().unwrap();
    for _ in 0..10 {
        writeln!(input, r#"{{"call": "ping"}}"#).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(
            pinged.try_wait().unwrap().is_none(),
            "a pinged session ended"
        );
    }
    let ended = sendense_testkit::holds_within(std::time::Duration::from_secs(10), || {
        pinged.try_wait().unwrap().is_some()
    });
    if !ended {
        let _ = pinged.kill();
    }
    let out = pinged.wait_with_output().unwrap();
    assert!(ended, "a silent session did not end by itself");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no word from the hub"), "{said}");
    drop(input);
}

/// Reached through a restricted key (`sendense-sna ssh-command`), a node takes only scratch
/// names it places itself: a scratch directory or an interrupted job's directory named by an
/// absolute path is refused before anything is created or removed.
#[test]
fn a_restricted_node_takes_no_directory_the_hub_names_by_path() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("keep");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("file"), "mine").unwrap();
    let sna = std::path::Path::new(env!("CARGO_BIN_EXE_sendense")).with_file_name("sendense-sna");
    let mut node = std::process::Command::new(&sna)
        .arg("source")
        .env("SENDENSE_SNA_RESTRICTED", "1")
        .env("SENDENSE_SNA_STATE", dir.path().join("state"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut input = node.stdin.take().unwrap();
    let mut output = std::io::BufReader::new(node.stdout.take().unwrap());
    let victim_text = victim.to_str().unwrap();
    let calls = [
        r#"{"call": "open", "protocol": 2, "kind": "qemu", "options": {"qmp": "/nonexistent/qmp.sock"}}"#.to_string(),
        format!(
            r#"{{"call": "snapshot", "req": {{"job": 7, "vm": "x", "checkpoint": "c", "scratch": "{victim_text}", "disks": []}}}}"#
        ),
        format!(
            r#"{{"call": "repair", "req": {{"keep_job": null, "interrupted": [[3, "{victim_text}"]], "disks": [], "retired": []}}}}"#
        ),
    ];
    let mut answers = Vec::new();
    for call in &calls {
        writeln!(input, "{call}").unwrap();
        let mut line = String::new();
        output.read_line(&mut line).unwrap();
        answers.push(line);
    }
    drop(input);
    let _ = node.wait();
    assert!(answers[0].contains("\"ok\""), "{answers:?}");
    for answer in &answers[1..] {
        assert!(
            answer.contains("takes only its own scratch directories"),
            "{answers:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(victim.join("file")).unwrap(),
        "mine"
    );
}
