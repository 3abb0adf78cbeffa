//! Copies into a second repository (3-2-1): only the chain links the destination lacks move,
//! copies stay chains that restore byte for byte, they outlive the primary repository, and a
//! copy that is wrong or interrupted leaves nothing behind.

use sendense_testkit::{
    add_image_vm, cli, cli_json, create_image, output_text, qemu_io, run, temp_hub, walk,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

/// A hub with repositories `local` (the default, `<dir>/repo`) and `offsite`, VM `vm1` with one
/// 32 MiB disk holding 8 MiB of data.
fn lab() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let (dir, state) = temp_hub(BIN, "local");
    let offsite = dir.path().join("offsite");
    cli_json(
        BIN,
        &state,
        &[
            "repo",
            "add",
            "offsite",
            "--path",
            offsite.to_str().unwrap(),
        ],
    );
    let disk = create_image(&dir.path().join("vm1.qcow2"), "qcow2", "32M");
    qemu_io(&disk, "qcow2", &["write -P 0x11 0 8M"]);
    add_image_vm(BIN, &state, "vm1", &[&disk]);
    (dir, state, disk, offsite)
}

/// Backs `vm1` up after `writes`; returns the backup id and a reference copy of the disk.
fn backup_after(state: &Path, disk: &Path, writes: &[&str], n: usize) -> (String, PathBuf) {
    if !writes.is_empty() {
        qemu_io(disk, "qcow2", writes);
    }
    let reference = disk.with_file_name(format!("ref{n}.qcow2"));
    std::fs::copy(disk, &reference).unwrap();
    let b = cli_json(BIN, state, &["backup", "start", "vm1"]);
    (b["backup"].as_str().unwrap().to_string(), reference)
}

fn restores_equal(state: &Path, id: &str, extra: &[&str], reference: &Path) {
    sendense_testkit::assert_restores_to(BIN, state, id, extra, reference);
}

