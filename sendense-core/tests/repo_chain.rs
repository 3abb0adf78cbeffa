//! Repository chains written through real qemu-nbd exports: full + two incrementals, each point
//! equal to a reference, the chain still opens after the repository moves, `repo import`
//! rebuilds the catalog, and deletion rules hold.

use sendense_core::catalog::{BackupMode, DiskOutcome};
use sendense_core::export::{export_name, ExportSpec};
use sendense_core::nbd::{ConnectOptions, NbdClient};
use sendense_core::repo::DiskPlan;
use sendense_core::{AddRepo, ErrorKind, OpenOptions, Sendense};
use sendense_testkit::{create_image, images_equal, require};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;

/// Writes through the export and mirrors every write into the reference file.
async fn write_both(url: &str, reference: &Path, writes: &[(u64, u64, u8)]) {
    let client = NbdClient::connect(&url.parse().unwrap(), &ConnectOptions::default())
        .await
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(reference)
        .unwrap();
    for &(off, len, byte) in writes {
        if byte == 0 {
            client.write_zeroes(off, len, true).await.unwrap();
        } else {
            client
                .write(off, &vec![byte; len as usize], false)
                .await
                .unwrap();
        }
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&vec![byte; len as usize]).unwrap();
    }
    client.flush().await.unwrap();
    client.disconnect().await;
}

fn setup(dir: &Path) -> Sendense {
    require("qemu-nbd", "qemu-utils");
    sendense_testkit::private_port_config(&dir.join("state"), 10);
    let (mut sd, _) = OpenOptions::new()
        .state_dir(dir.join("state"))
        .init()
        .unwrap();
    sd.add_repo(&AddRepo::new("r", dir.join("repo"))).unwrap();
    let disk = create_image(&dir.join("vm-disk.qcow2"), "qcow2", "64M");
    sd.add_image_vm("vm1", &[disk]).unwrap();
    sd
}

