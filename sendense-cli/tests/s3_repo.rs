//! S3 repositories against a real S3 server (Ceph RGW, one per test run): `repo add --s3`
//! proves the keys before registering anything, keys never show, and the place is checked.

use sendense_testkit::{cli_hub, cli_json, rgw};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

fn run(state: &Path, args: &[&str]) -> (i32, String) {
    sendense_testkit::cli_status(BIN, state, args)
}

#[test]
fn an_s3_repository_is_added_tested_listed_and_removed_with_its_keys_kept_out_of_sight() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = rgw::shared();
    let state = cli_hub(BIN, d, "local");
    let creds = server.credentials_file(d);
    let creds_arg = creds.to_str().unwrap();
    let bucket = server.bucket("repo", false);
    let url = format!("{}/{bucket}/hub1", server.endpoint);
    let add = |name: &str, url: &str, extra: &[&str]| {
        let mut args = vec![
            "repo",
            "add",
            name,
            "--s3",
            url,
            "--path-style",
            "--credentials-file",
            creds_arg,
        ];
        args.extend_from_slice(extra);
        run(&state, &args)
    };

    // Added: the probe ran, the repository object is there.
    let doc = cli_json(
        BIN,
        &state,
        &[
            "repo",
            "add",
            "offsite",
            "--s3",
            &url,
            "--path-style",
            "--credentials-file",
            creds_arg,
        ],
    );
    assert_eq!(doc["url"], url.as_str());
    assert_eq!(doc["probe"]["probe_bytes"], 1048576);
    assert_eq!(doc["probe"]["object_lock"], false);
    assert_eq!(doc["probe"]["pending_uploads"], 0);
    assert_eq!(
        server.curl(&[], &format!("{bucket}/hub1/sendense-repo.yaml")),
        "200"
    );
    // Listed beside the directory, never the default; tested; shown.
    let listed = cli_json(BIN, &state, &["repo", "list"]);
    let kinds: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("local", "dir"), ("offsite", "s3")]);
    let tested = cli_json(BIN, &state, &["repo", "test", "offsite"]);
    assert_eq!(tested["ok"], true);
    let (c, out) = run(&state, &["repo", "show", "offsite"]);
    assert_eq!(c, 0, "{out}");
    assert!(out.contains(&url) && out.contains("path-style"), "{out}");
    // Shown without writing anything: the repository object is all there is.
    let shown = cli_json(BIN, &state, &["repo", "show", "offsite"]);
    assert_eq!(shown["kind"], "s3");
    assert_eq!(shown["object_lock"], false);
    assert_eq!(shown["pending_uploads"], 0);
    assert_eq!(shown["problem"], serde_json::Value::Null);
    assert_eq!(server.list_versions(&bucket), ["hub1/sendense-repo.yaml"]);

    // The keys: in no output, no catalog byte, no argv (they were never in one).
    let mut seen = String::new();
    for args in [
        &["repo", "list"][..],
        &["repo", "show", "offsite", "--json"],
        &["repo", "test", "offsite", "-v"],
    ] {
        seen.push_str(&run(&state, args).1);
    }
    assert!(!seen.contains(rgw::SECRET_KEY), "{seen}");
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes
                    .windows(rgw::SECRET_KEY.len())
                    .any(|w| w == rgw::SECRET_KEY.as_bytes()),
                "{} holds the secret",
                entry.path().display()
            );
        }
    }

    // Not a directory: a backup is not written there.
    let (c, out) = run(&state, &["backup", "list", "--repo", "offsite"]);
    assert!(c == 0 || out.contains("S3 repository"), "{out}");
    let img = d.join("vm.qcow2");
    sendense_testkit::create_image(&img, "qcow2", "8M");
    cli_json(
        BIN,
        &state,
        &["vm", "add", "v", "--disk", img.to_str().unwrap()],
    );
    let (c, out) = run(&state, &["backup", "start", "v", "--repo", "offsite"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("S3 repository"), "{out}");

    // Refused, and nothing registered: the same place again, a place with other objects, a
    // bucket without Object Lock for --object-lock, keys others can read, wrong keys.
    let (c, out) = add("again", &url, &[]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("holds a Sendense repository already"), "{out}");
    let (c, out) = add("busy", &format!("{}/{bucket}", server.endpoint), &[]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("is not empty"), "{out}");
    let (c, out) = add(
        "nolock",
        &format!("{}/{bucket}/other", server.endpoint),
        &["--object-lock", "7"],
    );
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("Object Lock"), "{out}");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (c, out) = add("open", &format!("{}/{bucket}/third", server.endpoint), &[]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("chmod 600"), "{out}");
    let wrong = d.join("wrong-creds");
    std::fs::write(
        &wrong,
        "[default]\naws_access_key_id = sendense-test-access\naws_secret_access_key = nope\n",
    )
    .unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (c, out) = run(
        &state,
        &[
            "repo",
            "add",
            "wrong",
            "--s3",
            &format!("{}/{bucket}/fourth", server.endpoint),
            "--path-style",
            "--credentials-file",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains("SignatureDoesNotMatch") || out.contains("403"),
        "{out}"
    );
    let names: Vec<String> = cli_json(BIN, &state, &["repo", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["local", "offsite"]);

    // An upload an interrupted process left: `cleanup` aborts it (`--dry-run` only names it).
    let client = sendense_core::repo::s3::S3Client::new(
        &sendense_core::repo::s3::S3Options {
            location: sendense_core::repo::s3::S3Location::parse(&url).unwrap(),
            region: "us-east-1".into(),
            path_style: true,
            ca_file: None,
        },
        &sendense_core::repo::s3::credentials::resolve(Some(&server.credentials_file(d)), None)
            .unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = client.location().key("v/2000/left.qcow2");
    rt.block_on(client.begin_upload(&key, None)).unwrap();
    let pending = || {
        rt.block_on(client.multipart_uploads(&client.location().list_prefix()))
            .unwrap()
            .len()
    };
    assert_eq!(pending(), 1);
    assert_eq!(
        cli_json(BIN, &state, &["repo", "show", "offsite"])["pending_uploads"],
        1
    );
    let dry = cli_json(BIN, &state, &["cleanup", "--dry-run"]);
    let aborts: Vec<&serde_json::Value> = dry["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "abort_upload")
        .collect();
    assert_eq!(aborts.len(), 1, "{dry}");
    assert_eq!(aborts[0]["target"], format!("offsite: {key}").as_str());
    assert_eq!(pending(), 1);
    cli_json(BIN, &state, &["cleanup"]);
    assert_eq!(pending(), 0);
    assert_eq!(
        cli_json(BIN, &state, &["repo", "test", "offsite"])["probe"]["pending_uploads"],
        0
    );

    // Removed from the catalog; its objects stay.
    let (c, out) = run(&state, &["repo", "remove", "offsite"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(
        server.curl(&[], &format!("{bucket}/hub1/sendense-repo.yaml")),
        "200"
    );
}

#[test]
fn an_s3_repository_with_object_lock_proves_the_bucket_locks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = rgw::shared();
    let state = cli_hub(BIN, d, "local");
    let creds = server.credentials_file(d);
    let bucket = server.bucket("locked", true);
    let doc = cli_json(
        BIN,
        &state,
        &[
            "repo",
            "add",
            "vault",
            "--s3",
            &format!("{}/{bucket}", server.endpoint),
            "--path-style",
            "--credentials-file",
            creds.to_str().unwrap(),
            "--object-lock",
            "1",
        ],
    );
    assert_eq!(doc["lock_days"], 1);
    assert_eq!(doc["lock_mode"], "compliance");
    assert_eq!(doc["probe"]["object_lock"], true);
    assert_eq!(doc["probe"]["lock_checked"], "compliance");
    let (c, out) = run(
        &state,
        &[
            "repo",
            "add",
            "bad",
            "--s3",
            "https://h/b",
            "--object-lock",
            "0",
        ],
    );
    assert_ne!(c, 0, "{out}");

    // A bucket that locks every object by default (a day, GOVERNANCE): the probes are locked
    // for two seconds of their own and go, whether or not the repository locks.
    let bucket = server.bucket("default-locked", true);
    let rule = "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule>\
                <DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention>\
                </Rule></ObjectLockConfiguration>";
    assert_eq!(server.put(&format!("{bucket}?object-lock="), rule), "200");
    let doc = cli_json(
        BIN,
        &state,
        &[
            "repo",
            "add",
            "defaulted",
            "--s3",
            &format!("{}/{bucket}", server.endpoint),
            "--path-style",
            "--credentials-file",
            creds.to_str().unwrap(),
        ],
    );
    assert_eq!(doc["probe"]["object_lock"], true);
    assert_eq!(doc["probe"]["lock_checked"], serde_json::Value::Null);
    let tested = cli_json(BIN, &state, &["repo", "test", "defaulted"]);
    assert_eq!(tested["ok"], true);
    // Only the repository object is left: the probes' versions went.
    assert_eq!(
        server.curl(&[], &format!("{bucket}/sendense-repo.yaml")),
        "200"
    );
    let listing = server.list_versions(&bucket);
    assert_eq!(listing, ["sendense-repo.yaml"], "{listing:?}");
}
