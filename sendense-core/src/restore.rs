//! Restore: a disk as it was at a backup, materialised as a standalone image (no backing chain,
//! thin: holes stay holes) or written into an NBD target, through the same copy engine as
//! backups. The chain is read directly ([`crate::repo::chain_read`]; qemu-nbd serves it instead
//! when an image has a layout only QEMU reads). A raw file target is written directly, a QCOW2
//! one is created by `qemu-img create` and written through qemu-nbd; either is `<file>.partial`
//! until it is complete, then renamed — a failed restore leaves no file behind, and an existing
//! file is only replaced with `force`.
//!
//! The restore is a job (cancellable with `job cancel`) holding shared locks on the backup and
//! the chain below it, so none of them is deleted while it reads. Every `.partial` file is
//! recorded in the catalog before it is created: should the process die, the reconciliation
//! removes it.

use crate::catalog::{BackupRecord, JobKind, Listen};
use crate::error::{Error, Result};
use crate::export::{ExportSpec, RunningExport};
use crate::nbd::NbdUrl;
use crate::sendense::Sendense;
use crate::transfer::{self, CopyRequest};
use serde::Serialize;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Image format of a restored file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// QCOW2 without backing file.
    #[default]
    Qcow2,
    /// A sparse raw file.
    Raw,
}

impl ImageFormat {
    /// `qcow2` or `raw`.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }
}

/// Where restored disks go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTo {
    /// One file (one disk).
    File(PathBuf),
    /// A directory: `<vm>-disk-<key>.<format>` per disk.
    Dir(PathBuf),
    /// An NBD export (one disk), e.g. a VM's disk.
    Nbd(NbdUrl),
}

/// What to restore.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Backup id.
    pub backup: String,
    /// Disk keys; `None` restores every disk.
    pub disks: Option<Vec<u32>>,
    /// Destination.
    pub to: RestoreTo,
    /// File format.
    pub format: ImageFormat,
    /// Replace existing files.
    pub force: bool,
    /// Check every block read against the digests its chain recorded (the default); a block
    /// that differs fails the restore, naming backup, disk and offset.
    pub verify: bool,
}

/// One restored disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoredDisk {
    /// Disk key.
    pub key: u32,
    /// Where it went.
    pub to: String,
    /// Bytes read from the backup.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Seconds.
    pub seconds: f64,
    /// Read throughput.
    pub mib_per_sec: f64,
    /// Bytes whose digests were checked: every byte read and every range of zeroes, less
    /// [`RestoredDisk::bytes_unchecked`]; 0 without verification.
    pub bytes_verified: u64,
    /// Bytes no record could decide: blocks of backups whose digests record no zero writes
    /// (made before Sendense recorded them), where a newer backup has no record.
    pub bytes_unchecked: u64,
}

/// What a restore did. Also the `restore --json` summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Backup id.
    pub backup: String,
    /// VM.
    pub vm: String,
    /// Job id.
    pub job: i64,
    /// Format of restored files.
    pub format: ImageFormat,
    /// False when the restore was asked not to check the digests (`--no-verify`).
    pub verified: bool,
    /// Per disk.
    pub disks: Vec<RestoredDisk>,
}

/// Selects the disks of `backup`; an unknown key is `NotFound` with the valid keys.
pub fn select_disks(
    backup: &BackupRecord,
    keys: Option<&[u32]>,
) -> Result<Vec<crate::catalog::BackupDiskRecord>> {
    let valid: Vec<String> = backup.disks.iter().map(|d| d.key.to_string()).collect();
    match keys {
        None => Ok(backup.disks.clone()),
        Some(keys) => keys
            .iter()
            .map(|k| {
                backup
                    .disks
                    .iter()
                    .find(|d| d.key == *k)
                    .cloned()
                    .ok_or_else(|| {
                        Error::not_found(format!("backup {} has no disk {k}", backup.id))
                            .with_help(format!("Its disks are: {}.", valid.join(", ")))
                    })
            })
            .collect(),
    }
}

