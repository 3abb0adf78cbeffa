//! VMware VMs backed up through their vCenter: govmomi's vCenter simulator for the vSphere API,
//! the real nbdkit VDDK plugin (built from the vendored source) over Sendense's stand-in for
//! VMware's VDDK library, which serves the simulator's disks from raw files of the test.

use sendense_testkit::vcsim::{password_file, Vcsim};
use sendense_testkit::{output_text, qemu_io, RestorePoint};
use serde_json::Value;
use std::path::{Path, PathBuf};

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

/// A hub with a vCenter (the simulator, its VM0 laid out as vSphere does) and the VM `pg`
/// registered, the stand-in's datastore holding the VM's three disks as raw files.
struct Rig {
    dir: tempfile::TempDir,
    state: PathBuf,
    sim: Vcsim,
    datastores: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_flags(&[])
    }

    /// [`Rig::new`] with more flags for the simulator.
    fn with_flags(flags: &[&str]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let state = sendense_testkit::cli_hub(BIN, d, "r");
        let mut config = std::fs::read_to_string(state.join("config.yaml")).unwrap();
        config.push_str(&format!(
            "vddk: {{libdir: {}, plugin: {}}}\n",
            sendense_testkit::vddk::standin_libdir().display(),
            sendense_testkit::vddk::plugin().display()
        ));
        std::fs::write(state.join("config.yaml"), config).unwrap();
        let datastores = d.join("datastores");
        let mut all = vec!["-layout", "-cbt", datastores.to_str().unwrap()];
        all.extend_from_slice(flags);
        let sim = Vcsim::start_with(&d.join("vcsim"), "user", "pw-Ünï&", &all);
        let vm_dir = datastores.join("LocalDS_0/DC0_H0_VM0");
        std::fs::create_dir_all(&vm_dir).unwrap();
        for (key, mib) in [(2000, 64), (2001, 32), (2016, 16)] {
            sendense_testkit::create_image(
                &vm_dir.join(format!("disk-{key}.vmdk")),
                "raw",
                &format!("{mib}M"),
            );
        }
        let pw = password_file(&d.join("pw"), "pw-Ünï&", 0o600);
        let rig = Rig {
            dir,
            state,
            sim,
            datastores,
        };
        let add = rig.sim.add_args("vc", &pw);
        let (c, out, _) = rig.hub(&add.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(c, 0, "{out}");
        let (c, out, _) = rig.hub(&[
            "vm",
            "add",
            "pg",
            "--vcenter",
            "vc",
            "--path",
            "/DC0/vm/DC0_H0_VM0",
        ]);
        assert_eq!(c, 0, "{out}");
        rig
    }

    fn disk(&self, key: u32) -> PathBuf {
        self.datastores
            .join(format!("LocalDS_0/DC0_H0_VM0/disk-{key}.vmdk"))
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("vddk-standin.log")
    }

    /// `sendense ARGS --json` with the stand-in's environment.
    fn hub(&self, args: &[&str]) -> (i32, String, Value) {
        let o = std::process::Command::new(BIN)
            .args(args)
            .arg("--json")
            .env("SENDENSE_HOME", &self.state)
            .env("VDDK_STANDIN_DATASTORES", &self.datastores)
            .env("VDDK_STANDIN_LOG", self.log())
            // The stand-in refuses another password or thumbprint, as VDDK does.
            .env("VDDK_STANDIN_PASSWORD", "pw-Ünï&")
            .env("VDDK_STANDIN_THUMBPRINT", &self.sim.thumbprint)
            .output()
            .unwrap();
        let doc = sendense_testkit::json_document(&o.stdout);
        (o.status.code().unwrap_or(-1), output_text(&o), doc)
    }

    /// The disks as they are now, kept for restore point `n`.
    fn keep(&self, n: usize) -> Vec<(u32, PathBuf)> {
        [2000, 2001, 2016]
            .iter()
            .map(|key| {
                let kept = self.dir.path().join(format!("kept{n}-{key}.raw"));
                std::fs::copy(self.disk(*key), &kept).unwrap();
                (*key, kept)
            })
            .collect()
    }

    /// Every point restores, as raw images, to exactly its kept disks.
    fn assert_points(&self, points: &[RestorePoint]) {
        sendense_testkit::assert_restore_points(
            |args| {
                let (c, text, _) = self.hub(args);
                (c, text)
            },
            self.dir.path(),
            "pg",
            points,
        );
    }
}