/// The backups a `backup copy` report says it copied, in order.
fn copied_from(report: &Value) -> Vec<&str> {
    report["copied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["from"].as_str().unwrap())
        .collect()
}

fn file_len(p: &str) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

#[test]
fn copies_move_only_missing_links_keep_chains_and_outlive_the_primary() {
    let (dir, state, disk, offsite) = lab();
    let (b1, r1) = backup_after(&state, &disk, &[], 1);
    let (b2, r2) = backup_after(&state, &disk, &["write -P 0x22 9M 1M"], 2);
    let (b3, r3) = backup_after(
        &state,
        &disk,
        &["write -z 0 512k", "write -P 0x33 20M 2M"],
        3,
    );

    // The copy of b2 brings its parent along, parents first.
    let c = cli_json(BIN, &state, &["backup", "copy", &b2, "--to", "offsite"]);
    assert_eq!(copied_from(&c), [b1.as_str(), b2.as_str()], "{c:#}");
    assert_eq!(c["present"], serde_json::json!([]));
    let c1 = c["copied"][0]["backup"].as_str().unwrap().to_string();
    let c2 = c["copy"].as_str().unwrap().to_string();
    assert_ne!(c2, b2, "a copy is a backup of its own");
    assert_eq!(c2[..16], b2[..16], "with the restore point's time stamp");

    // The copy of b3 moves only b3's own data: its image and digest file, not the chain.
    let c = cli_json(BIN, &state, &["backup", "copy", &b3, "--to", "offsite"]);
    assert_eq!(c["copied"].as_array().unwrap().len(), 1, "{c:#}");
    // Its parent is there: nothing older is even looked at.
    assert_eq!(c["present"], serde_json::json!([[b2, c2]]), "{c:#}");
    let rec = cli_json(BIN, &state, &["backup", "show", &b3]);
    let image = rec["disks"][0]["file"].as_str().unwrap();
    let own = file_len(image) + file_len(&image.replace(".qcow2", ".digests"));
    let written = c["bytes_written"].as_u64().unwrap();
    let data = rec["disks"][0]["bytes_written"].as_u64().unwrap();
    assert!(
        written >= data && written <= own,
        "copied {written} bytes for an incremental of {data} bytes (files {own})"
    );
    let full = cli_json(BIN, &state, &["backup", "show", &b1]);
    assert!(written < file_len(full["disks"][0]["file"].as_str().unwrap()) / 2);
    let c3 = c["copy"].as_str().unwrap().to_string();
    // Asked again: nothing moves.
    let again = cli_json(BIN, &state, &["backup", "copy", &b3, "--to", "offsite"]);
    assert_eq!(again["copied"], serde_json::json!([]));
    assert_eq!(again["copy"], c3.as_str());

    // A chain of the same increments in the destination, backed by relative names.
    let copy = cli_json(BIN, &state, &["backup", "show", &c3]);
    assert_eq!(copy["repo"], "offsite");
    assert_eq!(copy["copy_of"], b3.as_str());
    assert_eq!(copy["disks"][0]["mode"], "incremental");
    assert_eq!(copy["disks"][0]["parent"], c2.as_str());
    let info = run(
        "qemu-img",
        &[
            "info",
            "--backing-chain",
            "--output=json",
            copy["disks"][0]["file"].as_str().unwrap(),
        ],
    );
    let chain: Value = serde_json::from_str(&info).unwrap();
    let chain = chain.as_array().unwrap();
    assert_eq!(chain.len(), 3);
    for link in chain {
        let file = link["filename"].as_str().unwrap();
        assert!(Path::new(file).starts_with(&offsite), "{file}");
        if let Some(b) = link["backing-filename"].as_str() {
            assert!(!b.contains('/'), "backing name {b} is not relative");
        }
    }
    // `backup show` lists where the restore point is.
    let shown = cli_json(BIN, &state, &["backup", "show", &b3]);
    let repos: Vec<&str> = shown["copies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["repo"].as_str().unwrap())
        .collect();
    assert_eq!(repos, ["local", "offsite"]);
    let text = output_text(&cli(BIN, &state, &["backup", "show", &b3]));
    assert!(text.contains(&format!("offsite ({c3})")), "{text}");

    // Verify and restore from the copies.
    let v = cli_json(BIN, &state, &["backup", "verify", &b3, "--repo", "offsite"]);
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["images"].as_array().unwrap().len(), 3);
    for (id, reference) in [(&b1, &r1), (&b2, &r2), (&b3, &r3)] {
        restores_equal(&state, id, &["--repo", "offsite"], reference);
    }
    let o = cli(
        BIN,
        &state,
        &[
            "restore", &b1, "--repo", "nowhere", "--disk", "2000", "--to", "x",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", output_text(&o));

    // The copy repository keeps less than the primary (as its own prune rules decide): the
    // next copy moves only the new backup, never the older links removed there.
    for old in [&c2, &c1] {
        cli_json(BIN, &state, &["backup", "delete", old]);
    }
    let (b4, r4) = backup_after(&state, &disk, &["write -P 0x44 24M 1M"], 4);
    let c = cli_json(BIN, &state, &["backup", "copy", &b4, "--to", "offsite"]);
    assert_eq!(copied_from(&c), [b4.as_str()], "{c:#}");
    assert_eq!(c["present"], serde_json::json!([[b3, c3]]));
    let c4 = c["copy"].as_str().unwrap().to_string();
    restores_equal(&state, &b4, &["--repo", "offsite"], &r4);
    restores_equal(&state, &b3, &["--repo", "offsite"], &r3);

    // A copy found damaged is not built on: the restore point is copied afresh, and restores
    // from the destination use the whole copy.
    let c4_image = cli_json(BIN, &state, &["backup", "show", &c4])["disks"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();
    let at = first_data_offset(&c4_image) + 100;
    sendense_testkit::flip_byte(Path::new(&c4_image), at);
    let o = cli(BIN, &state, &["backup", "verify", &b4, "--repo", "offsite"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    assert!(cli_json(BIN, &state, &["backup", "show", &c4])["damaged"].is_string());
    let c = cli_json(BIN, &state, &["backup", "copy", &b4, "--to", "offsite"]);
    let fresh = c["copy"].as_str().unwrap().to_string();
    assert_ne!(fresh, c4, "{c:#}");
    assert_eq!(c["copied"].as_array().unwrap().len(), 1, "{c:#}");
    restores_equal(&state, &b4, &["--repo", "offsite"], &r4);
    cli_json(BIN, &state, &["backup", "delete", &c4]);

    // The primary repository is lost: its restore points live on in the copies.
    std::fs::remove_dir_all(dir.path().join("repo")).unwrap();
    // Verify names what it could not reach, and marks nothing damaged for it.
    let o = cli(BIN, &state, &["backup", "verify", "--vm", "vm1", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let problems: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["problems"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        !problems.is_empty()
            && problems
                .iter()
                .all(|p| p.contains("repository `local` is not available")),
        "{problems:#?}"
    );
    assert_eq!(
        cli_json(BIN, &state, &["backup", "show", &b3])["damaged"],
        Value::Null
    );
    let lost = sendense_testkit::restore_disk(BIN, &state, &b3, &dir.path().join("x.qcow2"), &[]);
    assert!(!lost.status.success());
    assert!(
        output_text(&lost).contains("--repo offsite"),
        "{}",
        output_text(&lost)
    );
    restores_equal(&state, &b3, &["--repo", "offsite"], &r3);

    // And a new hub rebuilds them from the copy repository alone.
    let state2 = dir.path().join("state2");
    assert!(cli(BIN, &state2, &["init"]).status.success());
    let imported = cli_json(
        BIN,
        &state2,
        &["repo", "import", offsite.to_str().unwrap(), "--take-over"],
    );
    assert_eq!(imported["backups_imported"].as_array().unwrap().len(), 2);
    let list = cli_json(BIN, &state2, &["backup", "list"]);
    let origins: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["copy_of"].as_str().unwrap())
        .collect();
    assert_eq!(origins, [b4.as_str(), b3.as_str()]);
    for (id, reference) in [(&b3, &r3), (&b4, &r4)] {
        restores_equal(&state2, id, &["--repo", "offsite"], reference);
    }
    // An original the new hub never knew: its copy is named.
    let o = cli(BIN, &state2, &["backup", "show", &b4]);
    assert_eq!(o.status.code(), Some(4), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("copies of it stay"),
        "{}",
        output_text(&o)
    );
}

/// The file offset of the first data cluster of a QCOW2 image (its own data, not metadata).
fn first_data_offset(image: &str) -> u64 {
    let map: Value = serde_json::from_str(&run(
        "qemu-img",
        &["map", "--output=json", "-f", "qcow2", image],
    ))
    .unwrap();
    map.as_array()
        .unwrap()
        .iter()
        .find(|e| e["data"] == true && e["offset"].is_u64())
        .and_then(|e| e["offset"].as_u64())
        .expect("a data cluster")
}

/// What the destination holds of VM `vm1`: every file under `<offsite>/vm1`.
fn vm_files(offsite: &Path) -> Vec<PathBuf> {
    walk(&offsite.join("vm1"))
}

#[test]
fn a_copy_that_is_damaged_or_killed_leaves_nothing_in_the_destination() {
    let (_dir, state, disk, offsite) = lab();
    let (b1, r1) = backup_after(&state, &disk, &[], 1);
    let image = cli_json(BIN, &state, &["backup", "show", &b1])["disks"][0]["file"]
        .as_str()
        .unwrap()
        .to_string();

    // Bit rot in the primary since the backup: the copy is checked against the digests
    // recorded at backup time, fails naming the damage, and nothing of it stays.
    let at = first_data_offset(&image) + 4097;
    sendense_testkit::flip_byte(Path::new(&image), at);
    let o = cli(BIN, &state, &["backup", "copy", &b1, "--to", "offsite"]);
    let text = output_text(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("does not match what the backup recorded"),
        "{text}"
    );
    assert!(text.contains("offset"), "{text}");
    assert_eq!(vm_files(&offsite), Vec::<PathBuf>::new());
    let in_offsite = cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]);
    assert_eq!(in_offsite, serde_json::json!([]));
    let jobs = cli_json(BIN, &state, &["job", "list"]);
    assert_eq!(jobs[0]["kind"], "copy");
    assert_eq!(jobs[0]["status"], "failed");
    sendense_testkit::flip_byte(Path::new(&image), at);

    // Killed after its files were renamed, before it was recorded: the next command discards
    // it — rows and files.
    for point in [
        "copy.disk-written#1",
        "copy.renamed#1",
        "copy.manifest-written#1",
    ] {
        sendense_testkit::cli_killed_at(
            BIN,
            &state,
            &["backup", "copy", &b1, "--to", "offsite"],
            point,
        );
        let in_offsite = cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]);
        assert_eq!(in_offsite, serde_json::json!([]), "after {point}");
        assert_eq!(vm_files(&offsite), Vec::<PathBuf>::new(), "after {point}");
    }

    // Then it copies, and the copy restores.
    let c = cli_json(BIN, &state, &["backup", "copy", &b1, "--to", "offsite"]);
    assert_eq!(c["copied"].as_array().unwrap().len(), 1);
    restores_equal(&state, &b1, &["--repo", "offsite"], &r1);
    // Copying into the repository it is in is refused.
    let o = cli(BIN, &state, &["backup", "copy", &b1, "--to", "local"]);
    assert_eq!(o.status.code(), Some(2), "{}", output_text(&o));
}
