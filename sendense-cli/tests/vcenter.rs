//! vCenters, against govmomi's vCenter simulator: the certificate pinned (never silently), the
//! login checked, and the password nowhere but in its 0600 file.

use sendense_testkit::vcsim::{password_file, Vcsim};
use sendense_testkit::{cli_json, output_text, walk};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

/// `sendense ARGS --json`: exit code, output, JSON document.
fn hub(state: &Path, args: &[&str]) -> (i32, String, Value) {
    let o = sendense_testkit::cli(BIN, state, &[args, &["--json"]].concat());
    let doc = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), output_text(&o), doc)
}

#[test]
fn a_vcenter_is_added_with_its_certificate_pinned_and_its_password_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = sendense_testkit::cli_hub(BIN, d, "r");
    // A password with characters XML and shells care about.
    let password = "s3cr&t<'\"> Ünï";
    let sim = Vcsim::start(&d.join("vcsim"), "backup@vsphere.local", password);
    let good = password_file(&d.join("pw"), password, 0o600);
    let add = |name: &str, file: &str, extra: &[&str]| {
        let mut args = vec![
            "vcenter",
            "add",
            name,
            "--url",
            &sim.url,
            "--user",
            "backup@vsphere.local",
            "--password-file",
            file,
        ];
        args.extend_from_slice(extra);
        hub(&state, &args)
    };

    // First contact: nothing is pinned silently; the error shows the certificate's thumbprint.
    let (c, out, _) = add("vc1", &good, &[]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(&sim.thumbprint) && out.contains("--thumbprint"),
        "{out}"
    );
    // Another certificate pinned: refused before anything is sent, both named.
    let other = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33";
    let (c, out, _) = add("vc1", &good, &["--thumbprint", other]);
    assert_eq!(c, 5, "{out}");
    assert!(
        out.contains(&sim.thumbprint) && out.contains(other),
        "{out}"
    );
    // A wrong password: refused by the server, nothing recorded, the password in no message.
    let wrong = password_file(&d.join("wrong"), "not-it", 0o600);
    let (c, out, _) = add("vc1", &wrong, &["--thumbprint", &sim.thumbprint]);
    assert_eq!(c, 1, "{out}");
    assert!(
        out.contains("Login failure") && !out.contains("not-it"),
        "{out}"
    );
    // A password file others can read, a URL that is not one: bad input.
    let open = password_file(&d.join("open"), password, 0o644);
    assert_eq!(add("vc1", &open, &["--accept-certificate"]).0, 2);
    let (c, out, _) = hub(
        &state,
        &[
            "vcenter",
            "add",
            "vc1",
            "--url",
            "http://vc/sdk",
            "--user",
            "u",
            "--password-file",
            &good,
            "--accept-certificate",
        ],
    );
    assert_eq!(c, 2, "{out}");
    assert_eq!(hub(&state, &["vcenter", "show", "vc1"]).0, 4);

    // Accepted explicitly (lower case thumbprint works as well).
    let (c, out, added) = add(
        "vc1",
        &good,
        &["--thumbprint", &sim.thumbprint.to_lowercase()],
    );
    assert_eq!(c, 0, "{out}");
    assert_eq!(added["thumbprint"], sim.thumbprint.as_str(), "{added:#}");
    assert_eq!(added["about"]["api_type"], "VirtualCenter", "{added:#}");
    assert!(!out.contains(password), "{out}");
    let (c, out, _) = add("vc2", &good, &["--accept-certificate"]);
    assert_eq!(c, 0, "{out}");
    let (c, out, tested) = hub(&state, &["vcenter", "test", "vc1"]);
    assert_eq!(c, 0, "{out}");
    assert!(tested["checked_at"].is_string(), "{tested:#}");
    let listed = cli_json(BIN, &state, &["vcenter", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed:#}");

    // The password is in its file (0600, in a 0700 directory) and nowhere else.
    let secret = state.join("secrets/vcenter-vc1.password");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), password);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        (mode(&secret), mode(&state.join("secrets"))),
        (0o600, 0o700)
    );
    for file in walk(&state) {
        if file.starts_with(state.join("secrets")) {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            !bytes
                .windows(password.len())
                .any(|w| w == password.as_bytes()),
            "the password is in {}",
            file.display()
        );
    }

    // Removed: its password file goes with it.
    let (c, out, _) = hub(&state, &["vcenter", "remove", "vc1"]);
    assert_eq!(c, 0, "{out}");
    assert!(!secret.exists());
    assert_eq!(hub(&state, &["vcenter", "test", "vc1"]).0, 4);
    drop(sim);
}

