//! File-level restore: a disk with a GPT, an ext4 and an NTFS partition, built at test time
//! from reference trees (a symlink, a file with holes, unusual permissions, a non-ASCII name),
//! backed up as an image VM, changed through QEMU (so the next backup is incremental), backed
//! up again. For each restore point: `mount` shows exactly the reference trees, `files get`
//! and its tar stream equal them, `umount` and a killed mount leave nothing behind.

use sendense_testkit::{output_text, require, run, Proc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sendense");

/// Partition 1 (ext4) and 2 (NTFS), in sectors.
const P1: (u64, u64) = (2048, 32768);
const P2: (u64, u64) = (34816, 61440);

fn hub(state: &Path, args: &[&str]) -> (i32, String, Value) {
    let o = Command::new(BIN)
        .args(args)
        .arg("--json")
        .env("SENDENSE_HOME", state)
        .output()
        .unwrap();
    let doc = sendense_testkit::json_document(&o.stdout);
    (o.status.code().unwrap_or(-1), output_text(&o), doc)
}

fn sh(script: &str) {
    let o = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(o.status.success(), "{script}: {}", output_text(&o));
}

/// What a tree holds, path by path: kind, mode, owner, size, mtime (files), content digest
/// or link target. `ntfs`: ntfs-3g maps no modes or owners, so those are left out.
fn tree(root: &Path, ntfs: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in sendense_testkit::walk(root) {
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel.starts_with("lost+found") {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let what = if ft.is_symlink() {
            format!("link {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_dir() {
            "dir".to_string()
        } else if !ft.is_file() {
            use std::os::unix::fs::FileTypeExt;
            format!("node fifo={} rdev {:x}", ft.is_fifo(), m.rdev())
        } else {
            let bytes = std::fs::read(&p).unwrap();
            format!(
                "file {} {:016x} mtime {}",
                bytes.len(),
                fnv(&bytes),
                m.mtime()
            )
        };
        let meta = if ntfs || ft.is_symlink() {
            String::new()
        } else {
            format!(
                " mode {:o} owner {}:{}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            )
        };
        out.insert(rel, format!("{what}{meta}"));
    }
    out
}

/// The paths `files ls --json` listed.
fn paths(listing: &Value) -> Vec<&str> {
    listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// The reference trees: `ext` (ext4's) and `ntfs`.
fn make_trees(d: &Path) -> (PathBuf, PathBuf) {
    let ext = d.join("ref-ext");
    let ntfs = d.join("ref-ntfs");
    sh(&format!(
        "cd {ext_parent}; mkdir -p ref-ext/etc ref-ext/data/deep ref-ext/shared ref-ntfs/Docs
         echo 'hello from the backup' > ref-ext/etc/hosts
         chmod 4751 ref-ext/etc/hosts
         chmod 1777 ref-ext/shared
         chown 1234:5678 ref-ext/shared
         echo secret > ref-ext/etc/shadow; chmod 0400 ref-ext/etc/shadow
         ln -s ../etc/hosts ref-ext/data/link
         ln -s /etc/passwd ref-ext/data/abs
         ln -s ../../../../../../etc ref-ext/data/up
         mkdir ref-ext/dev; mknod ref-ext/dev/console c 5 1; mkfifo ref-ext/dev/fifo
         printf 'x' > ref-ext/data/holes; truncate -s 5M ref-ext/data/holes
         printf 'y' | dd of=ref-ext/data/holes bs=1 seek=4194304 conv=notrunc 2>/dev/null
         echo 'grüße' > 'ref-ext/data/deep/grüße – é.txt'
         touch -d '2020-01-02 03:04:05' ref-ext/etc/hosts ref-ext/data/holes
         echo 'windows side' > ref-ntfs/Docs/readme.txt
         echo 'ünïcode' > 'ref-ntfs/Docs/naïve.txt'
         touch -d '2021-05-06 07:08:09' ref-ntfs/Docs/readme.txt 'ref-ntfs/Docs/naïve.txt'",
        ext_parent = d.display()
    ));
    (ext, ntfs)
}

/// A 64 MiB disk (QCOW2) with a GPT: p1 ext4 made from `ext`, p2 NTFS filled from `ntfs`.
fn make_disk(d: &Path, ext: &Path, ntfs: &Path) -> PathBuf {
    require("sfdisk", "fdisk");
    require("mkntfs", "ntfs-3g");
    require("ntfs-3g", "ntfs-3g");
    let raw = d.join("disk.raw");
    sh(&format!(
        "cd {d}; truncate -s 64M disk.raw
         printf 'label: gpt\\nstart={}, size={}, type=L, name=root\\nstart={}, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=data\\n' | sfdisk -q disk.raw
         truncate -s 16M ext.img; mkfs.ext4 -q -F -I 256 -d {ext} -L rootfs ext.img
         dd if=ext.img of=disk.raw bs=512 seek={} conv=notrunc,sparse status=none
         truncate -s 30M ntfs.img; mkntfs -q -F -Q -L winfs ntfs.img >/dev/null 2>&1
         mkdir -p ntfs-mnt; ntfs-3g ntfs.img ntfs-mnt; cp -a {ntfs}/. ntfs-mnt/; umount ntfs-mnt
         dd if=ntfs.img of=disk.raw bs=512 seek={} conv=notrunc,sparse status=none
         rm ext.img ntfs.img",
        P1.0,
        P1.1,
        P2.0,
        P2.1,
        P1.0,
        P2.0,
        d = d.display(),
        ext = ext.display(),
        ntfs = ntfs.display()
    ));
    to_qcow2(&raw)
}

/// What is in `dir`.
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// The image `from` converted to an image `to` in `format`.
fn convert(from: &Path, format: &str, to: &Path) {
    run(
        "qemu-img",
        &[
            "convert",
            "-O",
            format,
            from.to_str().unwrap(),
            to.to_str().unwrap(),
        ],
    );
}

/// The raw image `raw` as a QCOW2 image beside it (the raw one removed).
fn to_qcow2(raw: &Path) -> PathBuf {
    let qcow2 = raw.with_extension("qcow2");
    convert(raw, "qcow2", &qcow2);
    std::fs::remove_file(raw).unwrap();
    qcow2
}

/// A 340 MiB disk (QCOW2) with an MBR and one XFS partition filled from `tree` (XFS needs
/// 300 MiB at least; the image holds only what is written).
fn make_xfs_disk(d: &Path, tree: &Path) -> PathBuf {
    require("mkfs.xfs", "xfsprogs");
    sh(&format!(
        "cd {d}; truncate -s 340M xfs-disk.raw
         printf 'label: dos\nstart=2048, type=83\n' | sfdisk -q xfs-disk.raw
         truncate -s 320M xfs.img; mkfs.xfs -q -L data xfs.img
         mkdir -p xfs-mnt; mount -o loop xfs.img xfs-mnt; cp -a {tree}/. xfs-mnt/; umount xfs-mnt
         dd if=xfs.img of=xfs-disk.raw bs=512 seek=2048 conv=notrunc,sparse status=none
         rm xfs.img",
        d = d.display(),
        tree = tree.display()
    ));
    to_qcow2(&d.join("xfs-disk.raw"))
}

/// A partition of a QCOW2 image mounted read-write through QEMU (qemu-storage-daemon's FUSE
/// export, a loop device), so writes reach the image as a guest's would; undone on drop.
struct GuestMount {
    dir: PathBuf,
    export: PathBuf,
    dev: String,
    _qsd: Proc,
}

impl GuestMount {
    fn new(image: &Path, (start, sectors): (u64, u64), ntfs: bool, at: &Path) -> GuestMount {
        let export = at.with_extension("export");
        std::fs::write(&export, b"").unwrap();
        let mut cmd = Command::new("qemu-storage-daemon");
        cmd.arg("--blockdev")
            .arg(format!(
                "driver=qcow2,node-name=d,file.driver=file,file.filename={}",
                image.display()
            ))
            .arg("--export")
            .arg(format!(
                "type=fuse,id=e,node-name=d,mountpoint={},writable=on",
                export.display()
            ));
        let qsd = Proc::spawn("qemu-storage-daemon", cmd);
        assert!(
            sendense_testkit::holds_within(std::time::Duration::from_secs(10), || {
                std::fs::metadata(&export).is_ok_and(|m| m.len() > 0)
            }),
            "the export did not come up"
        );
        let dev = run(
            "losetup",
            &[
                "--find",
                "--show",
                "--offset",
                &(start * 512).to_string(),
                "--sizelimit",
                &(sectors * 512).to_string(),
                export.to_str().unwrap(),
            ],
        )
        .trim()
        .to_string();
        std::fs::create_dir_all(at).unwrap();
        if ntfs {
            run("ntfs-3g", &[&dev, at.to_str().unwrap()]);
        } else {
            run("mount", &["-t", "ext4", &dev, at.to_str().unwrap()]);
        }
        GuestMount {
            dir: at.to_path_buf(),
            export,
            dev,
            _qsd: qsd,
        }
    }
}

impl Drop for GuestMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = Command::new("umount").arg(&self.export).status();
    }
}

/// What of Sendense's mounts exists: filesystem and FUSE mounts under `d`, loop devices over
/// files under `d`, qemu-storage-daemon and ntfs-3g processes for them.
fn leftovers(d: &Path) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(d.to_str().unwrap()))
        .map(String::from)
        .collect();
    let loops = run(
        "losetup",
        &["--list", "--noheadings", "--output", "NAME,BACK-FILE"],
    );
    left.extend(
        loops
            .lines()
            .filter(|l| l.contains(d.to_str().unwrap()))
            .map(String::from),
    );
    left.extend(sendense_testkit::processes_with(d.to_str().unwrap(), &[]));
    left
}

/// Applies the same changes to a mounted filesystem and its reference tree.
fn change(mounted: &Path, reference: &Path, script: &str) {
    for root in [mounted, reference] {
        sh(&format!("cd '{}'; {script}", root.display()));
    }
}

/// A hub in `d` and the GPT disk made from the reference trees: (state, ext4 tree, NTFS tree,
/// disk).
fn hub_and_gpt_disk(d: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    require("qemu-storage-daemon", "qemu-system-common");
    let state = sendense_testkit::cli_hub(BIN, d, "r");
    let (ext, ntfs) = make_trees(d);
    let disk = make_disk(d, &ext, &ntfs);
    (state, ext, ntfs, disk)
}

#[test]
fn files_of_every_restore_point_are_mounted_listed_and_copied_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (state, ext, ntfs, disk) = hub_and_gpt_disk(d);
    sh(&format!(
        "cp -a '{}' '{}'",
        ext.display(),
        d.join("ref-xfs").display()
    ));
    let xfs = make_xfs_disk(d, &ext);
    let (c, out, _) = hub(
        &state,
        &[
            "vm",
            "add",
            "win",
            "--disk",
            disk.to_str().unwrap(),
            "--disk",
            xfs.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 0, "{out}");
    let (c, out, full) = hub(&state, &["backup", "start", "win"]);
    assert_eq!(c, 0, "{out}");
    let keep = |n: u32| -> (PathBuf, PathBuf) {
        let (e, w) = (
            d.join(format!("ref{n}-ext")),
            d.join(format!("ref{n}-ntfs")),
        );
        sh(&format!(
            "cp -a '{}' '{}'; cp -a '{}' '{}'",
            ext.display(),
            e.display(),
            ntfs.display(),
            w.display()
        ));
        (e, w)
    };
    let mut points = vec![(full["backup"].as_str().unwrap().to_string(), keep(1))];

    // Changes written as a guest would, on both filesystems.
    {
        let m = GuestMount::new(&disk, P1, false, &d.join("guest-ext"));
        change(
            &m.dir,
            &ext,
            "echo 'changed after the first backup' > etc/hosts
             touch -d '2022-03-04 05:06:07' etc/hosts
             rm etc/shadow; chmod 0640 data/deep
             printf 'new' > data/new-file; touch -d '2022-03-04 05:06:08' data/new-file",
        );
    }
    {
        let m = GuestMount::new(&disk, P2, true, &d.join("guest-ntfs"));
        change(
            &m.dir,
            &ntfs,
            "echo 'second version' > Docs/readme.txt
             touch -d '2022-01-01 00:00:00' Docs/readme.txt",
        );
    }
    let (c, out, inc) = hub(&state, &["backup", "start", "win"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(inc["disks"][0]["mode"], "incremental", "{inc:#}");
    points.push((inc["backup"].as_str().unwrap().to_string(), keep(2)));

    for (id, (ref_ext, ref_ntfs)) in &points {
        // mount: exactly the reference trees, read-only.
        let at = d.join(format!("mnt-{id}"));
        let (c, out, shown) = hub(
            &state,
            &["mount", id, "--disk", "2000", at.to_str().unwrap()],
        );
        assert_eq!(c, 0, "{out}");
        let parts: Vec<(&str, &str)> = shown["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["content"].as_str().unwrap()))
            .collect();
        assert_eq!(parts, [("p1", "ext4"), ("p2", "ntfs")], "{shown:#}");
        assert_eq!(
            tree(&at.join("p1"), false),
            tree(ref_ext, false),
            "{id}: ext4"
        );
        assert_eq!(
            tree(&at.join("p2"), true),
            tree(ref_ntfs, true),
            "{id}: ntfs"
        );
        // The second disk: an MBR, one XFS partition, as made (it never changed).
        let at_xfs = d.join(format!("mnt-xfs-{id}"));
        let (c, out, shown) = hub(
            &state,
            &["mount", id, "--disk", "2001", at_xfs.to_str().unwrap()],
        );
        assert_eq!(c, 0, "{out}");
        assert_eq!(
            (
                &shown["partitions"][0]["table"],
                &shown["partitions"][0]["content"]
            ),
            (&Value::from("mbr"), &Value::from("xfs")),
            "{shown:#}"
        );
        assert_eq!(
            tree(&at_xfs.join("p1"), false),
            tree(&d.join("ref-xfs"), false),
            "{id}: xfs"
        );
        let (c, out, _) = hub(&state, &["umount", at_xfs.to_str().unwrap()]);
        assert_eq!(c, 0, "{out}");
        let denied = std::fs::write(at.join("p1/etc/new"), b"x");
        assert!(denied.is_err(), "{id}: the mount is writable");
        let (_, _, listed) = hub(&state, &["mount", "list"]);
        assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
        let (c, out, _) = hub(&state, &["umount", at.to_str().unwrap()]);
        assert_eq!(c, 0, "{out}");
        assert!(!at.exists(), "{id}: the directory it made stays");
        assert_eq!(leftovers(d), Vec::<String>::new(), "{id}: after umount");

        // files ls: the partitions, and a directory's entries (a link resolves inside).
        let (c, out, ls) = hub(&state, &["files", "ls", id, "--disk", "2000", "p1/data"]);
        assert_eq!(c, 0, "{out}");
        let names: Vec<&str> = paths(&ls);
        assert!(names.contains(&"p1/data/abs"), "{ls:#}");
        let (c, out, _) = hub(
            &state,
            &["files", "ls", id, "--disk", "2000", "p1/data/abs"],
        );
        assert_eq!(
            c, 4,
            "a link to /etc/passwd must not reach the hub's: {out}"
        );
        let (c, out, up) = hub(&state, &["files", "ls", id, "--disk", "2000", "p1/data/up"]);
        assert_eq!(c, 0, "{out}");
        let hosts: Vec<&str> = paths(&up);
        assert!(
            hosts.contains(&"p1/etc/hosts"),
            "a climbing link left the partition: {up:#}"
        );
        let (c, out, parts) = hub(&state, &["files", "ls", id, "--disk", "2000"]);
        assert_eq!(c, 0, "{out}");
        assert_eq!(parts["partitions"][1]["content"], "ntfs", "{parts:#}");

        // files get: the directories with their metadata, holes kept.
        let to = d.join(format!("got-{id}"));
        let (c, out, got) = hub(
            &state,
            &[
                "files",
                "get",
                id,
                "--disk",
                "2000",
                "p1/etc",
                "p1/data",
                "p1/shared",
                "p1/dev",
                "p2/Docs",
                "--to",
                to.to_str().unwrap(),
            ],
        );
        assert_eq!(c, 0, "{out}");
        assert!(
            got["bytes"].as_u64().unwrap() < 64 << 10,
            "holes were filled: {got:#}"
        );
        for sub in ["etc", "data", "shared"] {
            assert_eq!(
                tree(&to.join(sub), false),
                tree(&ref_ext.join(sub), false),
                "{id}: {sub}"
            );
        }
        // A device node of the backup is not made on the hub (it is named); a FIFO is.
        let dev: Vec<String> = tree(&to.join("dev"), false).into_keys().collect();
        assert_eq!(dev, ["fifo"], "{id}");
        assert!(got["skipped"].to_string().contains("console"), "{got:#}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&to).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            tree(&to.join("Docs"), true),
            tree(&ref_ntfs.join("Docs"), true)
        );
        let holes = std::fs::metadata(to.join("data/holes")).unwrap();
        assert!(
            holes.blocks() * 512 < 1 << 20,
            "{id}: data/holes is not sparse"
        );
        // A second copy into the same place is refused, nothing replaced.
        let (c, _, _) = hub(
            &state,
            &[
                "files",
                "get",
                id,
                "--disk",
                "2000",
                "p1/etc",
                "--to",
                to.to_str().unwrap(),
            ],
        );
        assert_eq!(c, 5);

        // --to -: one tar stream, equal once unpacked.
        let untar = d.join(format!("tar-{id}"));
        std::fs::create_dir(&untar).unwrap();
        let tar = Command::new(BIN)
            .args([
                "files", "get", id, "--disk", "2000", "p1/etc", "p1/data", "p1/dev", "--to", "-",
            ])
            .env("SENDENSE_HOME", &state)
            .output()
            .unwrap();
        assert!(tar.status.success(), "{}", output_text(&tar));
        let mut unpack = Command::new("tar")
            .args(["-x", "-p", "--numeric-owner", "-C", untar.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        unpack.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(unpack.wait().unwrap().success());
        for sub in ["etc", "data", "dev"] {
            assert_eq!(
                tree(&untar.join(sub), false),
                tree(&ref_ext.join(sub), false),
                "{id}: tar {sub}"
            );
        }
        assert_eq!(leftovers(d), Vec::<String>::new(), "{id}: after files");
    }

    // A mount killed with SIGKILL: the next command undoes all of it.
    let at = d.join("mnt-killed");
    let (c, out, _) = hub(
        &state,
        &[
            "mount",
            &points[1].0,
            "--disk",
            "2000",
            at.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 0, "{out}");
    let (_, _, listed) = hub(&state, &["mount", "list"]);
    let pid = listed[0]["owner_pid"].as_i64().unwrap();
    run("kill", &["-9", &pid.to_string()]);
    assert!(sendense_testkit::holds_within(
        std::time::Duration::from_secs(10),
        || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        }
    ));
    assert!(!leftovers(d).is_empty(), "the kill left nothing to find");
    let (c, out, _) = hub(&state, &["job", "list"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(leftovers(d), Vec::<String>::new(), "after a killed mount");
    assert!(!at.exists());
    let (_, _, listed) = hub(&state, &["mount", "list"]);
    assert_eq!(listed, serde_json::json!([]));
    let scratch: Vec<_> = std::fs::read_dir(state.join("scratch"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(scratch.is_empty(), "{scratch:?}");

    // A `files get` killed with its copies staged: the next command removes them and the
    // mount, and nothing reaches the destination.
    let to = d.join("got-killed");
    let get_etc = |to: &Path| -> Vec<String> {
        [
            "files",
            "get",
            &points[0].0,
            "--disk",
            "2000",
            "p1/etc",
            "--to",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([to.to_str().unwrap().to_string()])
        .collect()
    };
    let args = get_etc(&to);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sendense_testkit::cli_killed_at(BIN, &state, &args, "files.staged");
    let staged = entries(&to);
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert!(!leftovers(d).is_empty(), "the kill left nothing to find");
    let (c, out, _) = hub(&state, &["job", "list"]);
    assert_eq!(c, 0, "{out}");
    assert_eq!(
        leftovers(d),
        Vec::<String>::new(),
        "after a killed files get"
    );
    let left = entries(&to);
    assert!(left.is_empty(), "{left:?}");

    // Unchecked reads (QEMU reads the chain itself) list the same.
    let ls = |extra: &[&str]| {
        let mut args = vec!["files", "ls", &points[1].0, "--disk", "2000", "p1/etc"];
        args.extend_from_slice(extra);
        let (c, out, listed) = hub(&state, &args);
        assert_eq!(c, 0, "{out}");
        listed["entries"].clone()
    };
    assert_eq!(ls(&["--no-verify"]), ls(&[]));

    // A flipped byte in the data of p1/etc/hosts in the full: reading the file through a
    // verified `files get` fails naming the block, nothing reaches the destination, nothing is
    // left mounted, and the backup is marked damaged.
    let image = PathBuf::from(full["disks"][0]["file"].as_str().unwrap());
    let raw = d.join("full.raw");
    convert(&image, "raw", &raw);
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    let needle = b"hello from the backup\n";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the file's data in the full") as u64;
    drop(bytes);
    sendense_testkit::qcow2::flip_data_byte(&image, at + 3);
    let to = d.join("got-damaged");
    let args = get_etc(&to);
    let (c, out, _) = hub(&state, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(c, 1, "{out}");
    let block = (at + 3) / 65536 * 65536;
    assert!(out.contains(&format!("offset {block}")), "{out}");
    assert_eq!(leftovers(d), Vec::<String>::new(), "after a damaged read");
    let left = entries(&to);
    assert!(left.is_empty(), "{left:?}");
    let (_, _, shown) = hub(&state, &["backup", "show", &points[0].0]);
    assert!(
        shown["damaged"]
            .as_str()
            .is_some_and(|w| w.contains(&format!("offset {block}"))),
        "{shown}"
    );

    // A verified restore of it fails naming the offset too.
    let out_file = d.join("restored.qcow2");
    let (c, out, _) = hub(
        &state,
        &[
            "restore",
            &points[0].0,
            "--disk",
            "2000",
            "--to",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("offset"), "{out}");
    assert!(!out_file.exists());
}

/// A damaged block met while mounting — here the GPT header, read before any partition —
/// fails the command naming the block, marks the backup damaged and leaves nothing mounted;
/// `--no-verify` reads what the images hold.
#[test]
fn damage_met_while_mounting_names_the_block_and_marks_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (state, _, _, disk) = hub_and_gpt_disk(d);
    let (c, out, _) = hub(
        &state,
        &["vm", "add", "g", "--disk", disk.to_str().unwrap()],
    );
    assert_eq!(c, 0, "{out}");
    let (c, out, full) = hub(&state, &["backup", "start", "g"]);
    assert_eq!(c, 0, "{out}");
    let id = full["backup"].as_str().unwrap().to_string();
    let image = PathBuf::from(full["disks"][0]["file"].as_str().unwrap());
    // A byte of the primary GPT header (LBA 1): read unchecked, its CRC fails and the backup
    // header at the disk's end gives the table.
    sendense_testkit::qcow2::flip_data_byte(&image, 512 + 20);
    let (c, out, listed) = hub(
        &state,
        &["files", "ls", &id, "--disk", "2000", "--no-verify"],
    );
    assert_eq!(c, 0, "{out}");
    assert_eq!(listed["partitions"][0]["content"], "ext4", "{out}");
    // And of the backup header: no table at all. Unchecked, the table is named damaged;
    // checked, the mount fails on the first damaged block, by offset.
    sendense_testkit::qcow2::flip_data_byte(&image, (64 << 20) - 512 + 20);
    let (c, out, _) = hub(
        &state,
        &["files", "ls", &id, "--disk", "2000", "--no-verify"],
    );
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("GPT partition table is damaged"), "{out}");
    let (c, out, _) = hub(&state, &["files", "ls", &id, "--disk", "2000"]);
    assert_eq!(c, 1, "{out}");
    assert!(out.contains("the block at offset 0"), "{out}");
    assert_eq!(leftovers(d), Vec::<String>::new());
    let (_, _, shown) = hub(&state, &["backup", "show", &id]);
    assert!(
        shown["damaged"]
            .as_str()
            .is_some_and(|w| w.contains("offset 0")),
        "{shown}"
    );
}
