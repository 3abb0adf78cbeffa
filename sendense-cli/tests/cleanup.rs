//! A sendense process holding qemu-nbd exports, a running job and `.partial` images is killed
//! with SIGKILL; `sendense cleanup` (or any next command) removes exactly what it left, and a
//! qemu-nbd that Sendense did not start is never touched.

use sendense_core::catalog::{BackupMode, JobKind};
use sendense_core::export::{export_name, ExportSpec};
use sendense_core::proc::ProcId;
use sendense_core::repo::DiskPlan;
use sendense_core::OpenOptions;
use sendense_testkit::{create_image, qemu_nbd, Proc};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WORKER_ENV: &str = "SENDENSE_CLEANUP_WORKER_STATE";

/// Helper process: a backup of vm1 half way — job running, partial images, two exports — then
/// it waits to be killed.
#[test]
#[ignore = "helper process for the cleanup tests"]
fn holder_worker() {
    let state = PathBuf::from(std::env::var_os(WORKER_ENV).expect("run by the cleanup tests"));
    let mut sd = OpenOptions::new().state_dir(&state).open().unwrap();
    let job = sd
        .catalog_mut()
        .create_job(JobKind::Backup, Some("vm1"), Some("r"))
        .unwrap();
    sd.catalog_mut().start_job(job.id).unwrap();
    let vm = sd.vm("vm1").unwrap();
    let repo = sd.catalog().repo("r").unwrap();
    let plans: Vec<DiskPlan> = vm
        .disks
        .iter()
        .map(|d| DiskPlan {
            key: d.key,
            mode: BackupMode::Full,
            reason: "first backup in repository".into(),
            parent: None,
            size_bytes: d.size_bytes,
            checkpoint: None,
        })
        .collect();
    let pending = sd
        .begin_backup(
            &sendense_core::repo::chain::new_backup_id(),
            &vm,
            &repo,
            Some(job.id),
            &plans,
        )
        .unwrap();
    let range = (sd.config().nbd_ports.first, sd.config().nbd_ports.last);
    let mut exports = Vec::new();
    for t in &pending.targets {
        let spec = ExportSpec::target(
            t.partial.clone(),
            export_name("vm1", t.plan.key),
            range,
            3,
            Some(job.id),
        );
        exports.push(sd.start_export(&spec).unwrap());
    }
    for e in &exports {
        println!("EXPORT {} {}", e.server.pid, e.record.port.unwrap());
    }
    for t in &pending.targets {
        println!("PARTIAL {}", t.partial.display());
    }
    println!("JOB {}", job.id);
    println!("READY");
    std::thread::sleep(std::time::Duration::from_secs(600));
}

struct Held {
    servers: Vec<(ProcId, u16)>,
    partials: Vec<PathBuf>,
    job: i64,
}

fn sendense(state: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = sendense_testkit::cli(env!("CARGO_BIN_EXE_sendense"), state, args);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn prepare(dir: &Path) -> PathBuf {
    let state = dir.join("state");
    sendense_testkit::private_port_config(&state, 20);
    sendense(&state, &["init"]);
    let d0 = create_image(&dir.join("d0.qcow2"), "qcow2", "32M");
    let d1 = create_image(&dir.join("d1.qcow2"), "qcow2", "16M");
    let repo = dir.join("repo");
    assert_eq!(
        sendense(
            &state,
            &["repo", "add", "r", "--path", repo.to_str().unwrap()]
        )
        .0,
        0
    );
    let (code, _, err) = sendense(
        &state,
        &[
            "vm",
            "add",
            "vm1",
            "--disk",
            d0.to_str().unwrap(),
            "--disk",
            d1.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    state
}

/// Starts the holder, waits until it is ready, kills it with SIGKILL.
fn run_and_kill_holder(state: &Path) -> Held {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "holder_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, state)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut held = Held {
        servers: Vec::new(),
        partials: Vec::new(),
        job: 0,
    };
    let reader = BufReader::new(child.stdout.take().unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(i) = words.iter().position(|w| *w == "EXPORT") {
            let pid: u32 = words[i + 1].parse().unwrap();
            held.servers
                .push((ProcId::of(pid).unwrap(), words[i + 2].parse().unwrap()));
        } else if let Some(i) = words.iter().position(|w| *w == "PARTIAL") {
            held.partials.push(PathBuf::from(words[i + 1]));
        } else if let Some(i) = words.iter().position(|w| *w == "JOB") {
            held.job = words[i + 1].parse().unwrap();
        } else if line.contains("READY") {
            break;
        } else if line.contains("panicked") {
            panic!("holder failed: {line}");
        }
    }
    assert_eq!(held.servers.len(), 2);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        held.servers.iter().all(|(s, _)| s.is_alive()),
        "qemu-nbd must outlive its killed starter"
    );
    assert!(held.partials.iter().all(|p| p.exists()));
    held
}

fn assert_all_gone(held: &Held, state: &Path) {
    for (server, port) in &held.servers {
        assert!(!server.is_alive(), "qemu-nbd {} survived", server.pid);
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok(),
            "port {port} still taken"
        );
    }
    for p in &held.partials {
        assert!(!p.exists(), "{} survived", p.display());
    }
    let (_, job, _) = sendense(state, &["job", "show", &held.job.to_string(), "--json"]);
    assert_eq!(job["status"], "failed");
    assert!(job["error"].as_str().unwrap().contains("is gone"), "{job}");
    let (_, exports, _) = sendense(state, &["nbd", "list", "--json"]);
    assert_eq!(exports, serde_json::json!([]));
}

#[test]
fn cleanup_removes_exactly_what_a_killed_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let state = prepare(dir.path());
    // A qemu-nbd the test started itself, not Sendense: it must survive every cleanup.
    let foreign_img = create_image(&dir.path().join("foreign.qcow2"), "qcow2", "16M");
    let mut foreign: Proc = qemu_nbd(dir.path(), &foreign_img, "qcow2", "foreign", &[]).proc;

    let held = run_and_kill_holder(&state);

    // Dry run: reports, changes nothing.
    let (code, report, err) = sendense(&state, &["cleanup", "--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(report["dry_run"], true);
    let actions: Vec<String> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "fail_job",
        "discard_backup",
        "stop_qemu_nbd",
        "release_port",
        "remove_file",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} missing from {actions:?}"
        );
    }
    assert_eq!(
        actions.iter().filter(|a| *a == "stop_qemu_nbd").count(),
        2,
        "{actions:?}"
    );
    assert!(
        held.servers.iter().all(|(s, _)| s.is_alive()),
        "dry run stopped something"
    );
    assert!(
        held.partials.iter().all(|p| p.exists()),
        "dry run removed something"
    );

    let (code, report, err) = sendense(&state, &["cleanup", "--json"]);
    assert_eq!(code, 0, "{err}: {report}");
    assert_all_gone(&held, &state);
    assert!(
        foreign.alive(),
        "cleanup touched a qemu-nbd Sendense did not start"
    );

    let (code, report, _) = sendense(&state, &["cleanup", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        report["actions"],
        serde_json::json!([]),
        "second cleanup found {report}"
    );
    // The repository holds no image at all: the backup never completed.
    let (_, backups, _) = sendense(&state, &["repo", "show", "r", "--json"]);
    assert_eq!(backups["backups"], 0);
}

#[test]
fn the_next_command_reconciles_without_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let state = prepare(dir.path());
    let held = run_and_kill_holder(&state);
    let (code, jobs, err) = sendense(&state, &["job", "list", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(jobs[0]["status"], "failed");
    assert_all_gone(&held, &state);
}
