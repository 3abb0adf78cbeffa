//! The live-VM lab shared by the backup and crash tests: a real QEMU VM whose guest writes are
//! mirrored into raw reference files, registered with a hub in a temporary directory, and the
//! checks every test makes of what a job left behind — in the hub, the repository and QEMU.
#![allow(dead_code)]

use sendense_testkit::{create_image, images_equal, qemu_io, walk, QemuVm};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const M: u64 = 1 << 20;

pub struct Lab {
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub vm: Option<QemuVm>,
    pub refs: Vec<PathBuf>,
}

pub fn sendense_cmd(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sendense"));
    c.args(args)
        .env("SENDENSE_HOME", state)
        .env("NO_COLOR", "1");
    c
}

pub fn run(state: &Path, args: &[&str]) -> Output {
    sendense_testkit::cli(env!("CARGO_BIN_EXE_sendense"), state, args)
}

pub fn json(state: &Path, args: &[&str]) -> Value {
    sendense_testkit::cli_json(env!("CARGO_BIN_EXE_sendense"), state, args)
}

/// A finished `backup start --json`: (exit code, events, summary, stderr).
pub fn backup(state: &Path, extra: &[&str]) -> (i32, Vec<Value>, Value, String) {
    backup_vm(state, "pgtest1", extra)
}

