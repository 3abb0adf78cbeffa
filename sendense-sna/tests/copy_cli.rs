//! `sendense-sna copy` end to end: real nbdkit source, real qemu-nbd target.

use sendense_testkit::{create_image, images_equal, nbdkit, qemu_nbd};
use std::process::{Command, Output};

fn sna(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sendense-sna"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn json_events_then_summary_and_identical_target() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = nbdkit(
        d,
        "src",
        &["sparse-random", "size=512M", "percent=10", "seed=5"],
    );
    let img = create_image(&d.join("t.qcow2"), "qcow2", "512M");
    let mut dst = qemu_nbd(d, &img, "qcow2", "t", &["--shared=5"]);
    let out = sna(&[
        "copy",
        &src.url,
        &dst.url,
        "--destination-is-zero",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "disk_started");
    assert!(lines.iter().any(|l| l["event"] == "disk_finished"));
    let summary = lines.last().unwrap();
    for key in [
        "size",
        "bytes_planned",
        "bytes_read",
        "bytes_written",
        "bytes_zero",
        "seconds",
        "mib_per_sec",
    ] {
        assert!(summary.get(key).is_some(), "summary lacks {key}: {summary}");
    }
    assert_eq!(summary["size"], 512u64 << 20);
    dst.proc.stop();
    assert!(images_equal(img.to_str().unwrap(), "qcow2", &src.url));
}

#[test]
fn plain_lines_when_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = nbdkit(d, "src", &["sparse-random", "size=64M", "seed=5"]);
    let dst = nbdkit(d, "dst", &["memory", "size=64M"]);
    let out = sna(&["copy", &src.url, &dst.url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("disk 0: full"), "{text}");
    assert!(text.contains("copied 64.0 MiB"), "{text}");
}

#[test]
fn bad_input_and_unreachable_servers_have_clear_errors() {
    let out = sna(&["copy", "127.0.0.1:10809", "nbd://127.0.0.1/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid NBD URL `127.0.0.1:10809`"));

    let dir = tempfile::tempdir().unwrap();
    let missing = format!(
        "nbd+unix:///?socket={}",
        dir.path().join("none.sock").display()
    );
    let out = sna(&["copy", &missing, &missing]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot connect") && err.contains("none.sock"),
        "{err}"
    );

    let out = sna(&["copy", "nbd://h/a", "nbd://h/b", "--request-size", "1000"]);
    assert_eq!(out.status.code(), Some(2));
    let out = sna(&["copy", "nbd://h/a", "nbd://h/b", "--connections", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `sendense-sna transfer` with `plan` on stdin.
fn transfer(plan: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sendense-sna"))
        .args(["--json", "transfer"])
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(plan.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_plan_of_another_node_protocol_is_refused_before_anything_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = nbdkit(d, "src", &["pattern", "size=8M"]);
    let img = create_image(&d.join("t.qcow2"), "qcow2", "8M");
    let dst = qemu_nbd(d, &img, "qcow2", "t", &["--shared=5"]);
    // What a hub of protocol 1 sent: one targets string, a digest path of its own.
    let old = format!(
        r#"{{"job": 1, "targets": "2000:{dst}", "disks": [{{"key": 2000, "mode": "full",
            "reason": "r", "source": "{src}", "bitmap": null, "size_bytes": 8388608,
            "digests": "{digests}"}}], "connections": 1, "requests": 1,
            "request_size": 1048576}}"#,
        dst = dst.url,
        src = src.url,
        digests = d.join("x.digests").display()
    );
    let out = transfer(&old);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("node protocol 1") && err.contains("same version as the hub"),
        "{err}"
    );
    assert!(!d.join("x.digests").exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(r#""code":"sendense::invalid_input""#),
        "{stdout}"
    );
    // The same disk in protocol 2: copied, its digests sent back, then the summary.
    let new = format!(
        r#"{{"protocol": 2, "job": 1, "disks": [{{"key": 2000, "mode": "full",
            "reason": "r", "source": "{src}", "target": "{dst}", "bitmap": null,
            "size_bytes": 8388608, "record_digests": true,
            "digest_scheme": "blake3kz-64k"}}], "connections": 1, "requests": 1,
            "request_size": 1048576}}"#,
        dst = dst.url,
        src = src.url,
    );
    let out = transfer(&new);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let digests = lines.iter().filter(|l| l.get("digest").is_some()).count();
    assert_eq!(digests, 128, "one per 64 KiB block of data");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["protocol"], 2, "{summary}");
    assert_eq!(summary["results"][0]["key"], 2000, "{summary}");
    assert!(images_equal(img.to_str().unwrap(), "qcow2", &src.url));
}
