//! Sources against real components: a QEMU VM with two qcow2 disks (QMP), image files with
//! persistent bitmaps, and nbdkit exports with hooks.

use sendense_core::catalog::DiskRecord;
use sendense_core::export::{ExportSpec, RunningExport};
use sendense_core::nbd::{dirty_bitmap_context, ConnectOptions, Extent, NbdClient, NbdUrl};
use sendense_core::source::image::ImageSource;
use sendense_core::source::qemu::QemuSource;
use sendense_core::source::{
    CheckpointState, SnapshotDisk, SnapshotDiskRequest, SnapshotRequest, Source, SourceHost,
};
use sendense_core::{ErrorKind, OpenOptions, Result};
use sendense_testkit::{create_image, nbdkit, qemu_io, QemuVm};
use std::path::{Path, PathBuf};

const K: u64 = 1024;
const M: u64 = 1024 * 1024;

/// A host for sources that need no exports (QEMU serves its own) that keeps the log.
#[derive(Default)]
struct LogHost(Vec<String>);

impl SourceHost for LogHost {
    fn start_export(&mut self, _: &ExportSpec) -> Result<RunningExport> {
        panic!("this source must not start qemu-nbd")
    }
    fn stop_export(&mut self, _: RunningExport) -> Result<()> {
        panic!("this source must not start qemu-nbd")
    }
    fn log(&mut self, message: &str) {
        self.0.push(message.to_string());
    }
}

fn two_disk_vm(dir: &Path) -> QemuVm {
    let d0 = create_image(&dir.join("d0.qcow2"), "qcow2", "64M");
    let d1 = create_image(&dir.join("d1.qcow2"), "qcow2", "32M");
    QemuVm::start(dir, "vm", &[("qcow2", &d0), ("qcow2", &d1)])
}

fn disks_of(src: &mut dyn Source, checkpoints: &[Option<&str>]) -> Vec<DiskRecord> {
    src.discover()
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, d)| DiskRecord {
            id: i as i64,
            key: 2000 + i as u32,
            identity: d.identity,
            format: d.format,
            size_bytes: d.size_bytes,
            checkpoint: checkpoints.get(i).copied().flatten().map(String::from),
            present: true,
        })
        .collect()
}

fn request(
    dir: &Path,
    job: i64,
    checkpoint: &str,
    disks: &[DiskRecord],
    previous: Option<&str>,
) -> SnapshotRequest {
    SnapshotRequest {
        job,
        vm: "vm".into(),
        checkpoint: checkpoint.into(),
        scratch: dir.join(format!("scratch/job-{job}")),
        disks: disks
            .iter()
            .map(|d| SnapshotDiskRequest {
                key: d.key,
                identity: d.identity.clone(),
                export: format!("vm-disk-{}", d.key),
                previous: previous.map(String::from),
                recorded: previous.map(String::from),
            })
            .collect(),
        require_quiesce: false,
    }
}

async fn read(url: &NbdUrl, offset: u64, len: usize) -> Vec<u8> {
    let c = NbdClient::connect(url, &ConnectOptions::default())
        .await
        .unwrap();
    c.read(offset, vec![0; len]).await.unwrap()
}

