//! Crash consistency: `sendense backup start` of a live two-disk QEMU VM killed with SIGKILL at
//! every named instant of the job (the crash points in the code, see `sendense_core::crash`)
//! and at random instants by the clock, in both transfer modes; then one ordinary command, and
//! everything a user relies on is checked: nothing left running, recorded, half-written or
//! inside QEMU; every listed backup whole and exact; the next backup incremental and exact.
//!
//! `SENDENSE_TORTURE_SEED` repeats a run's random choices (each test prints the seed it used).

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The named instants of a backup, in the order a backup reaches them.
const BACKUP_POINTS: &[&str] = &[
    "backup.started",
    "backup.planned",
    "backup.recorded",
    "backup.targets-created",
    "qemu.snapshot-taken",
    "qemu.nbd-server-started",
    "backup.snapshot-taken",
    "transfer.disk-copied",
    "backup.transferred",
    "backup.exports-stopped",
    "commit.checked",
    "commit.disk-renamed",
    "commit.manifest-written",
    "commit.recorded",
    "qemu.teardown-objects-removed",
    "backup.finished",
];

/// A small, seedable pseudo-random generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("SENDENSE_TORTURE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: SENDENSE_TORTURE_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a trial ends the backup.
#[derive(Debug, Clone)]
enum Kill {
    /// The processes die at these crash points (a process dies at the first one it reaches).
    At(&'static str),
    /// The hub is killed this long after it started.
    Clock(Duration),
    /// `sendense-sna` is killed once a disk is copied; the hub rolls back on its own.
    Node,
}

/// How the killed backup ended: killed by SIGKILL, or failed on its own (its node killed).
fn expected_end(kill: &Kill, status: ExitStatus, source_on_node: bool) -> bool {
    match kill {
        // With the source on a node, its crash points kill the node: the hub fails, or — when
        // the node dies tearing down after the commit — completes with a warning.
        Kill::At(points) if source_on_node && points.starts_with("qemu.") => {
            status.code() == Some(1) || status.success()
        }
        Kill::At(points) if points.starts_with("transfer.") => {
            // In-process the hub dies; through sendense-sna the node dies and the hub fails.
            status.signal() == Some(9) || status.code() == Some(1)
        }
        Kill::At(points) if points.contains("rollback") => status.signal() == Some(9),
        Kill::At(_) => status.signal() == Some(9),
        Kill::Clock(_) => status.signal() == Some(9) || status.success(),
        Kill::Node => status.code() == Some(1),
    }
}

/// Guest writes for one trial: a few random ranges on each disk, mirrored into the refs.
fn random_writes(lab: &Lab, rng: &mut Rng, sizes: &[u64], pattern: u8) {
    for (disk, size) in sizes.iter().enumerate() {
        for _ in 0..1 + rng.below(3) {
            let len = (1 + rng.below(64)) * 4096;
            let off = rng.below((size << 20) / 4096 - len / 4096) * 4096;
            let io = if rng.below(5) == 0 {
                format!("write -z {off} {len}")
            } else {
                format!("write -P {pattern} {off} {len}")
            };
            lab.write(disk, &io);
        }
    }
}

/// The ids of the backups the catalog lists.
fn backup_ids(lab: &Lab) -> Vec<String> {
    json(&lab.state, &["backup", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

/// Runs a backup with `env` set, ending it as `kill` says; returns its exit status.
fn killed_backup(lab: &Lab, kill: &Kill, env: &[(&str, String)]) -> ExitStatus {
    let mut cmd = sendense_cmd(&lab.state, &["backup", "start", "pgtest1", "--json"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    match kill {
        Kill::At(_) => {
            std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink()).unwrap();
        }
        Kill::Clock(after) => {
            let reader = std::thread::spawn(move || {
                std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink())
            });
            std::thread::sleep(*after);
            let _ = child.kill();
            let _ = reader.join();
        }
        Kill::Node => {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let mut killed = false;
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                if line.contains("\"disk_finished\"") && !killed {
                    // The node pauses right after a disk is copied: kill it there.
                    kill_node(lab);
                    killed = true;
                }
            }
            assert!(killed, "the node never reported a copied disk");
        }
    }
    child.wait().unwrap()
}

/// Kills (SIGKILL) the lab's `sendense-sna`, found by its path in the lab.
fn kill_node(lab: &Lab) {
    let sna = lab.dir.path().join("bin/sendense-sna");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            // The transfer's node (with the source on a node, another one runs the source).
            let transfer = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"transfer"));
            if transfer
                && std::fs::read_link(format!("/proc/{pid}/exe"))
                    .ok()
                    .as_deref()
                    == Some(&sna)
            {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
                return;
            }
        }
        assert!(Instant::now() < deadline, "sendense-sna is not running");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A lab whose `sendense-sna` is a copy in the lab's directory (so its process is found by its
/// path), transferring in `mode`.
fn lab_in(mode: &str, sizes: &[u64]) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let sna = bin.join("sendense-sna");
    let built = Path::new(env!("CARGO_BIN_EXE_sendense"))
        .parent()
        .unwrap()
        .join("sendense-sna");
    std::fs::copy(&built, &sna).unwrap();
    let config = match mode {
        "node-source" => format!(
            "transfer: process\nsource_side: node\nsna_path: {}\n",
            sna.display()
        ),
        _ => format!("transfer: {mode}\nsna_path: {}\n", sna.display()),
    };
    Lab::new_in(dir, sizes, &config)
}

