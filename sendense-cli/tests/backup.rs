//! `sendense backup start` end to end: a real QEMU VM with two disks, real qemu-nbd targets, a
//! real repository. Every guest write is mirrored into a raw reference file, so each backup is
//! compared byte for byte with the disk as it was at the snapshot instant.

use sendense_testkit::{
    add_image_vm, allocated_bytes, create_image, images_equal, nbdkit, qcow2_with, qemu_io,
    temp_hub, walk, QemuVm,
};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const M: u64 = 1 << 20;

struct Lab {
    dir: tempfile::TempDir,
    state: PathBuf,
    vm: Option<QemuVm>,
    refs: Vec<PathBuf>,
}

fn sendense_cmd(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sendense"));
    c.args(args)
        .env("SENDENSE_HOME", state)
        .env("NO_COLOR", "1");
    c
}

fn run(state: &Path, args: &[&str]) -> Output {
    sendense_testkit::cli(env!("CARGO_BIN_EXE_sendense"), state, args)
}

fn json(state: &Path, args: &[&str]) -> Value {
    sendense_testkit::cli_json(env!("CARGO_BIN_EXE_sendense"), state, args)
}

/// A finished `backup start --json`: (exit code, events, summary, stderr).
fn backup(state: &Path, extra: &[&str]) -> (i32, Vec<Value>, Value, String) {
    backup_vm(state, "pgtest1", extra)
}

