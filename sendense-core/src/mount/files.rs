//! `sendense files ls` and `files get`: files of a restore point without mounting by hand.
//! The disk is mounted in a private directory for the command (see [`super`]) and unmounted
//! when it ends, whatever ended it.
//!
//! Paths are `PARTITION/path/in/it` (`p1/etc/hosts`). Everything in the backup is untrusted: a
//! path is resolved inside its partition as if it were the root — `..` never leaves it, and a
//! symbolic link, absolute or relative, resolves against the partition, never the hub's own
//! files. Copies keep mode, owner, times, symbolic links (as links), hard links within what is
//! copied, holes in files and FIFOs; device nodes and sockets are skipped (and named; a tar
//! stream keeps device nodes), extended attributes and ACLs are not copied. The destination is
//! a directory only this user may write to (a new one is made 0700); every name is checked free
//! first, the copies are made in a staging directory there and moved to their names at the end
//! (never over an existing one), so a failed or killed copy leaves nothing.

use super::{MountEnd, MountRequest, MountedBackup};
use crate::error::{Error, ErrorKind, Result};
use crate::sendense::Sendense;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Symbolic links followed while resolving one path, at most.
const MAX_LINKS: usize = 40;

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Its path (`p1/etc/hosts`).
    pub path: String,
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `char`, `block`.
    pub kind: &'static str,
    /// Permission bits (with setuid, setgid, sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds since the epoch.
    pub mtime: i64,
    /// Its nanoseconds.
    pub mtime_nsec: i64,
    /// A symbolic link's target, as stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What `files ls` found: the partitions (no path given), or a directory's entries.
#[derive(Debug, Clone, Serialize)]
pub struct FileListing {
    /// Backup id.
    pub backup: String,
    /// Disk key.
    pub disk: u32,
    /// The disk's partitions, as `mount` reports them.
    pub partitions: Vec<super::MountedPartition>,
    /// The entries at the path (empty without one).
    pub entries: Vec<FileEntry>,
}

/// Where `files get` puts what it copies.
pub enum FilesTo<'a> {
    /// Into this directory (made when missing).
    Dir(PathBuf),
    /// As a tar stream.
    Tar(&'a mut dyn Write),
}

impl std::fmt::Debug for FilesTo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FilesTo::Dir(d) => f.debug_tuple("Dir").field(d).finish(),
            FilesTo::Tar(_) => f.write_str("Tar"),
        }
    }
}

/// What `files get` copied.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilesGot {
    /// Backup id.
    pub backup: String,
    /// Disk key.
    pub disk: u32,
    /// Entries copied (directories, files, links, ...).
    pub entries: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
    /// What was skipped, and why.
    pub skipped: Vec<String>,
}

/// The disk `files ls` and `files get` read.
#[derive(Debug, Clone, Copy)]
pub struct FilesOf<'a> {
    /// Backup id.
    pub backup: &'a str,
    /// Disk key.
    pub disk: u32,
    /// Check every block read against the digests (see [`super::served`]).
    pub verify: bool,
}

/// What a command did (`done`) and how its mount ended (`ended`), as one result: the mount's
/// error first when both failed — it names a damaged block, which is why a read failed.
fn either_error<T>(done: Result<T>, ended: Result<()>) -> Result<T> {
    match (done, ended) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), Ok(())) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Err(d), Err(e)) => Err(e.context(format!("{} — and", d.message()))),
    }
}

impl Sendense {
    /// Mounts the disk `of` names in a private directory for one command.
    fn mount_private(
        &mut self,
        of: &FilesOf<'_>,
        cancel: CancellationToken,
    ) -> Result<MountedBackup> {
        self.mount_backup(
            &MountRequest {
                backup: of.backup.to_string(),
                disk: of.disk,
                dir: None,
                idle: Some(std::time::Duration::ZERO),
                verify: of.verify,
            },
            cancel,
        )
    }

