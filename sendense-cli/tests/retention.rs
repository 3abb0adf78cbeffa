//! Deleting any backup of a chain: the backups that depend on it keep every byte (its data is
//! merged into them), verify passes, and the chain goes on.

use sendense_testkit::{cli, cli_json, create_image, images_equal, output_text, qemu_io};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

/// An image VM with two disks and its backups, each with references of both disks.
struct Lab {
    dir: tempfile::TempDir,
    state: PathBuf,
    disks: [PathBuf; 2],
    /// Backup id → references of disks 2000 and 2001 at that backup.
    backups: Vec<(String, [PathBuf; 2])>,
}

/// Writes of round `i` (data over older data, zeroes over older data, a new area), on both
/// disks: every round changes what earlier rounds wrote.
fn writes(i: usize) -> [Vec<String>; 2] {
    let p = 0x10 + i as u8;
    let mib = |n: usize| n % 48;
    [
        vec![
            format!("write -P {p:#x} {}M 2M", mib(i * 3)),
            format!("write -z {}M 1M", mib(i * 3 + 7)),
            format!("write -P {:#x} {}M 64k", p + 0x40, mib(i * 5 + 1)),
        ],
        vec![format!("write -P {p:#x} {}M 1M", mib(i * 2) % 16)],
    ]
}

impl Lab {
    fn new(rounds: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let state = sendense_testkit::cli_hub(BIN, d, "r");
        let disks = [
            create_image(&d.join("a.qcow2"), "qcow2", "48M"),
            create_image(&d.join("b.qcow2"), "qcow2", "16M"),
        ];
        cli_json(
            BIN,
            &state,
            &[
                "vm",
                "add",
                "vm1",
                "--disk",
                disks[0].to_str().unwrap(),
                "--disk",
                disks[1].to_str().unwrap(),
            ],
        );
        let mut lab = Lab {
            dir,
            state,
            disks,
            backups: Vec::new(),
        };
        for _ in 0..rounds {
            lab.backup();
        }
        lab
    }

    /// Writes the next round, backs it up, keeps references; returns the summary.
    fn backup(&mut self) -> Value {
        self.backup_at(None)
    }

    /// [`Lab::backup`] with the hub's clock standing at `at` (RFC 3339), when given.
    fn backup_at(&mut self, at: Option<&str>) -> Value {
        let i = self.backups.len();
        for (disk, w) in self.disks.iter().zip(writes(i)) {
            let w: Vec<&str> = w.iter().map(String::as_str).collect();
            qemu_io(disk, "qcow2", &w);
        }
        let mut cmd = Command::new(BIN);
        cmd.args(["backup", "start", "vm1", "--json"])
            .env("SENDENSE_HOME", &self.state);
        if let Some(at) = at {
            cmd.env("SENDENSE_TEST_NOW", at);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let s: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let id = s["backup"].as_str().unwrap().to_string();
        let refs = [0, 1].map(|k| {
            let r = self.dir.path().join(format!("ref-{i}-{k}.raw"));
            let ok = Command::new("qemu-img")
                .args(["convert", "-O", "raw"])
                .arg(&self.disks[k])
                .arg(&r)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            r
        });
        self.backups.push((id, refs));
        s
    }

    fn id(&self, i: usize) -> String {
        self.backups[i].0.clone()
    }

    /// Every backup still listed restores both disks exactly, and verify passes for all.
    fn assert_all_exact(&self) {
        let listed = cli_json(BIN, &self.state, &["backup", "list", "--vm", "vm1"]);
        let listed: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap())
            .collect();
        self.assert_restores(&self.state, &listed);
    }

    /// Hub `state` restores both disks of each backup of `ids` exactly, and verify passes.
    fn assert_restores(&self, state: &Path, ids: &[&str]) {
        for (id, refs) in self
            .backups
            .iter()
            .filter(|(id, _)| ids.contains(&id.as_str()))
        {
            for (k, r) in refs.iter().enumerate() {
                let out = self.dir.path().join(format!("restored-{id}-{k}.qcow2"));
                let _ = std::fs::remove_file(&out);
                let key = (2000 + k).to_string();
                let to = out.to_str().unwrap();
                let o = cli(BIN, state, &["restore", id, "--disk", &key, "--to", to]);
                assert!(
                    o.status.success(),
                    "restore {id} disk {key}: {}",
                    output_text(&o)
                );
                assert!(
                    images_equal(to, "qcow2", r.to_str().unwrap()),
                    "backup {id} disk {key} no longer restores to its data"
                );
                std::fs::remove_file(&out).unwrap();
            }
        }
        let o = cli(BIN, state, &["backup", "verify", "--all"]);
        assert!(o.status.success(), "verify: {}", output_text(&o));
    }

