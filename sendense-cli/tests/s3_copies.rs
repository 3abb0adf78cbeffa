//! Copies into S3 repositories against a real S3 server (Ceph RGW, one per test run): a live
//! VM's chain copied link by link (only what the bucket lacks), restored from the bucket alone,
//! rebuilt by `repo import` on a fresh hub, verified — and damage in an object found; Object
//! Lock keeping chains whole; a copy killed mid-upload leaving nothing committed.

use sendense_testkit::{
    add_image_vm, cli_hub, cli_json, create_image, images_equal, output_text, qemu_io, rgw, QemuVm,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

fn run(state: &Path, args: &[&str]) -> (i32, String) {
    sendense_testkit::cli_status(BIN, state, args)
}

/// `repo add NAME --s3 URL` with the test server's keys (and `extra`).
fn add_s3(state: &Path, creds: &Path, name: &str, url: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "repo",
        "add",
        name,
        "--s3",
        url,
        "--path-style",
        "--credentials-file",
        creds.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cli_json(BIN, state, &args)
}

/// The keys of the objects (latest versions, no delete markers) under `prefix` in `bucket`.
fn objects(server: &rgw::Rgw, bucket: &str, prefix: &str) -> Vec<String> {
    let xml = server.get_text(bucket);
    let mut keys: Vec<String> = xml
        .split("<Key>")
        .skip(1)
        .filter_map(|p| p.split_once("</Key>").map(|(k, _)| k.to_string()))
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.sort();
    keys
}

/// The backups a `backup copy` report says it copied, in order.
fn copied_from(report: &Value) -> Vec<String> {
    report["copied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["from"].as_str().unwrap().to_string())
        .collect()
}

fn restores_equal(state: &Path, id: &str, extra: &[&str], reference: &Path) {
    sendense_testkit::assert_restores_to(BIN, state, id, extra, reference);
}

/// Writes `io` (a qemu-io command) into the live VM's disk through the guest's device, and the
/// same into the reference image.
fn write_both(vm: &QemuVm, reference: &Path, io: &str) {
    vm.guest_io(0, io);
    qemu_io(reference, "qcow2", &[io]);
}

#[test]
fn a_live_chain_copied_to_a_bucket_restores_imports_and_verifies_from_the_bucket_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = rgw::shared();
    let state = cli_hub(BIN, d, "local");
    let creds = server.credentials_file(d);
    let bucket = server.bucket("copies", false);
    let url = format!("{}/{bucket}/site2", server.endpoint);
    add_s3(&state, &creds, "offsite", &url, &[]);

    // A live VM: full, then two incrementals, the reference kept beside.
    let live = create_image(&d.join("live.qcow2"), "qcow2", "32M");
    let model = create_image(&d.join("model.qcow2"), "qcow2", "32M");
    let vm = QemuVm::start(d, "live", &[("qcow2", &live)]);
    cli_json(
        BIN,
        &state,
        &["vm", "add", "pg1", "--qmp", vm.qmp.to_str().unwrap()],
    );
    let mut refs: Vec<PathBuf> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let steps: [&[&str]; 3] = [
        &["write -P 0x11 0 6M", "write -P 0x12 20M 1M"],
        &["write -P 0x22 8M 1M"],
        &["write -z 0 512k", "write -P 0x33 24M 2M"],
    ];
    for (n, writes) in steps.iter().enumerate() {
        for io in *writes {
            write_both(&vm, &model, io);
        }
        let b = cli_json(BIN, &state, &["backup", "start", "pg1"]);
        ids.push(b["backup"].as_str().unwrap().to_string());
        let r = d.join(format!("ref{n}.qcow2"));
        std::fs::copy(&model, &r).unwrap();
        refs.push(r);
    }
    vm.quit();

    // The copy of the second brings its parent along; the third moves only its own link.
    let two = cli_json(BIN, &state, &["backup", "copy", &ids[1], "--to", "offsite"]);
    assert_eq!(
        copied_from(&two),
        [ids[0].clone(), ids[1].clone()],
        "{two:#}"
    );
    let after_two = objects(server, &bucket, "site2/");
    // sendense-repo.yaml, and per link its image, packed digests and manifest.
    assert_eq!(after_two.len(), 1 + 2 * 3, "{after_two:#?}");
    let c = cli_json(BIN, &state, &["backup", "copy", &ids[2], "--to", "offsite"]);
    assert_eq!(copied_from(&c), [ids[2].clone()], "{c:#}");
    let copies: Vec<String> = vec![
        two["copied"][0]["backup"].as_str().unwrap().to_string(),
        two["copied"][1]["backup"].as_str().unwrap().to_string(),
        c["copy"].as_str().unwrap().to_string(),
    ];
    assert_eq!(c["copy"], copies[2].as_str());
    assert_eq!(c["present"], serde_json::json!([[ids[1], copies[1]]]));
    let full_image = cli_json(BIN, &state, &["backup", "show", &ids[0]]);
    let full_len = std::fs::metadata(full_image["disks"][0]["file"].as_str().unwrap())
        .unwrap()
        .len();
    assert!(
        c["bytes_written"].as_u64().unwrap() < full_len / 2,
        "an incremental's copy uploaded {} bytes (the full's image: {full_len})",
        c["bytes_written"]
    );
    assert_eq!(objects(server, &bucket, "site2/").len(), 1 + 3 * 3);
    let again = cli_json(BIN, &state, &["backup", "copy", &ids[2], "--to", "offsite"]);
    assert_eq!(again["copied"], serde_json::json!([]));
    assert_eq!(objects(server, &bucket, "site2/").len(), 1 + 3 * 3);

    // Any S3 client and qemu-img restore from the bucket: the images are a chain by relative
    // backing names.
    let download = d.join("download");
    std::fs::create_dir(&download).unwrap();
    for id in &copies {
        let key = format!("{bucket}/site2/pg1/2000/{id}.qcow2");
        assert_eq!(
            server.get_file(&key, &download.join(format!("{id}.qcow2"))),
            "200"
        );
    }
    let top = download.join(format!("{}.qcow2", copies[2]));
    assert!(images_equal(
        top.to_str().unwrap(),
        "qcow2",
        refs[2].to_str().unwrap()
    ));
    let info = sendense_testkit::run(
        "qemu-img",
        &["info", "--output=json", top.to_str().unwrap()],
    );
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["backing-filename"], format!("{}.qcow2", copies[1]));

    // The primary repository is lost: every point restores from the bucket.
    std::fs::remove_dir_all(d.join("repo")).unwrap();
    for (id, reference) in ids.iter().zip(&refs) {
        restores_equal(&state, id, &["--repo", "offsite"], reference);
    }
    for (id, reference) in copies.iter().zip(&refs) {
        restores_equal(&state, id, &["--format", "qcow2"], reference);
    }

    // A fresh hub rebuilds the same backups from the bucket alone.
    let d2 = d.join("hub2");
    std::fs::create_dir(&d2).unwrap();
    let state2 = cli_hub(BIN, &d2, "local");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "repo",
            "import",
            "--s3",
            &url,
            "--path-style",
            "--credentials-file",
            creds.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    // The bucket has an owner, the first hub: taken over only when asked.
    let args = import(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, text) = run(&state2, &args);
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("owned by another hub"), "{text}");
    let args = import(&["--take-over"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let imported = cli_json(BIN, &state2, &args);
    let mut got: Vec<String> = imported["backups_imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = copies.clone();
    want.sort();
    assert_eq!(got, want, "{imported:#}");
    assert_eq!(imported["repo"]["name"], "offsite");
    assert_eq!(imported["vms_created"], serde_json::json!(["pg1"]));
    for (id, reference) in copies.iter().zip(&refs) {
        restores_equal(&state2, id, &[], reference);
        let b = cli_json(BIN, &state2, &["backup", "show", id]);
        assert_eq!(b["repo_kind"], "s3");
    }
    let verified = cli_json(BIN, &state2, &["backup", "verify", &copies[2]]);
    assert_eq!(verified["ok"], true, "{verified:#}");
    // Every link of the chain checked, each as its own restore point.
    let mut checked: Vec<&str> = verified["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["backup"].as_str().unwrap())
        .collect();
    checked.sort();
    assert_eq!(checked, want.iter().map(String::as_str).collect::<Vec<_>>());
    // The first hub no longer writes or deletes there (it still reads).
    let (code, text) = run(&state, &["backup", "copy", &ids[2], "--to", "offsite"]);
    assert_eq!(code, 5, "{text}");
    assert!(text.contains("owned by another hub"), "{text}");
    let (code, text) = run(&state, &["backup", "delete", &copies[2]]);
    assert_eq!(code, 5, "{text}");
    assert_eq!(verified["ok"], true, "{verified:#}");

    // One flipped byte in an object: verify names it, the backup is marked damaged, and no
    // restore of it succeeds.
    let key = format!("{bucket}/site2/pg1/2000/{}.qcow2", copies[1]);
    let damaged = d.join("damaged.qcow2");
    assert_eq!(server.get_file(&key, &damaged), "200");
    sendense_testkit::qcow2::flip_data_byte(&damaged, 8 * 1024 * 1024 + 4096);
    assert_eq!(server.put_file(&key, &damaged), "200");
    let (code, text) = run(&state2, &["backup", "verify", &copies[1]]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("8392704") || text.contains("8388608"),
        "{text}"
    );
    let shown = cli_json(BIN, &state2, &["backup", "show", &copies[1]]);
    assert!(shown["damaged"].is_string(), "{shown:#}");
    // The child reads that block too: its verify names the damage in both points; the full
    // below is whole.
    let (code, text) = run(&state2, &["backup", "verify", &copies[2], "--json"]);
    assert_eq!(code, 1, "{text}");
    let doc = sendense_testkit::json_document(text.as_bytes());
    let bad: Vec<&str> = doc["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !i["problems"].as_array().unwrap().is_empty())
        .map(|i| i["backup"].as_str().unwrap())
        .collect();
    let mut want_bad = [copies[1].as_str(), copies[2].as_str()];
    want_bad.sort();
    assert_eq!(bad, want_bad, "{doc:#}");
    let shown = cli_json(BIN, &state2, &["backup", "show", &copies[0]]);
    assert!(shown["damaged"].is_null(), "{shown:#}");
    let out = d.join("from-damaged.qcow2");
    let o = sendense_testkit::restore_disk(BIN, &state2, &copies[1], &out, &[]);
    assert!(!o.status.success(), "{}", output_text(&o));
    assert!(!out.exists());
    // Untouched points still restore; the catalog of the first hub refuses nothing it should
    // not: its copy of the same chain reads the same damage.
    restores_equal(&state2, &copies[0], &[], &refs[0]);
    let (code, text) = run(&state, &["backup", "verify", &copies[1]]);
    assert_eq!(code, 1, "{text}");

    // Deleting from the bucket: a parent asked to go first is expired and kept while its child
    // needs it; once the child went, cleanup deletes it, manifest and all.
    let expired = cli_json(BIN, &state2, &["backup", "delete", &copies[1]]);
    assert_eq!(expired["status"], "expired", "{expired:#}");
    let deleted = cli_json(BIN, &state2, &["backup", "delete", &copies[2]]);
    assert_eq!(deleted["status"], "deleted");
    let left = objects(server, &bucket, "site2/");
    assert!(!left.iter().any(|k| k.contains(&copies[2])), "{left:#?}");
    assert!(left.iter().any(|k| k.contains(&copies[1])), "{left:#?}");
    let cleaned = cli_json(BIN, &state2, &["cleanup"]);
    assert!(
        cleaned["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "delete_expired" && a["target"] == copies[1].as_str()),
        "{cleaned:#}"
    );
    let left = objects(server, &bucket, "site2/");
    assert!(!left.iter().any(|k| k.contains(&copies[1])), "{left:#?}");
    assert_eq!(left.len(), 1 + 3, "the first copy stays: {left:#?}");
}

#[test]
fn object_lock_keeps_a_copied_chain_as_one_generation_and_defers_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = rgw::shared();
    let state = cli_hub(BIN, d, "local");
    let creds = server.credentials_file(d);
    let bucket = server.bucket("locked", true);
    let url = format!("{}/{bucket}", server.endpoint);
    add_s3(&state, &creds, "vault", &url, &["--object-lock", "1"]);
    let disk = create_image(&d.join("vm1.qcow2"), "qcow2", "16M");
    qemu_io(&disk, "qcow2", &["write -P 0x44 0 3M"]);
    add_image_vm(BIN, &state, "vm1", &[&disk]);
    let b1 = cli_json(BIN, &state, &["backup", "start", "vm1"])["backup"]
        .as_str()
        .unwrap()
        .to_string();
    let c = cli_json(BIN, &state, &["backup", "copy", &b1, "--to", "vault"]);
    let c1 = c["copy"].as_str().unwrap().to_string();
    let image1 = format!("vm1/2000/{c1}.qcow2");
    let version1 = server
        .versions(&bucket)
        .into_iter()
        .find(|(k, _)| *k == image1)
        .map(|(_, v)| v)
        .expect("the image's version");
    let first = server.retain_until(&format!("{bucket}/{image1}"), &version1);
    assert!(!first.is_empty(), "the copied image is locked");

    // A locked version cannot be deleted, not even by the bucket's owner.
    let code = server.curl(
        &["-X".into(), "DELETE".into()],
        &format!("{bucket}/{image1}?versionId={version1}"),
    );
    assert_eq!(code, "403", "deleting a locked version");

    // An incremental copied a second later extends its ancestors' locks to its own.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    qemu_io(&disk, "qcow2", &["write -P 0x45 4M 1M"]);
    let b2 = cli_json(BIN, &state, &["backup", "start", "vm1"])["backup"]
        .as_str()
        .unwrap()
        .to_string();
    let c = cli_json(BIN, &state, &["backup", "copy", &b2, "--to", "vault"]);
    let c2 = c["copy"].as_str().unwrap().to_string();
    let extended = server.retain_until(&format!("{bucket}/{image1}"), &version1);
    let image2 = format!("vm1/2000/{c2}.qcow2");
    let version2 = server
        .versions(&bucket)
        .into_iter()
        .find(|(k, _)| *k == image2)
        .map(|(_, v)| v)
        .unwrap();
    let second = server.retain_until(&format!("{bucket}/{image2}"), &version2);
    assert!(extended > first, "extended {extended} after {first}");
    assert_eq!(
        extended[..19],
        second[..19],
        "the chain is locked as one generation"
    );

    // Written over (a locked object still takes new versions): the versions Sendense wrote
    // are read, and still restore; a verify finds the point whole.
    let reference = d.join("ref2.qcow2");
    std::fs::copy(&disk, &reference).unwrap();
    let garbage = d.join("garbage");
    std::fs::write(&garbage, vec![0x5a; 1 << 16]).unwrap();
    assert_eq!(
        server.put_file(&format!("{bucket}/{image1}"), &garbage),
        "200"
    );
    restores_equal(&state, &c2, &[], &reference);
    let verified = cli_json(BIN, &state, &["backup", "verify", &c2]);
    assert_eq!(verified["ok"], true, "{verified:#}");

    // Prune would keep the old link, expired, while the kept one needs it and its lock holds.
    let pruned = cli_json(
        BIN,
        &state,
        &[
            "backup",
            "prune",
            "--repo",
            "vault",
            "--keep-last",
            "1",
            "--dry-run",
        ],
    );
    let marks = &pruned["groups"][0]["backups"];
    assert_eq!(marks[0]["id"], c2.as_str(), "{pruned:#}");
    assert_eq!(marks[1]["id"], c1.as_str(), "{pruned:#}");
    let why = marks[1]["expired"].as_str().unwrap_or_default();
    assert!(
        why.contains("locked until") && why.contains(&c2),
        "{pruned:#}"
    );

    // Deleting a locked backup marks it expired, with the date; it stays, and restores.
    let (code, text) = run(&state, &["backup", "delete", &c2, "--dry-run"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("locked until"), "{text}");
    let deleted = cli_json(BIN, &state, &["backup", "delete", &c2]);
    assert_eq!(deleted["status"], "expired", "{deleted:#}");
    assert!(deleted["delete_after"].as_str().unwrap() >= &second[..10]);
    let listed = cli_json(BIN, &state, &["backup", "list", "--repo", "vault"]);
    let statuses: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["expired", "completed"]);
    assert!(objects(server, &bucket, "").iter().any(|k| k.contains(&c2)));
    let out = d.join("expired.qcow2");
    let o = sendense_testkit::restore_disk(BIN, &state, &c2, &out, &[]);
    assert!(o.status.success(), "{}", output_text(&o));
    // Its parent is held by its child and by the lock; prune says so before doing anything.
    // cleanup keeps both: locked.
    let cleaned = cli_json(BIN, &state, &["cleanup"]);
    let kept: Vec<&str> = cleaned["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "keep_expired")
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [c2.as_str()], "{cleaned:#}");
    assert!(objects(server, &bucket, "").iter().any(|k| k.contains(&c2)));
}

#[test]
fn a_copy_killed_mid_upload_commits_nothing_and_cleanup_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = rgw::shared();
    let state = cli_hub(BIN, d, "local");
    let creds = server.credentials_file(d);
    let bucket = server.versioned_bucket("killed");
    let url = format!("{}/{bucket}/p", server.endpoint);
    add_s3(&state, &creds, "offsite", &url, &[]);
    // Large enough for a multipart upload (parts of 16 MiB).
    let disk = create_image(&d.join("vm1.qcow2"), "qcow2", "64M");
    qemu_io(&disk, "qcow2", &["write -P 0x51 0 40M"]);
    add_image_vm(BIN, &state, "vm1", &[&disk]);
    let b1 = cli_json(BIN, &state, &["backup", "start", "vm1"])["backup"]
        .as_str()
        .unwrap()
        .to_string();

    let only_meta = vec![("p/sendense-repo.yaml".to_string(), "meta".to_string())];
    let versions = |server: &rgw::Rgw| -> Vec<(String, String)> {
        server
            .versions(&bucket)
            .into_iter()
            .map(|(k, v)| {
                let v = if k.ends_with("sendense-repo.yaml") {
                    "meta".to_string()
                } else {
                    v
                };
                (k, v)
            })
            .collect()
    };

    // A source image that does not match its digests is not copied: the check runs while it
    // goes up, and what went up goes again.
    let source = cli_json(BIN, &state, &["backup", "show", &b1]);
    let image = PathBuf::from(source["disks"][0]["file"].as_str().unwrap());
    sendense_testkit::qcow2::flip_data_byte(&image, 20 << 20);
    let (code, text) = run(&state, &["backup", "copy", &b1, "--to", "offsite"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("does not match what the backup recorded"),
        "{text}"
    );
    assert_eq!(versions(server), only_meta);
    assert!(server.uploads(&bucket).is_empty());
    assert_eq!(
        cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]),
        serde_json::json!([])
    );
    sendense_testkit::qcow2::flip_data_byte(&image, 20 << 20);

    // Killed after the first part went: an upload unfinished, no object, nothing committed.
    sendense_testkit::cli_killed_at(
        BIN,
        &state,
        &["backup", "copy", &b1, "--to", "offsite"],
        "s3.part-uploaded",
    );
    assert_eq!(server.uploads(&bucket).len(), 1);
    assert_eq!(versions(server), only_meta);
    // The copy's row stays, not completed, until `cleanup` reaches the bucket.
    let listed = cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]);
    let statuses: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["running"], "{listed:#}");
    let cleaned = cli_json(BIN, &state, &["cleanup"]);
    assert!(server.uploads(&bucket).is_empty(), "{cleaned:#}");
    assert_eq!(
        cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]),
        serde_json::json!([])
    );
    // Nothing left: no version, no delete marker hiding one.
    assert_eq!(versions(server), only_meta, "{cleaned:#}");

    // Killed after the image was uploaded, before its manifest: cleanup removes the image.
    sendense_testkit::cli_killed_at(
        BIN,
        &state,
        &["backup", "copy", &b1, "--to", "offsite"],
        "s3copy.before-manifest",
    );
    assert!(objects(server, &bucket, "p/").len() > 1);
    assert!(!objects(server, &bucket, "p/")
        .iter()
        .any(|k| k.contains("/manifests/")));
    cli_json(BIN, &state, &["cleanup"]);
    assert_eq!(versions(server), only_meta);
    assert_eq!(
        cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]),
        serde_json::json!([])
    );

    // Killed right after its manifest was committed: the restore point is there, and cleanup
    // completes the copy from it instead of removing it.
    sendense_testkit::cli_killed_at(
        BIN,
        &state,
        &["backup", "copy", &b1, "--to", "offsite"],
        "s3copy.manifest-written",
    );
    let cleaned = cli_json(BIN, &state, &["cleanup"]);
    assert!(
        cleaned["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "finish_copy"),
        "{cleaned:#}"
    );
    let listed = cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]);
    assert_eq!(listed[0]["status"], "completed", "{listed:#}");
    restores_equal(&state, &b1, &["--repo", "offsite"], &disk);
    let again = cli_json(BIN, &state, &["backup", "copy", &b1, "--to", "offsite"]);
    assert_eq!(again["copied"], serde_json::json!([]));

    // An object of it deleted by hand (its version, so it is gone): nothing builds on the
    // copy any more; the next copy uploads the chain anew.
    let copy = listed[0]["id"].as_str().unwrap().to_string();
    let image = format!("p/vm1/2000/{copy}.qcow2");
    let version = server
        .versions(&bucket)
        .into_iter()
        .find(|(k, _)| *k == image)
        .map(|(_, v)| v)
        .unwrap();
    let code = server.curl(
        &["-X".into(), "DELETE".into()],
        &format!("{bucket}/{image}?versionId={version}"),
    );
    assert_eq!(code, "204");
    qemu_io(&disk, "qcow2", &["write -P 0x52 1M 1M"]);
    let b2 = cli_json(BIN, &state, &["backup", "start", "vm1"])["backup"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, text) = run(&state, &["backup", "copy", &b2, "--to", "offsite"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("gone from the bucket"), "{text}");
    let shown = cli_json(BIN, &state, &["backup", "show", &copy]);
    assert!(shown["damaged"].is_string(), "{shown:#}");
    let c = cli_json(BIN, &state, &["backup", "copy", &b2, "--to", "offsite"]);
    assert_eq!(copied_from(&c), [b1.clone(), b2.clone()], "{c:#}");
    restores_equal(&state, &b2, &["--repo", "offsite"], &disk);
    for id in [
        c["copy"].as_str().unwrap(),
        c["copied"][0]["backup"].as_str().unwrap(),
    ] {
        cli_json(BIN, &state, &["backup", "delete", id]);
    }

    // Deleted from the versioned bucket: exactly the versions written go, no marker stays.
    let deleted = cli_json(BIN, &state, &["backup", "delete", &copy]);
    assert_eq!(deleted["status"], "deleted");
    assert_eq!(versions(server), only_meta);
}