async fn dirty(snap: &SnapshotDisk) -> Vec<(u64, u64)> {
    let bitmap = snap
        .bitmap
        .as_deref()
        .expect("an incremental snapshot has a bitmap");
    let ctx = dirty_bitmap_context(bitmap);
    let opts = ConnectOptions {
        contexts: vec![ctx.clone()],
        ..Default::default()
    };
    let c = NbdClient::connect(&snap.url, &opts).await.unwrap();
    let lists = c.extents(&[&ctx], 0, snap.size_bytes).await.unwrap();
    lists[0]
        .iter()
        .filter(|e: &&Extent| e.flags & 1 != 0)
        .map(|e| (e.offset, e.length))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_snapshot_is_one_instant_for_all_disks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vm = two_disk_vm(d);
    vm.guest_io(0, "write -P 0xaa 0 2M");
    vm.guest_io(1, "write -P 0xaa 1M 2M");
    let mut src = QemuSource::new(vm.qmp.clone());
    let disks = disks_of(&mut src, &[]);
    assert_eq!(disks.len(), 2);
    assert_eq!(disks[0].identity, "/machine/peripheral/vd0/virtio-backend");
    assert_eq!(disks[1].size_bytes, 32 * M);
    let mut host = LogHost::default();
    let snap = src
        .snapshot(&mut host, &request(d, 1, "sendense-c1", &disks, None))
        .unwrap();
    assert_eq!(snap.len(), 2);
    assert!(snap
        .iter()
        .all(|s| s.bitmap.is_none() && s.checkpoint.as_deref() == Some("sendense-c1")));
    // The guest keeps writing; the exports stay at the snapshot instant.
    vm.guest_io(0, "write -P 0xbb 0 2M");
    vm.guest_io(1, "write -P 0xbb 1M 2M");
    assert_eq!(
        read(&snap[0].url, 0, 2 * M as usize).await,
        vec![0xaa; 2 * M as usize]
    );
    assert_eq!(
        read(&snap[1].url, M, 2 * M as usize).await,
        vec![0xaa; 2 * M as usize]
    );
    assert_eq!(read(&snap[1].url, 0, M as usize).await, vec![0; M as usize]);
    src.finish(&mut host, true).unwrap();
    assert!(
        !d.join("scratch/job-1").exists(),
        "fleecing files left behind"
    );
    let with_c1 = disks_of(&mut src, &[Some("sendense-c1"), Some("sendense-c1")]);
    let cps = src.checkpoints(&with_c1).unwrap();
    assert_eq!(
        cps,
        vec![CheckpointState::Present, CheckpointState::Present]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_change_tracking_reports_exactly_the_writes_and_survives_failure_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vm = two_disk_vm(d);
    let mut src = QemuSource::new(vm.qmp.clone());
    let mut host = LogHost::default();
    let disks = disks_of(&mut src, &[]);
    src.snapshot(&mut host, &request(d, 1, "sendense-c1", &disks, None))
        .unwrap();
    src.finish(&mut host, true).unwrap();

    // Writes at known offsets: one crossing a 64 KiB granule boundary, one zeroing a region.
    vm.guest_io(0, "write -P 0x11 1048064 1024"); // 1M-512 .. 1M+512
    vm.guest_io(0, "write -z 4M 1M");
    vm.guest_io(1, "write -P 0x22 8M 64K");
    let want0 = vec![(M - 64 * K, 128 * K), (4 * M, M)];
    let want1 = vec![(8 * M, 64 * K)];

    let snap = src
        .snapshot(
            &mut host,
            &request(d, 2, "sendense-c2", &disks, Some("sendense-c1")),
        )
        .unwrap();
    assert_eq!(dirty(&snap[0]).await, want0);
    assert_eq!(dirty(&snap[1]).await, want1);
    // A failed backup: the previous checkpoint stays valid and still holds everything.
    src.finish(&mut host, false).unwrap();
    vm.guest_io(1, "write -P 0x33 16M 64K");
    let snap = src
        .snapshot(
            &mut host,
            &request(d, 3, "sendense-c3", &disks, Some("sendense-c1")),
        )
        .unwrap();
    assert_eq!(dirty(&snap[0]).await, want0);
    assert_eq!(
        dirty(&snap[1]).await,
        vec![(8 * M, 64 * K), (16 * M, 64 * K)]
    );
    src.finish(&mut host, true).unwrap();
    let with_c3 = disks_of(&mut src, &[Some("sendense-c3"), Some("sendense-c3")]);
    assert_eq!(
        src.checkpoints(&with_c3).unwrap(),
        vec![CheckpointState::Present; 2]
    );
    let with_c1 = disks_of(&mut src, &[Some("sendense-c1"), None]);
    assert_eq!(
        src.checkpoints(&with_c1).unwrap(),
        vec![CheckpointState::Missing, CheckpointState::None]
    );
    drop(src);

    // A clean restart keeps the persistent bitmap; deleting it is reported as missing.
    let images: Vec<PathBuf> = vm.disks.clone();
    vm.quit();
    let vm = QemuVm::start(d, "vm2", &[("qcow2", &images[0]), ("qcow2", &images[1])]);
    let mut src = QemuSource::new(vm.qmp.clone());
    let disks = disks_of(&mut src, &[Some("sendense-c3"), Some("sendense-c3")]);
    assert_eq!(
        src.checkpoints(&disks).unwrap(),
        vec![CheckpointState::Present; 2]
    );
    vm.qmp(
        "block-dirty-bitmap-remove",
        serde_json::json!({"node": "disk1", "name": "sendense-c3"}),
    );
    assert_eq!(
        src.checkpoints(&disks).unwrap(),
        vec![CheckpointState::Present, CheckpointState::Missing]
    );
    assert_eq!(
        CheckpointState::Missing.full_reason().unwrap(),
        "checkpoint missing on source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_killed_during_a_snapshot_is_a_clear_error_and_leaves_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut vm = two_disk_vm(d);
    let mut src = QemuSource::new(vm.qmp.clone());
    let mut host = LogHost::default();
    let disks = disks_of(&mut src, &[]);
    src.snapshot(&mut host, &request(d, 7, "sendense-c1", &disks, None))
        .unwrap();
    assert!(d.join("scratch/job-7/fleece-2000.qcow2").exists());
    vm.proc.kill();
    let err = src.finish(&mut host, false).unwrap_err();
    assert!(err.to_string().contains("tearing down"), "{err}");
    assert!(
        !d.join("scratch/job-7").exists(),
        "fleecing files left behind"
    );
    let err = QemuSource::new(vm.qmp.clone()).discover().unwrap_err();
    assert!(err.to_string().contains("QMP"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_source_refuses_a_running_vm_and_round_trips_bitmaps() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    sendense_testkit::private_port_config(&state, 10);
    let (mut sd, _) = OpenOptions::new().state_dir(&state).init().unwrap();
    let img = create_image(&d.join("img.qcow2"), "qcow2", "32M");
    let raw = create_image(&d.join("img.raw"), "raw", "16M");
    qemu_io(&img, "qcow2", &["write -P 0x44 0 1M"]);

    // Locked by a running QEMU: refused, with the way out.
    {
        let _vm = QemuVm::start(d, "locker", &[("qcow2", &img)]);
        let mut src = ImageSource::new(vec![img.clone()]);
        let disks = disks_of(&mut src, &[]);
        let mut host = sendense_core::source::HubHost {
            sd: &mut sd,
            job: None,
        };
        let err = src
            .snapshot(&mut host, &request(d, 1, "sendense-c1", &disks, None))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
        assert!(err.help().unwrap().contains("--qmp"), "{err:?}");
        src.finish(&mut host, false).unwrap();
    }

    let mut src = ImageSource::new(vec![img.clone(), raw.clone()]);
    let disks = disks_of(&mut src, &[]);
    let j2 = sd
        .catalog_mut()
        .create_job(sendense_core::JobKind::Backup, None, None)
        .unwrap()
        .id;
    let j3 = sd
        .catalog_mut()
        .create_job(sendense_core::JobKind::Backup, None, None)
        .unwrap()
        .id;
    let cps = src.checkpoints(&disks).unwrap();
    assert_eq!(cps[0], CheckpointState::None);
    assert!(matches!(&cps[1], CheckpointState::Unsupported(why) if why.contains("raw")));
    let mut host = sendense_core::source::HubHost {
        sd: &mut sd,
        job: None,
    };
    let snap = src
        .snapshot(&mut host, &request(d, j2, "sendense-c1", &disks, None))
        .unwrap();
    assert_eq!(
        read(&snap[0].url, 0, M as usize).await,
        vec![0x44; M as usize]
    );
    assert_eq!(snap[1].checkpoint, None, "raw: no checkpoint");
    src.finish(&mut host, true).unwrap();

    qemu_io(&img, "qcow2", &["write -P 0x55 2M 64K", "write -z 8M 128K"]);
    let disks = disks_of(&mut src, &[Some("sendense-c1"), None]);
    assert_eq!(
        src.checkpoints(&disks).unwrap()[0],
        CheckpointState::Present
    );
    let snap = src
        .snapshot(
            &mut host,
            &request(d, j3, "sendense-c2", &disks[..1], Some("sendense-c1")),
        )
        .unwrap();
    assert_eq!(
        dirty(&snap[0]).await,
        vec![(2 * M, 64 * K), (8 * M, 128 * K)]
    );
    assert_eq!(
        read(&snap[0].url, 2 * M, 64 * K as usize).await,
        vec![0x55; 64 * K as usize]
    );
    src.finish(&mut host, true).unwrap();
    let disks = disks_of(&mut src, &[Some("sendense-c2")]);
    assert_eq!(
        src.checkpoints(&disks).unwrap()[0],
        CheckpointState::Present
    );
    let disks = disks_of(&mut src, &[Some("sendense-c1")]);
    assert_eq!(
        src.checkpoints(&disks).unwrap()[0],
        CheckpointState::Missing,
        "retired"
    );
    assert!(
        sd.catalog().exports().unwrap().is_empty(),
        "exports left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nbd_source_runs_hooks_and_a_failing_pre_hook_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    let (mut sd, _) = OpenOptions::new().state_dir(&state).init().unwrap();
    let export = nbdkit(d, "src", &["pattern", "size=8M"]);
    let marker = d.join("hooks.log");
    let pre = format!(
        "sh -c 'echo \"pre $SENDENSE_VM $SENDENSE_JOB $SENDENSE_PHASE\" >> {}'",
        marker.display()
    );
    let post = format!(
        "sh -c 'echo \"post $SENDENSE_PHASE $SENDENSE_RESULT\" >> {}; echo hook-output'",
        marker.display()
    );
    let vm = sd
        .add_nbd_vm(
            "ext",
            std::slice::from_ref(&export.url),
            Some(&pre),
            Some(&post),
        )
        .unwrap();
    assert_eq!(vm.disks[0].size_bytes, 8 * M);
    let mut src = sd.source_of(&vm, None).unwrap();
    assert!(matches!(
        &src.checkpoints(&vm.disks).unwrap()[0],
        CheckpointState::Unsupported(_)
    ));
    let job = sd
        .catalog_mut()
        .create_job(sendense_core::JobKind::Backup, Some("ext"), None)
        .unwrap();
    let req = request(d, job.id, "sendense-x", &vm.disks, None);
    let mut host = sendense_core::source::HubHost {
        sd: &mut sd,
        job: Some(job.id),
    };
    let snap = src.snapshot(&mut host, &req).unwrap();
    assert_eq!(
        snap[0].url.to_string(),
        export.url.parse::<NbdUrl>().unwrap().to_string()
    );
    src.finish(&mut host, true).unwrap();
    let log = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(log, format!("pre ext {} pre\npost post success\n", job.id));
    let lines: Vec<String> = sd
        .catalog()
        .job_log(job.id)
        .unwrap()
        .into_iter()
        .map(|l| l.message)
        .collect();
    assert!(lines.iter().any(|l| l.contains("hook-output")), "{lines:?}");

    // A failing pre-hook aborts with its output; its arguments never reach a shell.
    let vm2 = sd
        .add_nbd_vm(
            "ext2",
            std::slice::from_ref(&export.url),
            Some("sh -c 'echo frozen-fs-failed; exit 3'"),
            None,
        )
        .unwrap();
    let mut src = sd.source_of(&vm2, None).unwrap();
    let mut host = sendense_core::source::HubHost {
        sd: &mut sd,
        job: None,
    };
    let err = src
        .snapshot(&mut host, &request(d, 9, "x", &vm2.disks, None))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("pre-hook")
            && text.contains("frozen-fs-failed")
            && text.contains("exit status: 3"),
        "{text}"
    );
    src.finish(&mut host, false).unwrap();
}