    /// The partitions of disk `disk` of backup `backup` and, with `path`, the entries there
    /// (one entry when it is not a directory).
    pub fn files_list(
        &mut self,
        of: &FilesOf<'_>,
        path: Option<&str>,
        cancel: CancellationToken,
    ) -> Result<FileListing> {
        let m = self.mount_private(of, cancel)?;
        let listed = path
            .map(|p| list(&m, p))
            .transpose()
            .map(Option::unwrap_or_default);
        let info = m.info().clone();
        let ended = self.end_mount(m, MountEnd::Stopped);
        Ok(FileListing {
            backup: info.backup,
            disk: info.disk,
            partitions: info.partitions,
            entries: either_error(listed, ended)?,
        })
    }

    /// Copies `paths` of disk `disk` of backup `backup` to `to`.
    pub fn files_get(
        &mut self,
        of: &FilesOf<'_>,
        paths: &[String],
        to: FilesTo<'_>,
        cancel: CancellationToken,
    ) -> Result<FilesGot> {
        if paths.is_empty() {
            return Err(Error::invalid("name at least one path (PARTITION/path)"));
        }
        if let FilesTo::Dir(dir) = &to {
            self.refuse_protected_destination(dir)?;
            destination(dir, false)?;
        }
        let m = self.mount_private(of, cancel.clone())?;
        let mut got = FilesGot {
            backup: m.info().backup.clone(),
            disk: of.disk,
            ..Default::default()
        };
        let job = m.info().job;
        let copied = match to {
            FilesTo::Tar(out) => tar_get(&m, paths, out, &cancel, &mut got),
            FilesTo::Dir(dir) => self.dir_get(&m, paths, &dir, job, &cancel, &mut got),
        };
        let ended = self.end_mount(m, MountEnd::Stopped);
        either_error(copied, ended)?;
        Ok(got)
    }

    /// Copies `paths` of `m` into `dir`: every name checked free first, the copies made in a
    /// staging directory of `dir` (recorded, so a killed copy leaves nothing), then each moved
    /// to its name — never over an existing one.
    fn dir_get(
        &mut self,
        m: &MountedBackup,
        paths: &[String],
        dir: &Path,
        job: i64,
        cancel: &CancellationToken,
        got: &mut FilesGot,
    ) -> Result<()> {
        let dir = destination(dir, true)?;
        let sources = sources(m, paths)?;
        let mut names: Vec<&std::ffi::OsStr> = Vec::new();
        for (_, name) in &sources {
            if names.contains(&name.as_os_str()) {
                return Err(Error::invalid(format!(
                    "two paths would both be copied to {}",
                    dir.join(name).display()
                ))
                .with_help("Copy them into different directories."));
            }
            names.push(name.as_os_str());
            if std::fs::symlink_metadata(dir.join(name)).is_ok() {
                return Err(
                    Error::refused(format!("{} exists already", dir.join(name).display()))
                        .with_help("Copy into an empty directory, or remove what is there."),
                );
            }
        }
        let staging = dir.join(format!("{STAGING_PREFIX}{job}"));
        self.catalog_mut().add_job_file(job, &staging)?;
        let copied = (|| {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&staging)
                .map_err(|e| Error::io("creating", &staging, e))?;
            let mut copier = Copier {
                links: HashMap::new(),
                cancel,
                got,
            };
            for (src, name) in &sources {
                copier.copy(src, &staging.join(name))?;
            }
            crate::crash::point("files.staged");
            for (_, name) in &sources {
                nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &staging.join(name),
                    nix::fcntl::AT_FDCWD,
                    &dir.join(name),
                    nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                )
                .map_err(|e| {
                    Error::io(
                        "moving into place",
                        &dir.join(name),
                        std::io::Error::from(e),
                    )
                })?;
            }
            Ok(())
        })();
        let removed = std::fs::remove_dir_all(&staging);
        if copied.is_ok() {
            removed.map_err(|e| Error::io("removing", &staging, e))?;
            crate::fsutil::fsync_dir(&dir)?;
        }
        if let Err(e) = self.catalog_mut().forget_job_files(job) {
            tracing::warn!("job {job}: {e}");
        }
        copied
    }
}