/// `sendense ARGS --json` on hub `state` with its clock at `when` (UTC).
fn at(state: &Path, when: &str, args: &[&str]) -> Value {
    let o = std::process::Command::new(BIN)
        .args(args)
        .arg("--json")
        .env("SENDENSE_HOME", state)
        .env("SENDENSE_TEST_NOW", when)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", output_text(&o));
    sendense_testkit::json_document(&o.stdout)
}

#[test]
fn a_policy_copies_each_night_into_a_bucket_and_prune_expires_what_the_kept_copy_needs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = rgw::shared();
    let state = cli_hub(BIN, d, "local");
    let creds = server.credentials_file(d);
    let bucket = server.bucket("nightly", false);
    let url = format!("{}/{bucket}", server.endpoint);
    add_s3(&state, &creds, "offsite", &url, &[]);
    let disk = create_image(&d.join("vm1.qcow2"), "qcow2", "16M");
    add_image_vm(BIN, &state, "vm1", &[&disk]);
    let setup = "2026-01-01T00:00:00Z";
    at(
        &state,
        setup,
        &[
            "policy",
            "add",
            "nightly",
            "--repo",
            "local",
            "--schedule",
            "0 1 * * *",
            "--copy-to",
            "offsite",
            "--copy-keep-last",
            "1",
        ],
    );
    at(&state, setup, &["group", "add", "g", "--policy", "nightly"]);
    at(&state, setup, &["group", "add-vm", "g", "vm1"]);
    let mut reference = d.join("night.qcow2");
    for night in 1..=3u32 {
        qemu_io(
            &disk,
            "qcow2",
            &[&format!("write -P {:#x} {}M 1M", 0x20 + night, night * 2)],
        );
        reference = d.join(format!("night{night}.qcow2"));
        std::fs::copy(&disk, &reference).unwrap();
        let r = at(
            &state,
            &format!("2026-01-0{night}T01:30:00Z"),
            &["schedule", "run"],
        );
        let copy = &r["groups"][0]["copies"][0];
        assert_eq!(copy["result"], "completed", "night {night}: {r:#}");
        assert_eq!(copy["links"], 1, "one new link a night: {r:#}");
    }
    // Kept: the newest copy; the two below it are expired, not merged (objects are never
    // rewritten), and kept while it needs them.
    let listed = cli_json(BIN, &state, &["backup", "list", "--repo", "offsite"]);
    let statuses: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["completed", "expired", "expired"], "{listed:#}");
    let newest = listed[0]["copy_of"].as_str().unwrap().to_string();
    restores_equal(&state, &newest, &["--repo", "offsite"], &reference);
    let cleaned = cli_json(BIN, &state, &["cleanup"]);
    let kept = cleaned["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "keep_expired")
        .count();
    assert_eq!(kept, 2, "{cleaned:#}");
}
