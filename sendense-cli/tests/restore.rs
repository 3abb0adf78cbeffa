//! Restore, verify, export and delete against real backups of an image VM.

use sendense_testkit::{add_image_vm, create_image, images_equal, qemu_io, qemu_nbd, walk};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn run(state: &Path, args: &[&str]) -> Output {
    sendense_testkit::cli(env!("CARGO_BIN_EXE_sendense"), state, args)
}

fn json(state: &Path, args: &[&str]) -> Value {
    sendense_testkit::cli_json(env!("CARGO_BIN_EXE_sendense"), state, args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An image VM with a full and two incrementals; references of the disk at each point.
struct Chain {
    dir: tempfile::TempDir,
    state: PathBuf,
    ids: Vec<String>,
    refs: Vec<PathBuf>,
}

fn chain() -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = sendense_testkit::cli_hub(env!("CARGO_BIN_EXE_sendense"), d, "r");
    let disk = create_image(&d.join("disk.qcow2"), "qcow2", "64M");
    json(
        &state,
        &["vm", "add", "vm1", "--disk", disk.to_str().unwrap()],
    );
    let rounds: [&[&str]; 3] = [
        &["write -P 0x11 0 8M", "write -P 0x12 40M 2M"],
        &["write -P 0x21 1M 1M", "write -z 40M 1M"],
        &["write -P 0x31 60M 4M", "write -P 0x32 3M 4096"],
    ];
    let mut ids = Vec::new();
    let mut refs = Vec::new();
    for (i, writes) in rounds.iter().enumerate() {
        qemu_io(&disk, "qcow2", writes);
        let s = json(&state, &["backup", "start", "vm1"]);
        ids.push(s["backup"].as_str().unwrap().to_string());
        let r = d.join(format!("ref{i}.raw"));
        assert!(Command::new("qemu-img")
            .args([
                "convert",
                "-O",
                "raw",
                disk.to_str().unwrap(),
                r.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success());
        refs.push(r);
    }
    Chain {
        dir,
        state,
        ids,
        refs,
    }
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn every_point_restores_byte_for_byte_as_qcow2_and_raw_and_stays_thin() {
    let c = chain();
    let out = c.dir.path().join("out");
    for (i, id) in c.ids.iter().enumerate() {
        for fmt in ["qcow2", "raw"] {
            let to = out.join(format!("p{i}.{fmt}"));
            let r = json(
                &c.state,
                &[
                    "restore",
                    id,
                    "--disk",
                    "2000",
                    "--to",
                    to.to_str().unwrap(),
                    "--format",
                    fmt,
                ],
            );
            assert_eq!(r["disks"][0]["key"], 2000);
            assert!(
                images_equal(to.to_str().unwrap(), fmt, c.refs[i].to_str().unwrap()),
                "point {i} as {fmt}"
            );
            let backing = sendense_core::tools::qemu_img::info(&to)
                .unwrap()
                .backing_filename;
            assert_eq!(backing, None, "a restored image stands alone");
        }
        // Holes stay holes: a 64 MiB disk with ~10-14 MiB of data.
        let raw = out.join(format!("p{i}.raw"));
        assert!(
            allocated(&raw) < 20 << 20,
            "point {i}: {} bytes allocated",
            allocated(&raw)
        );
    }
    // --all into a directory, and the overwrite rule.
    let dir = out.join("all");
    json(
        &c.state,
        &["restore", &c.ids[2], "--all", "--to", dir.to_str().unwrap()],
    );
    let f = dir.join("vm1-disk-2000.qcow2");
    assert!(images_equal(
        f.to_str().unwrap(),
        "qcow2",
        c.refs[2].to_str().unwrap()
    ));
    let o = run(
        &c.state,
        &["restore", &c.ids[0], "--all", "--to", dir.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        images_equal(f.to_str().unwrap(), "qcow2", c.refs[2].to_str().unwrap()),
        "refused restore changed the file"
    );
    json(
        &c.state,
        &[
            "restore",
            &c.ids[0],
            "--all",
            "--to",
            dir.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(images_equal(
        f.to_str().unwrap(),
        "qcow2",
        c.refs[0].to_str().unwrap()
    ));
    assert!(!walk(&dir)
        .iter()
        .any(|p| p.to_string_lossy().ends_with(".partial")));

    // Unknown backup or key: exit 4, with the valid keys.
    let o = run(
        &c.state,
        &["restore", "nope", "--disk", "2000", "--to", "/tmp/x"],
    );
    assert_eq!(o.status.code(), Some(4));
    let o = run(
        &c.state,
        &["restore", &c.ids[0], "--disk", "2007", "--to", "/tmp/x"],
    );
    assert_eq!(o.status.code(), Some(4));
    assert!(stderr(&o).contains("Its disks are: 2000"), "{}", stderr(&o));
}

#[test]
fn a_disk_that_cannot_be_published_fails_the_restore_and_leaves_nothing_behind() {
    let (dir, state) = sendense_testkit::temp_hub(env!("CARGO_BIN_EXE_sendense"), "r");
    let d = dir.path();
    let a = sendense_testkit::qcow2_with(&d.join("a.qcow2"), "16M", &["write -P 0x41 0 1M"]);
    let b = sendense_testkit::qcow2_with(&d.join("b.qcow2"), "16M", &["write -P 0x42 0 1M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "two", &[&a, &b]);
    let s = json(&state, &["backup", "start", "two"]);
    let id = s["backup"].as_str().unwrap();
    let out = d.join("out");
    std::fs::create_dir(&out).unwrap();
    // The first disk's file name is taken by a directory, so that disk cannot be moved into
    // place once copied; the second disk's export must still be stopped and its file removed.
    std::fs::create_dir(out.join("two-disk-2000.raw")).unwrap();
    let o = run(
        &state,
        &[
            "restore",
            id,
            "--all",
            "--to",
            out.to_str().unwrap(),
            "--format",
            "raw",
            "--force",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("two-disk-2000.raw"), "{}", stderr(&o));
    // Before any other command could reconcile: no qemu-nbd of this test is left running.
    let running = sendense_testkit::processes_with(d.to_str().unwrap(), &[]);
    assert!(running.is_empty(), "left running: {running:?}");
    assert_eq!(json(&state, &["nbd", "list"]), serde_json::json!([]));
    let left: Vec<_> = walk(&out).into_iter().filter(|p| p.is_file()).collect();
    assert!(
        left.iter()
            .all(|p| !p.to_string_lossy().ends_with(".partial")),
        "partial files left: {left:?}"
    );
    let jobs = json(&state, &["job", "list"]);
    let restore = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "restore")
        .unwrap();
    assert_eq!(restore["status"], "failed");
    let cleanup = json(&state, &["cleanup", "--dry-run"]);
    assert_eq!(cleanup["actions"], serde_json::json!([]), "{cleanup}");
}

#[test]
fn a_restore_that_fails_after_its_source_export_started_leaves_no_qemu_nbd() {
    let c = chain();
    let d = c.dir.path();
    let file = d.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let long = d.join(format!("{}.qcow2", "x".repeat(300)));
    // The source is served before the destination is made; then making it fails: a parent that
    // is a file (its directory cannot be created), a name too long for qemu-img.
    for (to, why) in [
        (file.join("sub/disk.qcow2"), "Not a directory"),
        (long, "name too long"),
    ] {
        let o = run(
            &c.state,
            &[
                "restore",
                &c.ids[2],
                "--disk",
                "2000",
                "--to",
                to.to_str().unwrap(),
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).to_lowercase().contains(&why.to_lowercase()),
            "{}",
            stderr(&o)
        );
        // Before any other command could reconcile: nothing of the restore runs.
        let running = sendense_testkit::processes_with(d.to_str().unwrap(), &[]);
        assert!(running.is_empty(), "left running: {running:?}");
        let cleanup = json(&c.state, &["cleanup", "--dry-run"]);
        assert_eq!(cleanup["actions"], serde_json::json!([]), "{cleanup}");
    }
}

#[test]
fn restore_into_an_nbd_target() {
    let c = chain();
    let d = c.dir.path();
    let target = create_image(&d.join("target.qcow2"), "qcow2", "64M");
    qemu_io(&target, "qcow2", &["write -P 0xee 0 64M"]);
    let mut srv = qemu_nbd(d, &target, "qcow2", "t", &["--shared=8"]);
    json(
        &c.state,
        &["restore", &c.ids[1], "--disk", "2000", "--to", &srv.url],
    );
    srv.proc.stop();
    assert!(
        images_equal(
            target.to_str().unwrap(),
            "qcow2",
            c.refs[1].to_str().unwrap()
        ),
        "old data must be overwritten, zeroes included"
    );
}

#[test]
fn verify_finds_bit_rot_truncation_and_missing_links() {
    let c = chain();
    let ok = json(&c.state, &["backup", "verify", "--all"]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(ok["images"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["bytes_verified"].as_u64().unwrap() > 0));

    // One byte flipped inside a data cluster of the first incremental.
    let b1 = &c.ids[1];
    let file = image_of(&c, b1);
    let map: Value = serde_json::from_slice(
        &Command::new("qemu-img")
            .args(["map", "--output=json", file.to_str().unwrap()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let ext = map
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["depth"] == 0 && e["data"] == true)
        .unwrap()
        .clone();
    let host = ext["offset"].as_u64().unwrap() + 4000;
    sendense_testkit::flip_byte(&file, host);
    let o = run(&c.state, &["backup", "verify", &c.ids[2], "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad: Vec<&Value> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !i["problems"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(bad.len(), 1, "{report}");
    assert_eq!(bad[0]["backup"], b1.as_str());
    assert_eq!(bad[0]["disk"], 2000);
    let guest = ext["start"].as_u64().unwrap() + 4000;
    let text = bad[0]["problems"][0].as_str().unwrap();
    assert!(
        text.contains(&format!("offset {}", guest / 65536 * 65536)),
        "{text}"
    );
    sendense_testkit::flip_byte(&file, host);
    assert_eq!(
        json(&c.state, &["backup", "verify", "--vm", "vm1"])["ok"],
        true
    );

    // A truncated image.
    let last = image_of(&c, &c.ids[2]);
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let o = run(&c.state, &["backup", "verify", &c.ids[2]]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A deleted chain link is named.
    std::fs::remove_file(image_of(&c, &c.ids[1])).unwrap();
    let o = run(&c.state, &["backup", "verify", &c.ids[2], "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("chain link") && text.contains(c.ids[1].as_str()),
        "{text}"
    );
}

#[test]
fn export_serves_the_restore_point_and_never_changes_the_backup() {
    let c = chain();
    let d = c.dir.path();
    let sock = d.join("export.sock");
    for writable in [false, true] {
        let mut args = vec![
            "export",
            c.ids[1].as_str(),
            "--disk",
            "2000",
            "--socket",
            sock.to_str().unwrap(),
            "--json",
        ];
        if writable {
            args.push("--writable");
        }
        let before: Vec<String> = c
            .ids
            .iter()
            .map(|id| digest_of(&image_of(&c, id)))
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sendense"))
            .args(&args)
            .env("SENDENSE_HOME", &c.state)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let doc: Value = serde_json::from_str(&line).unwrap();
        let url = doc["url"].as_str().unwrap().to_string();
        assert!(
            images_equal(&url, "qcow2", c.refs[1].to_str().unwrap()),
            "export equals the restore point"
        );
        let listed = json(&c.state, &["nbd", "list"]);
        assert_eq!(listed.as_array().unwrap().len(), 1);
        if writable {
            let w = Command::new("qemu-io")
                .args(["-f", "raw", "-c", "write -P 0x77 0 1M", &url])
                .output()
                .unwrap();
            assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
            let r = Command::new("qemu-io")
                .args(["-f", "raw", "-c", "read -P 0x77 0 1M", &url])
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&r.stdout).contains("read 1048576"),
                "writes are visible through the export"
            );
        } else {
            let w = Command::new("qemu-io")
                .args(["-f", "raw", "-c", "write -P 0x77 0 1M", &url])
                .output()
                .unwrap();
            assert!(
                !String::from_utf8_lossy(&w.stdout).contains("wrote 1048576"),
                "read-only export accepted a write"
            );
        }
        assert!(Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        assert!(child.wait().unwrap().success());
        assert_eq!(
            json(&c.state, &["nbd", "list"]),
            serde_json::json!([]),
            "export left behind"
        );
        assert!(!sock.exists());
        let after: Vec<String> = c
            .ids
            .iter()
            .map(|id| digest_of(&image_of(&c, id)))
            .collect();
        assert_eq!(before, after, "the backup files changed");
    }
    assert_eq!(json(&c.state, &["backup", "verify", "--all"])["ok"], true);
}

#[test]
fn delete_rules() {
    let c = chain();
    // A backup another depends on is merged into it, which says so beforehand.
    let plan = json(&c.state, &["backup", "delete", &c.ids[1], "--dry-run"]);
    assert_eq!(plan["disks"][0]["merge_into"], c.ids[2].as_str(), "{plan}");
    let file = image_of(&c, &c.ids[2]);
    json(&c.state, &["backup", "delete", &c.ids[2]]);
    assert!(!file.exists());
    assert!(!sendense_core::repo::digests::digests_of(&file).exists());
    assert!(!c
        .dir
        .path()
        .join(format!("repo/vm1/manifests/{}.yaml", c.ids[2]))
        .exists());
    assert_eq!(
        json(&c.state, &["backup", "list"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        run(&c.state, &["backup", "delete", &c.ids[2]])
            .status
            .code(),
        Some(4)
    );
    // The chain goes on from the remaining top.
    let s = json(&c.state, &["backup", "start", "vm1"]);
    assert_eq!(
        s["disks"][0]["mode"], "full",
        "the source's checkpoint belonged to the deleted backup"
    );
    assert_eq!(
        s["disks"][0]["reason"],
        "checkpoint belongs to another chain"
    );
}

#[test]
fn backups_keep_verifying_with_the_digest_scheme_they_were_written_with() {
    use sendense_core::repo::digests::{file_digest, Scheme};
    use std::os::unix::fs::FileExt;
    let c = chain();
    // Rewrite the full backup's digests as the earlier scheme wrote them, from the disk as it
    // was at that backup, and record the file digest as the versions of that scheme did: the
    // blake3 of the whole file, with the scheme's tag.
    let id = &c.ids[0];
    let dfile = c.dir.path().join(format!("repo/vm1/2000/{id}.digests"));
    let disk = std::fs::read(&c.refs[0]).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dfile)
        .unwrap();
    let mut rewritten = 0;
    for (i, block) in disk.chunks(65536).enumerate() {
        let mut rec = [0u8; 32];
        f.read_exact_at(&mut rec, i as u64 * 32).unwrap();
        if rec != [0u8; 32] {
            let old = Scheme::OffsetPrefixed.block_digest(i as u64 * 65536, block);
            assert_ne!(old, rec);
            f.write_all_at(&old, i as u64 * 32).unwrap();
            rewritten += 1;
        }
    }
    assert!(rewritten > 100, "{rewritten}");
    let whole_file = |p: &Path| {
        format!(
            "blake3-64k:{}",
            blake3::hash(&std::fs::read(p).unwrap()).to_hex()
        )
    };
    let digest = whole_file(&dfile);
    let db = rusqlite::Connection::open(c.state.join("sendense.db")).unwrap();
    // An earlier version wrote the same digest into the catalog and the manifest.
    let manifest = c.dir.path().join(format!("repo/vm1/manifests/{id}.yaml"));
    let record = |digest: &str| {
        let old: String = db
            .query_row(
                "SELECT digest FROM backup_disks WHERE backup_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, text.replace(&old, digest)).unwrap();
        db.execute(
            "UPDATE backup_disks SET digest = ?1 WHERE backup_id = ?2",
            (digest, id),
        )
        .unwrap();
    };
    record(&digest);
    let report = json(&c.state, &["backup", "verify", id]);
    assert_eq!(report["ok"], true, "{report}");
    // A digest file changed after such a backup is found by the whole-file digest.
    f.write_all_at(&[9u8; 32], 0).unwrap();
    let o = run(&c.state, &["backup", "verify", id, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("was changed since the backup"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // The records are really compared, with either form of file digest: one changed record
    // is found.
    for digest in [
        whole_file(&dfile),
        file_digest(&dfile, Scheme::OffsetPrefixed).unwrap(),
    ] {
        record(&digest);
        let o = run(&c.state, &["backup", "verify", id, "--json"]);
        assert_eq!(o.status.code(), Some(1), "{digest}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("offset 0"),
            "{digest}"
        );
    }
}

fn image_of(c: &Chain, id: &str) -> PathBuf {
    c.dir.path().join(format!("repo/vm1/2000/{id}.qcow2"))
}

/// A fingerprint of every byte of a file: its length and a polynomial checksum.
fn digest_of(path: &Path) -> String {
    let data = std::fs::read(path).unwrap();
    let sum = data.iter().fold(0u64, |a, b| {
        a.wrapping_mul(1_000_003).wrapping_add(*b as u64)
    });
    format!("{}:{sum:x}", data.len())
}

/// The host offsets of the 64 KiB blocks an image holds itself.
fn own_blocks(file: &Path) -> Vec<u64> {
    let map: Value = serde_json::from_slice(
        &Command::new("qemu-img")
            .args(["map", "--output=json", file.to_str().unwrap()])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    map.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["depth"] == 0 && e["data"] == true)
        .flat_map(|e| {
            let host = e["offset"].as_u64().unwrap();
            let len = e["length"].as_u64().unwrap();
            (0..len / 65536).map(move |k| host + k * 65536)
        })
        .collect()
}

#[test]
fn verify_bounds_its_report_of_a_badly_damaged_image() {
    let c = chain();
    // Thirty damaged blocks in the full: the report lists twenty and counts the rest.
    let full = image_of(&c, &c.ids[0]);
    let blocks: Vec<u64> = own_blocks(&full).into_iter().take(30).collect();
    assert_eq!(blocks.len(), 30);
    for b in &blocks {
        sendense_testkit::flip_byte(&full, b + 100);
    }
    let o = run(&c.state, &["backup", "verify", &c.ids[0], "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems = report["images"][0]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 21, "{report:#}");
    assert!(
        problems[20].as_str().unwrap().contains("10 more"),
        "{report:#}"
    );
}

#[test]
fn verify_names_data_beyond_the_end_of_the_disk() {
    let c = chain();
    // The top image grown past the disk's size with data written there (a tampered image):
    // named as such, not a crash.
    let top = image_of(&c, &c.ids[2]);
    sendense_testkit::run("qemu-img", &["resize", "-q", top.to_str().unwrap(), "+2M"]);
    qemu_io(&top, "qcow2", &["write -P 0x77 65M 64k"]);
    let o = run(&c.state, &["backup", "verify", &c.ids[2], "--json"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("beyond the end of the disk"), "{text}");
    assert!(text.contains(&c.ids[2]), "{text}");
}

/// Waits until a job of `kind` runs; its id.
fn running_job(state: &Path, kind: &str) -> String {
    sendense_testkit::running_job(env!("CARGO_BIN_EXE_sendense"), state, kind)
}

fn spawn_paused(state: &Path, args: &[&str], pause: &str) -> std::process::Child {
    sendense_testkit::spawn_paused(env!("CARGO_BIN_EXE_sendense"), state, args, pause)
}

#[test]
fn restore_verify_and_export_are_cancelled_by_job_cancel() {
    let c = chain();
    let d = c.dir.path();
    let out = d.join("out.qcow2");
    let runs: [(&str, Vec<&str>, &str); 3] = [
        (
            "restore",
            vec![
                "restore",
                &c.ids[2],
                "--disk",
                "2000",
                "--to",
                out.to_str().unwrap(),
            ],
            "restore.partial-created:3000",
        ),
        (
            "verify",
            vec!["backup", "verify", &c.ids[2]],
            "verify.image:3000",
        ),
        (
            "export",
            vec!["export", &c.ids[2], "--disk", "2000"],
            "none:0",
        ),
    ];
    for (kind, args, pause) in runs {
        let child = spawn_paused(&c.state, &args, pause);
        let id = running_job(&c.state, kind);
        let o = run(&c.state, &["job", "cancel", &id]);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(130), "{kind}: {}", stderr(&o));
        assert_eq!(
            json(&c.state, &["job", "show", &id])["status"],
            "cancelled",
            "{kind}"
        );
        let running = sendense_testkit::processes_with(d.to_str().unwrap(), &[]);
        assert!(running.is_empty(), "{kind}: left running: {running:?}");
        assert!(
            !out.exists() && !d.join("out.qcow2.partial").exists(),
            "{kind}"
        );
        let cleanup = json(&c.state, &["cleanup", "--dry-run"]);
        assert_eq!(
            cleanup["actions"],
            serde_json::json!([]),
            "{kind}: {cleanup}"
        );
    }
}

#[test]
fn a_backup_is_never_deleted_while_it_is_read() {
    let c = chain();
    // An export of the top, then a restore of the one below it: neither backup can be deleted
    // meanwhile; once they end, the delete goes through.
    let export = spawn_paused(&c.state, &["export", &c.ids[2], "--disk", "2000"], "none:0");
    running_job(&c.state, "export");
    let o = run(&c.state, &["backup", "delete", &c.ids[2]]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    let pid = export.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = export.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    json(&c.state, &["backup", "delete", &c.ids[2]]);

    let out = c.dir.path().join("r.raw");
    let restore = spawn_paused(
        &c.state,
        &[
            "restore",
            &c.ids[1],
            "--disk",
            "2000",
            "--to",
            out.to_str().unwrap(),
            "--format",
            "raw",
        ],
        "restore.partial-created:2000",
    );
    running_job(&c.state, "restore");
    let o = run(&c.state, &["backup", "delete", &c.ids[1]]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let o = restore.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(images_equal(
        out.to_str().unwrap(),
        "raw",
        c.refs[1].to_str().unwrap()
    ));
    json(&c.state, &["backup", "delete", &c.ids[1]]);
    assert_eq!(json(&c.state, &["backup", "verify", "--all"])["ok"], true);
}

#[test]
fn an_image_in_a_layout_left_to_qemu_is_verified_through_qemu() {
    // The full recompressed by hand, as an older backup whose length was never recorded: its
    // clusters are compressed, which Sendense's own reader of cluster tables leaves to QEMU.
    let c = chain();
    let id = &c.ids[0];
    let image = image_of(&c, id);
    let packed = c.dir.path().join("packed.qcow2");
    let ok = Command::new("qemu-img")
        .args(["convert", "-c", "-O", "qcow2", "-o", "cluster_size=65536"])
        .arg(&image)
        .arg(&packed)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::rename(&packed, &image).unwrap();
    let db = rusqlite::Connection::open(c.state.join("sendense.db")).unwrap();
    db.execute(
        "UPDATE backup_disks SET image_bytes = NULL WHERE backup_id = ?1",
        [id],
    )
    .unwrap();
    let manifest = c.dir.path().join(format!("repo/vm1/manifests/{id}.yaml"));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("image_bytes:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&manifest, text).unwrap();
    assert_eq!(json(&c.state, &["backup", "verify", id])["ok"], true);
    let out = c.dir.path().join("top.qcow2");
    sendense_testkit::assert_restore_equals(
        env!("CARGO_BIN_EXE_sendense"),
        &c.state,
        &c.ids[2],
        &out,
        &c.refs[2],
    );
    // Changed data in it is found the same way.
    qemu_io(&image, "qcow2", &["write -P 0x77 2M 64k"]);
    let o = run(&c.state, &["backup", "verify", id]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("differs") || stderr(&o).contains("differs"),
        "{}",
        stderr(&o)
    );
}
