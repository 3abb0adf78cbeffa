//! Damage to a chain's structure — a rewired backing link, a changed size, a missing or
//! unreadable link, a lost manifest — is named by `backup verify`, refused by `restore` and
//! `export`, and never built on by the next backup.

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

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
        let dir = tempfile::tempdir().unwrap();
        let state = sendense_testkit::cli_hub(env!("CARGO_BIN_EXE_sendense"), dir.path(), "r");
        let disk = create_image(&dir.path().join("vm1.qcow2"), "qcow2", "16M");
        json(
            &state,
            &["vm", "add", "vm1", "--disk", disk.to_str().unwrap()],
        );
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
    sendense_testkit::run(
        "qemu-img",
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            &name(1),
            "-F",
            "qcow2",
            c.image(3).to_str().unwrap(),
        ],
    );
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
}
