//! What a mount asks of the host: loop devices (`losetup`), filesystem mounts (`mount`,
//! `ntfs-3g`, `umount`), and what `/proc` and `/sys` say about them. Loop devices are found by
//! the file behind them and mounts by their device, so whatever a killed mount left is found
//! again without trusting any record of it.

use super::table::Content;
use crate::error::{Error, ErrorKind, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LOSETUP: crate::tools::Tool = crate::tools::Tool {
    program: "losetup",
    package: "mount",
};

/// Runs `cmd`; its stderr (trimmed) is the error.
fn run(mut cmd: Command, what: &str) -> std::result::Result<String, String> {
    let out = cmd
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        Err(if err.is_empty() {
            format!("{what} failed ({})", out.status)
        } else {
            err.to_string()
        })
    }
}

/// A loop device over `size` bytes of `file` from `offset`.
pub fn loop_attach(file: &Path, offset: u64, size: u64) -> Result<PathBuf> {
    if which(LOSETUP.program).is_none() {
        return Err(LOSETUP.missing());
    }
    let mut cmd = Command::new(LOSETUP.program);
    cmd.args(["--find", "--show", "--offset"])
        .arg(offset.to_string())
        .arg("--sizelimit")
        .arg(size.to_string())
        .arg(file);
    let dev = run(cmd, "losetup").map_err(|e| {
        Error::new(
            ErrorKind::External,
            format!("no loop device for {}: {e}", file.display()),
        )
        .with_help("Mounting needs root and the kernel's loop driver (modprobe loop).")
    })?;
    if !dev.starts_with("/dev/loop") {
        return Err(Error::new(
            ErrorKind::External,
            format!("losetup answered `{dev}`, not a loop device"),
        ));
    }
    Ok(PathBuf::from(dev))
}

/// Detaches loop device `dev` (a busy one goes once it is released).
pub fn loop_detach(dev: &Path) -> std::result::Result<(), String> {
    let mut cmd = Command::new(LOSETUP.program);
    cmd.arg("--detach").arg(dev);
    run(cmd, "losetup --detach").map(drop)
}

/// The loop devices whose backing file lies in `dir`, with that file.
pub fn loops_in(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        // The kernel appends " (deleted)" to a file that is gone.
        let backing = PathBuf::from(backing.trim_end().trim_end_matches(" (deleted)"));
        if backing.starts_with(dir) {
            found.push((PathBuf::from("/dev").join(&name), backing));
        }
    }
    found.sort();
    found
}

/// Read requests loop device `dev` served so far.
pub fn loop_reads(dev: &Path) -> Option<u64> {
    let name = dev.file_name()?.to_str()?;
    let stat = std::fs::read_to_string(format!("/sys/block/{name}/stat")).ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point.
    pub target: PathBuf,
    /// The filesystem type (`ext4`, `fuseblk`, `fuse`).
    pub fstype: String,
    /// The device or source.
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount of this process's mount namespace.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let target = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next()?;
            Some(MountEntry {
                target: PathBuf::from(unescape(target)),
                fstype: fstype.to_string(),
                source: unescape(source),
            })
        })
        .collect()
}

/// Whether something is mounted at `target`.
pub fn is_mounted(target: &Path) -> bool {
    mounts().iter().any(|m| m.target == target)
}

/// The options every mount gets: read-only, and nothing in a backup runs or acts as a device.
const SAFE: &str = "ro,nodev,nosuid,noexec";

/// Mounts `dev` (holding `content`) read-only at `target`.
pub fn mount_fs(dev: &Path, content: Content, target: &Path) -> std::result::Result<(), String> {
    let mut cmd = match content {
        Content::Ntfs => {
            if which("ntfs-3g").is_none() {
                return Err(
                    "NTFS needs ntfs-3g, which is not installed (apt-get install ntfs-3g)".into(),
                );
            }
            // Without a user mapping ntfs-3g shows every file to everyone (umask 0): root's
            // alone, as the kernel mounts show the backup's own owners.
            let mut c = Command::new("ntfs-3g");
            c.arg("-o").arg(format!("{SAFE},uid=0,gid=0,umask=077"));
            c
        }
        Content::Ext4 | Content::Xfs | Content::Btrfs | Content::Vfat | Content::Exfat => {
            let mut c = Command::new("mount");
            let options = match content {
                // A second mount of the same filesystem (another restore point) has its uuid.
                Content::Xfs => format!("{SAFE},nouuid"),
                _ => SAFE.to_string(),
            };
            c.args(["-t", content.as_str(), "-o", &options]);
            c
        }
        other => return Err(format!("{}: {}", other.as_str(), not_mountable(other))),
    };
    cmd.arg(dev).arg(target);
    run(cmd, "mount").map(drop)
}

/// Why partitions holding `content` are not mounted.
pub fn not_mountable(content: Content) -> &'static str {
    match content {
        Content::Swap => "swap space holds no files",
        Content::Lvm => {
            "an LVM physical volume: restore the disk and activate its volume group by hand"
        }
        Content::Luks => "encrypted (LUKS): restore the disk and open it with its key by hand",
        Content::Raid => "a member of a software RAID: restore the disks and assemble it by hand",
        _ => "no filesystem recognised",
    }
}

/// Unmounts `target`; a busy one is tried again for a moment, then, when `lazy`, detached
/// from the tree at once (it goes when its last user leaves).
pub fn unmount(target: &Path, lazy: bool) -> std::result::Result<(), String> {
    let mut last = String::new();
    for _ in 0..10 {
        let mut cmd = Command::new("umount");
        cmd.arg(target);
        match run(cmd, "umount") {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        if !is_mounted(target) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    if lazy {
        let mut cmd = Command::new("umount");
        cmd.arg("--lazy").arg(target);
        return run(cmd, "umount --lazy").map(drop);
    }
    Err(last)
}

/// The processes (pid, name) that have their working directory, root or an open file at or
/// below `dir`, this one left out.
pub fn holders(dir: &Path) -> Vec<(u32, String)> {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = p.path();
        let mut links = vec![base.join("cwd"), base.join("root")];
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        let inside = links
            .iter()
            .any(|l| std::fs::read_link(l).is_ok_and(|t| t.starts_with(dir)));
        if inside {
            let name = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
            found.push((pid, name.trim().to_string()));
        }
    }
    found
}

/// Where `program` is on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/mnt/x\134y"), r"/mnt/x\y");
        assert_eq!(unescape(r"/odd\04"), r"/odd\04");
    }

    #[test]
    fn this_process_sees_its_root_mounted() {
        assert!(mounts().iter().any(|m| m.target == Path::new("/")));
    }
}
