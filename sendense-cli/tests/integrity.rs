//! Damage to a chain's structure — a rewired backing link, a changed size, a missing or
//! unreadable link, a lost manifest — is named by `backup verify`, refused by `restore` and
//! `export`, and never built on by the next backup.

use sendense_testkit::output_text as text;
use sendense_testkit::{cli, cli_json, create_image, images_equal, qemu_io};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn run(state: &Path, args: &[&str]) -> Output {
    cli(env!("CARGO_BIN_EXE_sendense"), state, args)
}

fn json(state: &Path, args: &[&str]) -> Value {
    cli_json(env!("CARGO_BIN_EXE_sendense"), state, args)
}

/// A hub with repository `r` and an image VM `vm1` of one empty 16 MiB QCOW2 disk.
fn image_vm() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let state = sendense_testkit::cli_hub(env!("CARGO_BIN_EXE_sendense"), dir.path(), "r");
    let disk = create_image(&dir.path().join("vm1.qcow2"), "qcow2", "16M");
    json(
        &state,
        &["vm", "add", "vm1", "--disk", disk.to_str().unwrap()],
    );
    (dir, state, disk)
}

/// An image VM `vm1` (one 16 MiB disk) with a full and three incrementals.
struct Chain {
    dir: tempfile::TempDir,
    state: PathBuf,
    disk: PathBuf,
    ids: Vec<String>,
}

impl Chain {
    fn new() -> Chain {
        let (dir, state, disk) = image_vm();
        let mut ids = Vec::new();
        for i in 0..4u8 {
            qemu_io(
                &disk,
                "qcow2",
                &[&format!("write -P {} {}M 1M", 0x10 + i, i * 2)],
            );
            let s = json(&state, &["backup", "start", "vm1"]);
            ids.push(s["backup"].as_str().unwrap().to_string());
        }
        Chain {
            dir,
            state,
            disk,
            ids,
        }
    }

    fn image(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("repo/vm1/2000/{}.qcow2", self.ids[i]))
    }

    /// verify of the top fails and names `what`; restore and export of the top are refused
    /// naming it; the next backup is a full that says why, and is exact.
    fn assert_caught(&self, what: &str) {
        let top = self.ids.last().unwrap();
        let o = run(&self.state, &["backup", "verify", top, "--json"]);
        assert_eq!(o.status.code(), Some(1), "verify: {}", text(&o));
        assert!(
            text(&o).contains(what),
            "verify does not say {what:?}: {}",
            text(&o)
        );
        let out = self.dir.path().join("restored.qcow2");
        let o = run(
            &self.state,
            &[
                "restore",
                top,
                "--disk",
                "2000",
                "--to",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(1), "restore: {}", text(&o));
        assert!(
            text(&o).contains(what),
            "restore does not say {what:?}: {}",
            text(&o)
        );
        assert!(!out.exists());
        let o = run(&self.state, &["export", top, "--disk", "2000"]);
        assert_eq!(o.status.code(), Some(1), "export: {}", text(&o));
        let o = run(&self.state, &["backup", "start", "vm1", "--incremental"]);
        assert_eq!(o.status.code(), Some(5), "--incremental: {}", text(&o));
        assert!(text(&o).contains("failed its check"), "{}", text(&o));
        let s = json(&self.state, &["backup", "start", "vm1"]);
        assert_eq!(s["disks"][0]["mode"], "full", "{s}");
        let reason = s["disks"][0]["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("previous backup failed its check"),
            "{reason}"
        );
        assert!(images_equal(
            s["disks"][0]["file"].as_str().unwrap(),
            "qcow2",
            self.disk.to_str().unwrap()
        ));
        // And the new chain goes on from that full.
        qemu_io(&self.disk, "qcow2", &["write -P 0x7f 12M 64k"]);
        let s = json(&self.state, &["backup", "start", "vm1", "--incremental"]);
        assert!(images_equal(
            s["disks"][0]["file"].as_str().unwrap(),
            "qcow2",
            self.disk.to_str().unwrap()
        ));
    }
}

