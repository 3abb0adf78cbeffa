//! One repository, two hubs. A repository has one owner; a second hub gets it only by taking it
//! over, and then the first hub writes nothing there any more. Deletes consult the repository
//! itself, not only the catalog. And `repo import` names every backup it could not register —
//! or, with `--salvage`, registers one whose manifest was lost when its files prove it.

use sendense_testkit::output_text as text;
use sendense_testkit::{add_image_vm, cli, cli_json, qcow2_with, temp_hub};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn run(state: &Path, args: &[&str]) -> Output {
    cli(env!("CARGO_BIN_EXE_sendense"), state, args)
}

fn json(state: &Path, args: &[&str]) -> Value {
    cli_json(env!("CARGO_BIN_EXE_sendense"), state, args)
}

/// `repo import REPO --json [extra]` on hub `state`.
fn import(state: &Path, repo: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["repo", "import", repo.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    run(state, &args)
}

/// Hub A with repository `r` and an image VM `vm1` backed up three times (full, inc, inc).
struct HubA {
    dir: tempfile::TempDir,
    state: PathBuf,
    disk: PathBuf,
    ids: Vec<String>,
}

fn hub_a() -> HubA {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "r");
    let disk = qcow2_with(&dir.path().join("vm1.qcow2"), "8M", &["write -P 0x31 0 2M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "vm1", &[&disk]);
    let mut ids = Vec::new();
    for i in 0..3u8 {
        sendense_testkit::qemu_io(
            &disk,
            "qcow2",
            &[&format!("write -P {} {}M 64k", 0x40 + i, i + 3)],
        );
        let b = json(&state, &["backup", "start", "vm1"]);
        ids.push(b["backup"].as_str().unwrap().to_string());
    }
    HubA {
        dir,
        state,
        disk,
        ids,
    }
}

impl HubA {
    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    fn image(&self, i: usize) -> PathBuf {
        self.repo().join(format!("vm1/2000/{}.qcow2", self.ids[i]))
    }

    /// A second hub, initialised, next to this one.
    fn hub_b(&self) -> PathBuf {
        let state = self.dir.path().join("hub-b");
        assert!(run(&state, &["init"]).status.success());
        state
    }
}

#[test]
fn a_repository_has_one_owner_and_another_hub_must_take_it_over() {
    let a = hub_a();
    let b = a.hub_b();
    let repo = a.repo();
    // Hub B may not simply import it: hub A owns it and is alive.
    let o = run(&b, &["repo", "import", repo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        text(&o).contains("owned by another hub") && text(&o).contains("--take-over"),
        "{}",
        text(&o)
    );
    assert_eq!(json(&b, &["repo", "list"]), serde_json::json!([]));
    // Taken over: B has every backup, and says whose it was.
    let r = json(
        &b,
        &["repo", "import", repo.to_str().unwrap(), "--take-over"],
    );
    assert_eq!(r["backups_imported"].as_array().unwrap().len(), 3, "{r}");
    assert!(
        r["warnings"].to_string().contains("taken over from hub"),
        "{r}"
    );
    // From now on hub A writes nothing there: no backup, no delete; its list says why.
    let files_before = sendense_testkit::walk(&repo);
    sendense_testkit::qemu_io(&a.disk, "qcow2", &["write -P 0x55 6M 64k"]);
    let o = run(&a.state, &["backup", "start", "vm1"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("owned by another hub"), "{}", text(&o));
    let o = run(&a.state, &["backup", "delete", &a.ids[2]]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(sendense_testkit::walk(&repo), files_before);
    let shown = json(&a.state, &["repo", "show", "r"]);
    assert!(
        shown["problem"]
            .to_string()
            .contains("owned by another hub"),
        "{shown}"
    );
    // Hub A's restores still read it; hub B backs up into it as usual.
    let out = a.dir.path().join("out.qcow2");
    let o = run(
        &a.state,
        &[
            "restore",
            &a.ids[2],
            "--disk",
            "2000",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s = json(&b, &["backup", "start", "vm1"]);
    assert_eq!(s["status"], "completed", "{s}");
}

#[test]
fn a_delete_keeps_a_backup_that_an_image_or_manifest_of_the_repository_depends_on() {
    let a = hub_a();
    // Hub B takes the repository over while hub A's last backup has lost its manifest: B's
    // catalog does not know it, but its image is backed by the middle backup.
    std::fs::remove_file(a.repo().join(format!("vm1/manifests/{}.yaml", a.ids[2]))).unwrap();
    run(&a.state, &["repo", "remove", "r"]);
    let b = a.hub_b();
    let o = run(
        &b,
        &["repo", "import", a.repo().to_str().unwrap(), "--take-over"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains(&a.ids[2]),
        "the lost backup is named: {}",
        text(&o)
    );
    assert_eq!(json(&b, &["backup", "list"]).as_array().unwrap().len(), 2);
    let o = run(&b, &["backup", "delete", &a.ids[1]]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{}.qcow2 (backed by its image)", a.ids[2])),
        "{}",
        text(&o)
    );
    assert!(a.image(1).is_file() && a.image(2).is_file());
}

#[test]
fn a_delete_keeps_a_backup_that_an_image_being_written_depends_on() {
    // Hub B took the repository over while hub A was writing an incremental on the top.
    let a = hub_a();
    run(&a.state, &["repo", "remove", "r"]);
    let b = a.hub_b();
    json(
        &b,
        &["repo", "import", a.repo().to_str().unwrap(), "--take-over"],
    );
    let partial = a
        .repo()
        .join("vm1/2000/20991231T235959Z-abcdef.qcow2.partial");
    sendense_testkit::create_overlay(&partial, &format!("{}.qcow2", a.ids[2]));
    let o = run(&b, &["backup", "delete", &a.ids[2]]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains(".qcow2.partial"), "{}", text(&o));
    assert!(a.image(2).is_file());
    // A manifest naming it as a parent keeps it too.
    std::fs::remove_file(&partial).unwrap();
    let m = a.repo().join(format!("vm1/manifests/{}.yaml", a.ids[2]));
    let forged = a.repo().join("vm1/manifests/20991231T235959Z-abcdef.yaml");
    let text_m = std::fs::read_to_string(&m)
        .unwrap()
        .replace(
            &format!("parent: {}", a.ids[1]),
            &format!("parent: {}", a.ids[2]),
        )
        .replace(&a.ids[2], "20991231T235959Z-abcdef")
        .replace(
            "parent: 20991231T235959Z-abcdef",
            &format!("parent: {}", a.ids[2]),
        );
    std::fs::write(&forged, text_m).unwrap();
    let o = run(&b, &["backup", "delete", &a.ids[2]]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("20991231T235959Z-abcdef"), "{}", text(&o));
}

#[test]
fn salvage_registers_a_backup_whose_files_prove_it_and_never_one_they_do_not() {
    let a = hub_a();
    // The middle backup's manifest is lost; the top's is there but its parent is not known.
    let lost = a.repo().join(format!("vm1/manifests/{}.yaml", a.ids[1]));
    std::fs::remove_file(&lost).unwrap();
    run(&a.state, &["repo", "remove", "r"]);
    let b = a.hub_b();
    let o = import(&b, &a.repo(), &["--take-over"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let skipped = r["skipped"].to_string();
    assert!(
        skipped.contains(&a.ids[1]) && skipped.contains("--salvage"),
        "{r}"
    );
    assert!(
        skipped.contains(&a.ids[2]),
        "the top waits for its parent: {r}"
    );
    // Imported again with --salvage: the middle from its files, then the top from its
    // manifest; exact, verified.
    let o = import(&b, &a.repo(), &["--salvage"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["backups_salvaged"], serde_json::json!([a.ids[1]]), "{r}");
    assert_eq!(r["backups_imported"], serde_json::json!([a.ids[2]]), "{r}");
    assert_eq!(r["backups_known"], serde_json::json!([a.ids[0]]), "{r}");
    assert!(lost.is_file(), "a new manifest describes it");
    let o = run(&b, &["backup", "verify", &a.ids[2]]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = a.dir.path().join("out.qcow2");
    sendense_testkit::assert_restore_equals(
        env!("CARGO_BIN_EXE_sendense"),
        &b,
        &a.ids[2],
        &out,
        &a.disk,
    );
}

#[test]
fn salvage_refuses_files_that_do_not_prove_a_backup() {
    let a = hub_a();
    std::fs::remove_file(a.repo().join(format!("vm1/manifests/{}.yaml", a.ids[2]))).unwrap();
    // A bit flipped in the data of the manifest-less top: its digests no longer agree.
    let host = sendense_testkit::qcow2::host_offset(&a.image(2), 5 << 20);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.image(2))
        .unwrap();
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, host + 7).unwrap();
    f.write_all_at(&[byte[0] ^ 0x80], host + 7).unwrap();
    run(&a.state, &["repo", "remove", "r"]);
    let b = a.hub_b();
    let o = import(&b, &a.repo(), &["--take-over", "--salvage"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["backups_salvaged"], serde_json::json!([]), "{r}");
    let skipped = r["skipped"].to_string();
    assert!(
        skipped.contains(&format!("{}: not salvaged", a.ids[2])) && skipped.contains("offset"),
        "{r}"
    );
    assert!(!a
        .repo()
        .join(format!("vm1/manifests/{}.yaml", a.ids[2]))
        .exists());
}

#[test]
fn a_repository_is_never_taken_over_while_its_owner_writes_into_it() {
    let a = hub_a();
    let b = a.hub_b();
    // Hub A's backup holds on after its snapshot, writing into the repository.
    sendense_testkit::qemu_io(&a.disk, "qcow2", &["write -P 0x66 7M 64k"]);
    let backup = std::process::Command::new(env!("CARGO_BIN_EXE_sendense"))
        .args(["backup", "start", "vm1", "--json"])
        .env("SENDENSE_HOME", &a.state)
        .env("SENDENSE_TEST_PAUSE_AT", "backup.snapshot-taken:4000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lock = a.repo().join("locks/writers.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = run(
        &b,
        &["repo", "import", a.repo().to_str().unwrap(), "--take-over"],
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(text(&o).contains("being written to now"), "{}", text(&o));
    assert_eq!(json(&b, &["repo", "list"]), serde_json::json!([]));
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Once it has ended, the take-over goes through.
    let r = json(
        &b,
        &["repo", "import", a.repo().to_str().unwrap(), "--take-over"],
    );
    assert_eq!(r["backups_imported"].as_array().unwrap().len(), 4, "{r}");
    assert!(!lock.exists(), "the lock file goes with its last holder");
}