/// `sendense backup start VM --json`: exit code, events, summary (the last line), stderr.
pub fn backup_vm(state: &Path, vm: &str, extra: &[&str]) -> (i32, Vec<Value>, Value, String) {
    let mut args = vec!["backup", "start", vm, "--json"];
    args.extend_from_slice(extra);
    let out = run(state, &args);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = lines.last().cloned().unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        lines,
        summary,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Lab {
    /// A QEMU VM `pgtest1` with qcow2 disks of these sizes (MiB), registered with --qmp.
    pub fn new(sizes: &[u64], config: &str) -> Lab {
        Lab::new_in(tempfile::tempdir().unwrap(), sizes, config)
    }

    /// [`Lab::new`] in `dir`.
    pub fn new_in(dir: tempfile::TempDir, sizes: &[u64], config: &str) -> Lab {
        let d = dir.path();
        let state = d.join("state");
        sendense_testkit::private_port_config(&state, 20);
        if !config.is_empty() {
            let mut text = std::fs::read_to_string(state.join("config.yaml")).unwrap();
            text.push_str(config);
            std::fs::write(state.join("config.yaml"), text).unwrap();
        }
        assert!(run(&state, &["init"]).status.success());
        let mut images = Vec::new();
        let mut refs = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            images.push(create_image(
                &d.join(format!("disk{i}.qcow2")),
                "qcow2",
                &format!("{size}M"),
            ));
            refs.push(create_image(
                &d.join(format!("ref{i}.raw")),
                "raw",
                &format!("{size}M"),
            ));
        }
        let disks: Vec<(&str, &Path)> = images.iter().map(|p| ("qcow2", p.as_path())).collect();
        let vm = QemuVm::start(d, "pg", &disks);
        let repo = d.join("repo");
        json(
            &state,
            &["repo", "add", "local", "--path", repo.to_str().unwrap()],
        );
        json(
            &state,
            &["vm", "add", "pgtest1", "--qmp", vm.qmp.to_str().unwrap()],
        );
        Lab {
            dir,
            state,
            vm: Some(vm),
            refs,
        }
    }

    pub fn vm(&self) -> &QemuVm {
        self.vm.as_ref().unwrap()
    }

    /// A guest write, mirrored into the reference.
    pub fn write(&self, disk: usize, io: &str) {
        self.vm().guest_io(disk, io);
        qemu_io(&self.refs[disk], "raw", &[io]);
    }

    /// The backup restores, as a standalone raw image, to exactly the references.
    pub fn assert_restores(&self, summary: &Value) {
        let id = summary["backup"].as_str().unwrap();
        let out = self.dir.path().join(format!("restore-{id}"));
        json(
            &self.state,
            &[
                "restore",
                id,
                "--all",
                "--to",
                out.to_str().unwrap(),
                "--format",
                "raw",
            ],
        );
        for d in summary["disks"].as_array().unwrap() {
            let key = d["key"].as_u64().unwrap() as usize;
            let file = out.join(format!("pgtest1-disk-{key}.raw"));
            assert!(
                images_equal(
                    file.to_str().unwrap(),
                    "raw",
                    self.refs[key - 2000].to_str().unwrap()
                ),
                "restore of {id} disk {key}"
            );
        }
        std::fs::remove_dir_all(out).unwrap();
    }

    /// Every disk of the summary's backup equals the references.
    pub fn assert_point(&self, summary: &Value) {
        for d in summary["disks"].as_array().unwrap() {
            let key = d["key"].as_u64().unwrap() as usize - 2000;
            let file = d["file"].as_str().unwrap();
            assert!(
                images_equal(file, "qcow2", self.refs[key].to_str().unwrap()),
                "disk {} of backup {} differs from the VM at the snapshot",
                d["key"],
                summary["backup"]
            );
        }
    }

    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// Nothing of an interrupted job is left: exports, ports, partial images, scratch.
    /// The failed or cancelled process undid its own work: the next command finds nothing to
    /// reconcile (checked before any command that would reconcile on open).
    pub fn assert_undone_by_itself(&self) {
        assert_no_cleanup_needed(&self.state);
    }

    /// Nothing of an ended job is left: no export rows or ports, no process started for it
    /// (qemu-nbd, sendense-sna, hooks), no partial or temporary file in the repository, the
    /// scratch directory or the run directory, and nothing in QEMU.
    pub fn assert_nothing_left(&self) {
        assert_eq!(
            json(&self.state, &["nbd", "list"]),
            serde_json::json!([]),
            "exports left"
        );
        self.assert_no_processes();
        let stray: Vec<PathBuf> = walk(&self.repo())
            .into_iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.ends_with(".partial") || name.contains(".tmp-")
            })
            .collect();
        assert!(
            stray.is_empty(),
            "partial or temporary files left: {stray:?}"
        );
        for dir in ["scratch", "run", "locks"] {
            let left: Vec<_> = std::fs::read_dir(self.state.join(dir))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "files left in {dir}: {left:?}");
        }
        if self.vm.is_some() {
            self.assert_qemu_clean();
        }
        // Ports: their rows are gone (`nbd list`) and so is every process that could hold one.
    }

    /// No process is running that was started for this lab's hub — found by its command line,
    /// which names a file in the lab's directory (qemu-nbd's pid file, a `sendense-sna` or a
    /// hook installed there) — except the VM itself.
    pub fn assert_no_processes(&self) {
        let vm: Vec<u32> = self.vm.iter().map(|v| v.proc.pid()).collect();
        let left = sendense_testkit::processes_with(&self.dir.path().to_string_lossy(), &vm);
        assert!(left.is_empty(), "processes of the hub left: {left:#?}");
    }

    /// Nothing of Sendense is left inside QEMU: no block job, fleecing node, NBD export or NBD
    /// server, no fleecing overlay open (unlinked or not), and each disk's checkpoint bitmaps
    /// are exactly the one the catalog records for it.
    pub fn assert_qemu_clean(&self) {
        use serde_json::json;
        let vm = self.vm();
        assert_eq!(
            vm.qmp("query-block-jobs", json!({})),
            json!([]),
            "block jobs left in QEMU"
        );
        let nodes = vm.qmp("query-named-block-nodes", json!({"flat": true}));
        let fleece: Vec<&str> = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["node-name"].as_str())
            .filter(|n| n.contains("fleece"))
            .collect();
        assert!(fleece.is_empty(), "fleecing nodes left in QEMU: {fleece:?}");
        assert_eq!(
            vm.qmp("query-block-exports", json!({})),
            json!([]),
            "NBD exports left in QEMU"
        );
        // QEMU runs one NBD server at most: starting one fails while a leftover runs.
        let probe = self.dir.path().join("probe-nbd.sock");
        vm.qmp(
            "nbd-server-start",
            json!({"addr": {"type": "unix", "data": {"path": probe.to_str().unwrap()}}}),
        );
        vm.qmp("nbd-server-stop", json!({}));
        let _ = std::fs::remove_file(&probe);
        let open: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", vm.proc.pid()))
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .filter(|l| l.contains("fleece"))
            .collect();
        assert!(
            open.is_empty(),
            "fleecing overlays still open in QEMU: {open:?}"
        );
        let shown = json(&self.state, &["vm", "show", "pgtest1"]);
        let blocks = vm.qmp("query-block", json!({}));
        for disk in shown["disks"].as_array().unwrap() {
            let key = disk["key"].as_u64().unwrap();
            let qdev = format!("vd{}", key - 2000);
            let dev = blocks
                .as_array()
                .unwrap()
                .iter()
                .find(|b| {
                    b["qdev"]
                        .as_str()
                        .unwrap_or("")
                        .contains(&format!("/{qdev}/"))
                })
                .unwrap_or_else(|| panic!("QEMU has no device {qdev}"));
            let mut names: Vec<&str> = dev["inserted"]["dirty-bitmaps"]
                .as_array()
                .or(dev["dirty-bitmaps"].as_array())
                .map(|l| l.iter().filter_map(|b| b["name"].as_str()).collect())
                .unwrap_or_default();
            names.sort();
            let want: Vec<&str> = disk["checkpoint"].as_str().into_iter().collect();
            assert_eq!(
                names, want,
                "disk {key}: bitmaps in QEMU against the recorded checkpoint"
            );
        }
    }

    /// The repository holds exactly the files of the backups the catalog lists, all of them
    /// completed: no backup without its files, no file without its backup.
    pub fn assert_repo_matches_catalog(&self) {
        let list = json(&self.state, &["backup", "list"]);
        let mut want = std::collections::BTreeSet::new();
        for b in list.as_array().unwrap() {
            assert_eq!(b["status"], "completed", "{b:#}");
            let id = b["id"].as_str().unwrap();
            want.insert(
                self.repo()
                    .join(format!("{}/manifests/{id}.yaml", b["vm"].as_str().unwrap())),
            );
            for d in b["disks"].as_array().unwrap() {
                let file = PathBuf::from(d["file"].as_str().unwrap());
                want.insert(file.with_extension("digests"));
                want.insert(file);
            }
        }
        let have: std::collections::BTreeSet<PathBuf> = walk(&self.repo())
            .into_iter()
            .filter(|p| !p.ends_with("sendense-repo.yaml"))
            .collect();
        let missing: Vec<_> = want.difference(&have).collect();
        let extra: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty(),
            "listed backups without their files: {missing:?}"
        );
        assert!(extra.is_empty(), "files no backup lists: {extra:?}");
    }

    /// A copy of the reference disks as they are now (the VM's disks at the next snapshot).
    pub fn keep_refs(&self, label: &str) -> Vec<PathBuf> {
        copy_refs(&self.refs, &self.dir.path().join(format!("refs-{label}")))
    }

    /// Every disk of backup `id` equals `refs` (read through its chain).
    pub fn assert_backup_equals(&self, id: &str, refs: &[PathBuf]) {
        let shown = json(&self.state, &["backup", "show", id]);
        for d in shown["disks"].as_array().unwrap() {
            let key = d["key"].as_u64().unwrap() as usize - 2000;
            assert!(
                images_equal(
                    d["file"].as_str().unwrap(),
                    "qcow2",
                    refs[key].to_str().unwrap()
                ),
                "disk {} of backup {id} differs from the VM at its snapshot",
                d["key"]
            );
        }
    }

    /// Starts a backup in the background and waits until data is moving.
    pub fn start_slow_backup(&self) -> Child {
        let mut child = sendense_cmd(&self.state, &["backup", "start", "pgtest1", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        wait_for_event(&mut reader, "disk_progress");
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        child
    }
}

/// Copies of the reference disks `refs` into `dir` (created): the disks as they are now.
pub fn copy_refs(refs: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            let copy = dir.join(format!("ref{i}.raw"));
            std::fs::copy(r, &copy).unwrap();
            copy
        })
        .collect()
}