/// `sendense backup start VM --json`: exit code, events, summary (the last line), stderr.
fn backup_vm(state: &Path, vm: &str, extra: &[&str]) -> (i32, Vec<Value>, Value, String) {
    let mut args = vec!["backup", "start", vm, "--json"];
    args.extend_from_slice(extra);
    let out = run(state, &args);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = lines.last().cloned().unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        lines,
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Lab {
    /// A QEMU VM `pgtest1` with qcow2 disks of these sizes (MiB), registered with --qmp.
    fn new(sizes: &[u64], config: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let state = d.join("state");
        sendense_testkit::private_port_config(&state, 20);
        if !config.is_empty() {
            let mut text = std::fs::read_to_string(state.join("config.yaml")).unwrap();
            text.push_str(config);
            std::fs::write(state.join("config.yaml"), text).unwrap();
        }
        assert!(run(&state, &["init"]).status.success());
        let mut images = Vec::new();
        let mut refs = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            images.push(create_image(
                &d.join(format!("disk{i}.qcow2")),
                "qcow2",
                &format!("{size}M"),
            ));
            refs.push(create_image(
                &d.join(format!("ref{i}.raw")),
                "raw",
                &format!("{size}M"),
            ));
        }
        let disks: Vec<(&str, &Path)> = images.iter().map(|p| ("qcow2", p.as_path())).collect();
        let vm = QemuVm::start(d, "pg", &disks);
        let repo = d.join("repo");
        json(
            &state,
            &["repo", "add", "local", "--path", repo.to_str().unwrap()],
        );
        json(
            &state,
            &["vm", "add", "pgtest1", "--qmp", vm.qmp.to_str().unwrap()],
        );
        Lab {
            dir,
            state,
            vm: Some(vm),
            refs,
        }
    }

    fn vm(&self) -> &QemuVm {
        self.vm.as_ref().unwrap()
    }

    /// A guest write, mirrored into the reference.
    fn write(&self, disk: usize, io: &str) {
        self.vm().guest_io(disk, io);
        qemu_io(&self.refs[disk], "raw", &[io]);
    }

    /// The backup restores, as a standalone raw image, to exactly the references.
    fn assert_restores(&self, summary: &Value) {
        let id = summary["backup"].as_str().unwrap();
        let out = self.dir.path().join(format!("restore-{id}"));
        json(
            &self.state,
            &[
                "restore",
                id,
                "--all",
                "--to",
                out.to_str().unwrap(),
                "--format",
                "raw",
            ],
        );
        for d in summary["disks"].as_array().unwrap() {
            let key = d["key"].as_u64().unwrap() as usize;
            let file = out.join(format!("pgtest1-disk-{key}.raw"));
            assert!(
                images_equal(
                    file.to_str().unwrap(),
                    "raw",
                    self.refs[key - 2000].to_str().unwrap()
                ),
                "restore of {id} disk {key}"
            );
        }
        std::fs::remove_dir_all(out).unwrap();
    }

    /// Every disk of the summary's backup equals the references.
    fn assert_point(&self, summary: &Value) {
        for d in summary["disks"].as_array().unwrap() {
            let key = d["key"].as_u64().unwrap() as usize - 2000;
            let file = d["file"].as_str().unwrap();
            assert!(
                images_equal(file, "qcow2", self.refs[key].to_str().unwrap()),
                "disk {} of backup {} differs from the VM at the snapshot",
                d["key"],
                summary["backup"]
            );
        }
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Nothing of an interrupted job is left: exports, ports, partial images, scratch.
    /// The failed or cancelled process undid its own work: the next command finds nothing to
    /// reconcile (checked before any command that would reconcile on open).
    fn assert_undone_by_itself(&self) {
        assert_no_cleanup_needed(&self.state);
    }

    fn assert_nothing_left(&self) {
        assert_eq!(
            json(&self.state, &["nbd", "list"]),
            serde_json::json!([]),
            "exports left"
        );
        let partials = walk(&self.repo())
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .count();
        assert_eq!(partials, 0, "partial images left");
        let scratch = self.state.join("scratch");
        let left = std::fs::read_dir(&scratch).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "scratch (fleecing) files left");
        let text = std::fs::read_to_string(self.state.join("config.yaml")).unwrap();
        let first: u16 = text
            .split("first: ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        for p in first..first + 20 {
            assert!(
                std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
                "port {p} still taken"
            );
        }
    }

    /// Starts a backup in the background and waits until data is moving.
    fn start_slow_backup(&self) -> Child {
        let mut child = sendense_cmd(&self.state, &["backup", "start", "pgtest1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "backup ended before moving data"
            );
            if line.contains("\"disk_progress\"") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        child
    }
}

fn assert_no_cleanup_needed(state: &Path) {
    let report = json(state, &["cleanup", "--dry-run"]);
    assert_eq!(report["actions"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
}

fn reasons(summary: &Value) -> Vec<(u64, String, String)> {
    summary["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_u64().unwrap(),
                d["mode"].as_str().unwrap().into(),
                d["reason"].as_str().unwrap().into(),
            )
        })
        .collect()
}

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
fn a_node_that_does_not_confirm_whole_block_writes_is_not_trusted() {
    // Targets are opened without their chain; a node of another version that does not say it
    // wrote whole blocks only may have lost parts of blocks, so its backup is discarded.
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
    assert!(err.contains("whole 64 KiB blocks"), "{err}");
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
fn ctrl_c_and_job_cancel_end_as_cancelled_and_clean() {
    let lab = Lab::new(
        &[256, 16],
        "copy: {connections: 1, requests: 1, request_size: 4096}\n",
    );
    lab.write(0, "write -P 0x91 0 128M");
    let child = lab.start_slow_backup();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.assert_undone_by_itself();
    let jobs = json(&lab.state, &["job", "list"]);
    assert_eq!(jobs[0]["status"], "cancelled");
    lab.assert_nothing_left();

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

/// Mounts a tmpfs of `size` at `dir` and registers it as repository `small`; unmounted when
/// the returned guard goes, however the test ends.
fn tmpfs_repo(state: &Path, dir: &Path, size: &str) -> Unmount {
    std::fs::create_dir(dir).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "sendense-test",
        ])
        .arg(dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let guard = Unmount(dir.to_path_buf());
    json(
        state,
        &["repo", "add", "small", "--path", dir.to_str().unwrap()],
    );
    guard
}

/// Adds `text` to the hub's configuration file.
fn append_config(state: &Path, text: &str) {
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(state.join("config.yaml"))
        .unwrap();
    std::io::Write::write_all(&mut config, text.as_bytes()).unwrap();
}

/// Unmounts a test's tmpfs when the test ends, however it ends.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
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

#[allow(dead_code)]
fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
