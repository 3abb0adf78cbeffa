//! `sendense vm add --qmp / --nbd`, `vm discover` and checkpoint state in `vm show`.

use sendense_testkit::{create_image, nbdkit, QemuVm};
use serde_json::Value;
use std::path::Path;

fn sendense(state: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = sendense_testkit::cli(env!("CARGO_BIN_EXE_sendense"), state, args);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn qemu_and_nbd_vms_are_registered_with_their_disks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = d.join("state");
    sendense(&state, &["init"]);
    let d0 = create_image(&d.join("d0.qcow2"), "qcow2", "64M");
    let d1 = create_image(&d.join("d1.raw"), "raw", "32M");
    let vm = QemuVm::start(d, "pg", &[("qcow2", &d0), ("raw", &d1)]);
    let qmp_path = vm.qmp.clone();
    let qmp = qmp_path.to_str().unwrap();

    let (code, found, err) = sendense(&state, &["vm", "discover", "--qmp", qmp, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        found[0]["identity"],
        "/machine/peripheral/vd0/virtio-backend"
    );
    assert_eq!(found[1]["format"], "raw");
    assert_eq!(
        sendense(&state, &["vm", "list", "--json"]).1,
        serde_json::json!([]),
        "discover registers nothing"
    );

    let (code, added, err) = sendense(&state, &["vm", "add", "pgtest1", "--qmp", qmp, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(added["source"], "qemu");
    assert_eq!(added["disks"][0]["key"], 2000);
    assert_eq!(added["disks"][1]["key"], 2001);
    assert_eq!(added["disks"][1]["size_bytes"], 32 << 20);
    let (_, shown, _) = sendense(&state, &["vm", "show", "pgtest1", "--json"]);
    assert_eq!(shown["disks"][0]["checkpoint_state"]["state"], "none");
    assert_eq!(
        shown["disks"][1]["checkpoint_state"]["state"],
        "unsupported"
    );
    assert!(shown["disks"][1]["checkpoint_state"]["detail"]
        .as_str()
        .unwrap()
        .contains("raw"));

    let export = nbdkit(d, "ext", &["memory", "size=16M"]);
    let (code, nbd, err) = sendense(
        &state,
        &[
            "vm",
            "add",
            "ext",
            "--nbd",
            &export.url,
            "--pre-hook",
            "echo 'a b'",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(nbd["source"], "nbd");
    assert_eq!(
        nbd["source_options"]["pre_hook"],
        serde_json::json!(["echo", "a b"])
    );
    assert_eq!(nbd["disks"][0]["size_bytes"], 16 << 20);

    // Usage errors: no source, two sources, a hook without --nbd, a dead QMP socket.
    assert_eq!(sendense(&state, &["vm", "add", "x"]).0, 2);
    assert_eq!(
        sendense(
            &state,
            &["vm", "add", "x", "--qmp", qmp, "--disk", "/tmp/a"]
        )
        .0,
        2
    );
    assert_eq!(
        sendense(
            &state,
            &["vm", "add", "x", "--disk", "/tmp/a", "--pre-hook", "true"]
        )
        .0,
        2
    );
    vm.quit();
    let (code, _, err) = sendense(&state, &["vm", "discover", "--qmp", qmp]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("QMP"), "{err}");
    let (code, shown, _) = sendense(&state, &["vm", "show", "pgtest1", "--json"]);
    assert_eq!(code, 0, "vm show works without the VM running");
    assert_eq!(shown["disks"][0]["checkpoint_state"], Value::Null);
}