/// One backup of disk 2000: target image, export, writes, stop, commit.
async fn backup(sd: &mut Sendense, reference: &Path, writes: &[(u64, u64, u8)]) -> String {
    let vm = sd.vm("vm1").unwrap();
    let repo = sd.catalog().repo("r").unwrap();
    let parent = sd.catalog().chain_top(vm.id, repo.id, 2000).unwrap();
    let plan = DiskPlan {
        key: 2000,
        mode: if parent.is_some() {
            BackupMode::Incremental
        } else {
            BackupMode::Full
        },
        reason: if parent.is_some() {
            "incremental".into()
        } else {
            "first backup in repository".into()
        },
        parent,
        size_bytes: SIZE,
        checkpoint: None,
    };
    let pending = sd
        .begin_backup(
            &sendense_core::repo::chain::new_backup_id(),
            &vm,
            &repo,
            None,
            &[plan],
        )
        .unwrap();
    let t = &pending.targets[0];
    assert!(t.partial.to_string_lossy().ends_with(".qcow2.partial"));
    let range = (sd.config().nbd_ports.first, sd.config().nbd_ports.last);
    let spec = ExportSpec::target(t.partial.clone(), export_name("vm1", 2000), range, 5, None);
    let export = sd.start_export(&spec).unwrap();
    assert!(export.url.to_string().starts_with("nbd://127.0.0.1:"));
    write_both(&export.url.to_string(), reference, writes).await;
    sd.stop_export(export).unwrap();
    let outcome = DiskOutcome {
        key: 2000,
        bytes_written: writes.iter().map(|w| w.1).sum(),
        ..Default::default()
    };
    let record = sd.commit_backup(pending, &[outcome]).unwrap();
    assert_eq!(record.status, "completed");
    assert!(
        sd.catalog().exports().unwrap().is_empty(),
        "export row left behind"
    );
    record.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_two_incrementals_survive_a_move_and_an_import() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut sd = setup(d);
    let reference = d.join("ref.raw");
    std::fs::write(&reference, vec![0u8; SIZE as usize]).unwrap();
    let mut points = Vec::new();

    let b1 = backup(
        &mut sd,
        &reference,
        &[(0, 4 * MIB, 0xa1), (32 * MIB, MIB, 0xa2)],
    )
    .await;
    std::fs::copy(&reference, d.join("ref1.raw")).unwrap();
    points.push(b1.clone());
    // Incremental 1 overwrites part of A and zeroes a region the full wrote.
    let b2 = backup(
        &mut sd,
        &reference,
        &[(MIB, MIB, 0xb1), (32 * MIB, 512 * 1024, 0)],
    )
    .await;
    std::fs::copy(&reference, d.join("ref2.raw")).unwrap();
    points.push(b2.clone());
    let b3 = backup(
        &mut sd,
        &reference,
        &[(60 * MIB, 4 * MIB, 0xc1), (2 * MIB + 4096, 8192, 0xc2)],
    )
    .await;
    std::fs::copy(&reference, d.join("ref3.raw")).unwrap();
    points.push(b3.clone());

    // Each point equals its reference; incremental N is backed by N-1 of the same disk.
    for (i, id) in points.iter().enumerate() {
        let b = sd.catalog().backup(id).unwrap();
        let disk = &b.disks[0];
        let want = d.join(format!("ref{}.raw", i + 1));
        assert!(
            images_equal(disk.file.to_str().unwrap(), "qcow2", want.to_str().unwrap()),
            "point {}",
            i + 1
        );
        let backing = sendense_core::repo::chain::backing_file(&disk.file).unwrap();
        match i {
            0 => {
                assert_eq!(disk.mode, BackupMode::Full);
                assert_eq!(backing, None);
            }
            _ => {
                assert_eq!(disk.mode, BackupMode::Incremental);
                assert_eq!(disk.parent.as_deref(), Some(points[i - 1].as_str()));
                assert_eq!(
                    backing,
                    Some(format!("{}.qcow2", points[i - 1])),
                    "relative backing path"
                );
            }
        }
    }
    // Deleting a backup another depends on is refused.
    let err = sd.catalog_mut().delete_backup(&b2).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(err.message().contains(&b3));
    // So is removing the repository.
    assert_eq!(sd.remove_repo("r").unwrap_err().kind(), ErrorKind::Refused);
    drop(sd);

    // Move the whole repository: the chain still opens.
    let moved = d.join("elsewhere");
    std::fs::rename(d.join("repo"), &moved).unwrap();
    let top = moved.join(format!("vm1/2000/{b3}.qcow2"));
    assert!(images_equal(
        top.to_str().unwrap(),
        "qcow2",
        d.join("ref3.raw").to_str().unwrap()
    ));

    // A fresh hub imports the moved repository and knows the same backups.
    let (mut fresh, _) = OpenOptions::new()
        .state_dir(d.join("state2"))
        .init()
        .unwrap();
    // The old hub still owns it: refused unless taken over.
    let refused = fresh.import_repo(&moved, &Default::default()).unwrap_err();
    assert_eq!(
        refused.kind(),
        sendense_core::ErrorKind::Refused,
        "{refused}"
    );
    let report = fresh
        .import_repo(
            &moved,
            &sendense_core::repo::ImportOptions {
                take_over: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(report.backups_imported, points, "{report:?}");
    assert_eq!(report.vms_created, ["vm1"]);
    assert!(report.skipped.is_empty(), "{report:?}");
    for (i, id) in points.iter().enumerate() {
        let b = fresh.catalog().backup(id).unwrap();
        assert_eq!(b.status, "completed");
        assert_eq!(
            b.disks[0].parent,
            if i == 0 {
                None
            } else {
                Some(points[i - 1].clone())
            }
        );
        assert!(images_equal(
            b.disks[0].file.to_str().unwrap(),
            "qcow2",
            d.join(format!("ref{}.raw", i + 1)).to_str().unwrap()
        ));
    }
    let top = fresh
        .catalog()
        .chain_top(fresh.vm("vm1").unwrap().id, report.repo.id, 2000)
        .unwrap()
        .unwrap();
    assert_eq!(top.backup, b3);
    // Importing it again under another name is refused; nothing doubles.
    assert_eq!(
        fresh
            .import_repo(
                &moved,
                &sendense_core::repo::ImportOptions {
                    name: Some("again".into()),
                    ..Default::default()
                },
            )
            .unwrap_err()
            .kind(),
        ErrorKind::AlreadyExists
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_backup_leaves_nothing_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut sd = setup(d);
    let reference = d.join("ref.raw");
    std::fs::write(&reference, vec![0u8; SIZE as usize]).unwrap();
    let b1 = backup(&mut sd, &reference, &[(0, MIB, 0x11)]).await;

    let vm = sd.vm("vm1").unwrap();
    let repo = sd.catalog().repo("r").unwrap();
    let parent = sd.catalog().chain_top(vm.id, repo.id, 2000).unwrap();
    let plan = DiskPlan {
        key: 2000,
        mode: BackupMode::Incremental,
        reason: "incremental".into(),
        parent,
        size_bytes: SIZE,
        checkpoint: None,
    };
    let pending = sd
        .begin_backup(
            &sendense_core::repo::chain::new_backup_id(),
            &vm,
            &repo,
            None,
            std::slice::from_ref(&plan),
        )
        .unwrap();
    let partial = pending.targets[0].partial.clone();
    assert!(partial.exists());
    sd.abort_backup(pending);
    assert!(!partial.exists());
    let mut files: Vec<_> = std::fs::read_dir(repo.path.join("vm1/2000"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            std::ffi::OsString::from(format!("{b1}.digests")),
            std::ffi::OsString::from(format!("{b1}.qcow2"))
        ],
        "only the first backup's image and digests remain"
    );
    assert_eq!(sd.catalog().backups(&Default::default()).unwrap().len(), 1);

    // A delta is never written without its parent, and a full never has one.
    let bad = DiskPlan {
        parent: None,
        ..plan.clone()
    };
    assert!(sd
        .begin_backup(
            &sendense_core::repo::chain::new_backup_id(),
            &vm,
            &repo,
            None,
            &[bad]
        )
        .is_err());
    let bad = DiskPlan {
        mode: BackupMode::Full,
        ..plan
    };
    assert!(sd
        .begin_backup(
            &sendense_core::repo::chain::new_backup_id(),
            &vm,
            &repo,
            None,
            &[bad]
        )
        .is_err());
    assert_eq!(
        std::fs::read_dir(repo.path.join("vm1/2000"))
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn exports_started_together_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = setup(dir.path());
    let range = (sd.config().nbd_ports.first, sd.config().nbd_ports.last);
    let good: Vec<ExportSpec> = (0..3)
        .map(|i| {
            let img = create_image(&dir.path().join(format!("t{i}.qcow2")), "qcow2", "16M");
            ExportSpec::target(img, export_name("vm1", 2000 + i), range, 5, None)
        })
        .collect();
    let started = sd.start_exports(&good).unwrap();
    assert_eq!(started.len(), 3);
    let ports: std::collections::HashSet<_> = started.iter().map(|e| e.record.port).collect();
    assert_eq!(ports.len(), 3, "one port each");
    for e in &started {
        assert!(e.server.is_alive());
    }
    let servers: Vec<_> = started.iter().map(|e| e.server).collect();
    sd.stop_exports(started).unwrap();
    assert!(servers.iter().all(|s| !s.is_alive()));
    assert!(sd.catalog().exports().unwrap().is_empty());

    // One image that qemu-nbd cannot open: the others are stopped again, no row is left.
    let mut mixed = good.clone();
    mixed.insert(
        1,
        ExportSpec::target(
            dir.path().join("missing.qcow2"),
            export_name("vm1", 2009),
            range,
            5,
            None,
        ),
    );
    let err = sd.start_exports(&mixed).unwrap_err();
    assert!(err.message().contains("missing.qcow2"), "{err}");
    assert!(sd.catalog().exports().unwrap().is_empty(), "rows left");
    for spec in &good {
        // No qemu-nbd holds the images any more: a writer can lock them.
        let out = std::process::Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&spec.file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{} still locked", spec.file.display());
    }
}

/// Points the first L2 entry of `image` at its L1 table: a cluster used twice.
fn corrupt(image: &Path) {
    use std::io::Read;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let word = |f: &mut std::fs::File, at: u64| {
        let mut b = [0u8; 8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        u64::from_be_bytes(b)
    };
    const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
    let l1 = word(&mut f, 40);
    let l2 = word(&mut f, l1) & OFFSET;
    let entry = word(&mut f, l2);
    f.seek(SeekFrom::Start(l2)).unwrap();
    f.write_all(&((entry & !OFFSET) | (l1 & OFFSET)).to_be_bytes())
        .unwrap();
}

#[test]
fn a_corrupt_image_fails_the_check_that_never_opens_its_chain() {
    use sendense_core::repo::chain::check_image_alone;
    let dir = tempfile::tempdir().unwrap();
    require("qemu-img", "qemu-utils");
    let base = create_image(&dir.path().join("base.qcow2"), "qcow2", "16M");
    let top = sendense_testkit::create_overlay(&dir.path().join("top.qcow2"), "base.qcow2");
    sendense_testkit::qemu_io(&top, "qcow2", &["write -P 7 0 64k"]);
    check_image_alone(&top).unwrap();

    // The image is checked without opening its parent.
    std::fs::rename(&base, dir.path().join("elsewhere.qcow2")).unwrap();
    check_image_alone(&top).unwrap();

    corrupt(&top);
    let err = check_image_alone(&top).unwrap_err();
    assert!(err.message().contains("corrupt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_skips_flushes_keeps_every_write_once_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = setup(dir.path());
    let range = (sd.config().nbd_ports.first, sd.config().nbd_ports.last);
    // A comma in the path must survive qemu-nbd's option syntax.
    let sub = dir.path().join("odd,dir");
    std::fs::create_dir(&sub).unwrap();
    let img = create_image(&sub.join("t,1.qcow2"), "qcow2", "64M");
    let reference = create_image(&dir.path().join("ref.raw"), "raw", "64M");
    let spec = ExportSpec {
        skip_flushes: true,
        ..ExportSpec::target(img.clone(), export_name("vm1", 2000), range, 5, None)
    };
    let export = sd.start_export(&spec).unwrap();
    let writes = [
        (0, MIB, 0x11),
        (7 * MIB + 65536, 3 * MIB, 0x22),
        (40 * MIB, MIB, 0),
    ];
    write_both(&export.url.to_string(), &reference, &writes).await;
    sd.stop_export(export).unwrap();
    std::fs::File::open(&img).unwrap().sync_all().unwrap();
    sendense_core::repo::chain::check_image_alone(&img).unwrap();
    assert!(images_equal(
        img.to_str().unwrap(),
        "qcow2",
        reference.to_str().unwrap()
    ));
}

#[test]
fn a_stopped_export_has_released_its_port_and_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = setup(dir.path());
    let range = (sd.config().nbd_ports.first, sd.config().nbd_ports.last);
    let img = create_image(&dir.path().join("t.qcow2"), "qcow2", "16M");
    // qemu-nbd's main thread can end (a zombie) while its other threads still hold the
    // socket and the image: stopping must wait for all of them, every time.
    for _ in 0..20 {
        let spec = ExportSpec::target(img.clone(), export_name("vm1", 2000), range, 5, None);
        let export = sd.start_export(&spec).unwrap();
        let port = export.record.port.unwrap();
        sd.stop_export(export).unwrap();
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still taken after stop"
        );
        let out = std::process::Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "image still locked after stop");
    }
}
