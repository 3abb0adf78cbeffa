//! A repository is untrusted input: whoever can write to a shared repository must not be able to
//! make the hub read, write or remove anything outside it, run a command, or overwrite a backup.
//! And Sendense removes only what it can tie to its own jobs.

use sendense_testkit::{add_image_vm, cli, cli_json, qcow2_with, temp_hub, walk};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

fn run(state: &Path, args: &[&str]) -> Output {
    cli(env!("CARGO_BIN_EXE_sendense"), state, args)
}

fn json(state: &Path, args: &[&str]) -> Value {
    cli_json(env!("CARGO_BIN_EXE_sendense"), state, args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A hub with repository `r` and one backup of an image VM `vm1`: (dir, state, backup id).
fn hub_with_backup() -> (tempfile::TempDir, PathBuf, String) {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "r");
    let disk = qcow2_with(&dir.path().join("vm1.qcow2"), "8M", &["write -P 0x61 0 1M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "vm1", &[&disk]);
    let b = json(&state, &["backup", "start", "vm1"]);
    let id = b["backup"].as_str().unwrap().to_string();
    (dir, state, id)
}

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn hostile_manifests_are_reported_never_followed() {
    let (dir, state, id) = hub_with_backup();
    let d = dir.path();
    let repo = d.join("repo");
    let victim = d.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("precious.qcow2"), "precious").unwrap();
    std::fs::write(victim.join("precious.digests"), "precious too").unwrap();
    let before = snapshot(&victim);

    // Forged manifests beside the real one: each names something outside the layout.
    let real = std::fs::read_to_string(repo.join(format!("vm1/manifests/{id}.yaml"))).unwrap();
    let forge = |name: &str, from: &str, to: &str| {
        let fake_id = format!("20990101T000000Z-{name}");
        let text = real.replace(&id, &fake_id).replace(from, to);
        std::fs::write(repo.join(format!("vm1/manifests/{fake_id}.yaml")), text).unwrap();
    };
    forge(
        "aaaaa1",
        "file: vm1/2000/20990101T000000Z-aaaaa1.qcow2",
        "file: ../victim/precious.qcow2",
    );
    forge(
        "aaaaa2",
        "file: vm1/2000/20990101T000000Z-aaaaa2.qcow2",
        &format!("file: {}", victim.join("precious.qcow2").display()),
    );
    forge("aaaaa3", "name: vm1", "name: ../../x");
    // A hook among the source settings, a command the hub would run.
    let mut hooked = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&real).unwrap();
    hooked["vm"]["name"] = "hooked".into();
    hooked["backup"] = "20990101T000000Z-bbbbb1".into();
    hooked["vm"]["source"] = "nbd".into();
    hooked["vm"]["source_options"] = serde_yaml_ng::from_str(&format!(
        "{{urls: [\"nbd://127.0.0.1:1/x\"], pre_hook: [\"touch\", \"{}\"]}}",
        victim.join("pwned").display()
    ))
    .unwrap();
    for disk in hooked["disks"].as_sequence_mut().unwrap() {
        disk["file"] = "hooked/2000/20990101T000000Z-bbbbb1.qcow2".into();
    }
    std::fs::create_dir_all(repo.join("hooked/manifests")).unwrap();
    std::fs::create_dir_all(repo.join("hooked/2000")).unwrap();
    std::fs::copy(
        repo.join(format!("vm1/2000/{id}.qcow2")),
        repo.join("hooked/2000/20990101T000000Z-bbbbb1.qcow2"),
    )
    .unwrap();
    std::fs::copy(
        repo.join(format!("vm1/2000/{id}.digests")),
        repo.join("hooked/2000/20990101T000000Z-bbbbb1.digests"),
    )
    .unwrap();
    std::fs::write(
        repo.join("hooked/manifests/20990101T000000Z-bbbbb1.yaml"),
        serde_yaml_ng::to_string(&hooked).unwrap(),
    )
    .unwrap();

    // A new hub imports the repository (the old one is lost): the forged ones are named and
    // left out (exit 3); the real backup and the hooked VM (without its hook) come in.
    let other = d.join("other");
    assert!(run(&other, &["init"]).status.success());
    run(&state, &["repo", "remove", "r"]);
    let o = run(
        &other,
        &[
            "repo",
            "import",
            repo.to_str().unwrap(),
            "--take-over",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let skipped = report["skipped"].to_string();
    for forged in ["aaaaa1", "aaaaa2", "aaaaa3"] {
        assert!(skipped.contains(forged), "{forged} not named: {report:#}");
    }
    assert!(
        report["warnings"].to_string().contains("pre-hook"),
        "{report:#}"
    );
    let imported: Vec<&str> = report["backups_imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(imported.contains(&id.as_str()), "{report:#}");
    let shown = json(&other, &["vm", "show", "hooked"]);
    assert!(
        !shown.to_string().contains("pwned"),
        "a command from the repository was registered: {shown:#}"
    );

    // Whatever the new hub does with what it imported, nothing outside the repository changes.
    for b in &imported {
        json(&other, &["backup", "verify", b]);
    }
    json(&other, &["backup", "delete", "20990101T000000Z-bbbbb1"]);
    json(&other, &["backup", "delete", &id]);
    run(&other, &["cleanup"]);
    assert_eq!(
        snapshot(&victim),
        before,
        "a file outside the repository changed"
    );
    assert!(!victim.join("pwned").exists());
}

#[test]
fn a_link_out_of_the_repository_is_never_followed() {
    let (dir, state, id) = hub_with_backup();
    let d = dir.path();
    let repo = d.join("repo");
    // The VM's directory in the repository is replaced by a link to a copy elsewhere.
    let elsewhere = d.join("elsewhere");
    std::fs::rename(repo.join("vm1"), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, repo.join("vm1")).unwrap();
    let before = snapshot(&elsewhere);
    let o = run(&state, &["backup", "delete", &id]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("outside repository"), "{}", stderr(&o));
    let out = d.join("restored.qcow2");
    let o = run(
        &state,
        &[
            "restore",
            &id,
            "--disk",
            "2000",
            "--to",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(!out.exists());
    let o = run(&state, &["backup", "verify", &id, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("outside repository"));
    // The next backup does not write through the link either.
    let o = run(&state, &["backup", "start", "vm1"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(
        snapshot(&elsewhere),
        before,
        "files behind the link changed"
    );
}

#[test]
fn restore_never_writes_into_a_repository_or_the_state_directory() {
    let (dir, state, id) = hub_with_backup();
    let d = dir.path();
    let image = d.join(format!("repo/vm1/2000/{id}.qcow2"));
    let before = std::fs::read(&image).unwrap();
    for to in [
        image.clone(),
        d.join("repo/vm1/2000/new.qcow2"),
        d.join("state/sendense.db"),
        d.join("state/../repo/x.raw"),
    ] {
        let o = run(
            &state,
            &[
                "restore",
                &id,
                "--disk",
                "2000",
                "--to",
                to.to_str().unwrap(),
                "--force",
            ],
        );
        assert_eq!(o.status.code(), Some(5), "{}: {}", to.display(), stderr(&o));
        assert!(stderr(&o).contains("inside"), "{}", stderr(&o));
    }
    let o = run(
        &state,
        &[
            "restore",
            &id,
            "--all",
            "--to",
            d.join("repo/vm1").to_str().unwrap(),
            "--force",
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&image).unwrap(),
        before,
        "a backup was overwritten"
    );
    assert_eq!(json(&state, &["backup", "verify", &id])["ok"], true);
    assert!(!d.join("repo/vm1/2000/new.qcow2").exists());
}

#[test]
fn repositories_never_overlap_each_other_or_the_state_directory() {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "r");
    let d = dir.path();
    for (path, why) in [
        (PathBuf::from("/"), "root directory"),
        (d.join("state"), "state directory"),
        (d.join("state/repo"), "state directory"),
        (d.to_path_buf(), "overlaps"),
        (d.join("repo/inner"), "overlaps repository `r`"),
    ] {
        let o = run(
            &state,
            &["repo", "add", "x", "--path", path.to_str().unwrap()],
        );
        assert_eq!(
            o.status.code(),
            Some(5),
            "{}: {}",
            path.display(),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains(why),
            "{}: {}",
            path.display(),
            stderr(&o)
        );
    }
    assert!(!d.join("repo/inner").exists());
    assert_eq!(json(&state, &["repo", "list"]).as_array().unwrap().len(), 1);
}

#[test]
fn names_follow_the_documented_rule() {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "r");
    let disk = qcow2_with(&dir.path().join("n.qcow2"), "8M", &[]);
    for bad in [
        "x$(id)",
        "a:b",
        "zero\u{200b}width",
        "manifests",
        "locks",
        "sendense-repo.yaml",
    ] {
        let o = run(
            &state,
            &["vm", "add", bad, "--disk", disk.to_str().unwrap()],
        );
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    assert_eq!(json(&state, &["vm", "list"]), serde_json::json!([]));
}

#[test]
fn cleanup_touches_only_what_its_own_jobs_left_and_says_so_first() {
    let (dir, state, _) = hub_with_backup();
    let repo = dir.path().join("repo");
    // Files that look unfinished but that no job of this hub wrote (another hub's running
    // backup), and files outside the layout that merely share the suffix.
    let theirs = repo.join("vm1/2000/20990101T000000Z-ccccc1.qcow2.partial");
    let theirs_tmp = repo.join("vm1/manifests/.20990101T000000Z-ccccc1.yaml.tmp-1");
    let outside = repo.join("notes/mine.qcow2.partial");
    let deep = repo.join("vm1/2000/sub/x.qcow2.partial");
    for f in [&theirs, &theirs_tmp, &outside, &deep] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "someone else's").unwrap();
    }
    let dry = json(&state, &["cleanup", "--dry-run"]);
    let real = json(&state, &["cleanup"]);
    assert_eq!(dry["actions"], real["actions"], "{dry:#}\n{real:#}");
    assert_eq!(dry["strays"], real["strays"]);
    let strays = real["strays"].to_string();
    assert!(strays.contains("ccccc1.qcow2.partial"), "{real:#}");
    assert!(strays.contains("ccccc1.yaml.tmp-1"), "{real:#}");
    assert!(
        !strays.contains("mine") && !strays.contains("sub"),
        "{real:#}"
    );
    for f in [&theirs, &theirs_tmp, &outside, &deep] {
        assert!(f.exists(), "{} was removed", f.display());
    }
}

#[test]
fn paths_are_kept_exactly_or_refused_never_altered() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (dir, state, id) = hub_with_backup();
    // A disk whose name is not UTF-8, and a file with the name a lossy conversion would give.
    let bad = dir.path().join(OsStr::from_bytes(b"bad\xff\xfename.qcow2"));
    let made = qcow2_with(
        &dir.path().join("made.qcow2"),
        "8M",
        &["write -P 0x62 0 1M"],
    );
    std::fs::rename(made, &bad).unwrap();
    qcow2_with(
        &dir.path().join("bad\u{fffd}\u{fffd}name.qcow2"),
        "8M",
        &["write -P 0x63 0 1M"],
    );
    let sendense = |args: &[&OsStr]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sendense"))
            .args(args)
            .env("SENDENSE_HOME", &state)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let o = sendense(&[
        OsStr::new("vm"),
        OsStr::new("add"),
        OsStr::new("vm2"),
        OsStr::new("--disk"),
        bad.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not valid UTF-8"), "{}", stderr(&o));
    assert_eq!(json(&state, &["vm", "list"]).as_array().unwrap().len(), 1);
    // Nor is a restore written to such a path.
    let dest = dir.path().join(OsStr::from_bytes(b"out\xff.qcow2"));
    let o = sendense(&[
        OsStr::new("restore"),
        OsStr::new(&id),
        OsStr::new("--disk"),
        OsStr::new("2000"),
        OsStr::new("--to"),
        dest.as_os_str(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!dest.exists());
}

#[test]
fn one_file_under_two_names_is_one_disk() {
    let (dir, state, _) = hub_with_backup();
    let disk = dir.path().join("vm1.qcow2");
    let link = dir.path().join("other-name.qcow2");
    std::fs::hard_link(&disk, &link).unwrap();
    // Another VM on the same file under another name.
    let o = run(
        &state,
        &["vm", "add", "vm2", "--disk", link.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is the same file as disk") && stderr(&o).contains("`vm1`"),
        "{}",
        stderr(&o)
    );
    // Two keys of one new VM on one file.
    let fresh = qcow2_with(&dir.path().join("fresh.qcow2"), "8M", &[]);
    let twin = dir.path().join("fresh-twin.qcow2");
    std::fs::hard_link(&fresh, &twin).unwrap();
    let o = run(
        &state,
        &[
            "vm",
            "add",
            "vm3",
            "--disk",
            fresh.to_str().unwrap(),
            "--disk",
            twin.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("(a hard link)"), "{}", stderr(&o));
    assert_eq!(json(&state, &["vm", "list"]).as_array().unwrap().len(), 1);
}

/// A disk's format is the one recorded when it was added, never what the file looks like now:
/// a raw disk whose guest wrote an image header (which could name a backing file anywhere on
/// the hub) is not read as that image, and a replaced qcow2 is not backed up as a raw file.
#[test]
fn a_disk_that_reads_as_another_format_is_refused() {
    let (dir, state) = temp_hub(env!("CARGO_BIN_EXE_sendense"), "r");
    let raw = dir.path().join("raw.img");
    std::fs::write(&raw, vec![0x5au8; 1 << 20]).unwrap();
    let qcow = qcow2_with(&dir.path().join("q.qcow2"), "8M", &["write -P 0x61 0 1M"]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "rawvm", &[&raw]);
    add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "qvm", &[&qcow]);
    for vm in ["rawvm", "qvm"] {
        json(&state, &["backup", "start", vm]);
    }
    // The guest of the raw VM writes a QCOW2 header backed by a file of the hub.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"hub secret").unwrap();
    std::fs::remove_file(&raw).unwrap();
    sendense_testkit::run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            secret.to_str().unwrap(),
            "-F",
            "raw",
            raw.to_str().unwrap(),
            "1M",
        ],
    );
    std::fs::write(&qcow, b"this is no longer a disk image").unwrap();
    for (vm, was, now) in [("rawvm", "raw", "qcow2"), ("qvm", "qcow2", "raw")] {
        let o = run(&state, &["backup", "start", vm]);
        assert_eq!(o.status.code(), Some(5), "{vm}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "was added as a {was} image, but the file now reads as {now}"
            )),
            "{}",
            stderr(&o)
        );
    }
    let list = json(&state, &["backup", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
}
