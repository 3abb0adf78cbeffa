//! Three live VMs backed up at once in one process through the library's job runner: every
//! backup exact, full then incremental, and the three really overlapping.

use sendense_core::backup::plan::Requested;
use sendense_core::runner::Runner;
use sendense_core::{AddRepo, CopyMode, Event, EventKind, OpenOptions};
use sendense_testkit::{create_image, images_equal, qemu_io, QemuVm};
use std::sync::{Arc, Mutex};

#[test]
fn three_vms_backed_up_at_once_in_one_process_are_exact() {
    // Each backup holds on a moment after its snapshot, so the three overlap whatever the
    // machine's speed. (Read once, before any job runs.)
    std::env::set_var("SENDENSE_TEST_PAUSE_AT", "backup.snapshot-taken:700");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    sendense_testkit::private_port_config(&state, 30);
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let seen = events.clone();
    let sink = Arc::new(move |e: &Event| seen.lock().unwrap().push(e.clone()));
    let opts = OpenOptions::new().state_dir(&state).sink(sink);
    let (mut sd, _) = opts.clone().init().unwrap();
    sd.add_repo(&AddRepo::new("r", d.join("repo"))).unwrap();
    let names = ["web1", "web2", "db1"];
    let mut vms = Vec::new();
    let mut refs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let disk = create_image(&d.join(format!("{name}.qcow2")), "qcow2", "32M");
        let reference = create_image(&d.join(format!("{name}.raw")), "raw", "32M");
        let vm = QemuVm::start(d, name, &[("qcow2", disk.as_path())]);
        sd.add_qemu_vm(name, &vm.qmp).unwrap();
        let write = format!("write -P {} {}M 4M", 0x21 + i, i * 4);
        vm.guest_io(0, &write);
        qemu_io(&reference, "raw", &[&write]);
        vms.push(vm);
        refs.push(reference);
    }
    drop(sd);
    let runner = Runner::new(opts).unwrap();

    for round in 0..2 {
        events.lock().unwrap().clear();
        let jobs: Vec<_> = names
            .iter()
            .map(|vm| runner.backup(vm, Requested::Auto))
            .collect();
        let reports: Vec<_> = jobs.into_iter().map(|j| j.wait().unwrap()).collect();
        // All three had started before the first ended.
        let seen = events.lock().unwrap().clone();
        let first_end = seen
            .iter()
            .position(|e| matches!(e.kind, EventKind::JobFinished { .. }))
            .unwrap();
        let started = seen[..first_end]
            .iter()
            .filter(|e| matches!(e.kind, EventKind::JobStarted { .. }))
            .count();
        assert_eq!(started, 3, "round {round}: the backups did not overlap");
        // Each event names its job, and each job its own VM's disk.
        let mut jobs: Vec<i64> = seen.iter().filter_map(|e| e.job).collect();
        jobs.sort_unstable();
        jobs.dedup();
        assert_eq!(jobs.len(), 3, "round {round}");
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.vm, names[i]);
            let want = if round == 0 {
                CopyMode::Full
            } else {
                CopyMode::Incremental
            };
            assert_eq!(r.disks[0].mode.as_str(), want.as_str(), "{r:?}");
            assert!(
                images_equal(
                    r.disks[0].file.to_str().unwrap(),
                    "qcow2",
                    refs[i].to_str().unwrap()
                ),
                "round {round}: backup of {} differs from the VM at its snapshot",
                names[i]
            );
        }
        // The guests write on; the next round is incremental.
        for (i, vm) in vms.iter().enumerate() {
            let write = format!("write -P {} {}M 1M", 0x41 + i, 20 + i);
            vm.guest_io(0, &write);
            qemu_io(&refs[i], "raw", &[&write]);
        }
    }
    for vm in vms {
        vm.quit();
    }
}
