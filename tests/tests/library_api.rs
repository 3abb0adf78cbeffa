//! The library as an integrator embeds it: open a state directory, register a repository and a
//! VM, read them back, and get typed errors.

use sendense_core::{AddRepo, ErrorKind, OpenOptions, Sendense};
use std::process::Command;

#[test]
fn embed_register_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let disk = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("32M")
        .status()
        .expect("qemu-img is needed: apt-get install qemu-utils");
    assert!(st.success());

    let (mut sd, report) = OpenOptions::new().state_dir(&state).init().unwrap();
    assert!(report.catalog_created);
    sd.add_repo(&AddRepo::new("local", dir.path().join("repo")))
        .unwrap();
    let vm = sd
        .add_image_vm("app1", std::slice::from_ref(&disk))
        .unwrap();
    assert_eq!(vm.disks[0].key, 2000);
    assert_eq!(vm.disks[0].size_bytes, 32 << 20);
    drop(sd);

    let sd = Sendense::open(&state).unwrap();
    assert_eq!(sd.vm("app1").unwrap(), vm);
    assert_eq!(sd.repos().unwrap().len(), 1);
    let err = sd.vm("nope").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.code(), "sendense::not_found");
    assert!(err.help().unwrap().contains("app1"));
}

#[test]
fn opening_an_uninitialised_directory_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let err = Sendense::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.help().unwrap().contains("sendense init"));
}