/// A VMware VM is registered through its vCenter with vSphere's own device keys — 2000 and 2001
/// on the first SCSI bus, 2016 on the second — never keys computed from the disks' order, and
/// sizes in bytes.
#[test]
fn a_vmware_vm_is_registered_with_its_real_device_keys() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = sendense_testkit::cli_hub(BIN, d, "r");
    let sim = Vcsim::start_with(&d.join("vcsim"), "user", "pass", &["-layout"]);
    let pw = password_file(&d.join("pw"), "pass", 0o600);
    let (c, out, _) = hub(
        &state,
        &[
            "vcenter",
            "add",
            "vc",
            "--url",
            &sim.url,
            "--user",
            "user",
            "--password-file",
            &pw,
            "--accept-certificate",
        ],
    );
    assert_eq!(c, 0, "{out}");

    let (c, out, found) = hub(
        &state,
        &[
            "vm",
            "discover",
            "--vcenter",
            "vc",
            "--filter",
            "DC0_H0_VM0",
        ],
    );
    assert_eq!(c, 0, "{out}");
    let vms = found.as_array().unwrap();
    assert_eq!(vms.len(), 1, "{found:#}");
    let disks: Vec<(u64, String, u64, bool)> = vms[0]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_u64().unwrap(),
                d["slot"].as_str().unwrap().to_string(),
                d["capacity_bytes"].as_u64().unwrap(),
                d["excluded"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        disks,
        [
            (2000, "scsi0:0".to_string(), 64 << 20, false),
            (2001, "scsi0:1".to_string(), 32 << 20, false),
            (2016, "scsi1:0".to_string(), 16 << 20, false),
            (2002, "scsi0:2".to_string(), 8 << 20, true)
        ]
    );
    let uuid = vms[0]["uuid"].as_str().unwrap().to_string();

    let (c, out, added) = hub(
        &state,
        &[
            "vm",
            "add",
            "pg",
            "--vcenter",
            "vc",
            "--path",
            "/DC0/vm/DC0_H0_VM0",
        ],
    );
    assert_eq!(c, 0, "{out}");
    let keys: Vec<u64> = added["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_u64().unwrap())
        .collect();
    assert_eq!(keys, [2000, 2001, 2016], "{added:#}");
    assert_eq!(added["disks"][2]["size_bytes"], 16 << 20);
    assert!(
        added["disks"][0]["identity"]
            .as_str()
            .unwrap()
            .starts_with("2000 6000C29a"),
        "{added:#}"
    );
    assert_eq!(added["source"], "vmware");
    // By BIOS uuid, in whatever case it is given: the same VM, which is one Sendense VM only
    // (two would remove each other's snapshots).
    let (c, out, _) = hub(
        &state,
        &[
            "vm",
            "add",
            "pg2",
            "--vcenter",
            "vc",
            "--uuid",
            &uuid.to_uppercase(),
        ],
    );
    assert_eq!(c, 5, "{out}");
    assert!(out.contains("registered already, as `pg`"), "{out}");
    // The checkpoints are read from vSphere, live.
    let (c, out, shown) = hub(&state, &["vm", "show", "pg"]);
    assert_eq!(c, 0, "{out}");
    for disk in shown["disks"].as_array().unwrap() {
        assert_eq!(disk["checkpoint_state"]["state"], "none", "{shown:#}");
    }
    // What does not exist is named; a vCenter with VMs stays.
    let (c, out, _) = hub(
        &state,
        &[
            "vm",
            "add",
            "x",
            "--vcenter",
            "vc",
            "--path",
            "/DC0/vm/nope",
        ],
    );
    assert_eq!(c, 4, "{out}");
    let (c, out, _) = hub(&state, &["vcenter", "remove", "vc"]);
    assert_eq!(c, 5, "{out}");
}