    fn delete(&self, i: usize) -> Value {
        cli_json(BIN, &self.state, &["backup", "delete", &self.id(i)])
    }

    fn show(&self, i: usize) -> Value {
        cli_json(BIN, &self.state, &["backup", "show", &self.id(i)])
    }

    /// After a kill at `point` and the next command: verify passes, cleanup has nothing left
    /// to do, and the chain goes on (a new backup is taken).
    fn assert_recovered(&mut self, point: &str) {
        let o = cli(BIN, &self.state, &["backup", "verify", "--vm", "vm1"]);
        assert!(o.status.success(), "{point}: verify: {}", output_text(&o));
        let dry = cli_json(BIN, &self.state, &["cleanup", "--dry-run"]);
        assert_eq!(dry["actions"], serde_json::json!([]), "{point}: {dry}");
        self.backup();
    }

    /// A new hub (`<dir>/other`) takes the repository over and imports it; its report warns
    /// with `warning`. Returns the new hub's state directory and the repository.
    fn import_elsewhere(&self, warning: &str) -> (PathBuf, PathBuf) {
        let other = self.dir.path().join("other");
        assert!(cli(BIN, &other, &["init"]).status.success());
        let repo = self.dir.path().join("repo");
        let path = repo.to_str().unwrap();
        let imported = cli_json(BIN, &other, &["repo", "import", path, "--take-over"]);
        assert!(
            imported["warnings"].to_string().contains(warning),
            "{imported:#}"
        );
        (other, repo)
    }

    /// Nothing of a merge or of a write is left in the repository.
    fn assert_no_leftovers(&self) {
        let leftovers: Vec<String> = sendense_testkit::walk(&self.vm_dir())
            .into_iter()
            .map(|p| p.display().to_string())
            .filter(|p| p.contains("merg") || p.ends_with(".partial"))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new());
    }

    fn vm_dir(&self) -> PathBuf {
        self.dir.path().join("repo/vm1")
    }
}

fn files_of(dir: &Path, id: &str) -> Vec<String> {
    sendense_testkit::walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .filter(|p| p.contains(id))
        .collect()
}