fn write(path: &Path, io: &str) {
    qemu_io(path, "raw", &[io]);
}

/// Backups of a three-disk VMware VM (keys 2000, 2001 on one controller, 2016 on another)
/// through one snapshot and nbdkit's VDDK plugin: each restore point equals the disks at its
/// snapshot; VDDK was handed the snapshot, the VM, the pinned thumbprint and the password by
/// file only; nothing of a backup is left.
#[test]
fn a_vmware_vm_is_backed_up_through_one_snapshot_and_vddk() {
    let rig = Rig::new();
    write(&rig.disk(2000), "write -P 0x21 0 4M");
    write(&rig.disk(2001), "write -P 0x22 1M 1M");
    write(&rig.disk(2016), "write -P 0x23 15M 1M");
    let (c, out, full) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    let keys: Vec<u64> = full["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_u64().unwrap())
        .collect();
    assert_eq!(keys, [2000, 2001, 2016], "{full:#}");
    let mut points = vec![(full["backup"].as_str().unwrap().to_string(), rig.keep(1))];
    // Only allocated data moved: the 6 MiB written, and what creating the files allocated
    // (their first block), in VDDK's 64 KiB chunks — not the 112 MiB of the disks.
    let read: u64 = full["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bytes_read"].as_u64().unwrap())
        .sum();
    assert!(
        (6 << 20..=(6 << 20) + 3 * (64 << 10)).contains(&read),
        "{full:#}"
    );

    // Incrementals: only the areas vSphere reports changed since each disk's change id move
    // (in pages of four areas: the 40 MiB of eight separate writes take two pages).
    for i in 0..8 {
        write(
            &rig.disk(2000),
            &format!("write -P 0x24 {}M 64k", 8 + 4 * i),
        );
    }
    write(&rig.disk(2016), "write -z 15M 64k");
    let (c, out, second) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    let moved: Vec<(&str, u64, u64)> = second["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["mode"].as_str().unwrap(),
                d["bytes_read"].as_u64().unwrap(),
                d["bytes_zero"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        moved,
        [
            ("incremental", 8 * (64 << 10), 0),
            ("incremental", 0, 0),
            ("incremental", 64 << 10, 64 << 10)
        ],
        "{second:#}"
    );
    points.push((second["backup"].as_str().unwrap().to_string(), rig.keep(2)));
    write(&rig.disk(2001), "write -P 0x25 20M 2M");
    let (c, out, third) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(third["disks"][1]["bytes_read"], 2 << 20, "{third:#}");
    points.push((third["backup"].as_str().unwrap().to_string(), rig.keep(3)));
    rig.assert_points(&points);

    // What VDDK was given: one connection per disk and backup, each to the snapshot of that
    // backup, with the pinned thumbprint and a password it read from a file.
    let log = std::fs::read_to_string(rig.log()).unwrap();
    let connects: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(connects.len() >= 9, "{log}");
    for c in &connects {
        assert_eq!(c["thumbprint"], rig.sim.thumbprint.as_str(), "{c}");
        assert_eq!(c["passwordGiven"], true, "{c}");
        assert!(
            c["vmxSpec"].as_str().unwrap().starts_with("moref=vm-"),
            "{c}"
        );
        assert!(
            c["snapshotRef"].as_str().unwrap().starts_with("snapshot-"),
            "{c}"
        );
        assert_eq!(c["transportModes"], "nbdssl:nbd", "{c}");
    }
    // Nothing left: no export, no scratch, no nbdkit.
    let (_, _, exports) = rig.hub(&["nbd", "list"]);
    assert_eq!(exports, serde_json::json!([]));
    let scratch: Vec<_> = std::fs::read_dir(rig.state.join("scratch"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// The `.vmsn` files of the simulator's snapshots of VM0: one per snapshot that exists.
fn snapshot_files(rig: &Rig) -> Vec<PathBuf> {
    sendense_testkit::walk(&rig.dir.path().join("vcsim"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "vmsn"))
        .collect()
}

/// A backup killed (`kill -9`) right after its snapshot leaves the snapshot and its nbdkit
/// processes: the next command removes that snapshot — this hub's, and only this hub's: the
/// snapshot of another hub's job of the same number stays, and so does a user's named like
/// one of Sendense's — and the next backup is exact.
#[test]
fn a_killed_vmware_backup_leaves_no_snapshot_after_the_next_command() {
    use std::os::unix::process::ExitStatusExt;
    // Job 2 is the first killed one below (checked there).
    let rig = Rig::with_flags(&[
        "-snapshot",
        "sd2-0badc0de-sendense-20261130T000000Z-abcdef,sd2-pre-upgrade",
    ]);
    let theirs = snapshot_files(&rig);
    assert_eq!(theirs.len(), 2, "{theirs:?}");
    let ours = |rig: &Rig| -> Vec<PathBuf> {
        snapshot_files(rig)
            .into_iter()
            .filter(|f| !theirs.contains(f))
            .collect()
    };
    write(&rig.disk(2000), "write -P 0x31 0 1M");
    let (c, out, _) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    assert!(ours(&rig).is_empty(), "{:?}", ours(&rig));

    for point in ["vmware.snapshot-taken", "backup.snapshot-taken"] {
        let o = std::process::Command::new(BIN)
            .args(["backup", "start", "pg"])
            .env("SENDENSE_HOME", &rig.state)
            .env("VDDK_STANDIN_DATASTORES", &rig.datastores)
            .env("SENDENSE_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(o.status.signal(), Some(9), "{point}: {}", output_text(&o));
        assert_eq!(ours(&rig).len(), 1, "{point}");
        if point == "vmware.snapshot-taken" {
            let (_, _, jobs) = rig.hub(&["job", "list"]);
            let killed = jobs
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|j| j["id"].as_i64())
                .max();
            assert_eq!(killed, Some(2), "{jobs:#}");
        }
        let (c, out, _) = rig.hub(&["cleanup"]);
        assert_eq!(c, 0, "{point}: {out}");
        assert!(ours(&rig).is_empty(), "{point}: {:?}", ours(&rig));
        assert!(
            theirs.iter().all(|f| f.exists()),
            "{point}: another hub's or the user's snapshot went"
        );
        let (_, _, exports) = rig.hub(&["nbd", "list"]);
        assert_eq!(exports, serde_json::json!([]));
    }
    write(&rig.disk(2001), "write -P 0x32 2M 64k");
    let (c, out, last) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    rig.assert_points(&[(last["backup"].as_str().unwrap().to_string(), rig.keep(9))]);
}

/// Changed block tracking reset (the change ids vSphere gave are unknown to it now): the
/// disks are taken in full with the reason "checkpoint missing on source". A guest that cannot
/// be quiesced: the snapshot is crash-consistent, with a warning in the job log. Each point
/// restores exactly.
#[test]
fn a_cbt_reset_makes_fulls_and_a_failed_quiesce_a_crash_consistent_snapshot() {
    let rig = Rig::new();
    write(&rig.disk(2000), "write -P 0x41 0 1M");
    let (c, out, full) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    let mut points = vec![(full["backup"].as_str().unwrap().to_string(), rig.keep(1))];

    // The stand-in forgets every change id it gave, as vSphere does after a CBT reset.
    for file in sendense_testkit::walk(&rig.datastores) {
        if file.to_string_lossy().contains(".cbt-") {
            std::fs::remove_file(file).unwrap();
        }
    }
    write(&rig.disk(2001), "write -P 0x42 3M 64k");
    let (c, out, reset) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    for disk in reset["disks"].as_array().unwrap() {
        assert_eq!(disk["mode"], "full", "{reset:#}");
        assert_eq!(disk["reason"], "checkpoint missing on source", "{reset:#}");
    }
    points.push((reset["backup"].as_str().unwrap().to_string(), rig.keep(2)));

    std::fs::write(rig.datastores.join("fail-quiesce"), "").unwrap();
    write(&rig.disk(2016), "write -P 0x43 1M 64k");
    // Required: refused.
    let (c, out, _) = rig.hub(&["backup", "start", "pg", "--require-quiesce"]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("quiescing the guest failed"), "{out}");
    // A VM whose snapshots never quiesce is refused the option.
    let img = sendense_testkit::create_image(&rig.dir.path().join("img.raw"), "raw", "1M");
    let (c, out, _) = rig.hub(&["vm", "add", "img", "--disk", img.to_str().unwrap()]);
    assert_eq!(c, 0, "{out}");
    let (c, out, _) = rig.hub(&["backup", "start", "img", "--require-quiesce"]);
    assert_eq!(c, 2, "{out}");
    let (c, out, crash) = rig.hub(&["backup", "start", "pg"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(crash["disks"][2]["mode"], "incremental", "{crash:#}");
    let job = crash["job"].as_i64().unwrap().to_string();
    let (_, _, log) = rig.hub(&["job", "log", &job]);
    let log = log.to_string();
    assert!(
        log.contains("quiescing the guest failed") && log.contains("crash-consistent"),
        "{log}"
    );
    points.push((crash["backup"].as_str().unwrap().to_string(), rig.keep(3)));
    rig.assert_points(&points);
}

/// Against a real vCenter, only when `SENDENSE_TEST_VCENTER_URL`, `_USER`, `_PASSWORD_FILE`,
/// `_THUMBPRINT` and `_VM` (an inventory path) are set, with VDDK installed as the
/// configuration's defaults say (or `SENDENSE_TEST_VDDK_LIBDIR` and `_PLUGIN`): a full and an
/// incremental of that VM, each verified against its digests. Skipped otherwise.
#[test]
fn a_real_vcenter_when_one_is_given() {
    let var = |name: &str| std::env::var(format!("SENDENSE_TEST_VCENTER_{name}")).ok();
    let (Some(url), Some(user), Some(password_file), Some(thumbprint), Some(vm)) = (
        var("URL"),
        var("USER"),
        var("PASSWORD_FILE"),
        var("THUMBPRINT"),
        var("VM"),
    ) else {
        eprintln!("no SENDENSE_TEST_VCENTER_* settings: skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = sendense_testkit::cli_hub(BIN, dir.path(), "r");
    if let (Ok(libdir), Ok(plugin)) = (
        std::env::var("SENDENSE_TEST_VDDK_LIBDIR"),
        std::env::var("SENDENSE_TEST_VDDK_PLUGIN"),
    ) {
        let mut config = std::fs::read_to_string(state.join("config.yaml")).unwrap();
        config.push_str(&format!("vddk: {{libdir: {libdir}, plugin: {plugin}}}\n"));
        std::fs::write(state.join("config.yaml"), config).unwrap();
    }
    let run = |args: &[&str]| {
        let o = sendense_testkit::cli(BIN, &state, args);
        assert!(o.status.success(), "{args:?}: {}", output_text(&o));
    };
    run(&[
        "vcenter",
        "add",
        "vc",
        "--url",
        &url,
        "--user",
        &user,
        "--password-file",
        &password_file,
        "--thumbprint",
        &thumbprint,
    ]);
    run(&["vm", "add", "real", "--vcenter", "vc", "--path", &vm]);
    run(&["backup", "start", "real"]);
    run(&["backup", "start", "real"]);
    run(&["backup", "verify", "--vm", "real"]);
}
