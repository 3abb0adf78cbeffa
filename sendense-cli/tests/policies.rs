//! Policies and protection groups: what they record, what they refuse, and when groups run.

use sendense_testkit::{add_image_vm, cli, cli_json, create_image, output_text, qemu_io, temp_hub};
use serde_json::Value;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

fn code(state: &Path, args: &[&str]) -> (i32, String) {
    let o = cli(BIN, state, args);
    (o.status.code().unwrap_or(-1), output_text(&o))
}

/// At `when`: the policy `policy_add` adds (its name third), group `g` with it, VM `vm1` in it.
fn group_of_vm1(state: &Path, when: &str, policy_add: &[&str]) {
    at(state, when, policy_add);
    at(
        state,
        when,
        &["group", "add", "g", "--policy", policy_add[2]],
    );
    at(state, when, &["group", "add-vm", "g", "vm1"]);
}

/// A hub with repositories `local` and `offsite` in a temporary directory.
fn two_repo_hub() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, state) = temp_hub(BIN, "local");
    let offsite = dir.path().join("offsite");
    let path = offsite.to_str().unwrap();
    cli_json(BIN, &state, &["repo", "add", "offsite", "--path", path]);
    (dir, state)
}

#[test]
fn policies_and_groups_are_recorded_checked_and_scheduled() {
    let (dir, state) = two_repo_hub();
    let d = dir.path();
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

    // `vm add --group`: into existing groups only, and nothing added otherwise.
    let disk3 = create_image(&d.join("vm3.qcow2"), "qcow2", "16M");
    let disk3 = disk3.to_str().unwrap();
    let (c, out) = code(
        &state,
        &[
            "vm", "add", "vm3", "--disk", disk3, "--group", "prod", "--group", "nope",
        ],
    );
    assert_eq!(c, 4, "{out}");
    assert!(out.contains("nope"), "{out}");
    let (c, _) = code(&state, &["vm", "show", "vm3"]);
    assert_eq!(c, 4, "vm3 was not added");
    cli_json(
        BIN,
        &state,
        &[
            "vm", "add", "vm3", "--disk", disk3, "--group", "prod", "--group", "dev",
        ],
    );
    let shown = cli_json(BIN, &state, &["vm", "show", "vm3"]);
    let in_groups: Vec<&str> = shown["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(in_groups, ["dev", "prod"]);
    cli_json(BIN, &state, &["vm", "remove", "vm3"]);

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

/// `sendense ARGS` on hub `state` with its clock standing at `when`, in UTC.
fn clocked(state: &Path, when: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env("SENDENSE_HOME", state)
        .env("SENDENSE_TEST_NOW", when)
        .env("TZ", "UTC");
    cmd
}

/// `sendense ARGS --json` on hub `state` with its clock at `at` (UTC): exit code and document.
fn at(state: &Path, when: &str, args: &[&str]) -> (i32, Value) {
    let o = clocked(state, when, args).arg("--json").output().unwrap();
    let doc = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert!(doc != Value::Null, "{args:?}: {}", output_text(&o));
    (o.status.code().unwrap_or(-1), doc)
}

/// (group, vm, result) of a `schedule run` report.
fn ran(report: &Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for g in report["groups"].as_array().unwrap() {
        for v in g["vms"].as_array().unwrap() {
            out.push((
                g["group"].as_str().unwrap().to_string(),
                v["vm"].as_str().unwrap().to_string(),
                v["result"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

fn triples(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

/// Group prod's three VMs with these results.
fn prod(results: [&str; 3]) -> Vec<(String, String, String)> {
    let vms = ["vm1", "vm2", "vm3"];
    let list: Vec<(&str, &str, &str)> = vms
        .iter()
        .zip(results)
        .map(|(v, r)| ("prod", *v, r))
        .collect();
    triples(&list)
}

#[test]
fn schedule_run_does_what_is_due_once_by_priority_and_prunes() {
    let (dir, state) = temp_hub(BIN, "local");
    let d = dir.path();
    for vm in ["vm1", "vm2"] {
        let disk = create_image(&d.join(format!("{vm}.qcow2")), "qcow2", "16M");
        add_image_vm(BIN, &state, vm, &[&disk]);
    }
    // vm3's disk is an NBD export, which goes away on the last night.
    let export = sendense_testkit::nbdkit(d, "vm3", &["memory", "size=16M"]);
    cli_json(BIN, &state, &["vm", "add", "vm3", "--nbd", &export.url]);
    // A failure that may pass is tried once more, at once.
    let config = state.join("config.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("schedule: {retries: 1, retry_delay_secs: 0}\n");
    std::fs::write(&config, text).unwrap();
    let setup = "2026-11-28T12:00:00Z";
    let policy = [
        "policy",
        "add",
        "nightly",
        "--repo",
        "local",
        "--schedule",
        "0 2 * * *",
    ];
    at(
        &state,
        setup,
        &[&policy[..], &["--keep-last", "2"]].concat(),
    );
    at(
        &state,
        setup,
        &[
            "policy",
            "add",
            "late",
            "--repo",
            "local",
            "--schedule",
            "0 3 * * *",
        ],
    );
    let add_prod = [
        "group",
        "add",
        "prod",
        "--policy",
        "nightly",
        "--max-parallel",
        "2",
    ];
    at(
        &state,
        setup,
        &[&add_prod[..], &["--priority", "10"]].concat(),
    );
    at(&state, setup, &["group", "add", "dev", "--policy", "late"]);
    for vm in ["vm1", "vm2", "vm3"] {
        at(&state, setup, &["group", "add-vm", "prod", vm]);
    }
    at(&state, setup, &["group", "add-vm", "dev", "vm1"]);

    // Nothing is due before the first 02:00.
    let (c, r) = at(&state, "2026-11-28T13:00:00Z", &["schedule", "run"]);
    assert_eq!((c, ran(&r)), (0, vec![]), "{r}");
    // A dry run names what is due, and runs nothing.
    let (c, r) = at(
        &state,
        "2026-11-29T02:30:00Z",
        &["schedule", "run", "--dry-run"],
    );
    assert_eq!(c, 0);
    assert_eq!(
        ran(&r),
        triples(&[
            ("prod", "vm1", "due"),
            ("prod", "vm2", "due"),
            ("prod", "vm3", "due")
        ])
    );
    assert_eq!(
        cli_json(BIN, &state, &["backup", "list"]),
        serde_json::json!([])
    );
    // The night: prod's three VMs.
    let (c, r) = at(&state, "2026-11-29T02:30:00Z", &["schedule", "run"]);
    assert_eq!(c, 0, "{r:#}");
    assert_eq!(ran(&r), prod(["completed", "completed", "completed"]));
    let shown = cli_json(BIN, &state, &["group", "show", "prod"]);
    assert_eq!(shown["last_run_at"], "2026-11-29T02:00:00Z");
    assert_eq!(shown["last_result"], "3 completed, 0 failed, 0 skipped");
    // Not twice for the same instant; dev at its own time.
    let (_, r) = at(&state, "2026-11-29T02:45:00Z", &["schedule", "run"]);
    assert_eq!(ran(&r), vec![]);
    let (_, r) = at(&state, "2026-11-29T03:10:00Z", &["schedule", "run"]);
    assert_eq!(ran(&r), triples(&[("dev", "vm1", "completed")]));

    // Two nights missed, then back: each group once, for the latest night; prod first.
    let (c, r) = at(&state, "2026-12-01T09:00:00Z", &["schedule", "run"]);
    assert_eq!(c, 0, "{r:#}");
    let groups: Vec<&str> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["prod", "dev"]);
    assert_eq!(r["groups"][0]["due_at"], "2026-12-01T02:00:00Z");
    // nightly's keep-last 2, per VM in its repository.
    let count = |vm: &str| {
        cli_json(BIN, &state, &["backup", "list", "--vm", vm])
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count("vm2"), 2);
    assert_eq!(count("vm3"), 2);

    // A VM whose source is gone fails (tried again once: it may have been a passing failure);
    // the others complete: exit 3.
    drop(export);
    let (c, r) = at(&state, "2026-12-02T02:30:00Z", &["schedule", "run"]);
    assert_eq!(c, 3, "{r:#}");
    assert_eq!(ran(&r), prod(["completed", "completed", "failed"]));
    assert!(r["groups"][0]["vms"][2]["error"].as_str().unwrap().len() > 10);
    assert_eq!(
        r["groups"][0]["vms"][2]["attempts"], 2,
        "tried again once: {r:#}"
    );
    assert_eq!(r["groups"][0]["vms"][0]["attempts"], 1);
    assert_eq!(
        cli_json(BIN, &state, &["group", "show", "prod"])["last_result"],
        "2 completed, 1 failed, 0 skipped"
    );
}

#[test]
fn the_daemon_stops_cleanly_mid_backup_and_a_second_run_starts_nothing() {
    let (dir, state) = temp_hub(BIN, "local");
    let disk = create_image(&dir.path().join("vm1.qcow2"), "qcow2", "16M");
    add_image_vm(BIN, &state, "vm1", &[&disk]);
    let setup = "2026-11-28T12:00:00Z";
    let every = [
        "policy",
        "add",
        "often",
        "--repo",
        "local",
        "--schedule",
        "* * * * *",
    ];
    group_of_vm1(&state, setup, &every);
    // The daemon's backup stops for 3 s once its snapshot is taken.
    let now = "2026-11-28T12:05:00Z";
    let daemon = clocked(&state, now, &["daemon"])
        .env("SENDENSE_TEST_PAUSE_AT", "backup.snapshot-taken:3000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sendense_testkit::running_job(BIN, &state, "backup");
    // A second run meanwhile starts nothing.
    let (c, r) = at(&state, now, &["schedule", "run"]);
    assert_eq!((c, &r["already_running"]), (0, &Value::Bool(true)), "{r}");
    let jobs = cli_json(BIN, &state, &["job", "list"]);
    assert_eq!(jobs.as_array().unwrap().len(), 1, "{jobs}");
    // SIGTERM: the backup is cancelled and cleans up; the daemon exits 0.
    let pid = daemon.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = daemon.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = cli_json(BIN, &state, &["job", "list"]);
    assert_eq!(jobs[0]["status"], "cancelled", "{jobs}");
    assert_eq!(
        cli_json(BIN, &state, &["backup", "list"]),
        serde_json::json!([])
    );
    let dry = cli_json(BIN, &state, &["cleanup", "--dry-run"]);
    assert_eq!(dry["actions"], serde_json::json!([]), "{dry}");
    // Not recorded as run: the next run does it.
    assert_eq!(
        cli_json(BIN, &state, &["group", "show", "g"])["last_run_at"],
        Value::Null
    );
}

#[test]
fn edits_keep_what_they_do_not_name_and_a_new_schedule_starts_at_the_change() {
    let (dir, state) = two_repo_hub();
    let d = dir.path();
    let disk = create_image(&d.join("vm1.qcow2"), "qcow2", "16M");
    add_image_vm(BIN, &state, "vm1", &[&disk]);
    let t0 = "2026-11-20T12:00:00Z";
    let add = [
        "policy",
        "add",
        "p",
        "--repo",
        "local",
        "--schedule",
        "0 2 * * *",
        "--full-every",
        "7",
        "--copy-to",
        "offsite",
        "--copy-keep-daily",
        "30",
    ];
    group_of_vm1(&state, t0, &add);
    // Setting fulls on a schedule clears the cadence; the same copy target keeps its rules.
    let (_, p) = at(
        &state,
        t0,
        &["policy", "edit", "p", "--full-schedule", "@weekly"],
    );
    assert_eq!(
        (&p["full_every"], &p["full_schedule"]),
        (&Value::Null, &Value::from("@weekly"))
    );
    let (_, p) = at(&state, t0, &["policy", "edit", "p", "--copy-to", "offsite"]);
    assert_eq!(p["copies"][0]["keep"]["daily"], 30, "{p}");
    let (c, _) = at(
        &state,
        t0,
        &[
            "policy",
            "edit",
            "p",
            "--copy-to",
            "none",
            "--copy-keep-daily",
            "3",
        ],
    );
    assert_eq!(c, 2);
    // A schedule changed at 14:00 does not run for 03:00 of the same day, which passed before.
    at(
        &state,
        "2026-11-29T14:00:00Z",
        &["policy", "edit", "p", "--schedule", "0 3 * * *"],
    );
    let (_, r) = at(&state, "2026-11-29T15:00:00Z", &["schedule", "run"]);
    assert_eq!(ran(&r), vec![], "{r}");
    let (_, r) = at(&state, "2026-11-30T03:30:00Z", &["schedule", "run"]);
    assert_eq!(ran(&r), triples(&[("g", "vm1", "completed")]), "{r}");
}

#[test]
fn a_simulated_week_keeps_exactly_the_expected_backups_in_both_repositories() {
    let (dir, state) = two_repo_hub();
    let d = dir.path();
    let disk = create_image(&d.join("vm1.qcow2"), "qcow2", "32M");
    add_image_vm(BIN, &state, "vm1", &[&disk]);
    let setup = "2026-01-01T00:00:00Z";
    group_of_vm1(
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
            "--full-every",
            "7",
            "--keep-daily",
            "3",
            "--copy-to",
            "offsite",
            "--copy-keep-daily",
            "5",
            "--verify",
            "0 4 * * 5",
        ],
    );
    // Nine nights (2026-01-01 is a Thursday); each changes the disk first.
    let mut refs = Vec::new();
    let mut modes = Vec::new();
    for night in 1..=9u32 {
        let p = 0x10 + night;
        qemu_io(
            &disk,
            "qcow2",
            &[
                &format!("write -P {p:#x} {}M 1M", night * 2),
                &format!("write -z {}M 256k", (night + 5) % 16),
            ],
        );
        let reference = d.join(format!("night{night}.qcow2"));
        std::fs::copy(&disk, &reference).unwrap();
        refs.push(reference);
        let when = format!("2026-01-{night:02}T01:30:00Z");
        let (c, r) = at(&state, &when, &["schedule", "run"]);
        assert_eq!(c, 0, "night {night}: {r:#}");
        assert_eq!(ran(&r), triples(&[("g", "vm1", "completed")]), "{r:#}");
        let copy = &r["groups"][0]["copies"][0];
        assert_eq!(copy["result"], "completed", "{r:#}");
        assert_eq!(copy["links"], 1, "one new link a night: {r:#}");
        modes.push(r["groups"][0]["vms"][0]["requested"].clone());
    }
    // --full-every 7: the eighth night starts a new chain.
    let fulls: Vec<usize> = (0..9)
        .filter(|i| modes[*i] == "full")
        .map(|i| i + 1)
        .collect();
    assert_eq!(fulls, [8], "{modes:?}");

    // The nights each repository keeps: the newest 3 days here, 5 offsite.
    let nights = |repo: &str| -> Vec<(u32, String)> {
        let list = cli_json(BIN, &state, &["backup", "list", "--repo", repo]);
        let mut out: Vec<(u32, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let day: u32 = b["created_at"].as_str().unwrap()[8..10].parse().unwrap();
                let point = b["copy_of"].as_str().or(b["id"].as_str()).unwrap();
                (day, point.to_string())
            })
            .collect();
        out.sort();
        out
    };
    let local = nights("local");
    let offsite = nights("offsite");
    assert_eq!(local.iter().map(|n| n.0).collect::<Vec<_>>(), [7, 8, 9]);
    assert_eq!(
        offsite.iter().map(|n| n.0).collect::<Vec<_>>(),
        [5, 6, 7, 8, 9]
    );
    // The same restore points: a copy is of the night's backup.
    assert_eq!(local[..], offsite[2..]);
    let restores = |points: &[(u32, String)], extra: &[&str]| {
        for (night, point) in points {
            let out = d.join("restored.qcow2");
            let _ = std::fs::remove_file(&out);
            let o = sendense_testkit::restore_disk(BIN, &state, point, &out, extra);
            assert!(o.status.success(), "{}", output_text(&o));
            let reference = &refs[*night as usize - 1];
            assert!(
                sendense_testkit::images_equal(
                    out.to_str().unwrap(),
                    "qcow2",
                    reference.to_str().unwrap()
                ),
                "night {night} {extra:?} does not restore exactly"
            );
        }
    };
    restores(&local, &[]);
    restores(&offsite, &["--repo", "offsite"]);
    // Night 5's backup is gone from the primary; asked for by its id, its copy is named.
    let o = sendense_testkit::restore_disk(BIN, &state, &offsite[0].1, &d.join("x.qcow2"), &[]);
    assert_eq!(o.status.code(), Some(4), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("copies of it stay") && output_text(&o).contains("--repo offsite"),
        "{}",
        output_text(&o)
    );

    // Friday's verify: every backup of the VM, in both repositories, intact.
    let (c, r) = at(&state, "2026-01-09T04:30:00Z", &["schedule", "run"]);
    assert_eq!(c, 0, "{r:#}");
    assert_eq!(r["groups"], serde_json::json!([]));
    assert_eq!(r["verifies"].as_array().unwrap().len(), 1, "{r:#}");
    assert_eq!(r["verifies"][0]["result"], "completed", "{r:#}");
    assert!(r["verifies"][0]["images"].as_u64().unwrap() >= 5, "{r:#}");
    let shown = cli_json(BIN, &state, &["group", "show", "g"]);
    assert_eq!(shown["last_verify_at"], "2026-01-09T04:00:00Z");
    // The jobs of the group: the backups, copies, prunes and verifies of its VM.
    let jobs = cli_json(
        BIN,
        &state,
        &["job", "list", "--group", "g", "--limit", "500"],
    );
    let kinds: std::collections::BTreeSet<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains("backup") && kinds.contains("copy") && kinds.contains("verify"),
        "{kinds:?}"
    );
    let (c, _) = code(&state, &["job", "list", "--policy", "nope"]);
    assert_eq!(c, 4);

    // The primary repository is lost: every night kept offsite still restores.
    std::fs::remove_dir_all(d.join("repo")).unwrap();
    restores(&offsite, &["--repo", "offsite"]);
}

#[test]
fn two_groups_with_a_live_vm_never_exceed_max_parallel_and_go_by_priority() {
    let (dir, state) = two_repo_hub();
    let d = dir.path();
    let mut disks = Vec::new();
    for vm in ["vm1", "vm2", "vm3"] {
        let disk = create_image(&d.join(format!("{vm}.qcow2")), "qcow2", "16M");
        qemu_io(&disk, "qcow2", &["write -P 0x44 0 2M"]);
        add_image_vm(BIN, &state, vm, &[&disk]);
        disks.push(disk);
    }
    let live_disk = create_image(&d.join("live.qcow2"), "qcow2", "16M");
    let live = sendense_testkit::QemuVm::start(d, "live", &[("qcow2", &live_disk)]);
    live.guest_io(0, "write -P 0x55 1M 1M");
    cli_json(
        BIN,
        &state,
        &["vm", "add", "live", "--qmp", live.qmp.to_str().unwrap()],
    );
    let setup = "2026-11-28T12:00:00Z";
    for (policy, repo) in [("nightly", "local"), ("second", "offsite")] {
        at(
            &state,
            setup,
            &[
                "policy",
                "add",
                policy,
                "--repo",
                repo,
                "--schedule",
                "0 2 * * *",
            ],
        );
    }
    at(
        &state,
        setup,
        &[
            "group",
            "add",
            "dev",
            "--policy",
            "second",
            "--priority",
            "1",
        ],
    );
    at(
        &state,
        setup,
        &[
            "group",
            "add",
            "prod",
            "--policy",
            "nightly",
            "--priority",
            "10",
            "--max-parallel",
            "2",
        ],
    );
    for vm in ["vm1", "vm2", "vm3", "live"] {
        at(&state, setup, &["group", "add-vm", "prod", vm]);
    }
    at(&state, setup, &["group", "add-vm", "dev", "vm1"]);

    // Each backup holds its snapshot for a while: the test counts the backups running at once.
    let night = |when: &str| -> (i32, Value, usize) {
        let child = clocked(&state, when, &["schedule", "run", "--json"])
            .env("SENDENSE_TEST_PAUSE_AT", "backup.snapshot-taken:1200")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut most = 0;
        while std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
        {
            let running = cli_json(BIN, &state, &["job", "list", "--status", "running"]);
            let n = running
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| j["kind"] == "backup")
                .count();
            most = most.max(n);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(doc != Value::Null, "{}", output_text(&out));
        (out.status.code().unwrap_or(-1), doc, most)
    };
    let (c, r, most) = night("2026-11-29T02:30:00Z");
    assert_eq!(c, 0, "{r:#}");
    assert_eq!(
        most, 2,
        "max-parallel 2: at most 2 backups at once, and 2 did run together"
    );
    let groups: Vec<&str> = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["prod", "dev"], "higher priority first");
    assert_eq!(
        ran(&r),
        triples(&[
            ("prod", "live", "completed"),
            ("prod", "vm1", "completed"),
            ("prod", "vm2", "completed"),
            ("prod", "vm3", "completed"),
            ("dev", "vm1", "completed"),
        ])
    );
    // prod's backups all started before dev's.
    let jobs = cli_json(BIN, &state, &["job", "list", "--group", "dev"]);
    let dev_job = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "backup")
        .map(|j| j["id"].as_i64().unwrap())
        .max()
        .unwrap();
    let prod = cli_json(BIN, &state, &["job", "list", "--group", "prod"]);
    let prod_jobs: Vec<i64> = prod
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "backup")
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(prod_jobs.len(), 5, "vm1 is in both groups: {prod:#}");
    assert!(
        prod_jobs
            .iter()
            .filter(|id| **id != dev_job)
            .all(|id| *id < dev_job),
        "{prod_jobs:?} / {dev_job}"
    );

    // vm2's disk breaks: it fails, the others complete, exit 3.
    std::fs::write(&disks[1], b"this is no longer a disk image").unwrap();
    live.guest_io(0, "write -P 0x66 3M 1M");
    let (c, r, most) = night("2026-11-30T02:30:00Z");
    assert_eq!(c, 3, "{r:#}");
    assert!(most <= 2);
    assert_eq!(
        ran(&r),
        triples(&[
            ("prod", "live", "completed"),
            ("prod", "vm1", "completed"),
            ("prod", "vm2", "failed"),
            ("prod", "vm3", "completed"),
            ("dev", "vm1", "completed"),
        ])
    );
    live.quit();
}