#[test]
fn any_backup_can_be_deleted_and_every_other_restores_exactly() {
    let mut lab = Lab::new(6);
    let (b0, b1, b2, b3) = (lab.id(0), lab.id(1), lab.id(2), lab.id(3));

    // Nothing moves while a backup that depends on the one to delete is read: an export of b3
    // holds b2 (in its chain), so deleting b2 is refused (exit 5) and changes nothing.
    let export = sendense_testkit::spawn_paused(
        BIN,
        &lab.state,
        &["export", &b3, "--disk", "2000"],
        "none:0",
    );
    sendense_testkit::running_job(BIN, &lab.state, "export");
    let o = cli(BIN, &lab.state, &["backup", "delete", &b2]);
    assert_eq!(o.status.code(), Some(5), "{}", output_text(&o));
    assert!(output_text(&o).contains("in use"), "{}", output_text(&o));
    assert!(Command::new("kill")
        .args(["-INT", &export.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(export.wait_with_output().unwrap().status.success());
    assert_eq!(lab.show(3)["disks"][0]["parent"], b2.as_str());

    // A middle incremental: merged into the next one, which is then backed by its parent.
    let plan = cli_json(BIN, &lab.state, &["backup", "delete", &b2, "--dry-run"]);
    assert_eq!(plan["disks"][0]["merge_into"], b3.as_str(), "{plan}");
    assert_eq!(plan["disks"][0]["new_parent"], b1.as_str());
    assert_eq!(plan["disks"][1]["merge_into"], b3.as_str());
    assert!(
        lab.vm_dir().join(format!("2000/{b2}.qcow2")).exists(),
        "a dry run changes nothing"
    );
    let deleted = lab.delete(2);
    assert_eq!(deleted["status"], "deleted");
    assert_eq!(files_of(&lab.vm_dir(), &b2), Vec::<String>::new());
    let shown = lab.show(3);
    assert_eq!(shown["disks"][0]["parent"], b1.as_str());
    assert_eq!(shown["disks"][0]["mode"], "incremental");
    lab.assert_all_exact();

    // The oldest full: its child takes its data and becomes a full.
    let plan = cli_json(BIN, &lab.state, &["backup", "delete", &b0, "--dry-run"]);
    assert_eq!(plan["disks"][0]["merge_into"], b1.as_str());
    assert_eq!(plan["disks"][0]["new_parent"], Value::Null);
    lab.delete(0);
    let shown = lab.show(1);
    assert_eq!(shown["disks"][0]["mode"], "full");
    assert_eq!(shown["disks"][0]["parent"], Value::Null);
    assert_eq!(shown["disks"][1]["mode"], "full");
    lab.assert_all_exact();

    // The chain top's parent, then the chain goes on: the next backup is an incremental on
    // the top, and exact.
    lab.delete(4);
    lab.assert_all_exact();
    let next = lab.backup();
    for d in next["disks"].as_array().unwrap() {
        assert_eq!(d["mode"], "incremental", "{next}");
        assert_eq!(d["parent"], lab.id(5).as_str());
    }
    lab.assert_all_exact();
    lab.assert_no_leftovers();
}

/// The backups the catalog lists for vm1, oldest first (the list is newest first; ids taken
/// within one second do not sort by time).
fn listed(state: &Path) -> Vec<String> {
    let mut ids: Vec<String> = cli_json(BIN, state, &["backup", "list", "--vm", "vm1"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    ids.reverse();
    ids
}

#[test]
fn a_merge_killed_at_any_instant_is_finished_by_the_next_command_and_loses_nothing() {
    // Every step of a merge of a two-disk backup: #2 is the second disk.
    let steps = [
        "merge.marked",
        "merge.journal-written",
        "merge.manifest-removed",
        "merge.committed#1",
        "merge.digests-written#1",
        "merge.image-renamed#1",
        "merge.digests-renamed#1",
        "merge.committed#2",
        "merge.digests-written#2",
        "merge.image-renamed#2",
        "merge.digests-renamed#2",
        "merge.manifests-rewritten",
        "merge.journal-removed",
        "merge.catalog-done",
    ];
    // A middle incremental at every step, then the oldest full at the steps that differ for it.
    let full_steps = [
        "merge.committed#1",
        "merge.digests-written#1",
        "merge.image-renamed#1",
        "merge.digests-renamed#1",
        "merge.image-renamed#2",
        "merge.manifests-rewritten",
        "merge.journal-removed",
    ];
    let kills: Vec<(bool, &str)> = steps
        .iter()
        .map(|s| (false, *s))
        .chain(full_steps.iter().map(|s| (true, *s)))
        .collect();
    assert_eq!(kills.len(), 21);
    let mut lab = Lab::new(4);
    for (oldest, point) in kills {
        let ids = listed(&lab.state);
        let victim = if oldest {
            ids[0].clone()
        } else {
            ids[ids.len() / 2].clone()
        };
        sendense_testkit::cli_killed_at(BIN, &lab.state, &["backup", "delete", &victim], point);
        // The next command, whatever it is, finishes the merge first.
        let now = listed(&lab.state);
        assert!(
            !now.contains(&victim),
            "{point}: backup {victim} is still listed"
        );
        assert_eq!(now.len(), ids.len() - 1, "{point}: {ids:?} → {now:?}");
        // The chain goes on.
        lab.assert_recovered(point);
    }
    lab.assert_all_exact();
    lab.assert_no_leftovers();
}

#[test]
fn repo_import_finishes_a_merge_a_dead_hub_left() {
    let lab = Lab::new(4);
    let (b1, b2) = (lab.id(1), lab.id(2));
    let args = ["backup", "delete", &b1];
    sendense_testkit::cli_killed_at(BIN, &lab.state, &args, "merge.image-renamed#1");
    // The hub is lost; another hub takes the repository over and imports it.
    let (other, repo) = lab.import_elsewhere(&format!("finished removing backup {b1}"));
    let ids = listed(&other);
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&b1));
    let shown = cli_json(BIN, &other, &["backup", "show", &b2]);
    assert_eq!(shown["disks"][0]["parent"], lab.id(0).as_str());
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    lab.assert_restores(&other, &ids);
    assert!(!repo.join(format!("vm1/merges/{b1}.yaml")).exists());
}

/// `sendense backup prune ARGS --json` in time zone UTC: exit code and report.
fn prune(state: &Path, args: &[&str]) -> (i32, Value) {
    let out = Command::new(BIN)
        .args(["backup", "prune", "--json"])
        .args(args)
        .env("SENDENSE_HOME", state)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), report)
}

/// Backup id → its mark as the report shows it ("keep-daily", "remove", "merge:<id>").
fn marks(report: &Value) -> Vec<(String, String)> {
    report["groups"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let mark = match b["mark"].as_str().unwrap() {
                "keep" => b["rule"].as_str().unwrap().to_string(),
                "merge" => format!("merge:{}", b["into"].as_str().unwrap()),
                other => other.to_string(),
            };
            (b["id"].as_str().unwrap().to_string(), mark)
        })
        .collect()
}