/// The name of the staging directory of `files get`, followed by the job id.
pub(crate) const STAGING_PREFIX: &str = ".sendense-files-";

/// `dir` as a destination of `files get`: an existing directory of this user that no one else
/// may write to (a link to one is not followed), or — with `create` — a new one, 0700. Its
/// real path.
fn destination(dir: &Path, create: bool) -> Result<PathBuf> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) => {
            let me = nix::unistd::geteuid().as_raw();
            if !meta.is_dir() {
                return Err(Error::refused(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            if meta.uid() != me || meta.mode() & 0o022 != 0 {
                return Err(Error::refused(format!(
                    "{} may be written by others (owner {}, mode {:o})",
                    dir.display(),
                    meta.uid(),
                    meta.mode() & 0o7777
                ))
                .with_help(
                    "Copy into a directory only you can write to, or a new one (made 0700).",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io("creating", dir, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading", dir, e)),
    }
    std::fs::canonicalize(dir).or_else(|e| {
        if create {
            Err(Error::io("resolving", dir, e))
        } else {
            Ok(dir.to_path_buf())
        }
    })
}

/// Each path resolved (its last link not followed), with the name its copy gets.
fn sources(m: &MountedBackup, paths: &[String]) -> Result<Vec<(PathBuf, PathBuf)>> {
    paths
        .iter()
        .map(|p| {
            let src = resolve(m, p, false)?;
            // A whole partition (`p1`) is named after it, as its mount point is.
            let name = src
                .file_name()
                .map(PathBuf::from)
                .ok_or_else(|| Error::invalid(format!("`{p}` names no file or directory")))?;
            Ok((src, name))
        })
        .collect()
}

/// `path` resolved inside its partition of `m`: the partition's mount point and the path below
/// it, every link but the last followed (the last too with `follow`).
fn resolve(m: &MountedBackup, path: &str, follow: bool) -> Result<PathBuf> {
    let bad = |why: &str| {
        Error::invalid(format!("`{path}`: {why}"))
            .with_help("Name files as PARTITION/path (see `sendense files ls BACKUP --disk KEY`).")
    };
    let mut parts = path.split('/').filter(|c| !c.is_empty() && *c != ".");
    let partition = parts.next().ok_or_else(|| bad("no partition named"))?;
    let root = m
        .info()
        .partitions
        .iter()
        .find(|p| p.partition.name == partition)
        .ok_or_else(|| {
            let names: Vec<&str> = m
                .info()
                .partitions
                .iter()
                .map(|p| p.partition.name.as_str())
                .collect();
            Error::not_found(format!(
                "disk {} of backup {} has no partition `{partition}` (it has: {})",
                m.info().disk,
                m.info().backup,
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ))
        })?;
    let root = root.path.clone().ok_or_else(|| {
        Error::refused(format!(
            "partition `{partition}` is not mounted: {}",
            root.reason.clone().unwrap_or_default()
        ))
    })?;
    let mut todo: Vec<String> = parts.map(String::from).collect();
    if todo.iter().any(|c| c == "..") {
        return Err(bad("`..` is not allowed"));
    }
    todo.reverse();
    let mut at = root.clone();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            if at != root {
                at.pop();
            }
            continue;
        }
        let next = at.join(&c);
        let last = todo.is_empty();
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(format!(
                    "`{path}` is not in disk {} of backup {}",
                    m.info().disk,
                    m.info().backup
                )))
            }
            Err(e) => return Err(Error::io("reading", &next, e)),
        };
        if meta.file_type().is_symlink() && (!last || follow) {
            hops += 1;
            if hops > MAX_LINKS {
                return Err(bad("too many symbolic links"));
            }
            let target = std::fs::read_link(&next).map_err(|e| Error::io("reading", &next, e))?;
            // The link resolves inside the partition: an absolute target from its root.
            if target.is_absolute() {
                at = root.clone();
            }
            for part in target.components().rev() {
                match part {
                    Component::Normal(n) => todo.push(n.to_string_lossy().into_owned()),
                    Component::ParentDir => todo.push("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        at = next;
    }
    Ok(at)
}

/// The path `p` (a path on the mount) names for the user: `PARTITION/...`.
fn shown(m: &MountedBackup, p: &Path) -> String {
    p.strip_prefix(&m.info().dir)
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_string_lossy().into_owned())
}

fn kind(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else {
        "file"
    }
}

fn entry(m: &MountedBackup, p: &Path) -> Result<FileEntry> {
    let meta = std::fs::symlink_metadata(p).map_err(|e| Error::io("reading", p, e))?;
    Ok(FileEntry {
        path: shown(m, p),
        kind: kind(meta.file_type()),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.len(),
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        target: meta
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(p).ok())
            .flatten()
            .map(|t| t.to_string_lossy().into_owned()),
    })
}

fn list(m: &MountedBackup, path: &str) -> Result<Vec<FileEntry>> {
    let at = resolve(m, path, true)?;
    let meta = std::fs::symlink_metadata(&at).map_err(|e| Error::io("reading", &at, e))?;
    if !meta.is_dir() {
        return Ok(vec![entry(m, &at)?]);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(&at)
        .map_err(|e| Error::io("reading", &at, e))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("reading", &at, e))?;
    names.sort();
    names.iter().map(|p| entry(m, p)).collect()
}

fn tar_get(
    m: &MountedBackup,
    paths: &[String],
    out: &mut dyn Write,
    cancel: &CancellationToken,
    got: &mut FilesGot,
) -> Result<()> {
    let sources = sources(m, paths)?;
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut links = HashMap::new();
    for (src, name) in &sources {
        tar_tree(&mut tar, src, name, &mut links, cancel, got)?;
    }
    tar.finish()
        .map_err(|e| Error::new(ErrorKind::Io, format!("writing the tar stream: {e}")))
}

/// The names in directory `dir`, sorted.
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("reading", dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io("reading", dir, e))?;
    names.sort();
    Ok(names)
}

/// Copies trees with their metadata.
struct Copier<'a> {
    /// Files with more than one link: (device, inode) → where the first copy went.
    links: HashMap<(u64, u64), PathBuf>,
    cancel: &'a CancellationToken,
    got: &'a mut FilesGot,
}

impl Copier<'_> {
    fn copy(&mut self, src: &Path, dest: &Path) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, "cancelled"));
        }
        let meta = std::fs::symlink_metadata(src).map_err(|e| Error::io("reading", src, e))?;
        let t = meta.file_type();
        let exists = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::refused(format!("{} exists already", dest.display()))
                    .with_help("Copy into an empty directory, or remove what is there.")
            } else {
                Error::io("creating", dest, e)
            }
        };
        if !t.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, dest).map_err(exists)?;
                self.got.entries += 1;
                return Ok(());
            }
            self.links
                .insert((meta.dev(), meta.ino()), dest.to_path_buf());
        }
        if t.is_dir() {
            std::fs::create_dir(dest).map_err(exists)?;
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("setting the mode of", dest, e))?;
            for n in sorted_names(src)? {
                self.copy(&src.join(&n), &dest.join(&n))?;
            }
        } else if t.is_symlink() {
            let target = std::fs::read_link(src).map_err(|e| Error::io("reading", src, e))?;
            std::os::unix::fs::symlink(&target, dest).map_err(exists)?;
        } else if t.is_file() {
            self.got.bytes += copy_sparse(src, dest, meta.len()).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => exists(e),
                _ => Error::io("copying", src, e),
            })?;
        } else if t.is_fifo() {
            nix::unistd::mkfifo(dest, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| exists(std::io::Error::from(e)))?;
        } else {
            // A device node of the backup would be one of the hub's devices here; a socket
            // is nothing without its server.
            self.got.skipped.push(format!(
                "{}: {}",
                src.display(),
                if t.is_socket() {
                    "a socket"
                } else {
                    "a device node (not made on this host; `--to -` keeps it in the tar stream)"
                }
            ));
            return Ok(());
        }
        set_metadata(dest, &meta)?;
        self.got.entries += 1;
        Ok(())
    }
}