/// One backup killed as `kill` says, the checks after one ordinary command, and the next
/// backup. Returns the backups it left (id → the disks at their snapshot).
fn trial(
    lab: &Lab,
    rng: &mut Rng,
    n: usize,
    kill: &Kill,
    sizes: &[u64],
    source_on_node: bool,
) -> Vec<(String, Vec<PathBuf>)> {
    eprintln!("trial {n}: {kill:?}");
    random_writes(lab, rng, sizes, 0x10 + (n as u8 % 0xe0));
    let refs = lab.keep_refs(&format!("t{n}"));
    let before = backup_ids(lab);
    let env: Vec<(&str, String)> = match kill {
        Kill::At(points) => vec![("SENDENSE_TEST_CRASH_AT", points.to_string())],
        Kill::Clock(_) => vec![],
        Kill::Node => vec![(
            "SENDENSE_TEST_PAUSE_AT",
            "transfer.disk-copied:3000".to_string(),
        )],
    };
    let status = killed_backup(lab, kill, &env);
    assert!(
        expected_end(kill, status, source_on_node),
        "trial {n} ({kill:?}): the backup ended with {status}, not as the trial meant"
    );

    // One ordinary command reconciles; then nothing may be left anywhere.
    let jobs = json(&lab.state, &["job", "list", "--limit", "1"]);
    assert_ne!(jobs[0]["status"], "running", "trial {n} ({kill:?}): {jobs}");
    lab.assert_nothing_left();
    lab.assert_repo_matches_catalog();
    let mut made = Vec::new();
    for id in backup_ids(lab) {
        if !before.contains(&id) {
            // The kill came after the backup was recorded complete: it must be whole.
            lab.assert_backup_equals(&id, &refs);
            let v = json(&lab.state, &["backup", "verify", &id]);
            assert_eq!(v["ok"], true, "trial {n} ({kill:?}): {v:#}");
            made.push((id, refs.clone()));
        }
    }

    // The next backup works, is incremental (the checkpoint survived) and exact.
    let (code, _, s, err) = backup(&lab.state, &["--incremental"]);
    assert_eq!(code, 0, "trial {n} ({kill:?}): the next backup: {err}");
    let id = s["backup"].as_str().unwrap().to_string();
    lab.assert_backup_equals(&id, &refs);
    made.push((id, refs));
    lab.assert_nothing_left();
    made
}