#[test]
fn prune_keeps_what_the_rules_say_and_every_kept_backup_restores_exactly() {
    let times = [
        "2025-06-01T10:00:00Z",
        "2025-12-01T10:00:00Z",
        "2026-03-01T10:00:00Z",
        "2026-10-01T10:00:00Z",
        "2026-11-20T10:00:00Z",
        "2026-11-25T10:00:00Z",
        "2026-11-27T10:00:00Z",
        "2026-11-28T08:00:00Z",
        "2026-11-28T20:00:00Z",
        "2026-11-29T06:00:00Z",
        "2026-11-29T07:00:00Z",
        "2026-11-29T08:00:00Z",
    ];
    let mut lab = Lab::new(0);
    for t in times {
        lab.backup_at(Some(t));
    }
    let t = |i: usize| lab.id(i);
    // Worked out by hand: last 2 → t11, t10; daily 3 (the 29th is held) → t8, t6, t5;
    // monthly 2 (November is held) → t3, t2; yearly 1 (2026 is held) → t1. The rest go, each
    // merged into the kept backup that depends on it.
    let rules = [
        "--keep-last",
        "2",
        "--keep-daily",
        "3",
        "--keep-monthly",
        "2",
        "--keep-yearly",
        "1",
    ];
    let mut args = rules.to_vec();
    args.push("--dry-run");
    let (code, dry) = prune(&lab.state, &args);
    assert_eq!(code, 0, "{dry:#}");
    let want: Vec<(String, String)> = [
        (11, "keep-last".to_string()),
        (10, "keep-last".into()),
        (9, format!("merge:{}", t(10))),
        (8, "keep-daily".into()),
        (7, format!("merge:{}", t(8))),
        (6, "keep-daily".into()),
        (5, "keep-daily".into()),
        (4, format!("merge:{}", t(5))),
        (3, "keep-monthly".into()),
        (2, "keep-monthly".into()),
        (1, "keep-yearly".into()),
        (0, format!("merge:{}", t(1))),
    ]
    .into_iter()
    .map(|(i, m)| (t(i), m))
    .collect();
    assert_eq!(marks(&dry), want);
    assert_eq!(
        (dry["kept"].as_u64(), dry["removed"].as_u64()),
        (Some(8), Some(4))
    );
    assert_eq!(listed(&lab.state).len(), 12, "a dry run removes nothing");

    let (code, done) = prune(&lab.state, &rules);
    assert_eq!(code, 0, "{done:#}");
    assert_eq!(marks(&done), want);
    let kept: Vec<String> = want
        .iter()
        .filter(|(_, m)| !m.starts_with("merge"))
        .map(|(id, _)| id.clone())
        .rev()
        .collect();
    assert_eq!(listed(&lab.state), kept);
    // The oldest kept backup took the removed full's data: a full now.
    assert_eq!(lab.show(1)["disks"][0]["mode"], "full");
    lab.assert_all_exact();
    // Pruning again with the same rules and clock changes nothing.
    let (code, again) = prune(&lab.state, &rules);
    assert_eq!((code, again["removed"].as_u64()), (0, Some(0)), "{again:#}");

    // Down to the newest: everything before it merges into it, oldest first.
    let (code, last) = prune(&lab.state, &["--keep-last", "1"]);
    assert_eq!(code, 0, "{last:#}");
    assert_eq!(listed(&lab.state), [t(11)]);
    assert_eq!(lab.show(11)["disks"][0]["mode"], "full");
    lab.assert_all_exact();
    // The chain goes on from it.
    let next = lab.backup_at(Some("2026-11-29T09:00:00Z"));
    assert_eq!(next["disks"][0]["mode"], "incremental", "{next}");
    lab.assert_all_exact();
    lab.assert_no_leftovers();

    // No rule: a usage error, nothing touched.
    let (code, _) = prune(&lab.state, &[]);
    assert_eq!(code, 2);
    assert_eq!(listed(&lab.state).len(), 2);
}

