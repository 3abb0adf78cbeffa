//! `--require-mount` against a real tmpfs mount (the tests run as root).

use std::path::Path;
use std::process::{Command, Output};

/// Unmounts on drop, so a failing assertion never leaves a mount behind.
struct Mount<'a>(&'a Path);

impl<'a> Mount<'a> {
    fn tmpfs(at: &'a Path) -> Mount<'a> {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "sendense-test"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mounting tmpfs needs root (mount -t tmpfs)");
        Mount(at)
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn sendense(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sendense"))
        .args(args)
        .env("SENDENSE_HOME", state)
        .output()
        .unwrap()
}

fn check(out: &Output, want: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(want), "{err}");
    err
}

#[test]
fn require_mount_refuses_unmounted_and_accepts_mounted() {
    assert!(
        nix_is_root(),
        "this test mounts a tmpfs and must run as root (make test runs it as root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    check(&sendense(&state, &["init"]), 0);
    let mnt_s = mnt.to_str().unwrap();

    // Not mounted: refused, and nothing written into the mount point.
    let err = check(
        &sendense(
            &state,
            &["repo", "add", "nfs", "--path", mnt_s, "--require-mount"],
        ),
        5,
    );
    assert!(err.contains("not a mount point"), "{err}");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);

    {
        let _m = Mount::tmpfs(&mnt);
        check(
            &sendense(
                &state,
                &["repo", "add", "nfs", "--path", mnt_s, "--require-mount"],
            ),
            0,
        );
        check(&sendense(&state, &["repo", "test", "nfs"]), 0);
        let out = sendense(&state, &["repo", "show", "nfs", "--json"]);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["mount_point"], true);
        assert_eq!(doc["total_bytes"], 16 * 1024 * 1024);
    }

    // Unmounted again: every use is refused; the empty directory underneath is never written.
    let err = check(&sendense(&state, &["repo", "test", "nfs"]), 5);
    assert!(err.contains("not a mount point"), "{err}");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
    let out = sendense(&state, &["repo", "show", "nfs", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["problem"]
        .as_str()
        .unwrap()
        .contains("not a mount point"));
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}
