//! File-level access to a restore point: `sendense mount`, `umount`, `mount list`, and the
//! mounts `files ls` / `files get` make for themselves.
//!
//! A disk of a backup is opened by `qemu-storage-daemon` through a temporary QCOW2 overlay on
//! its chain (so the kernel can replay a journal — a backup of a running VM is
//! crash-consistent — without the backup changing: every write lands in the overlay, which is
//! thrown away) and exported as one file over FUSE. Its partition table is read here (GPT or
//! MBR, see [`table`]); each partition gets a loop device limited to its extent (a loop device
//! over the whole disk would need partition scanning, which is not always there) and is
//! mounted read-only, `nodev,nosuid,noexec`, under `DIR/<partition>`: ext4, XFS, Btrfs through
//! the kernel, NTFS through `ntfs-3g`. A partition that cannot be mounted is listed with the
//! reason.
//!
//! A mount is a job holding shared locks on the chain (nothing it reads is deleted under it),
//! recorded in the catalog before anything of it exists. It ends with `sendense umount DIR`,
//! `job cancel`, a signal, or after [`crate::config::Config::mount_idle_secs`] without a read
//! and without a program using it. A killed mount process is undone by the reconciliation of
//! the next command: the filesystem mounts over its loop devices, the loop devices (found by
//! the file behind them), the FUSE export and the directories it made. The backup is never
//! written to.
//!
//! The chain under the overlay is served by Sendense itself ([`served`]): every block the
//! export reads is checked against the digests first, and a damaged one reads as an I/O
//! error — never as wrong bytes — and is reported by offset when the mount ends (the backup is
//! marked damaged). With `verify` off, or when an image has a layout only QEMU reads, the
//! overlay's backing file is the chain's top image, read by QEMU unchecked.

pub mod detach;
pub mod files;
pub mod served;
pub mod system;
pub mod table;

use crate::catalog::{JobKind, MountRecord, NewMount};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::JobRun;
use crate::lock::BackupReadLocks;
use crate::sendense::Sendense;
use crate::supervise::{ChildKind, Supervised};
use serde::Serialize;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use table::Content;
use tokio_util::sync::CancellationToken;

/// How long qemu-storage-daemon has to export the disk.
const EXPORT_START: Duration = Duration::from_secs(30);

/// How long it has to end after SIGTERM.
const EXPORT_GRACE: Duration = Duration::from_secs(10);

/// How often a mount looks at its reads and users.
const IDLE_POLL: Duration = Duration::from_secs(5);

/// Partitions mounted at most (a GPT may list 1024).
const MAX_MOUNTED: usize = 64;

/// The export file's name in the work directory.
const EXPORT_FILE: &str = "disk";

const STORAGE_DAEMON: crate::tools::Tool = crate::tools::Tool {
    program: "qemu-storage-daemon",
    package: "qemu-system-common",
};

/// What to mount.
#[derive(Debug, Clone)]
pub struct MountRequest {
    /// Backup id.
    pub backup: String,
    /// Disk key.
    pub disk: u32,
    /// Where the partitions go (`DIR/p1`, ...): an empty directory, or a new one; `None`: a
    /// private directory of the job (for `files`).
    pub dir: Option<PathBuf>,
    /// Unmount after this long unused; `None`: the configuration's; zero: never.
    pub idle: Option<Duration>,
    /// Check every block read against the digests (see [`served`]).
    pub verify: bool,
}

/// A partition of a mounted disk, and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct MountedPartition {
    /// The partition.
    #[serde(flatten)]
    pub partition: table::Partition,
    /// Where it is mounted.
    pub path: Option<PathBuf>,
    /// Why it is not.
    pub reason: Option<String>,
}

/// A mounted restore point, as `mount` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct MountInfo {
    /// Backup id.
    pub backup: String,
    /// VM.
    pub vm: String,
    /// Disk key.
    pub disk: u32,
    /// The directory.
    pub dir: PathBuf,
    /// The job serving it.
    pub job: i64,
    /// Unmounted after this many seconds unused (0: never).
    pub idle_secs: u64,
    /// The disk's partitions.
    pub partitions: Vec<MountedPartition>,
}

/// Why a mount ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountEnd {
    /// `umount`, `job cancel`, a signal, or its caller.
    Stopped,
    /// Unused for its idle time.
    Idle,
    /// The export ended on its own.
    ExportEnded,
}