#[test]
fn prune_leaves_a_vm_whose_backup_runs() {
    let mut lab = Lab::new(3);
    for (i, w) in writes(9).iter().enumerate() {
        let w: Vec<&str> = w.iter().map(String::as_str).collect();
        qemu_io(&lab.disks[i], "qcow2", &w);
    }
    let running = sendense_testkit::spawn_paused(
        BIN,
        &lab.state,
        &["backup", "start", "vm1"],
        "transfer.disk-copied:60000",
    );
    sendense_testkit::running_job(BIN, &lab.state, "backup");
    let (code, report) = prune(&lab.state, &["--keep-last", "1"]);
    assert_eq!(code, 5, "{report:#}");
    assert_eq!(report["removed"], 0);
    assert!(
        report.to_string().contains("busy") || report.to_string().contains("running"),
        "{report:#}"
    );
    let completed = cli_json(BIN, &lab.state, &["backup", "list", "--vm", "vm1"]);
    let completed = completed
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["status"] == "completed");
    assert_eq!(completed.count(), 3, "nothing was removed");
    let pid = running.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    running.wait_with_output().unwrap();
    let _ = lab.backup();
}

#[test]
fn consolidate_makes_the_newest_backup_standalone_without_changing_a_byte() {
    let mut lab = Lab::new(4);
    let top = lab.id(3);
    let report = cli_json(BIN, &lab.state, &["backup", "consolidate", "vm1"]);
    assert_eq!(report["backup"], top.as_str(), "{report}");
    assert_eq!(report["disks"][0]["links_before"], 4);
    assert_eq!(report["disks"].as_array().unwrap().len(), 2);
    let shown = lab.show(3);
    for d in shown["disks"].as_array().unwrap() {
        assert_eq!(
            (&d["mode"], &d["parent"]),
            (&"full".into(), &Value::Null),
            "{shown}"
        );
    }
    lab.assert_all_exact();
    // Nothing depends on the older backups any more: they go without a merge.
    let plan = cli_json(
        BIN,
        &lab.state,
        &["backup", "delete", &lab.id(2), "--dry-run"],
    );
    assert_eq!(plan["disks"][0]["merge_into"], Value::Null, "{plan}");
    // Standalone already: nothing to do.
    let again = cli_json(BIN, &lab.state, &["backup", "consolidate", "vm1"]);
    assert_eq!(again["disks"], serde_json::json!([]));
    // The chain goes on from it.
    let next = lab.backup();
    assert_eq!(next["disks"][0]["parent"], top.as_str(), "{next}");
    for i in 0..3 {
        lab.delete(i);
    }
    lab.assert_all_exact();
    lab.assert_no_leftovers();
}

#[test]
fn a_consolidation_killed_at_any_instant_is_finished_by_the_next_command() {
    let points = [
        "consolidate.journal-written",
        "consolidate.converted#1",
        "consolidate.digests-written#1",
        "consolidate.image-renamed#1",
        "consolidate.digests-renamed#1",
        "consolidate.converted#2",
        "consolidate.image-renamed#2",
        "consolidate.manifest-rewritten",
        "consolidate.catalog-done",
    ];
    let mut lab = Lab::new(2);
    for point in points {
        let args = ["backup", "consolidate", "vm1"];
        sendense_testkit::cli_killed_at(BIN, &lab.state, &args, point);
        let top = listed(&lab.state).pop().unwrap();
        let shown = cli_json(BIN, &lab.state, &["backup", "show", &top]);
        for d in shown["disks"].as_array().unwrap() {
            assert_eq!(d["mode"], "full", "{point}: {shown}");
        }
        lab.assert_recovered(point);
    }
    lab.assert_all_exact();
    lab.assert_no_leftovers();
}

