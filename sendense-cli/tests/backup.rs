//! `sendense backup start` end to end: a real QEMU VM with two disks, real qemu-nbd targets, a
//! real repository. Every guest write is mirrored into a raw reference file, so each backup is
//! compared byte for byte with the disk as it was at the snapshot instant.

mod common;

use common::*;
use sendense_testkit::{
    add_image_vm, allocated_bytes, create_image, images_equal, nbdkit, qcow2_with, qemu_io,
    temp_hub, walk,
};
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn full_then_three_incrementals_match_the_vm_at_each_snapshot() {
    let lab = Lab::new(&[128, 64], "");
    lab.write(0, "write -P 0x11 0 16M");
    lab.write(1, "write -P 0x12 4M 8M");
    let (code, events, full, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    // A completed backup leaves nothing for cleanup: no exports, ports, locks or scratch files.
    assert_no_cleanup_needed(&lab.state);
    assert_eq!(
        reasons(&full),
        [
            (2000, "full".into(), "first backup in repository".into()),
            (2001, "full".into(), "first backup in repository".into())
        ]
    );
    lab.assert_point(&full);
    lab.assert_restores(&full);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for k in [
        "job_started",
        "step",
        "snapshot_taken",
        "disk_started",
        "disk_finished",
        "job_finished",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    insta::assert_json_snapshot!("backup_summary", full, {
        ".backup" => "[id]", ".job" => "[job]", ".seconds" => "[s]",
        ".disks[].file" => "[file]", ".disks[].seconds" => "[s]", ".disks[].mib_per_sec" => "[rate]",
    });

    let mut previous = full.clone();
    let rounds: [&[(usize, &str)]; 3] = [
        &[
            (0, "write -P 0x21 1M 1M"),
            (0, "write -z 8M 2M"),
            (1, "write -P 0x22 1048064 1024"),
        ],
        &[(0, "write -P 0x31 100M 3M"), (1, "write -z 4M 1M")],
        &[
            (0, "write -P 0x41 1048576 4096"),
            (0, "write -P 0x42 127M 1M"),
        ],
    ];
    for (round, writes) in rounds.iter().enumerate() {
        let changed: u64 = writes.iter().map(|(_, io)| io_len(io)).sum();
        for (disk, io) in writes.iter() {
            lab.write(*disk, io);
        }
        let (code, _, inc, err) = backup(&lab.state, &[]);
        assert_eq!(code, 0, "round {round}: {err}");
        lab.assert_point(&inc);
        lab.assert_restores(&inc);
        for (i, d) in inc["disks"].as_array().unwrap().iter().enumerate() {
            assert_eq!(d["mode"], "incremental", "round {round}");
            // Incremental N is backed by backup N-1 of the same disk.
            assert_eq!(d["parent"], previous["backup"], "round {round}");
            let file = PathBuf::from(d["file"].as_str().unwrap());
            let backing = sendense_core::repo::chain::backing_file(&file)
                .unwrap()
                .unwrap();
            let prev_file = PathBuf::from(previous["disks"][i]["file"].as_str().unwrap());
            assert_eq!(backing, prev_file.file_name().unwrap().to_str().unwrap());
            let top = allocated_bytes(&file, "qcow2");
            assert!(
                top <= changed + 2 * M,
                "round {round}: incremental holds {top} bytes for {changed} changed"
            );
        }
        previous = inc;
    }
    let list = json(&lab.state, &["backup", "list", "--vm", "pgtest1"]);
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert_eq!(
        json(&lab.state, &["backup", "verify", "--vm", "pgtest1"])["ok"],
        true
    );
    let shown = json(
        &lab.state,
        &["backup", "show", previous["backup"].as_str().unwrap()],
    );
    for key in ["id", "vm", "repo", "status", "created_at", "disks"] {
        assert!(shown.get(key).is_some(), "{key}");
    }
    for key in ["key", "mode", "reason", "file", "parent", "bytes_written"] {
        assert!(shown["disks"][0].get(key).is_some(), "{key}");
    }
    let jobs = json(&lab.state, &["job", "list"]);
    assert!(jobs
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["status"] == "completed"));
    let backup_job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "backup")
        .unwrap();
    let log = json(&lab.state, &["job", "log", &backup_job["id"].to_string()]);
    assert!(log.as_array().unwrap().iter().any(|l| l["message"]
        .as_str()
        .unwrap()
        .contains("snapshot of 2 disk(s)")));
}