#[test]
fn a_rewired_backing_link_is_caught() {
    let c = Chain::new();
    // The top now skips its parent (same name length: what an unsafe `rebase -u` does).
    let name = |i: usize| format!("{}.qcow2", c.ids[i]);
    sendense_testkit::qcow2::rebase_unsafe(&c.image(3), &name(1));
    c.assert_caught(&format!("backed by {}", name(1)));
}

#[test]
fn a_changed_virtual_size_is_caught() {
    let c = Chain::new();
    // The size field of the top's QCOW2 header (bytes 24..32, big-endian) halved.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(c.image(3))
        .unwrap();
    f.write_all_at(&(8u64 << 20).to_be_bytes(), 24).unwrap();
    c.assert_caught("says its disk has 8388608 bytes");
}

#[test]
fn a_deleted_middle_link_is_caught() {
    let c = Chain::new();
    std::fs::remove_file(c.image(1)).unwrap();
    c.assert_caught(&format!("image of backup {}", c.ids[1]));
}

#[test]
fn a_middle_link_that_is_no_qcow2_any_more_is_caught() {
    let c = Chain::new();
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(c.image(2))
        .unwrap();
    f.write_all_at(&[0u8; 4], 0).unwrap();
    c.assert_caught("cannot be opened");
}

#[test]
fn a_lost_manifest_is_named_by_verify() {
    let c = Chain::new();
    let manifest = c
        .dir
        .path()
        .join(format!("repo/vm1/manifests/{}.yaml", c.ids[1]));
    std::fs::remove_file(&manifest).unwrap();
    let o = run(&c.state, &["backup", "verify", &c.ids[3], "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("manifest"), "{}", text(&o));
    assert!(text(&o).contains(&c.ids[1]), "{}", text(&o));
}

#[test]
fn a_raw_disk_of_an_odd_size_restores_to_exactly_that_size() {
    let dir = tempfile::tempdir().unwrap();
    let state = sendense_testkit::cli_hub(env!("CARGO_BIN_EXE_sendense"), dir.path(), "r");
    let disk = dir.path().join("odd.raw");
    let content: Vec<u8> = (0..1_000_001u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&disk, &content).unwrap();
    json(
        &state,
        &["vm", "add", "odd", "--disk", disk.to_str().unwrap()],
    );
    let s = json(&state, &["backup", "start", "odd"]);
    let out = dir.path().join("restored.raw");
    json(
        &state,
        &[
            "restore",
            s["backup"].as_str().unwrap(),
            "--disk",
            "2000",
            "--to",
            out.to_str().unwrap(),
            "--format",
            "raw",
        ],
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 1_000_001);
    assert_eq!(std::fs::read(&out).unwrap(), content);
    // And verify finds it whole: its last block was hashed at the length QEMU serves.
    let o = run(&state, &["backup", "verify", s["backup"].as_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// `restore BACKUP --disk 2000 --to OUT [extra]`.
fn restore(state: &Path, id: &str, out: &Path, extra: &[&str]) -> Output {
    sendense_testkit::restore_disk(env!("CARGO_BIN_EXE_sendense"), state, id, out, extra)
}

#[test]
fn a_flipped_byte_fails_verify_and_every_restore_that_reads_it() {
    let c = Chain::new();
    // Backup 1 wrote 0x11 at 2 MiB; no later backup overwrote it.
    sendense_testkit::qcow2::flip_data_byte(&c.image(1), (2 << 20) + 4321);
    let o = run(&c.state, &["backup", "verify", &c.ids[1]]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("at offset 2097152"), "{}", text(&o));
    let out = c.dir.path().join("out.qcow2");
    for id in &c.ids[1..] {
        let o = restore(&c.state, id, &out, &[]);
        assert_eq!(o.status.code(), Some(1), "restore {id}: {}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("the block at offset 2097152 differs from what backup")
                && t.contains(&c.ids[1])
                && t.contains("--no-verify"),
            "{t}"
        );
        assert!(!out.exists());
    }
    // The full below is intact and restores.
    let o = restore(&c.state, &c.ids[0], &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("Verified"), "{}", text(&o));
    std::fs::remove_file(&out).unwrap();
    // Asked not to verify: restored as the images hold it, and said so.
    let o = restore(&c.state, &c.ids[3], &out, &["--no-verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("Not verified"), "{}", text(&o));
    assert!(!images_equal(
        out.to_str().unwrap(),
        "qcow2",
        c.disk.to_str().unwrap()
    ));
}

#[test]
fn a_truncated_top_link_fails_the_restore() {
    let c = Chain::new();
    let top = c.image(3);
    let len = std::fs::metadata(&top).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&top).unwrap();
    f.set_len(len - (64 << 10)).unwrap();
    let o = run(&c.state, &["backup", "verify", &c.ids[3]]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = c.dir.path().join("out.qcow2");
    let o = restore(&c.state, &c.ids[3], &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(&c.ids[3]), "{}", text(&o));
    assert!(!out.exists());
}

#[test]
fn zeroes_an_incremental_wrote_are_verified_through_the_chain() {
    let (dir, state, disk) = image_vm();
    qemu_io(&disk, "qcow2", &["write -P 0x5a 8M 4M"]);
    let full = json(&state, &["backup", "start", "vm1"]);
    qemu_io(&disk, "qcow2", &["write -z 10M 1M"]);
    let inc = json(&state, &["backup", "start", "vm1", "--incremental"]);
    let id = inc["backup"].as_str().unwrap();
    let image = PathBuf::from(inc["disks"][0]["file"].as_str().unwrap());
    // Before any damage: verified, exact, every block checked.
    let out = dir.path().join("out.qcow2");
    let o = restore(&state, id, &out, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let summary: Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["verified"], true, "{summary}");
    assert_eq!(summary["disks"][0]["bytes_unchecked"], 0, "{summary}");
    assert!(images_equal(
        out.to_str().unwrap(),
        "qcow2",
        disk.to_str().unwrap()
    ));
    std::fs::remove_file(&out).unwrap();
    // The zero flag of one cluster cleared: a valid "unallocated" entry, `qemu-img check` is
    // content, and the full's 0x5a shows through.
    sendense_testkit::qcow2::clear_zero_flag(&image, 10 << 20);
    let o = run(&state, &["backup", "verify", id]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("zeroes written by the backup are missing at offset 10485760"),
        "{}",
        text(&o)
    );
    let o = restore(&state, id, &out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "the block at offset 10485760 holds data where backup {id} wrote zeroes"
        )),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    // The full is not concerned.
    let o = run(
        &state,
        &["backup", "verify", full["backup"].as_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn a_disk_shrunk_and_grown_back_gets_a_full_that_says_why() {
    let (dir, state, disk) = image_vm();
    qemu_io(
        &disk,
        "qcow2",
        &["write -P 0x21 1M 1M", "write -P 0x22 10M 2M"],
    );
    json(&state, &["backup", "start", "vm1"]);
    // 16 MiB -> 8 MiB -> 16 MiB: the same size, the bitmap still there, 10M..12M now zeroes.
    let resize = |args: &[&str]| {
        let mut a = vec!["resize", "-f", "qcow2"];
        a.extend_from_slice(args);
        sendense_testkit::run("qemu-img", &a);
    };
    resize(&["--shrink", disk.to_str().unwrap(), "8M"]);
    resize(&[disk.to_str().unwrap(), "16M"]);
    qemu_io(&disk, "qcow2", &["write -P 0x23 2M 64k"]);
    // Asked for an incremental: refused, saying why.
    let o = run(&state, &["backup", "start", "vm1", "--incremental"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("disk resized"), "{}", text(&o));
    // Otherwise a full, exact.
    let s = json(&state, &["backup", "start", "vm1"]);
    assert_eq!(s["disks"][0]["mode"], "full", "{s}");
    let reason = s["disks"][0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("disk resized"), "{reason}");
    let id = s["backup"].as_str().unwrap();
    let out = dir.path().join("out.qcow2");
    sendense_testkit::assert_restore_equals(
        env!("CARGO_BIN_EXE_sendense"),
        &state,
        id,
        &out,
        &disk,
    );
    // And the chain goes on from that full as usual.
    qemu_io(&disk, "qcow2", &["write -P 0x24 13M 64k"]);
    let s = json(&state, &["backup", "start", "vm1"]);
    assert_eq!(s["disks"][0]["mode"], "incremental", "{s}");
}
