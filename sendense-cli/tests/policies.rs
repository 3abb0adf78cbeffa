//! Policies and protection groups: what they record, what they refuse, and when groups run.

use sendense_testkit::{add_image_vm, cli, cli_json, create_image, output_text, temp_hub};
use serde_json::Value;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

fn code(state: &Path, args: &[&str]) -> (i32, String) {
    let o = cli(BIN, state, args);
    (o.status.code().unwrap_or(-1), output_text(&o))
}

#[test]
fn policies_and_groups_are_recorded_checked_and_scheduled() {
    let (dir, state) = temp_hub(BIN, "local");
    let d = dir.path();
    let offsite = d.join("offsite");
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
    for vm in ["vm1", "vm2"] {
        let disk = create_image(&d.join(format!("{vm}.qcow2")), "qcow2", "16M");
        add_image_vm(BIN, &state, vm, &[&disk]);
    }

    let p = cli_json(
        BIN,
        &state,
        &[
            "policy",
            "add",
            "nightly",
            "--repo",
            "local",
            "--schedule",
            "0 2 * * *",
            "--full-every",
            "7",
            "--keep-daily",
            "7",
            "--keep-monthly",
            "6",
            "--copy-to",
            "offsite",
            "--copy-keep-daily",
            "30",
        ],
    );
    assert_eq!(p["schedule"], "0 2 * * *");
    assert_eq!(p["full_every"], 7);
    assert_eq!(p["keep"]["daily"], 7);
    assert_eq!(p["keep"]["monthly"], 6);
    assert_eq!(p["copies"][0]["repo"], "offsite");
    assert_eq!(p["copies"][0]["keep"]["daily"], 30);

    // Bad input is refused, naming what is wrong: (extra arguments, exit code, text).
    let bad: [(&str, i32, &str); 5] = [
        ("--schedule|0 25 * * *", 2, "hour field `25`"),
        ("--copy-to|local", 2, "the repository its backups go to"),
        (
            "--full-every|3|--full-schedule|@weekly",
            2,
            "cannot be used with",
        ),
        ("--full-every|0", 2, "at least 1"),
        ("--verify|@sometimes", 2, "not a schedule shortcut"),
    ];
    for (extra, want, text) in bad {
        let mut args = vec!["policy", "add", "x", "--repo", "local"];
        args.extend(extra.split('|'));
        let (c, out) = code(&state, &args);
        assert_eq!(c, want, "{extra}: {out}");
        assert!(out.contains(text), "{extra}: {out}");
    }
    let (c, _) = code(&state, &["policy", "add", "x", "--repo", "nowhere"]);
    assert_eq!(c, 4);
    let (c, _) = code(&state, &["policy", "add", "nightly", "--repo", "local"]);
    assert_eq!(c, 5, "a second policy of the same name");

    // Groups; a VM in two of them.
    let g = cli_json(
        BIN,
        &state,
        &[
            "group",
            "add",
            "prod",
            "--policy",
            "nightly",
            "--max-parallel",
            "2",
            "--priority",
            "10",
        ],
    );
    assert_eq!(
        (g["max_parallel"].as_u64(), g["priority"].as_i64()),
        (Some(2), Some(10))
    );
    cli_json(BIN, &state, &["group", "add", "dev", "--policy", "nightly"]);
    cli_json(BIN, &state, &["group", "add-vm", "prod", "vm1"]);
    cli_json(BIN, &state, &["group", "add-vm", "prod", "vm2"]);
    let dev = cli_json(BIN, &state, &["group", "add-vm", "dev", "vm1"]);
    assert_eq!(dev["vms"], serde_json::json!(["vm1"]));
    let (c, _) = code(&state, &["group", "add-vm", "prod", "nobody"]);
    assert_eq!(c, 4);

    // When they run: the next 02:00 of the local clock.
    let shown = {
        let o = std::process::Command::new(BIN)
            .args(["vm", "show", "vm1", "--json"])
            .env("SENDENSE_HOME", &state)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let groups: Vec<&str> = shown["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["dev", "prod"]);
    assert!(
        shown["groups"][0]["next_run"]
            .as_str()
            .unwrap()
            .ends_with("T02:00:00Z"),
        "{shown}"
    );
    let list = cli_json(BIN, &state, &["schedule", "list"]);
    let order: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["prod", "dev"], "higher priority first");

    // A policy in use stays; so do the repositories a policy uses.
    let (c, out) = code(&state, &["policy", "remove", "nightly"]);
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("dev, prod"), "{out}");
    let (c, _) = code(&state, &["repo", "remove", "offsite"]);
    assert_eq!(c, 5);

    // Edits change only what they name; `none` clears.
    let e = cli_json(
        BIN,
        &state,
        &[
            "policy",
            "edit",
            "nightly",
            "--schedule",
            "none",
            "--keep-weekly",
            "4",
            "--copy-to",
            "none",
        ],
    );
    assert_eq!(e["schedule"], Value::Null);
    assert_eq!(
        (e["keep"]["daily"].as_u64(), e["keep"]["weekly"].as_u64()),
        (Some(7), Some(4))
    );
    assert_eq!(e["full_every"], 7);
    assert_eq!(e["copies"], serde_json::json!([]));
    let prod = cli_json(BIN, &state, &["group", "show", "prod"]);
    assert_eq!(
        prod["next_run"],
        Value::Null,
        "without a schedule, by hand only"
    );
    cli_json(BIN, &state, &["repo", "remove", "offsite"]);

    // Members go with their VM; a group goes without its VMs.
    cli_json(BIN, &state, &["vm", "remove", "vm2"]);
    assert_eq!(
        cli_json(BIN, &state, &["group", "show", "prod"])["vms"],
        serde_json::json!(["vm1"])
    );
    cli_json(BIN, &state, &["group", "remove-vm", "dev", "vm1"]);
    let (c, _) = code(&state, &["group", "remove-vm", "dev", "vm1"]);
    assert_eq!(c, 4);
    cli_json(BIN, &state, &["group", "remove", "dev"]);
    cli_json(BIN, &state, &["group", "remove", "prod"]);
    cli_json(BIN, &state, &["policy", "remove", "nightly"]);
    assert_eq!(
        cli_json(BIN, &state, &["policy", "list"]),
        serde_json::json!([])
    );
    assert_eq!(
        cli_json(BIN, &state, &["vm", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