/// The torture in one transfer mode: every crash point, and random instants by the clock.
fn torture(mode: &str) {
    let sizes = [16u64, 8];
    let lab = lab_in(mode, &sizes);
    let mut rng = Rng::from_env(mode);
    lab.write(0, "write -P 0x01 0 4M");
    lab.write(1, "write -P 0x02 1M 2M");
    let refs = lab.keep_refs("full");
    let (code, _, full, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    let mut expected: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    expected.insert(full["backup"].as_str().unwrap().to_string(), refs);

    // How long a backup takes here, for the kills by the clock.
    random_writes(&lab, &mut rng, &sizes, 0x03);
    let refs = lab.keep_refs("timed");
    let started = Instant::now();
    let (code, _, timed, err) = backup(&lab.state, &[]);
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    expected.insert(timed["backup"].as_str().unwrap().to_string(), refs);

    let mut kills: Vec<Kill> = BACKUP_POINTS.iter().map(|p| Kill::At(p)).collect();
    let clocks = if mode != "in-process" {
        kills.push(Kill::At("node.plan-sent"));
        kills.push(Kill::Node);
        kills.push(Kill::At(
            "transfer.disk-copied,backup.rollback-exports-stopped",
        ));
        3
    } else {
        4
    };
    for _ in 0..clocks {
        let at = took.mul_f64((1 + rng.below(95)) as f64 / 100.0);
        kills.push(Kill::Clock(at));
    }
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for (n, kill) in kills.iter().enumerate() {
        for (id, refs) in trial(&lab, &mut rng, n, kill, &sizes, mode == "node-source") {
            expected.insert(id, refs);
        }
        let phase = match kill {
            Kill::At(p) => p.split(['.', ',']).next().unwrap().to_string(),
            Kill::Clock(_) => "clock".into(),
            Kill::Node => "node".into(),
        };
        *phases.entry(phase).or_default() += 1;
    }

    // At the end every backup ever completed is still whole and exact.
    let v = json(&lab.state, &["backup", "verify", "--all"]);
    assert_eq!(v["ok"], true, "{v:#}");
    let listed = backup_ids(&lab);
    assert_eq!(
        listed.len(),
        expected.len(),
        "backups listed against backups made"
    );
    for (id, refs) in &expected {
        lab.assert_backup_equals(id, refs);
    }
    eprintln!(
        "{mode}: {} kills (by phase: {phases:?}, clock kills within {took:?}), {} backups exact, 0 leftovers",
        kills.len(),
        expected.len()
    );
}

#[test]
fn kill_9_at_every_instant_of_a_backup_in_process() {
    torture("in-process");
}

#[test]
fn kill_9_at_every_instant_of_a_backup_through_sendense_sna() {
    torture("process");
}

#[test]
fn kill_9_at_every_instant_of_a_backup_with_the_source_on_a_node() {
    torture("node-source");
}

/// Runs `args` until crash point `point` kills it, then one ordinary command (`job list`),
/// whose newest job it returns.
fn crashed_at(lab: &Lab, args: &[&str], point: &str) -> Value {
    crashed_at_only(lab, args, point);
    json(&lab.state, &["job", "list", "--limit", "1"])
}

#[test]
fn a_crash_in_the_commit_leaves_a_whole_backup_or_none_and_import_agrees() {
    let lab = Lab::new(&[16, 8], "");
    lab.write(0, "write -P 0x21 0 2M");
    let refs = lab.keep_refs("full");
    let (code, _, full, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");

    // Between the manifest and the catalog: no backup, and no manifest that `repo import`
    // could bring back.
    lab.write(0, "write -P 0x22 4M 1M");
    let jobs = crashed_at(
        &lab,
        &["backup", "start", "pgtest1"],
        "commit.manifest-written",
    );
    assert_eq!(jobs[0]["status"], "failed");
    assert_eq!(backup_ids(&lab), [full["backup"].as_str().unwrap()]);
    lab.assert_repo_matches_catalog();
    lab.assert_nothing_left();

    // Right after the catalog: a whole backup; the old checkpoint is retired by the repair.
    let refs2 = lab.keep_refs("second");
    crashed_at(&lab, &["backup", "start", "pgtest1"], "commit.recorded");
    let ids = backup_ids(&lab);
    assert_eq!(ids.len(), 2);
    lab.assert_backup_equals(&ids[0], &refs2);
    lab.assert_repo_matches_catalog();
    lab.assert_nothing_left();

    // A new hub importing the repository finds exactly these two.
    let other = lab.dir.path().join("other");
    assert!(run(&other, &["init"]).status.success());
    let imported = json(
        &other,
        &[
            "repo",
            "import",
            lab.repo().to_str().unwrap(),
            "--name",
            "again",
            "--take-over",
        ],
    );
    let mut found: Vec<String> = json(&other, &["backup", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(found, want, "{imported:#}");
    lab.assert_backup_equals(full["backup"].as_str().unwrap(), &refs);
}

#[test]
fn an_interrupted_delete_is_finished_by_the_next_command() {
    let lab = Lab::new(&[16, 8], "");
    let mut refs = Vec::new();
    for i in 0..4u8 {
        lab.write(0, &format!("write -P {} {}M 1M", 0x30 + i, i));
        refs.push(lab.keep_refs(&format!("b{i}")));
        let (code, _, _, err) = backup(&lab.state, &[]);
        assert_eq!(code, 0, "{err}");
    }
    // Newest first, each delete killed at another instant.
    for point in [
        "delete.marked",
        "delete.manifest-removed",
        "delete.disk-removed",
    ] {
        let ids = backup_ids(&lab);
        let top = ids[0].clone();
        crashed_at(&lab, &["backup", "delete", &top], point);
        let ids = backup_ids(&lab);
        assert!(!ids.contains(&top), "{point}: the delete was not finished");
        lab.assert_repo_matches_catalog();
        lab.assert_nothing_left();
        assert_eq!(
            json(&lab.state, &["backup", "verify", "--all"])["ok"],
            true,
            "{point}"
        );
    }
    let ids = backup_ids(&lab);
    assert_eq!(ids.len(), 1);
    lab.assert_backup_equals(&ids[0], &refs[0]);
    // The chain goes on from what is left: the checkpoint recorded was the deleted top's, so
    // the next backup is a full (an incremental onto the older backup would miss changes).
    lab.write(1, "write -P 0x3f 0 64K");
    let refs = lab.keep_refs("after");
    let (code, _, s, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        reasons(&s)[0],
        (
            2000,
            "full".into(),
            "checkpoint belongs to another chain".into()
        )
    );
    lab.assert_backup_equals(s["backup"].as_str().unwrap(), &refs);
}

#[test]
fn killing_restore_verify_and_export_leaves_nothing() {
    let lab = Lab::new(
        &[16, 8],
        "copy: {connections: 1, requests: 1, request_size: 4096}\n",
    );
    let mut rng = Rng::from_env("restore-verify-export");
    lab.write(0, "write -P 0x41 0 8M");
    lab.write(1, "write -P 0x42 0 4M");
    let refs = lab.keep_refs("full");
    let (code, _, full, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    let id = full["backup"].as_str().unwrap().to_string();
    let out = lab.dir.path().join("restored");
    let restore = |extra: &[(&str, &str)]| {
        let mut cmd = sendense_cmd(
            &lab.state,
            &[
                "restore",
                &id,
                "--all",
                "--to",
                out.to_str().unwrap(),
                "--format",
                "raw",
                "--force",
            ],
        );
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    };
    let restored_exactly = || {
        for key in [0usize, 1] {
            let file = out.join(format!("pgtest1-disk-{}.raw", 2000 + key));
            if file.exists() {
                assert!(
                    sendense_testkit::images_equal(
                        file.to_str().unwrap(),
                        "raw",
                        refs[key].to_str().unwrap()
                    ),
                    "a restored file that is not the backup"
                );
            }
        }
        let partial: Vec<_> = sendense_testkit::walk(&out)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect();
        assert!(partial.is_empty(), "restore left {partial:?}");
    };

    // Restore: at its named instants, then by the clock.
    for point in ["restore.partial-created", "restore.published"] {
        let mut child = restore(&[("SENDENSE_TEST_CRASH_AT", point)]);
        assert_eq!(child.wait().unwrap().signal(), Some(9), "{point}");
        json(&lab.state, &["job", "list"]);
        lab.assert_nothing_left();
        restored_exactly();
    }
    for _ in 0..3 {
        let mut child = restore(&[]);
        std::thread::sleep(Duration::from_millis(50 + rng.below(400)));
        let _ = child.kill();
        child.wait().unwrap();
        json(&lab.state, &["job", "list"]);
        lab.assert_nothing_left();
        restored_exactly();
    }

    // Verify, paused on its way through the images, killed by the clock.
    for _ in 0..3 {
        let mut child = sendense_cmd(&lab.state, &["backup", "verify", &id])
            .env("SENDENSE_TEST_PAUSE_AT", "verify.image:300")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50 + rng.below(600)));
        let _ = child.kill();
        child.wait().unwrap();
        json(&lab.state, &["job", "list"]);
        lab.assert_nothing_left();
    }

    // Export: killed while it serves.
    for _ in 0..2 {
        let mut child = sendense_cmd(&lab.state, &["export", &id, "--disk", "2000", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("nbd://"), "{line}");
        std::thread::sleep(Duration::from_millis(rng.below(200)));
        let _ = child.kill();
        child.wait().unwrap();
        let jobs = json(&lab.state, &["job", "list", "--limit", "1"]);
        assert_eq!(jobs[0]["kind"], "export");
        assert_eq!(jobs[0]["status"], "failed");
        lab.assert_nothing_left();
    }
    assert_eq!(json(&lab.state, &["backup", "verify", &id])["ok"], true);
    lab.assert_backup_equals(&id, &refs);
}

/// One of several VMs of a hub: the QEMU process, its name and its raw references.
struct Guest {
    vm: sendense_testkit::QemuVm,
    name: String,
    refs: Vec<PathBuf>,
}

impl Guest {
    fn write(&self, disk: usize, io: &str) {
        self.vm.guest_io(disk, io);
        sendense_testkit::qemu_io(&self.refs[disk], "raw", &[io]);
    }

    fn keep_refs(&self, dir: &Path, label: &str) -> Vec<PathBuf> {
        copy_refs(&self.refs, &dir.join(format!("refs-{}-{label}", self.name)))
    }
}

#[test]
fn three_vms_at_once_and_deletes_racing_backups() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    sendense_testkit::private_port_config(&state, 30);
    assert!(run(&state, &["init"]).status.success());
    let repo = d.join("repo");
    json(
        &state,
        &["repo", "add", "local", "--path", repo.to_str().unwrap()],
    );
    let guests: Vec<Guest> = (0..3)
        .map(|g| {
            let name = format!("vm{g}");
            let mut disks = Vec::new();
            let mut refs = Vec::new();
            for (i, size) in ["16M", "8M"].iter().enumerate() {
                disks.push(sendense_testkit::create_image(
                    &d.join(format!("{name}-disk{i}.qcow2")),
                    "qcow2",
                    size,
                ));
                refs.push(sendense_testkit::create_image(
                    &d.join(format!("{name}-ref{i}.raw")),
                    "raw",
                    size,
                ));
            }
            let with: Vec<(&str, &Path)> = disks.iter().map(|p| ("qcow2", p.as_path())).collect();
            let vm = sendense_testkit::QemuVm::start(d, &name, &with);
            json(
                &state,
                &["vm", "add", &name, "--qmp", vm.qmp.to_str().unwrap()],
            );
            Guest { vm, name, refs }
        })
        .collect();
    let mut expected: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let equals = |id: &str, refs: &[PathBuf]| {
        let shown = json(&state, &["backup", "show", id]);
        for disk in shown["disks"].as_array().unwrap() {
            let key = disk["key"].as_u64().unwrap() as usize - 2000;
            assert!(
                sendense_testkit::images_equal(
                    disk["file"].as_str().unwrap(),
                    "qcow2",
                    refs[key].to_str().unwrap()
                ),
                "backup {id} disk {key} differs from its VM at the snapshot"
            );
        }
    };

    // Three backups at once, twice: a full and an incremental of every VM, all exact.
    for round in 0..2u8 {
        for (g, guest) in guests.iter().enumerate() {
            guest.write(
                0,
                &format!("write -P {} {}M 2M", 0x50 + round * 4 + g as u8, round * 4),
            );
            guest.write(1, &format!("write -P {} 0 1M", 0x60 + round * 4 + g as u8));
        }
        let refs: Vec<Vec<PathBuf>> = guests
            .iter()
            .map(|g| g.keep_refs(d, &format!("r{round}")))
            .collect();
        let children: Vec<_> = guests
            .iter()
            .map(|g| {
                sendense_cmd(&state, &["backup", "start", &g.name, "--json"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let summary: Value =
                serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap())
                    .unwrap();
            let mode = if round == 0 { "full" } else { "incremental" };
            assert_eq!(summary["disks"][0]["mode"], mode);
            let id = summary["backup"].as_str().unwrap().to_string();
            equals(&id, &refs[i]);
            expected.insert(id, refs[i].clone());
        }
    }

    // A delete of each VM's newest backup racing that VM's next backup: whichever takes the
    // VM first wins, the other is refused or builds on what is left; nothing is lost.
    for (g, guest) in guests.iter().enumerate() {
        guest.write(0, &format!("write -P {} 12M 1M", 0x70 + g as u8));
        let refs = guest.keep_refs(d, "race");
        let top = json(&state, &["backup", "list", "--vm", &guest.name])[0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let backup = sendense_cmd(&state, &["backup", "start", &guest.name, "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let delete = sendense_cmd(&state, &["backup", "delete", &top])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deleted = delete.wait_with_output().unwrap();
        let backed_up = backup.wait_with_output().unwrap();
        let (dc, bc) = (deleted.status.code(), backed_up.status.code());
        assert!(
            matches!(dc, Some(0) | Some(5)) && matches!(bc, Some(0) | Some(5)),
            "delete {dc:?}: {}\nbackup {bc:?}: {}",
            String::from_utf8_lossy(&deleted.stderr),
            String::from_utf8_lossy(&backed_up.stderr)
        );
        eprintln!("{}: delete {dc:?}, backup {bc:?}", guest.name);
        if dc == Some(0) {
            expected.remove(&top);
        }
        if bc == Some(0) {
            let summary: Value = serde_json::from_str(
                String::from_utf8_lossy(&backed_up.stdout)
                    .lines()
                    .last()
                    .unwrap(),
            )
            .unwrap();
            expected.insert(summary["backup"].as_str().unwrap().to_string(), refs);
        }
    }

    // Everything listed is exactly what was made, whole and exact; nothing is left.
    let listed: Vec<String> = json(&state, &["backup", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<&String> = expected.keys().collect();
    let mut have: Vec<&String> = listed.iter().collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
    assert_eq!(json(&state, &["backup", "verify", "--all"])["ok"], true);
    for (id, refs) in &expected {
        equals(id, refs);
    }
    assert_eq!(json(&state, &["nbd", "list"]), serde_json::json!([]));
    let report = json(&state, &["cleanup", "--dry-run"]);
    assert_eq!(report["actions"], serde_json::json!([]), "{report:#}");
    let vms: Vec<u32> = guests.iter().map(|g| g.vm.proc.pid()).collect();
    let left = sendense_testkit::processes_with(&d.to_string_lossy(), &vms);
    assert!(left.is_empty(), "{left:?}");
}

/// A bind mount made by a test, undone when the guard goes, however the test ends.
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &Path, at: &Path) -> BindMount {
        let ok = std::process::Command::new("mount")
            .arg("--bind")
            .arg(from)
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "a bind mount needs root");
        BindMount(at.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn files_on_an_unmounted_repository_are_left_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    sendense_testkit::private_port_config(&state, 10);
    assert!(run(&state, &["init"]).status.success());
    let (store, mnt) = (d.join("store"), d.join("mnt"));
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let mount = BindMount::new(&store, &mnt);
    json(
        &state,
        &[
            "repo",
            "add",
            "share",
            "--path",
            mnt.to_str().unwrap(),
            "--require-mount",
        ],
    );
    let disk = sendense_testkit::qcow2_with(&d.join("vm.qcow2"), "16M", &["write -P 0x11 0 2M"]);
    sendense_testkit::add_image_vm(env!("CARGO_BIN_EXE_sendense"), &state, "vm1", &[&disk]);
    let full = json(&state, &["backup", "start", "vm1"]);
    let full_id = full["backup"].as_str().unwrap().to_string();
    sendense_testkit::qemu_io(&disk, "qcow2", &["write -P 0x12 4M 1M"]);
    let out = sendense_cmd(&state, &["backup", "start", "vm1"])
        .env("SENDENSE_TEST_CRASH_AT", "backup.targets-created")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(9));
    let partials = |root: &Path| -> Vec<PathBuf> {
        sendense_testkit::walk(root)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".partial"))
            .collect()
    };
    assert!(!partials(&store).is_empty());

    // The share goes away: the job ends failed, but its files and rows wait for the share.
    drop(mount);
    let jobs = json(&state, &["job", "list"]);
    assert_eq!(jobs[0]["status"], "failed");
    let o = run(&state, &["cleanup", "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(3), "partly failed");
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        report["errors"].to_string().contains("not available"),
        "{report:#}"
    );
    let o = run(&state, &["backup", "delete", &full_id]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a mount point"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !partials(&store).is_empty(),
        "nothing was touched while unmounted"
    );

    // Back: the next command removes the unfinished backup, files and row.
    let _mount = BindMount::new(&store, &mnt);
    json(&state, &["job", "list"]);
    assert!(partials(&store).is_empty(), "{:?}", partials(&store));
    let list = json(&state, &["backup", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["id"], full_id.as_str());
    let report = json(&state, &["cleanup", "--dry-run"]);
    assert_eq!(report["actions"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
}

#[test]
fn cleanup_dry_run_says_exactly_what_cleanup_then_does() {
    let lab = Lab::new(&[16, 8], "");
    lab.write(0, "write -P 0x51 0 2M");
    let (code, _, _, err) = backup(&lab.state, &[]);
    assert_eq!(code, 0, "{err}");
    let points = [
        "backup.targets-created",
        "qemu.nbd-server-started",
        "commit.manifest-written",
        "commit.recorded",
    ];
    for (i, point) in points.iter().enumerate() {
        lab.write(1, &format!("write -P {} 0 64k", 0x52 + i));
        let out = sendense_cmd(&lab.state, &["backup", "start", "pgtest1"])
            .env("SENDENSE_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}");
        // No other command in between: the dry run sees everything the kill left.
        let dry = json(&lab.state, &["cleanup", "--dry-run"]);
        let real = json(&lab.state, &["cleanup"]);
        assert!(
            !real["actions"].as_array().unwrap().is_empty(),
            "{point}: nothing was left?"
        );
        assert_eq!(dry["actions"], real["actions"], "{point}");
        lab.assert_nothing_left();
    }
    // A delete killed after marking the backup.
    let top = backup_ids(&lab)[0].clone();
    crashed_at_only(&lab, &["backup", "delete", &top], "delete.manifest-removed");
    let dry = json(&lab.state, &["cleanup", "--dry-run"]);
    let real = json(&lab.state, &["cleanup"]);
    assert_eq!(dry["actions"], real["actions"]);
    assert!(
        real["actions"].to_string().contains("finish_delete"),
        "{real:#}"
    );
    lab.assert_repo_matches_catalog();
}

/// Runs `args` until crash point `point` kills it, and nothing else.
fn crashed_at_only(lab: &Lab, args: &[&str], point: &str) {
    sendense_testkit::cli_killed_at(env!("CARGO_BIN_EXE_sendense"), &lab.state, args, point);
}