struct Plan {
    key: u32,
    /// The disk's size as the backup recorded it.
    size: u64,
    /// Checks every block against the chain's records (unless `--no-verify`).
    check: Option<std::sync::Arc<crate::repo::chain_check::ChainCheck>>,
    source: Source,
    target: Target,
}

/// Where a disk's restore reads.
enum Source {
    /// Its chain, read directly (see [`crate::repo::chain_read`]).
    Chain(std::sync::Arc<crate::repo::chain_read::ChainReader>),
    /// qemu-nbd serving its chain, for images with a layout only QEMU reads.
    Export(Box<RunningExport>),
}

enum Target {
    File {
        partial: PathBuf,
        dest: PathBuf,
        /// A QCOW2 file is written through qemu-nbd ...
        export: Option<Box<RunningExport>>,
        /// ... a raw file directly.
        local: Option<std::sync::Arc<transfer::LocalFile>>,
    },
    Nbd(NbdUrl),
}

impl Sendense {
    /// Shared locks on backup `id` and its chain, then the backup as it is now: refused unless
    /// it is completed (a backup being written or deleted is not read).
    pub(crate) fn read_backup(
        &self,
        id: &str,
    ) -> Result<(BackupRecord, crate::lock::BackupReadLocks)> {
        self.catalog().backup(id)?;
        let locks = crate::lock::BackupReadLocks::acquire(
            self.state_dir(),
            &self.catalog().chain_ids(id)?,
        )?;
        let backup = self.catalog().backup(id)?;
        // An expired backup (kept until its locks end) restores as long as it is there.
        if backup.status != "completed" && backup.status != "expired" {
            return Err(Error::refused(format!(
                "backup {} is {}, not completed",
                backup.id, backup.status
            )));
        }
        // A link being removed (a merge or a delete the next command finishes) may already
        // have given its data to this backup's images while the catalog still names it.
        for link in self.catalog().chain_ids(id)? {
            if link != backup.id && self.catalog().backup(&link)?.status == "deleting" {
                return Err(Error::busy(format!(
                    "backup {link}, in the chain of backup {id}, is being removed"
                ))
                .with_help("Run `sendense cleanup` to finish its removal, then try again."));
            }
        }
        Ok((backup, locks))
    }