/// A restore point mounted by this process; end it with [`Sendense::end_mount`].
#[derive(Debug)]
pub struct MountedBackup {
    info: MountInfo,
    row: i64,
    work: PathBuf,
    created_dir: bool,
    server: Option<Supervised>,
    /// The chain as Sendense serves it to the export, when it does.
    chain: Option<(
        crate::nbd::server::NbdServer,
        std::sync::Arc<served::ServedChain>,
    )>,
    devices: Vec<PathBuf>,
    job: JobRun,
    _locks: BackupReadLocks,
}

impl MountedBackup {
    /// What is mounted where.
    pub fn info(&self) -> &MountInfo {
        &self.info
    }

    /// Blocks until the mount is asked to end (its token, `job cancel`, `umount`), goes unused
    /// for its idle time, or its export ends.
    pub fn wait(&mut self) -> MountEnd {
        let idle = Duration::from_secs(self.info.idle_secs);
        let mut reads = self.reads();
        let mut last_use = Instant::now();
        let mut next_look = Instant::now() + IDLE_POLL;
        loop {
            if self.job.cancel.is_cancelled() {
                return MountEnd::Stopped;
            }
            if !self.server.as_ref().is_some_and(Supervised::is_alive) {
                return MountEnd::ExportEnded;
            }
            if Instant::now() >= next_look {
                next_look = Instant::now() + IDLE_POLL;
                let now = self.reads();
                if now != reads || !system::holders(&self.info.dir).is_empty() {
                    reads = now;
                    last_use = Instant::now();
                } else if !idle.is_zero() && last_use.elapsed() >= idle {
                    return MountEnd::Idle;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Reads the loop devices served so far.
    fn reads(&self) -> u64 {
        self.devices
            .iter()
            .filter_map(|d| system::loop_reads(d))
            .sum()
    }
}

impl Sendense {
    /// Mounts disk `req.disk` of backup `req.backup` read-only under `req.dir` (see the module
    /// docs) until [`Sendense::end_mount`]; `cancel` is the caller's way to end it.
    pub fn mount_backup(
        &mut self,
        req: &MountRequest,
        cancel: CancellationToken,
    ) -> Result<MountedBackup> {
        let (b, locks) = self.read_backup(&req.backup)?;
        b.require_local("mounting")?;
        let disk = crate::restore::select_disks(&b, Some(&[req.disk]))?.remove(0);
        if let Some(why) = &b.damaged {
            return Err(
                Error::refused(format!("backup {} is marked damaged ({why})", b.id)).with_help(
                    "Mount another backup, or run `sendense backup verify` to check it again.",
                ),
            );
        }
        self.refuse_broken_chain(&b.id, req.disk)?;
        if !disk.file.is_file() {
            return Err(Error::not_found(format!(
                "the image of disk {} ({}) is missing",
                req.disk,
                disk.file.display()
            ))
            .with_help("Run `sendense backup verify` to check the chain."));
        }
        if crate::mount::system::which(STORAGE_DAEMON.program).is_none() {
            return Err(STORAGE_DAEMON.missing());
        }
        let given = req.dir.as_deref().map(|d| self.mount_dir(d)).transpose()?;
        let idle = req
            .idle
            .unwrap_or(Duration::from_secs(self.config().mount_idle_secs));
        let job = match self.begin_job(JobKind::Mount, Some(&b.vm), Some(&b.repo), cancel) {
            Ok(job) => job,
            Err(e) => {
                if let Some((dir, true)) = &given {
                    let _ = std::fs::remove_dir(dir);
                }
                return Err(e);
            }
        };
        // The real path: mounts and loop devices are found again by it.
        let work = crate::fsutil::create_private_dir(&self.scratch_dir())
            .and_then(|()| {
                std::fs::canonicalize(self.scratch_dir())
                    .map_err(|e| Error::io("resolving", &self.scratch_dir(), e))
            })
            .map(|scratch| scratch.join(format!("job-{}", job.id)));
        let work = match work {
            Ok(w) => w,
            Err(e) => {
                if let Some((dir, true)) = &given {
                    let _ = std::fs::remove_dir(dir);
                }
                return self.end_job(job, Err(e));
            }
        };
        let (dir, created_dir) = given.unwrap_or_else(|| (work.join("root"), true));
        let row = match self.catalog_mut().insert_mount(&NewMount {
            job: job.id,
            backup: &b.id,
            disk: req.disk,
            dir: &dir,
            work_dir: &work,
            created_dir,
            idle_secs: idle.as_secs(),
        }) {
            Ok(row) => row,
            Err(e) => {
                if created_dir {
                    let _ = std::fs::remove_dir(&dir);
                }
                return self.end_job(job, Err(e));
            }
        };
        let mut mounted = MountedBackup {
            info: MountInfo {
                backup: b.id.clone(),
                vm: b.vm.clone(),
                disk: req.disk,
                dir: dir.clone(),
                job: job.id,
                idle_secs: idle.as_secs(),
                partitions: Vec::new(),
            },
            row: row.id,
            work,
            created_dir,
            server: None,
            chain: None,
            devices: Vec::new(),
            job,
            _locks: locks,
        };
        match self.mount_inside(&mut mounted, &disk.file, req.verify) {
            Ok(()) => Ok(mounted),
            Err(e) => {
                let chain = mounted.chain.as_ref().map(|(_, c)| c.clone());
                let (job, teardown) = self.undo_mount(mounted);
                // A damaged block met while mounting (the partition table, a superblock) is
                // the reason, named by offset.
                let e = match self.failed_reads(job.id, &b.id, chain.as_deref()) {
                    Some(found) => found.context(format!("{} — because", e.message())),
                    None => e,
                };
                let e = match teardown {
                    None => e,
                    Some(t) => e.context(format!("and undoing it: {}", t.message())),
                };
                self.end_job(job, Err(e))
            }
        }
    }

    /// `dir` made absolute and checked: an empty directory, or a new one in an existing
    /// directory; never inside a repository or the state directory. Whether it was made.
    fn mount_dir(&self, dir: &Path) -> Result<(PathBuf, bool)> {
        let abs = std::path::absolute(dir).map_err(|e| Error::io("resolving", dir, e))?;
        let name = abs.file_name().ok_or_else(|| {
            Error::invalid(format!(
                "{} names no directory to mount into",
                dir.display()
            ))
        })?;
        let parent = abs
            .parent()
            .ok_or_else(|| Error::invalid(format!("cannot mount at {}", dir.display())))?;
        let parent = std::fs::canonicalize(parent).map_err(|e| {
            Error::io("resolving", parent, e)
                .with_help("Mount into an empty directory, or a new one in an existing directory.")
        })?;
        let dir = parent.join(name);
        self.refuse_protected_destination(&dir)?;
        match std::fs::symlink_metadata(&dir) {
            // Mounted by path, as root: no one else may swap what is in it for a link.
            Ok(m)
                if m.is_dir()
                    && (m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0) =>
            {
                Err(Error::refused(format!(
                    "{} may be written by others (owner {}, mode {:o})",
                    dir.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ))
                .with_help(
                    "Mount into a directory only you can write to, or name a new one (made 0700).",
                ))
            }
            Ok(m) if m.is_dir() => {
                let mut entries =
                    std::fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))?;
                if entries.next().is_some() {
                    return Err(Error::refused(format!("{} is not empty", dir.display()))
                        .with_help("Mount into an empty directory, or name a new one."));
                }
                if system::is_mounted(&dir) {
                    return Err(Error::refused(format!(
                        "something is mounted at {} already",
                        dir.display()
                    )));
                }
                Ok((dir, false))
            }
            Ok(_) => Err(Error::refused(format!(
                "{} exists and is not a directory",
                dir.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| Error::io("creating", &dir, e))?;
                Ok((dir, true))
            }
            Err(e) => Err(Error::io("reading", &dir, e)),
        }
    }

    /// The chain of `m` served by Sendense on a socket in its work directory (see [`served`]),
    /// or `None` when an image has a layout only QEMU reads (then QEMU reads the chain itself,
    /// unchecked, and the job log says so).
    fn serve_chain(&mut self, m: &mut MountedBackup, verify: bool) -> Result<Option<PathBuf>> {
        let links = self.catalog().disk_chain(&m.info.backup, m.info.disk)?;
        let check = verify
            .then(|| crate::repo::chain_check::ChainCheck::open(m.info.disk, &links))
            .transpose()?;
        let files: Vec<&Path> = links.iter().map(|l| l.file.as_path()).collect();
        let Some(reader) = crate::repo::chain_read::ChainReader::open(&files)? else {
            let said = "an image of the chain is compressed or encrypted: qemu-storage-daemon \
                        reads the chain itself, and its blocks are not checked against the digests";
            self.job_log(m.job.id, said);
            if verify {
                tracing::warn!("disk {} of backup {}: {said}", m.info.disk, m.info.backup);
            }
            return Ok(None);
        };
        let recorded = links.first().map_or(0, |l| l.size);
        if reader.size() < recorded || reader.size() - recorded >= 512 {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "disk {} of backup {}: the image {} is {} bytes long, the backup recorded {recorded}",
                    m.info.disk,
                    m.info.backup,
                    reader.name(),
                    reader.size()
                ),
            )
            .with_help("Run `sendense backup verify` to check the chain."));
        }
        let chain = std::sync::Arc::new(served::ServedChain::new(reader, check, recorded));
        let socket = m.work.join("chain.sock");
        // A Unix socket address holds 108 bytes.
        if socket.as_os_str().len() >= 108 {
            return Err(Error::invalid(format!(
                "the scratch directory {} is too long for the Unix socket a mount serves its \
                 chain on",
                m.work.display()
            ))
            .with_help("Use a shorter state directory (--state-dir or SENDENSE_HOME)."));
        }
        let server = crate::nbd::server::NbdServer::start(&socket, chain.clone())?;
        m.chain = Some((server, chain));
        Ok(Some(socket))
    }