/// Reads NDJSON events from `reader` until one of kind `event` (panics at the end of output).
pub fn wait_for_event(reader: &mut impl BufRead, event: &str) {
    let want = format!("\"event\":\"{event}\"");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the output ended before a {event} event"
        );
        if line.replace(' ', "").contains(&want) {
            return;
        }
    }
}

pub fn assert_no_cleanup_needed(state: &Path) {
    let report = json(state, &["cleanup", "--dry-run"]);
    assert_eq!(report["actions"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report:#}");
}

pub fn reasons(summary: &Value) -> Vec<(u64, String, String)> {
    summary["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_u64().unwrap(),
                d["mode"].as_str().unwrap().into(),
                d["reason"].as_str().unwrap().into(),
            )
        })
        .collect()
}

/// Mounts a tmpfs of `size` at `dir` and registers it as repository `small`; unmounted when
/// the returned guard goes, however the test ends.
pub fn tmpfs_repo(state: &Path, dir: &Path, size: &str) -> Unmount {
    std::fs::create_dir(dir).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "sendense-test",
        ])
        .arg(dir)
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a tmpfs needs root");
    let guard = Unmount(dir.to_path_buf());
    json(
        state,
        &["repo", "add", "small", "--path", dir.to_str().unwrap()],
    );
    guard
}

/// Adds `text` to the hub's configuration file.
pub fn append_config(state: &Path, text: &str) {
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(state.join("config.yaml"))
        .unwrap();
    std::io::Write::write_all(&mut config, text.as_bytes()).unwrap();
}

/// Unmounts a test's tmpfs when the test ends, however it ends.
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