    /// Refuses to read disk `key` of backup `id` through a chain that is not as recorded: QEMU
    /// would follow the images' own backing names, and a rewired, resized or missing link
    /// would give another disk than the backup's.
    pub(crate) fn refuse_broken_chain(&self, id: &str, key: u32) -> Result<()> {
        let links = self.catalog().disk_chain(id, key)?;
        // A link reached through a link out of the repository is refused (exit 5) before it is
        // looked at; a chain that is damaged fails (exit 1).
        for link in &links {
            crate::repo::chain::check_inside(&link.repo, &link.file)?;
        }
        let problems = crate::repo::chain::chain_problems(&links);
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            crate::ErrorKind::External,
            format!(
                "disk {key} of backup {id} cannot be read as it was backed up: {}",
                problems.join("; ")
            ),
        )
        .with_help(format!(
            "Run `sendense backup verify {id}` for the whole picture; restore from another backup or repository."
        )))
    }

    /// Refuses `dest` (a file or directory a restore would write) inside a registered
    /// repository or the state directory: a restore never overwrites a backup or the catalog.
    pub(crate) fn refuse_protected_destination(&self, dest: &Path) -> Result<()> {
        let real = crate::fsutil::resolve_existing_prefix(dest)?;
        let state = std::fs::canonicalize(self.state_dir())
            .map_err(|e| Error::io("resolving", self.state_dir(), e))?;
        let mut protected = vec![("the state directory".to_string(), state)];
        for r in self.catalog().repos()? {
            protected.push((format!("repository `{}`", r.name), r.path));
        }
        for (what, root) in protected {
            if real.starts_with(&root) {
                return Err(Error::refused(format!(
                    "{} is inside {what} ({})",
                    dest.display(),
                    root.display()
                ))
                .with_help("Restore to a path outside repositories and the state directory."));
            }
        }
        Ok(())
    }

    /// Restores disks of a backup; `cancel` (or `job cancel`) stops it cleanly.
    pub fn restore(
        &mut self,
        req: &RestoreRequest,
        cancel: CancellationToken,
    ) -> Result<RestoreReport> {
        self.restore_backup(req, cancel)
            .map_err(|e| self.with_copies_elsewhere(&req.backup, e))
    }

    fn restore_backup(
        &mut self,
        req: &RestoreRequest,
        cancel: CancellationToken,
    ) -> Result<RestoreReport> {
        let (backup, _locks) = self.read_backup(&req.backup)?;
        let disks = select_disks(&backup, req.disks.as_deref())?;
        // A chain in a bucket is checked as it is opened (see `prepare_disk`).
        for d in disks.iter().filter(|_| !backup.in_s3()) {
            self.refuse_broken_chain(&backup.id, d.key)?;
        }
        if matches!(req.to, RestoreTo::File(_) | RestoreTo::Nbd(_)) && disks.len() != 1 {
            return Err(Error::invalid(format!(
                "backup {} has {} disks; restoring more than one needs a directory",
                backup.id,
                disks.len()
            ))
            .with_help("Pass --disk KEY, or --all with --to DIR."));
        }
        match &req.to {
            RestoreTo::File(f) => {
                crate::fsutil::require_utf8("restore destination", f)?;
                self.refuse_protected_destination(f)?
            }
            RestoreTo::Dir(d) => {
                crate::fsutil::require_utf8("restore destination", d)?;
                self.refuse_protected_destination(d)?
            }
            RestoreTo::Nbd(_) => {}
        }
        let job = self.begin_job(
            JobKind::Restore,
            Some(&backup.vm),
            Some(&backup.repo),
            cancel,
        )?;
        let mut plans: Vec<Plan> = Vec::new();
        let mut result = self.restore_inner(&backup, &disks, req, &job, &mut plans);
        // Whatever happened: every export goes, a failed file target goes. Files are published
        // only once every export is gone, and their new names are made durable: a crash right
        // after the restore must not leave only the `.partial` files (which cleanup removes).
        let mut files = Vec::new();
        // A restore point found not as backed up is marked damaged: nothing builds on it.
        let damage = plans
            .iter()
            .find_map(|p| p.check.as_ref().and_then(|c| c.failure()));
        if let Some(why) = damage {
            if let Err(e) = self
                .catalog_mut()
                .set_damaged(&backup.id, Some(&format!("a restore found {why}")))
            {
                tracing::warn!("backup {}: {e}", backup.id);
            }
        }
        for p in plans {
            if let Source::Export(e) = p.source {
                let _ = self.stop_export(*e);
            }
            if let Target::File {
                partial,
                dest,
                export,
                ..
            } = p.target
            {
                if let Some(e) = export {
                    if let Err(e) = self.stop_export(*e) {
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
                // A raw file is cut to the disk's own size (the chain reads whole 512-byte
                // sectors); either is made durable before it is published.
                if result.is_ok() {
                    let synced = match req.format {
                        ImageFormat::Raw => exact_size(&partial, p.size),
                        ImageFormat::Qcow2 => std::fs::File::open(&partial)
                            .and_then(|f| f.sync_all())
                            .map_err(|e| Error::io("syncing", &partial, e)),
                    };
                    if let Err(e) = synced {
                        result = Err(e);
                    }
                }
                files.push((partial, dest));
            }
        }
        for (partial, dest) in files {
            if result.is_ok() {
                let published = std::fs::rename(&partial, &dest)
                    .map_err(|e| Error::io("moving the restored image to", &dest, e))
                    .and_then(|_| {
                        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
                        crate::fsutil::fsync_dir(dir.unwrap_or(Path::new(".")))
                    });
                crate::crash::point("restore.published");
                if let Err(e) = published {
                    result = Err(e);
                }
            }
            if result.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
        }
        // Published or removed: nothing is left for the reconciliation.
        if let Err(e) = self.catalog_mut().forget_job_files(job.id) {
            tracing::warn!("job {}: {e}", job.id);
        }
        let _ = std::fs::remove_dir_all(self.job_scratch(job.id));
        let report = result.map(|disks| RestoreReport {
            backup: backup.id.clone(),
            vm: backup.vm.clone(),
            job: job.id,
            format: req.format,
            verified: req.verify,
            disks,
        });
        self.end_job(job, report)
            .map_err(|e| e.context(format!("restore of backup {}", backup.id)))
    }

    fn restore_inner(
        &mut self,
        backup: &BackupRecord,
        disks: &[crate::catalog::BackupDiskRecord],
        req: &RestoreRequest,
        job: &crate::jobs::JobRun,
        plans: &mut Vec<Plan>,
    ) -> Result<Vec<RestoredDisk>> {
        let scratch = self.job_scratch(job.id);
        crate::fsutil::create_private_dir(&scratch)?;
        for d in disks {
            self.prepare_disk(backup, d, req, job.id, &scratch, plans)?;
        }
        let requests = self.copy_requests(plans, job.id)?;
        let reports = self.run_copies(requests, &job.cancel)?;
        Ok(restored_disks(reports, plans))
    }

    /// One disk's restore, made ready: its destination decided (and refused) before anything
    /// starts, the chain's records opened (unless `--no-verify`), the chain served read-only,
    /// and a file target created as `<file>.partial` (recorded first) and served writable. What
    /// was started is in `plans` (for the caller to stop) even when a later part fails.
    fn prepare_disk(
        &mut self,
        backup: &BackupRecord,
        d: &crate::catalog::BackupDiskRecord,
        req: &RestoreRequest,
        job: i64,
        scratch: &Path,
        plans: &mut Vec<Plan>,
    ) -> Result<()> {
        let copy = self.config().copy;
        if !backup.in_s3() && !d.file.is_file() {
            return Err(Error::not_found(format!(
                "the image of disk {} ({}) is missing",
                d.key,
                d.file.display()
            ))
            .with_help("Run `sendense backup verify` to check the chain."));
        }
        // Where the disk goes, decided (and refused) before anything is started.
        let dest = match &req.to {
            RestoreTo::Nbd(_) => None,
            RestoreTo::File(f) => Some(f.clone()),
            RestoreTo::Dir(dir) => Some(dir.join(format!(
                "{}-disk-{}.{}",
                backup.vm,
                d.key,
                req.format.as_str()
            ))),
        };
        if let Some(dest) = dest.as_ref().filter(|p| p.exists() && !req.force) {
            return Err(Error::refused(format!("{} exists", dest.display()))
                .with_help("Choose another path, or pass --force to replace it."));
        }
        // A chain in a bucket is read by range, checked against its packed digest files.
        let bucket = if backup.in_s3() {
            let client = self.s3_client_of(backup)?;
            let links = self.bucket_links(&backup.id, d.key)?;
            let (reader, check) =
                crate::repo::s3::chain::open_chain(&client, d.key, &links, req.verify)?;
            Some((reader, check))
        } else {
            None
        };
        // The records every block is checked against, themselves checked first.
        let links = self.catalog().disk_chain(&backup.id, d.key)?;
        let (bucket, check) = match bucket {
            Some((reader, check)) => (Some(reader), check.map(std::sync::Arc::new)),
            None if req.verify => (
                None,
                Some(std::sync::Arc::new(
                    crate::repo::chain_check::ChainCheck::open(d.key, &links)?,
                )),
            ),
            None => (None, None),
        };
        // Served on sockets in the job's scratch directory, one connection more than the copy
        // uses.
        let served = |file: &Path, format: &str, name: String, read_only: bool| ExportSpec {
            format: format.into(),
            listen: Listen::Socket(scratch.join(format!("{name}.sock"))),
            read_only,
            ..ExportSpec::target(
                file.to_path_buf(),
                name,
                (0, 0),
                copy.connections + 1,
                Some(job),
            )
        };
        // The chain is read directly, unless an image has a layout only QEMU reads.
        let files: Vec<&Path> = links.iter().map(|l| l.file.as_path()).collect();
        let opened = match bucket {
            Some(reader) => Some(reader),
            None => crate::repo::chain_read::ChainReader::open(&files)?,
        };
        let source = match opened {
            Some(reader) => Source::Chain(std::sync::Arc::new(reader)),
            None => Source::Export(Box::new(self.start_export(&served(
                &d.file,
                "qcow2",
                format!("restore-{}", d.key),
                true,
            ))?)),
        };
        let target = match (&req.to, dest) {
            (RestoreTo::Nbd(url), _) => Ok(Target::Nbd(url.clone())),
            (_, None) => return Err(Error::internal("a file restore without a destination")),
            (_, Some(dest)) => {
                if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    crate::fsutil::create_private_dir(parent)?;
                }
                let partial = partial_path(&dest);
                let _ = std::fs::remove_file(&partial);
                self.catalog_mut().add_job_file(job, &partial)?;
                if req.format == ImageFormat::Raw {
                    // A raw file is written directly: thin, as qemu-img would make it.
                    let (local, failed) =
                        // As long as the chain reads (whole sectors), cut to the disk's own
                        // size once written.
                        match transfer::LocalFile::create(
                            &partial,
                            d.size_bytes.div_ceil(512) * 512,
                        ) {
                            Ok(f) => (Some(std::sync::Arc::new(f)), None),
                            Err(e) => (None, Some(e)),
                        };
                    crate::crash::point("restore.partial-created");
                    plans.push(Plan {
                        key: d.key,
                        size: d.size_bytes,
                        check,
                        source,
                        target: Target::File {
                            partial,
                            dest,
                            export: None,
                            local,
                        },
                    });
                    return failed.map_or(Ok(()), Err);
                }
                crate::tools::run(
                    crate::tools::QEMU_IMG,
                    [
                        "create",
                        "-q",
                        "-f",
                        req.format.as_str(),
                        &partial.to_string_lossy(),
                        &d.size_bytes.to_string(),
                    ],
                )?;
                crate::crash::point("restore.partial-created");
                // Only its owner may read a restored disk (as a raw one is made).
                std::fs::set_permissions(
                    &partial,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .map_err(|e| Error::io("setting the mode of", &partial, e))?;
                let mut target = Target::File {
                    partial: partial.clone(),
                    dest,
                    export: None,
                    local: None,
                };
                // qemu-nbd hands everything to the kernel without ordering flushes; the file is
                // synced once the export stopped, and removed unless the restore completes.
                let export = self.start_export(&ExportSpec {
                    skip_flushes: true,
                    ..served(
                        &partial,
                        req.format.as_str(),
                        format!("target-{}", d.key),
                        false,
                    )
                });
                match export {
                    Ok(e) => {
                        if let Target::File { export, .. } = &mut target {
                            *export = Some(Box::new(e));
                        }
                        Ok(target)
                    }
                    // The plan is kept either way: what it started is undone with the others.
                    Err(e) => Err((e, target)),
                }
            }
        };
        let (target, failed) = match target {
            Ok(t) => (t, None),
            Err((e, t)) => (t, Some(e)),
        };
        plans.push(Plan {
            key: d.key,
            size: d.size_bytes,
            check,
            source,
            target,
        });
        failed.map_or(Ok(()), Err)
    }

    /// The copy request of each prepared disk.
    fn copy_requests(&self, plans: &[Plan], job: i64) -> Result<Vec<CopyRequest>> {
        let copy = self.config().copy;
        let mut requests = Vec::new();
        for p in plans {
            let (dst, fresh) = match &p.target {
                Target::Nbd(url) => (url.clone(), false),
                Target::File {
                    local: Some(_),
                    partial,
                    ..
                } => (NbdUrl::unix(partial, ""), true),
                Target::File { export, .. } => (
                    export
                        .as_ref()
                        .map(|e| e.url.clone())
                        .ok_or_else(|| Error::internal("target export missing"))?,
                    true,
                ),
            };
            let src = match &p.source {
                Source::Export(e) => e.url.clone(),
                // Only named in messages: the copy reads the chain itself.
                Source::Chain(r) => NbdUrl::unix(Path::new(r.name()), ""),
            };
            let mut r = CopyRequest::new(src, dst);
            if let Source::Chain(reader) = &p.source {
                r.local_src = Some(reader.clone());
            }
            if let Target::File { local: Some(f), .. } = &p.target {
                r.local_dst = Some(f.clone());
            }
            r.destination_is_zero = fresh;
            r.connections = copy.connections as usize;
            r.requests = copy.requests as usize;
            r.request_size = copy.request_size as usize;
            r.disk = p.key;
            r.job = Some(job);
            r.reason = format!("to {}", r.dst_name());
            r.mode = Some(crate::event::CopyMode::Restore);
            r.expected_size = Some(p.size);
            r.check = p
                .check
                .clone()
                .map(|c| c as std::sync::Arc<dyn transfer::BlockCheck>);
            requests.push(r);
        }
        Ok(requests)
    }

    /// Every disk's copy, side by side; their reports as (key, destination, report).
    fn run_copies(
        &self,
        requests: Vec<CopyRequest>,
        cancel: &CancellationToken,
    ) -> Result<Vec<(u32, String, transfer::CopyReport)>> {
        let sink = self.sink().clone();
        let cancel = cancel.clone();
        crate::rt::block_on(async move {
            let mut set = tokio::task::JoinSet::new();
            for r in requests {
                let sink = sink.clone();
                let cancel = cancel.clone();
                set.spawn(async move {
                    transfer::copy(&r, &sink, &cancel)
                        .await
                        .map(|rep| (r.disk, r.dst.to_string(), rep))
                });
            }
            let mut out = Vec::new();
            while let Some(j) = set.join_next().await {
                out.push(j.map_err(|e| Error::internal(format!("restore task: {e}")))??);
            }
            Ok::<_, Error>(out)
        })?
    }
}

/// What each disk's restore did, by key.
fn restored_disks(
    reports: Vec<(u32, String, transfer::CopyReport)>,
    plans: &[Plan],
) -> Vec<RestoredDisk> {
    let mut disks: Vec<RestoredDisk> = reports
        .into_iter()
        .map(|(key, dst, rep)| {
            let to = plans
                .iter()
                .find(|p| p.key == key)
                .map(|p| match &p.target {
                    Target::File { dest, .. } => dest.display().to_string(),
                    Target::Nbd(u) => u.to_string(),
                })
                .unwrap_or(dst);
            let unchecked = plans
                .iter()
                .find(|p| p.key == key)
                .and_then(|p| p.check.as_ref())
                .map(|c| c.unchecked_bytes());
            RestoredDisk {
                key,
                to,
                bytes_read: rep.bytes_read,
                bytes_written: rep.bytes_written,
                seconds: rep.seconds,
                mib_per_sec: rep.mib_per_sec(),
                bytes_verified: unchecked.map_or(0, |u| rep.bytes_planned.saturating_sub(u)),
                bytes_unchecked: unchecked.unwrap_or(0),
            }
        })
        .collect();
    disks.sort_by_key(|d| d.key);
    disks
}

/// Sets `file` to exactly `size` bytes, durably.
fn exact_size(file: &Path, size: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .map_err(|e| Error::io("opening", file, e))?;
    f.set_len(size)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("sizing", file, e))
}

fn partial_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}