    /// The overlay, the export, the partitions and their mounts of `m`, whose chain top is
    /// `top`.
    fn mount_inside(&mut self, m: &mut MountedBackup, top: &Path, verify: bool) -> Result<()> {
        crate::fsutil::create_private_dir(&m.work)?;
        if m.info.dir.starts_with(&m.work) {
            crate::fsutil::create_private_dir(&m.info.dir)?;
        }
        let overlay = m.work.join("overlay.qcow2");
        let top = std::fs::canonicalize(top).map_err(|e| Error::io("resolving", top, e))?;
        let socket = self.serve_chain(m, verify)?;
        let size = m.chain.as_ref().map(|(_, c)| {
            use crate::nbd::server::ServedDisk;
            c.size().to_string()
        });
        let backing: Vec<&std::ffi::OsStr> = match &size {
            // The backing node is given to qemu-storage-daemon: the overlay names none.
            Some(size) => vec![overlay.as_os_str(), size.as_ref()],
            None => vec![
                "-F".as_ref(),
                "qcow2".as_ref(),
                "-b".as_ref(),
                top.as_os_str(),
                overlay.as_os_str(),
            ],
        };
        crate::tools::run(
            crate::tools::QEMU_IMG,
            [
                "create".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
            ]
            .into_iter()
            .chain(backing),
        )?;
        let export = m.work.join(EXPORT_FILE);
        std::fs::File::create(&export).map_err(|e| Error::io("creating", &export, e))?;
        let log_file = m.work.join("qemu-storage-daemon.log");
        let log =
            std::fs::File::create(&log_file).map_err(|e| Error::io("creating", &log_file, e))?;
        let mut cmd = std::process::Command::new(STORAGE_DAEMON.program);
        match &socket {
            Some(socket) => cmd
                .arg("--blockdev")
                .arg(format!(
                    "driver=nbd,node-name=chain,server.type=unix,server.path={},read-only=on",
                    qemu_option(socket)?
                ))
                .arg("--blockdev")
                .arg(format!(
                    "driver=qcow2,node-name=disk,file.driver=file,file.filename={},backing=chain",
                    qemu_option(&overlay)?
                )),
            None => cmd.arg("--blockdev").arg(format!(
                "driver=qcow2,node-name=disk,file.driver=file,file.filename={}",
                qemu_option(&overlay)?
            )),
        };
        cmd.arg("--export")
            .arg(format!(
                "type=fuse,id=disk,node-name=disk,mountpoint={},writable=on,allow-other=off",
                qemu_option(&export)?
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        let ledger = self.ledger(Some(m.job.id));
        let mut server = Supervised::spawn(
            cmd,
            ChildKind::StorageDaemon,
            &format!("mount of disk {} of backup {}", m.info.disk, m.info.backup),
            EXPORT_GRACE,
            Some(&ledger),
        )?;
        let deadline = Instant::now() + EXPORT_START;
        while !system::is_mounted(&export) {
            let ended = server.exited_within(Duration::from_millis(20));
            if ended || Instant::now() > deadline {
                if !ended {
                    let _ = server.stop();
                }
                let said = std::fs::read_to_string(&log_file).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "qemu-storage-daemon did not export disk {}: {}",
                        m.info.disk,
                        said.trim()
                    ),
                )
                .with_help("Mounting needs root, /dev/fuse and qemu-storage-daemon with FUSE exports (Debian: qemu-system-common)."));
            }
        }
        m.server = Some(server);
        self.job_log(
            m.job.id,
            &format!(
                "disk {} of backup {} exported at {}",
                m.info.disk,
                m.info.backup,
                export.display()
            ),
        );
        let size = std::fs::metadata(&export)
            .map_err(|e| Error::io("reading", &export, e))?
            .len();
        let file = std::fs::File::open(&export).map_err(|e| Error::io("opening", &export, e))?;
        let partitions = table::partitions(&mut table::FileDisk::new(file, size))
            .map_err(|e| Error::new(ErrorKind::External, format!("disk {}: {e}", m.info.disk)))?;
        if partitions.is_empty() {
            self.job_log(m.job.id, "no partition table and no filesystem on the disk");
        }
        for (i, p) in partitions.into_iter().enumerate() {
            if m.job.cancel.is_cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, "cancelled while mounting"));
            }
            let mounted = if i < MAX_MOUNTED {
                self.mount_partition(m, &export, &p)
            } else {
                Err(format!(
                    "only the first {MAX_MOUNTED} partitions are mounted"
                ))
            };
            let (path, reason) = match mounted {
                Ok(path) => (Some(path), None),
                Err(why) => (None, Some(why)),
            };
            self.job_log(
                m.job.id,
                &match (&path, &reason) {
                    (Some(at), _) => format!(
                        "{} ({}) mounted at {}",
                        p.name,
                        p.content.as_str(),
                        at.display()
                    ),
                    (_, Some(why)) => {
                        format!("{} ({}) not mounted: {why}", p.name, p.content.as_str())
                    }
                    _ => String::new(),
                },
            );
            m.info.partitions.push(MountedPartition {
                partition: p,
                path,
                reason,
            });
        }
        let json = serde_json::to_value(&m.info.partitions)
            .map_err(|e| Error::internal(format!("the partitions: {e}")))?;
        self.catalog_mut().set_mount_ready(m.row, &json)?;
        Ok(())
    }

    /// Mounts partition `p` of `export` at `DIR/<name>`: where, or why not.
    fn mount_partition(
        &mut self,
        m: &mut MountedBackup,
        export: &Path,
        p: &table::Partition,
    ) -> std::result::Result<PathBuf, String> {
        if matches!(
            p.content,
            Content::Swap | Content::Lvm | Content::Luks | Content::Raid | Content::Unknown
        ) {
            return Err(system::not_mountable(p.content).to_string());
        }
        if p.content == Content::Btrfs {
            // The kernel keeps one Btrfs per fsid: one of this host's would be used instead.
            if let Some(fsid) = btrfs_fsid(export, p.offset) {
                if Path::new("/sys/fs/btrfs").join(&fsid).exists() {
                    return Err(format!(
                        "this host has a Btrfs filesystem with the same id ({fsid}) mounted: \
                         restore the disk and mount it on another host"
                    ));
                }
            }
        }
        let at = m.info.dir.join(&p.name);
        std::fs::create_dir(&at).map_err(|e| format!("creating {}: {e}", at.display()))?;
        let dev = match system::loop_attach(export, p.offset, p.size) {
            Ok(dev) => dev,
            Err(e) => {
                let _ = std::fs::remove_dir(&at);
                return Err(e.to_string());
            }
        };
        m.devices.push(dev.clone());
        match system::mount_fs(&dev, p.content, &at) {
            Ok(()) => Ok(at),
            Err(e) => {
                let _ = system::loop_detach(&dev);
                m.devices.retain(|d| *d != dev);
                let _ = std::fs::remove_dir(&at);
                Err(e)
            }
        }
    }

    /// Unmounts `m` and ends its job: completed when it was stopped or went idle, failed when
    /// its export ended on its own or something of it could not be undone.
    pub fn end_mount(&mut self, m: MountedBackup, end: MountEnd) -> Result<()> {
        let what = format!("disk {} of backup {}", m.info.disk, m.info.backup);
        let backup = m.info.backup.clone();
        let chain = m.chain.as_ref().map(|(_, c)| c.clone());
        let undone = self.undo_mount(m);
        if let Some(e) = self.failed_reads(undone.0.id, &backup, chain.as_deref()) {
            let e = match undone.1 {
                None => e,
                Some(t) => e.context(format!("{} — and", t.message())),
            };
            return self.end_job(undone.0, Err(e));
        }
        match undone {
            (job, None) => {
                let result = match end {
                    MountEnd::ExportEnded => Err(Error::new(
                        ErrorKind::External,
                        "qemu-storage-daemon ended on its own; see `sendense job log`",
                    )),
                    MountEnd::Idle => {
                        self.job_log(
                            job.id,
                            &format!("unmounted {what}: unused for its idle time"),
                        );
                        Ok(())
                    }
                    MountEnd::Stopped => {
                        self.job_log(job.id, &format!("unmounted {what}"));
                        Ok(())
                    }
                };
                // Being stopped is a mount's normal end: the job completes.
                self.end_job(job, result)
            }
            (job, Some(e)) => self.end_job(job, Err(e)),
        }
    }

    /// What the reads of a mount's served `chain` met, as the error its job ends with: a block
    /// not as its backup wrote it (the backup is marked damaged, `backup` by id) or a read that
    /// failed otherwise. Logs the bytes no record could decide.
    fn failed_reads(
        &mut self,
        job: i64,
        backup: &str,
        chain: Option<&served::ServedChain>,
    ) -> Option<Error> {
        let chain = chain?;
        if chain.unchecked_bytes() > 0 {
            self.job_log(
                job,
                &format!(
                    "{} bytes read could not be checked (backups made before zero writes were recorded)",
                    chain.unchecked_bytes()
                ),
            );
        }
        let why = chain.failure()?;
        let damaged = chain.damage().is_some();
        if damaged {
            if let Err(e) = self
                .catalog_mut()
                .set_damaged(backup, Some(&format!("a mount found {why}")))
            {
                self.job_log(job, &format!("marking the backup damaged: {e}"));
            }
        }
        self.job_log(job, &format!("reads failed: {why}"));
        Some(
            Error::new(ErrorKind::External, format!("{why}; reads of it failed")).with_help(
                if damaged {
                    format!(
                        "The repository was damaged there and the backup is now marked damaged. \
                         Run `sendense backup verify {backup}`, take the files from another backup \
                         or repository, or pass --no-verify to read what the images hold."
                    )
                } else {
                    "See `sendense job log`, and `sendense backup verify` to check the chain."
                        .to_string()
                },
            ),
        )
    }

    /// Undoes everything of `m` (in order: filesystem mounts, loop devices, the export, the
    /// directories, the record); returns its job, with the error when something stays.
    fn undo_mount(&mut self, mut m: MountedBackup) -> (JobRun, Option<Error>) {
        let mut errors = teardown_mounts(&m.info.dir, &m.work, true);
        if let Some(server) = m.server.take() {
            if let Err(e) = server.stop_checked() {
                errors.push(e.to_string());
            }
        }
        // Its only reader is gone.
        m.chain = None;
        errors.extend(teardown_files(&m.info.dir, &m.work, m.created_dir));
        let MountedBackup { job, row, .. } = m;
        if errors.is_empty() {
            if let Err(e) = self.catalog_mut().delete_mount(row) {
                errors.push(e.to_string());
            }
        }
        let error = (!errors.is_empty()).then(|| {
            Error::new(
                ErrorKind::External,
                format!("unmounting left something behind: {}", errors.join("; ")),
            )
            .with_help("Run `sendense cleanup` to try again.")
        });
        (job, error)
    }

    /// Every recorded mount.
    pub fn mounts(&self) -> Result<Vec<MountRecord>> {
        self.catalog().mounts()
    }

    /// Ends the mount at `dir` (`sendense umount`): refused while a program uses it; the mount
    /// process is asked to end and waited for (one that is gone is undone here).
    pub fn unmount(&mut self, dir: &Path) -> Result<MountRecord> {
        let abs = std::path::absolute(dir).map_err(|e| Error::io("resolving", dir, e))?;
        let real = std::fs::canonicalize(&abs).unwrap_or(abs);
        let rec = self.catalog().mount_at(&real)?.ok_or_else(|| {
            Error::not_found(format!("no backup is mounted at {}", real.display()))
                .with_help("See `sendense mount list`.")
        })?;
        let users = system::holders(&rec.dir);
        if !users.is_empty() {
            let named: Vec<String> = users
                .iter()
                .map(|(pid, name)| format!("{name} (pid {pid})"))
                .collect();
            return Err(Error::busy(format!(
                "{} is in use by {}",
                rec.dir.display(),
                named.join(", ")
            ))
            .with_help("Leave the directory (cd elsewhere) and close what is open there, then run umount again."));
        }
        if rec.owner().is_alive() {
            self.catalog_mut().request_cancel(rec.job)?;
            let deadline = Instant::now() + Duration::from_secs(120);
            while self.catalog().mount_at(&rec.dir)?.is_some() {
                if !rec.owner().is_alive() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::new(
                        ErrorKind::External,
                        format!(
                            "the mount process (pid {}) did not end within 120 s",
                            rec.owner_pid
                        ),
                    )
                    .with_help("See `sendense job log JOB`; `sendense cleanup` undoes what a stopped mount left."));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.catalog().mount_at(&rec.dir)?.is_none() {
                return Ok(rec);
            }
        }
        // Its process is gone: undo what it left.
        let errors = release_mount(&rec);
        if !errors.is_empty() {
            return Err(Error::new(
                ErrorKind::External,
                format!("unmounting {}: {}", rec.dir.display(), errors.join("; ")),
            ));
        }
        self.catalog_mut().delete_mount(rec.id)?;
        Ok(rec)
    }
}