fn io_len(io: &str) -> u64 {
    let parse = |s: &str| -> u64 {
        if let Some(m) = s.strip_suffix('M') {
            m.parse::<u64>().unwrap() * M
        } else {
            s.parse().unwrap()
        }
    };
    let parts: Vec<&str> = io.split_whitespace().collect();
    parse(parts[parts.len() - 1])
}

#[test]
fn the_transfer_through_sendense_sna_gives_the_same_chain() {
    let lab = Lab::new(&[64, 32], "transfer: process\n");
    lab.write(0, "write -P 0x51 0 8M");
    let (code, events, full, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        events.iter().any(|e| e["event"] == "disk_finished"),
        "node events are forwarded"
    );
    lab.assert_point(&full);
    lab.write(1, "write -P 0x52 1M 1M");
    let (code, _, inc, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(inc["disks"][1]["mode"], "incremental");
    assert_eq!(inc["disks"][1]["bytes_read"], M);
    lab.assert_point(&inc);
    // The node wrote the digests in the scheme the hub asked for and said so.
    assert_eq!(
        json(&lab.state, &["backup", "verify", "--vm", "pgtest1"])["ok"],
        true
    );
}

#[test]
fn a_node_of_another_protocol_version_is_not_trusted() {
    // A sendense-sna of node protocol 1 (its summary a bare list, without the protocol it
    // speaks, nor whole-block writes confirmed): refused, its backup discarded.
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "local");
    let d = dir.path();
    let node = d.join("old-sendense-sna");
    std::fs::write(
        &node,
        "#!/bin/sh\ncat >/dev/null\necho '{\"summary\": [{\"key\": 2000, \"bytes_read\": 0, \
         \"bytes_written\": 0, \"bytes_zero\": 0, \"seconds\": 0.0}]}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    append_config(
        &state,
        &format!("transfer: process\nsna_path: {}\n", node.display()),
    );
    let disk = qcow2_with(&d.join("o.qcow2"), "8M", &["write -P 0xe1 0 1M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "pgtest1", &[&disk]);
    let (code, _, _, err) = backup(&state, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the node speaks node protocol 1; this hub speaks protocol 2"),
        "{err}"
    );
    assert_no_cleanup_needed(&state);
    let jobs = json(&state, &["job", "list"]);
    assert_eq!(jobs[0]["status"], "failed");
    assert_eq!(json(&state, &["backup", "list"]), serde_json::json!([]));
    let images: Vec<_> = walk(&d.join("repo"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("pgtest1/"))
        .filter(|p| p.is_file())
        .collect();
    assert!(images.is_empty(), "{images:?}");
}

#[test]
fn full_on_request_new_disks_and_lost_checkpoints() {
    let mut lab = Lab::new(&[64, 32], "");
    lab.write(0, "write -P 0x61 0 4M");
    assert_eq!(backup(&lab.state, &[]).0, 0);
    lab.write(0, "write -P 0x62 1M 1M");
    let (code, _, s, err) = backup(&lab.state, &["--full"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        reasons(&s),
        [
            (2000, "full".into(), "--full requested".into()),
            (2001, "full".into(), "--full requested".into())
        ]
    );
    assert!(s["disks"][0]["parent"].is_null());
    lab.assert_point(&s);

    // A disk hot-plugged into the VM gets the next key and a full; the others stay incremental.
    let extra = create_image(&lab.dir.path().join("disk2.qcow2"), "qcow2", "16M");
    lab.refs
        .push(create_image(&lab.dir.path().join("ref2.raw"), "raw", "16M"));
    let vm = lab.vm();
    vm.qmp(
        "blockdev-add",
        serde_json::json!({"driver": "qcow2", "node-name": "disk2",
        "file": {"driver": "file", "filename": extra.to_str().unwrap()}}),
    );
    vm.qmp(
        "device_add",
        serde_json::json!({"driver": "virtio-blk-pci", "drive": "disk2", "id": "vd2"}),
    );
    lab.write(2, "write -P 0x63 0 1M");
    lab.write(1, "write -P 0x64 0 64K");
    let (code, _, s, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        reasons(&s),
        [
            (
                2000,
                "incremental".into(),
                "changes since the previous backup".into()
            ),
            (
                2001,
                "incremental".into(),
                "changes since the previous backup".into()
            ),
            (2002, "full".into(), "new disk".into())
        ]
    );
    lab.assert_point(&s);

    // A deleted checkpoint: --incremental refuses with the reason, the default falls back.
    let shown = json(&lab.state, &["vm", "show", "pgtest1"]);
    let cp = shown["disks"][0]["checkpoint"]
        .as_str()
        .unwrap()
        .to_string();
    lab.vm().qmp(
        "block-dirty-bitmap-remove",
        serde_json::json!({"node": "disk0", "name": cp}),
    );
    let (code, _, _, err) = backup(&lab.state, &["--incremental"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("checkpoint missing on source"), "{err}");
    let (code, _, s, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        reasons(&s)[0],
        (2000, "full".into(), "checkpoint missing on source".into())
    );
    assert_eq!(reasons(&s)[1].1, "incremental");
    lab.assert_point(&s);
    lab.vm.take().unwrap().quit();
}

#[test]
fn kill_9_during_the_transfer_leaves_nothing_and_the_chain_goes_on() {
    let lab = Lab::new(
        &[256, 32],
        "copy: {connections: 1, requests: 1, request_size: 4096}\n",
    );
    lab.write(0, "write -P 0x71 0 8M");
    let (code, _, first, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    lab.write(0, "write -P 0x72 16M 200M");
    let mut child = lab.start_slow_backup();
    child.kill().unwrap();
    child.wait().unwrap();
    // Any next command reconciles.
    let jobs = json(&lab.state, &["job", "list"]);
    assert_eq!(jobs[0]["status"], "failed", "{jobs}");
    lab.assert_nothing_left();
    // The earlier backup is intact: its whole chain verifies against the recorded digests.
    let verified = json(
        &lab.state,
        &["backup", "verify", first["backup"].as_str().unwrap()],
    );
    assert_eq!(verified["ok"], true, "{verified}");
    // Still incremental-capable, and the changes made before the kill are not lost.
    lab.write(1, "write -P 0x73 0 64K");
    std::fs::write(
        lab.state.join("config.yaml"),
        std::fs::read_to_string(lab.state.join("config.yaml"))
            .unwrap()
            .replace("request_size: 4096", "request_size: 1048576")
            .replace("requests: 1,", "requests: 8,"),
    )
    .unwrap();
    let (code, _, s, err) = backup(&lab.state, &["--incremental"]);
    assert_eq!(code, 0, "{err}");
    lab.assert_point(&s);
}

#[test]
fn a_second_backup_of_a_busy_vm_is_refused_and_the_first_completes() {
    let lab = Lab::new(
        &[256, 16],
        "copy: {connections: 1, requests: 1, request_size: 4096}\n",
    );
    lab.write(0, "write -P 0x81 0 128M");
    let child = lab.start_slow_backup();
    let (code, _, _, err) = backup(&lab.state, &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("busy"), "{err}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the first backup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json(&lab.state, &["backup", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["status"], "completed");
}

#[test]
fn ctrl_c_sigterm_sighup_and_job_cancel_end_as_cancelled_and_clean() {
    let lab = Lab::new(
        &[256, 16],
        "copy: {connections: 1, requests: 1, request_size: 4096}\n",
    );
    lab.write(0, "write -P 0x91 0 128M");
    // Ctrl-C, systemd's stop or an administrator's kill, a closed terminal: all cancel cleanly.
    for signal in ["INT", "TERM", "HUP"] {
        let child = lab.start_slow_backup();
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap()
            .success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "SIG{signal}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab.assert_undone_by_itself();
        let jobs = json(&lab.state, &["job", "list"]);
        assert_eq!(jobs[0]["status"], "cancelled", "SIG{signal}");
        lab.assert_nothing_left();
    }

    let child = lab.start_slow_backup();
    let jobs = json(&lab.state, &["job", "list", "--status", "running"]);
    let id = jobs[0]["id"].to_string();
    assert!(run(&lab.state, &["job", "cancel", &id]).status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    lab.assert_undone_by_itself();
    assert_eq!(
        json(&lab.state, &["job", "show", &id])["status"],
        "cancelled"
    );
    lab.assert_nothing_left();
    assert_eq!(
        run(&lab.state, &["job", "cancel", &id]).status.code(),
        Some(5),
        "an ended job"
    );
}

#[test]
fn a_second_signal_ends_a_hung_cleanup_at_once() {
    // An external NBD export that reads slowly, and a post-hook that hangs: the first Ctrl-C
    // cancels, the rollback runs the post-hook, which hangs; the second Ctrl-C ends sendense at
    // once, the hook with it, and the next command finishes the cleanup.
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "local");
    let d = dir.path();
    let src = create_image(&d.join("slow.raw"), "raw", "64M");
    qemu_io(&src, "raw", &["write -P 0xa5 0 64M"]);
    let slow = nbdkit(
        d,
        "slow",
        &[
            "--filter=delay",
            "file",
            src.to_str().unwrap(),
            "rdelay=50ms",
        ],
    );
    let hook = d.join("post-hook");
    let marker = d.join("post-hook-ran");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh
touch {}
sleep 120
",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    append_config(
        &state,
        "copy: {connections: 1, requests: 1, request_size: 65536}\n",
    );
    json(
        &state,
        &[
            "vm",
            "add",
            "ext",
            "--nbd",
            &slow.url,
            "--post-hook",
            hook.to_str().unwrap(),
        ],
    );
    let mut child = sendense_cmd(&state, &["backup", "start", "ext", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    wait_for_event(&mut reader, "disk_started");
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the rollback never ran the post-hook"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = Instant::now();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(
        second.elapsed() < Duration::from_secs(3),
        "the second signal took {:?} to end sendense",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    // The hung hook went with it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sendense_testkit::processes_with(&hook.to_string_lossy(), &[]).is_empty() {
        assert!(Instant::now() < deadline, "the post-hook outlived sendense");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next command finishes what the cleanup left.
    let jobs = json(&state, &["job", "list"]);
    assert_eq!(jobs[0]["status"], "failed", "{jobs}");
    assert_no_cleanup_needed(&state);
    assert_eq!(json(&state, &["nbd", "list"]), serde_json::json!([]));
    assert_eq!(json(&state, &["backup", "list"]), serde_json::json!([]));
    let left: Vec<_> = walk(&d.join("repo"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/ext/") && p.is_file())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_backup_is_never_deleted_while_a_backup_of_its_vm_runs() {
    let lab = Lab::new(
        &[256, 16],
        "copy: {connections: 1, requests: 1, request_size: 4096}\n",
    );
    lab.write(0, "write -P 0x95 0 4M");
    let (code, _, full, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    let full_id = full["backup"].as_str().unwrap();
    lab.write(0, "write -P 0x96 8M 96M");
    let refs = lab.keep_refs("second");
    // The running backup planned on the full as its parent: deleting it now is refused.
    let child = lab.start_slow_backup();
    let out = run(&lab.state, &["backup", "delete", full_id]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json(&lab.state, &["backup", "list"]);
    let top = list[0]["id"].as_str().unwrap();
    assert_eq!(list[0]["disks"][0]["parent"], full_id);
    lab.assert_backup_equals(top, &refs);
    assert_eq!(json(&lab.state, &["backup", "verify", "--all"])["ok"], true);
    // Now the full has a dependent: it is merged into it, which restores as before.
    let out = run(&lab.state, &["backup", "delete", full_id]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = json(&lab.state, &["backup", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["disks"][0]["mode"], "full");
    lab.assert_backup_equals(top, &refs);
}

#[test]
fn image_and_nbd_source_vms() {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "local");
    let d = dir.path();
    let q = qcow2_with(&d.join("img.qcow2"), "32M", &["write -P 0xa1 0 4M"]);
    let r = create_image(&d.join("img.raw"), "raw", "16M");
    qemu_io(&r, "raw", &["write -P 0xa2 0 1M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "img", &[&q, &r]);
    let (code, _, _, err) = backup_vm(&state, "img", &[]);
    assert_eq!(code, 0, "{err}");
    qemu_io(&q, "qcow2", &["write -P 0xa3 8M 1M"]);
    let (code, _, summary, err) = backup_vm(&state, "img", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["disks"][0]["mode"], "incremental");
    assert_eq!(summary["disks"][0]["bytes_read"], M);
    assert_eq!(summary["disks"][1]["mode"], "full");
    assert!(summary["disks"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("raw"));
    assert!(images_equal(
        summary["disks"][0]["file"].as_str().unwrap(),
        "qcow2",
        q.to_str().unwrap()
    ));
    assert!(images_equal(
        summary["disks"][1]["file"].as_str().unwrap(),
        "qcow2",
        r.to_str().unwrap()
    ));

    // An external NBD export: full each time; one behind an error filter fails cleanly.
    let src = create_image(&d.join("ext.raw"), "raw", "16M");
    qemu_io(&src, "raw", &["write -P 0xb1 2M 2M"]);
    let good = nbdkit(d, "good", &["file", src.to_str().unwrap()]);
    json(&state, &["vm", "add", "ext", "--nbd", &good.url]);
    let (code, _, summary, err) = backup_vm(&state, "ext", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(images_equal(
        summary["disks"][0]["file"].as_str().unwrap(),
        "qcow2",
        src.to_str().unwrap()
    ));
    let bad = nbdkit(
        d,
        "bad",
        &[
            "--filter=error",
            "file",
            src.to_str().unwrap(),
            "error-pread=EIO",
            "error-pread-rate=100%",
        ],
    );
    json(&state, &["vm", "add", "broken", "--nbd", &bad.url]);
    let out = run(&state, &["backup", "start", "broken"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("EIO"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_cleanup_needed(&state);
    let jobs = json(&state, &["job", "list", "--vm", "broken"]);
    assert_eq!(jobs[0]["status"], "failed");
    assert_eq!(json(&state, &["nbd", "list"]), serde_json::json!([]));
    assert!(
        !walk(&d.join("repo"))
            .iter()
            .any(|p| p.to_string_lossy().contains("broken/")),
        "images of the failed backup left"
    );
}

#[test]
fn changes_smaller_than_a_block_keep_the_rest_of_the_block() {
    // A disk with 4 KiB clusters tracks changes in 4 KiB granules; backup targets have 64 KiB
    // clusters and are written without opening their chain, so a change that covers part of a
    // block must still bring the whole block (a zeroed granule most of all).
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "local");
    let d = dir.path();
    let disk = d.join("small.qcow2");
    let made = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096"])
        .arg(&disk)
        .arg("8M")
        .status()
        .unwrap();
    assert!(made.success());
    qemu_io(&disk, "qcow2", &["write -P 0xc1 0 4M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "small", &[&disk]);
    let (code, _, _, err) = backup_vm(&state, "small", &[]);
    assert_eq!(code, 0, "{err}");

    qemu_io(
        &disk,
        "qcow2",
        &[
            "write -z 68k 4k",       // zeroes inside one block
            "write -P 0xc2 200k 4k", // data inside one block
            "write -z 1000k 100k",   // zeroes with ragged edges around a whole block
            "write -z 2044k 8k",     // zeroes across a block boundary
            "write -P 0xc3 6M 4k",   // data where nothing was before
        ],
    );
    let (code, _, summary, err) = backup_vm(&state, "small", &["--incremental"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary["disks"][0]["mode"], "incremental");
    let top = summary["disks"][0]["file"].as_str().unwrap();
    assert!(
        images_equal(top, "qcow2", disk.to_str().unwrap()),
        "the incremental chain differs from the disk"
    );
    assert_no_cleanup_needed(&state);
}

#[test]
fn native_aio_works_for_image_sources_and_page_cache_repositories() {
    // `aio: native` needs O_DIRECT; the read-only source export and a target on tmpfs use the
    // page cache, so they must fall back to threads instead of failing to start.
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "local");
    let d = dir.path();
    append_config(&state, "qemu_nbd:\n  aio: native\n");
    let disk = qcow2_with(&d.join("n.qcow2"), "16M", &["write -P 0xd1 0 2M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "pgtest1", &[&disk]);
    let (code, _, _, err) = backup(&state, &[]);
    assert_eq!(code, 0, "{err}");
    qemu_io(&disk, "qcow2", &["write -P 0xd2 8M 1M"]);
    let (code, _, inc, err) = backup(&state, &["--incremental"]);
    assert_eq!(code, 0, "{err}");
    let top = inc["disks"][0]["file"].as_str().unwrap();
    assert!(images_equal(top, "qcow2", disk.to_str().unwrap()));

    let small = d.join("small");
    let _guard = tmpfs_repo(&state, &small, "64m");
    let (code, _, full, err) = backup(&state, &["--repo", "small"]);
    assert_eq!(code, 0, "{err}");
    let top = full["disks"][0]["file"].as_str().unwrap();
    assert!(images_equal(top, "qcow2", disk.to_str().unwrap()));
    assert_no_cleanup_needed(&state);
}

#[test]
fn a_repository_that_fills_up_fails_cleanly() {
    let lab = Lab::new(&[128, 16], "");
    let small = lab.dir.path().join("small");
    let _guard = tmpfs_repo(&lab.state, &small, "24m");
    lab.write(0, "write -P 0xc1 0 64M");
    let (code, _, _, err) = backup(&lab.state, &["--repo", "small"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ENOSPC") || err.contains("space"), "{err}");
    lab.assert_undone_by_itself();
    let jobs = json(&lab.state, &["job", "list"]);
    assert_eq!(jobs[0]["status"], "failed");
    lab.assert_nothing_left();
    let left: Vec<_> = walk(&small)
        .into_iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "qcow2" || e == "partial")
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // The VM is still incremental-capable in the other repository after this failure.
    let (code, _, s, err) = backup(&lab.state, &["--repo", "local"]);
    assert_eq!(code, 0, "{err}");
    lab.assert_point(&s);
}

/// A hub using the script `body` as its `sendense-sna`, with an image VM `pgtest1`.
fn hub_with_node_script(body: &str) -> (tempfile::TempDir, PathBuf) {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "local");
    let d = dir.path();
    let node = d.join("broken-sendense-sna");
    std::fs::write(&node, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    append_config(
        &state,
        &format!("transfer: process\nsna_path: {}\n", node.display()),
    );
    let disk = qcow2_with(&d.join("o.qcow2"), "8M", &["write -P 0xe1 0 1M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "pgtest1", &[&disk]);
    (dir, state)
}

/// `backup start` that must end within `limit`: its exit code and stderr.
fn backup_within(state: &Path, limit: Duration) -> (i32, String) {
    let mut child = sendense_cmd(state, &["backup", "start", "pgtest1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the backup hung on its node for more than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_node_that_garbles_its_output_or_hangs_is_stopped_and_reaped() {
    for (what, body) in [
        (
            "output that is not text, then silence",
            "cat >/dev/null\nprintf '\\377\\376\\n'\nwhile :; do sleep 1; done",
        ),
        (
            "its pipes closed, then silence",
            "exec 0<&- 1>&-\nwhile :; do sleep 1; done",
        ),
    ] {
        let (dir, state) = hub_with_node_script(body);
        let (code, err) = backup_within(&state, Duration::from_secs(60));
        assert_eq!(code, 1, "{what}: {err}");
        assert!(err.contains("sendense-sna"), "{what}: {err}");
        // Gone with the backup, before any other command could reconcile.
        let left = sendense_testkit::processes_with(&dir.path().to_string_lossy(), &[]);
        assert!(left.is_empty(), "{what}: left running: {left:?}");
        assert_no_cleanup_needed(&state);
        assert_eq!(json(&state, &["backup", "list"]), serde_json::json!([]));
    }
}

#[test]
fn killing_the_hub_takes_its_sendense_sna_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let sna = dir.path().join("sendense-sna");
    let built = Path::new(env!("CARGO_BIN_EXE_sendense"))
        .parent()
        .unwrap()
        .join("sendense-sna");
    std::fs::copy(&built, &sna).unwrap();
    let lab = Lab::new_in(
        dir,
        &[32, 16],
        &format!("transfer: process\nsna_path: {}\n", sna.display()),
    );
    lab.write(0, "write -P 0x71 0 8M");
    // The node stops for a minute once a disk is copied; the hub is killed right then.
    let mut child = sendense_cmd(&lab.state, &["backup", "start", "pgtest1", "--json"])
        .env("SENDENSE_TEST_PAUSE_AT", "transfer.disk-copied:60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    wait_for_event(&mut reader, "disk_finished");
    assert!(
        !sendense_testkit::processes_with(&sna.to_string_lossy(), &[]).is_empty(),
        "the node runs while the hub does"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = sendense_testkit::processes_with(&sna.to_string_lossy(), &[]);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sendense-sna outlived its hub: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    json(&lab.state, &["job", "list"]);
    lab.assert_nothing_left();
}