#[test]
fn max_chain_length_keeps_every_chain_short_and_exact() {
    let mut lab = Lab::new(0);
    let config = lab.state.join("config.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("max_chain_length: 3\n");
    std::fs::write(&config, text).unwrap();
    for _ in 0..7 {
        lab.backup();
    }
    // Backups 0-2 form a chain of 3; backup 3 made it 4, so it became a full; and so on.
    let modes: Vec<Value> = (0..7)
        .map(|i| lab.show(i)["disks"][0]["mode"].clone())
        .collect();
    let want = [
        "full",
        "incremental",
        "incremental",
        "full",
        "incremental",
        "incremental",
        "full",
    ];
    assert_eq!(modes, want.map(Value::from), "{modes:?}");
    let jobs = cli_json(BIN, &lab.state, &["job", "list", "--limit", "1"]);
    let log = cli(BIN, &lab.state, &["job", "log", &jobs[0]["id"].to_string()]);
    assert!(
        output_text(&log).contains("longer than max_chain_length (3)"),
        "{}",
        output_text(&log)
    );
    lab.assert_all_exact();
    lab.assert_no_leftovers();
}

#[test]
fn repo_import_finishes_a_consolidation_a_dead_hub_left() {
    let lab = Lab::new(3);
    let top = lab.id(2);
    let args = ["backup", "consolidate", "vm1"];
    sendense_testkit::cli_killed_at(BIN, &lab.state, &args, "consolidate.image-renamed#1");
    let (other, repo) = lab.import_elsewhere(&format!("finished making backup {top}"));
    let shown = cli_json(BIN, &other, &["backup", "show", &top]);
    for d in shown["disks"].as_array().unwrap() {
        assert_eq!(d["mode"], "full", "{shown}");
    }
    let ids: Vec<&str> = lab.backups.iter().map(|(id, _)| id.as_str()).collect();
    lab.assert_restores(&other, &ids);
    assert!(!repo.join(format!("vm1/merges/{top}.full.yaml")).exists());
}

#[test]
fn a_merge_is_refused_before_anything_changes_when_what_it_would_read_is_not_as_recorded() {
    let lab = Lab::new(3);
    let (b1, b2) = (lab.id(1), lab.id(2));
    let dir = lab.vm_dir().join("2000");
    // b2's image rewired onto the full, as a hand edit would: merging b1 into it would commit
    // into an image it does not read through.
    let img = dir.join(format!("{b2}.qcow2"));
    let full = format!("{}.qcow2", lab.id(0));
    let ok = Command::new("qemu-img")
        .args(["rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", &full])
        .arg(&img)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let before: Vec<(PathBuf, Vec<u8>)> = sendense_testkit::walk(&lab.vm_dir())
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    let o = cli(BIN, &lab.state, &["backup", "delete", &b1]);
    assert_eq!(o.status.code(), Some(5), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("not backed by"),
        "{}",
        output_text(&o)
    );
    let after: Vec<(PathBuf, Vec<u8>)> = sendense_testkit::walk(&lab.vm_dir())
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    assert!(before == after, "a refused merge changed the repository");
    assert!(listed(&lab.state).contains(&b1));

    // A digest file changed since its backup: refused the same way.
    let ok = Command::new("qemu-img")
        .args([
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            &format!("{b1}.qcow2"),
        ])
        .arg(&img)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let digests = dir.join(format!("{b1}.digests"));
    let mut d = std::fs::read(&digests).unwrap();
    let at = d.iter().position(|b| *b != 0).unwrap();
    d[at] ^= 0xff;
    std::fs::write(&digests, d).unwrap();
    let o = cli(BIN, &lab.state, &["backup", "delete", &b1]);
    assert_eq!(o.status.code(), Some(5), "{}", output_text(&o));
    assert!(
        output_text(&o).contains("was changed since the backup"),
        "{}",
        output_text(&o)
    );
    assert!(listed(&lab.state).contains(&b1));
}