/// The fsid of the Btrfs at `offset` of `export`, as the kernel names it in /sys/fs/btrfs.
fn btrfs_fsid(export: &Path, offset: u64) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mut id = [0u8; 16];
    std::fs::File::open(export)
        .ok()?
        .read_exact_at(&mut id, offset.checked_add(0x10020)?)
        .ok()?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// A path as a value of a QEMU option (`,` doubles); refused when it holds a character
/// QEMU's option syntax cannot carry.
fn qemu_option(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .filter(|t| !t.contains(['\n', '\0']))
        .ok_or_else(|| Error::invalid(format!("{} is not a path QEMU can take", path.display())))?;
    Ok(text.replace(',', ",,"))
}

/// Unmounts what is mounted at `dir/<name>` from a loop device over a file in `work`, then
/// detaches those loop devices (busy mounts lazily when `lazy`). Errors as text.
fn teardown_mounts(dir: &Path, work: &Path, lazy: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let loops = system::loops_in(work);
    let ours = |source: &str| loops.iter().any(|(dev, _)| Path::new(source) == dev);
    // Only where Sendense's mount is the topmost one: `umount` takes the topmost.
    let mut top: Vec<system::MountEntry> = Vec::new();
    for m in system::mounts() {
        top.retain(|t| t.target != m.target);
        top.push(m);
    }
    for m in top {
        if m.target.parent() == Some(dir) && ours(&m.source) {
            if let Err(e) = system::unmount(&m.target, lazy) {
                errors.push(format!("{}: {e}", m.target.display()));
            }
        }
    }
    for (dev, _) in &loops {
        if let Err(e) = system::loop_detach(dev) {
            errors.push(format!("{}: {e}", dev.display()));
        }
    }
    errors
}

/// The export file unmounted when its daemon left it mounted, the partition directories and
/// `dir` itself (when it was made) removed when empty, and the work directory removed.
fn teardown_files(dir: &Path, work: &Path, created_dir: bool) -> Vec<String> {
    let mut errors = Vec::new();
    let export = work.join(EXPORT_FILE);
    if system::is_mounted(&export) {
        if let Err(e) = system::unmount(&export, true) {
            errors.push(format!("{}: {e}", export.display()));
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name == "disk"
                || name
                    .strip_prefix('p')
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if ours && !system::is_mounted(&e.path()) {
                // Only an empty directory goes: a mount that stayed keeps it.
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
    if created_dir {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
        }
    }
    match std::fs::remove_dir_all(work) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("removing {}: {e}", work.display())),
    }
    errors
}

/// Undoes what the dead process of mount `rec` left (its export's daemon died with it, or is
/// stopped by the reconciliation of children): the mounts, the loop devices, the stale export,
/// the directories. Errors as text.
pub(crate) fn release_mount(rec: &MountRecord) -> Vec<String> {
    let mut errors = teardown_mounts(&rec.dir, &rec.work_dir, true);
    errors.extend(teardown_files(&rec.dir, &rec.work_dir, rec.created_dir));
    errors
}