/// Copies `size` bytes of `src` to the new file `dest`, reading only its data (holes stay
/// holes); the bytes of data copied.
fn copy_sparse(src: &Path, dest: &Path, size: u64) -> std::io::Result<u64> {
    use nix::unistd::{lseek, Whence};
    let mut from = std::fs::File::open(src)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)?;
    let mut copied = 0u64;
    let mut pos: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    let end = i64::try_from(size).unwrap_or(i64::MAX);
    while pos < end {
        // SEEK_DATA fails with ENXIO past the last data; a filesystem without it has none.
        let data = match lseek(&from, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(_) => pos,
        };
        let hole = lseek(&from, data, Whence::SeekHole).unwrap_or(end);
        from.seek(SeekFrom::Start(data as u64))?;
        out.seek(SeekFrom::Start(data as u64))?;
        let mut left = (hole.min(end) - data).max(0) as u64;
        while left > 0 {
            let want = left.min(buf.len() as u64) as usize;
            let n = from.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            left -= n as u64;
            copied += n as u64;
        }
        pos = hole.max(data + 1);
    }
    out.set_len(size)?;
    Ok(copied)
}

/// Owner, then mode, then times of `dest` as `meta` has them (links: owner and times only).
fn set_metadata(dest: &Path, meta: &std::fs::Metadata) -> Result<()> {
    std::os::unix::fs::lchown(dest, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| Error::io("setting the owner of", dest, e))?;
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::io("setting the mode of", dest, e))?;
    }
    let time = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dest,
        &time(meta.atime(), meta.atime_nsec()),
        &time(meta.mtime(), meta.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::io("setting the times of", dest, std::io::Error::from(e)))
}

/// Appends `src` (named `name` in the archive) and everything below it.
fn tar_tree(
    tar: &mut tar::Builder<&mut dyn Write>,
    src: &Path,
    name: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    cancel: &CancellationToken,
    got: &mut FilesGot,
) -> Result<()> {
    if cancel.is_cancelled() {
        return Err(Error::new(ErrorKind::Cancelled, "cancelled"));
    }
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("writing the tar stream: {e}"));
    let meta = std::fs::symlink_metadata(src).map_err(|e| Error::io("reading", src, e))?;
    let t = meta.file_type();
    if t.is_socket() {
        got.skipped.push(format!("{}: a socket", src.display()));
        return Ok(());
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if !t.is_dir() && meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            tar.append_link(&mut header, name, first).map_err(io)?;
            got.entries += 1;
            return Ok(());
        }
        links.insert((meta.dev(), meta.ino()), name.to_path_buf());
    }
    if t.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| Error::io("reading", src, e))?;
        header.set_size(0);
        tar.append_link(&mut header, name, &target).map_err(io)?;
    } else if t.is_file() {
        let file = std::fs::File::open(src).map_err(|e| Error::io("opening", src, e))?;
        tar.append_data(&mut header, name, file).map_err(io)?;
        got.bytes += meta.len();
    } else if t.is_dir() {
        header.set_size(0);
        tar.append_data(&mut header, name, std::io::empty())
            .map_err(io)?;
        for n in sorted_names(src)? {
            tar_tree(tar, &src.join(&n), &name.join(&n), links, cancel, got)?;
        }
    } else {
        // FIFOs and device nodes: the header says it all.
        header.set_size(0);
        header
            .set_device_major(nix::sys::stat::major(meta.rdev()) as u32)
            .map_err(io)?;
        header
            .set_device_minor(nix::sys::stat::minor(meta.rdev()) as u32)
            .map_err(io)?;
        tar.append_data(&mut header, name, std::io::empty())
            .map_err(io)?;
    }
    got.entries += 1;
    Ok(())
}
