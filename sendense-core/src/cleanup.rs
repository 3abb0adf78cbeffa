//! Reconciliation: what a dead sendense process left behind is found and removed.
//!
//! Guarantees, whatever killed the process (an error, Ctrl-C, SIGKILL at any instant, a reboot
//! of the hub):
//!
//! - a job left `pending`/`running` by a process that is gone ends `failed` with the reason;
//! - the backup it was writing is discarded — catalog rows, `.partial` and renamed images,
//!   digest files, the manifest and its temporary file: a backup exists only once the catalog
//!   says it completed, so every crash instant leaves a complete backup or none;
//! - every process it started (qemu-nbd, nbdkit, `sendense-sna`, hooks) that still runs is
//!   stopped — only when pid, start time and command line still match the record (a foreign
//!   process, or a reused pid, is never touched; see [`crate::supervise`]) — and the records go;
//!   the ports of its exports are freed and their pid and log files go;
//! - a delete it had begun is finished (the backup was marked `deleting` before any file went),
//!   a merge into the backups depending on it from its journal ([`crate::backup::merge`]), and
//!   a consolidation into a standalone full from its ([`crate::backup::consolidate`]);
//! - the VM's source is repaired at once ([`crate::source::repair`]): QEMU's fleecing jobs,
//!   nodes, NBD exports and server of the job go, and its checkpoint bitmaps are folded back
//!   into the recorded checkpoint, so the next backup is incremental and misses nothing;
//! - the files it recorded before creating them outside the repository (a restore's
//!   `.partial` file), its scratch directory (`<scratch>/job-<id>`) and its lock files go.
//!
//! Children that run in the foreground (`sendense-sna`, hooks) die with the process that
//! started them, so their records usually name processes that are already gone.
//!
//! The light pass ([`Sendense::reconcile`]) runs when a state directory is opened and looks at
//! what the catalog records and at the lock directory. `sendense cleanup` adds a scan of every
//! repository for files of its layout that look unfinished but that no job of this hub wrote:
//! those are listed, never removed (another hub may be writing them). Nothing outside a
//! repository's layout is ever touched, and the dry run reports exactly what the real run does.

use crate::catalog::{ExportRecord, JobStatus};
use crate::error::Result;
use crate::proc::ProcId;
use crate::sendense::Sendense;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One thing cleanup did (or would do, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanupAction {
    /// `fail_job`, `discard_backup`, `stop_qemu_nbd`, `stop_nbdkit`, `stop_sendense_sna`,
    /// `stop_hook`, `forget_process`, `release_port`, `finish_delete`, `finish_merge`,
    /// `finish_consolidation`, `repair_source`, `remove_file`, `remove_dir`, `unmount`,
    /// `stop_qemu_storage_daemon`.
    pub action: String,
    /// What it acts on (job id, path, port, ...).
    pub target: String,
    /// Why.
    pub reason: String,
}

/// What cleanup found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Actions, in order.
    pub actions: Vec<CleanupAction>,
    /// Problems that stopped an action (the rest went on).
    pub errors: Vec<String>,
    /// Files in a repository's layout that look unfinished but that no job of this hub wrote:
    /// left alone (see `sendense cleanup --help`).
    pub strays: Vec<String>,
}

impl CleanupReport {
    pub(crate) fn add(
        &mut self,
        action: &str,
        target: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.actions.push(CleanupAction {
            action: action.into(),
            target: target.into(),
            reason: reason.into(),
        });
    }
}

fn this_host() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
}

impl Sendense {
    /// The light reconciliation: everything the catalog records of dead processes — their jobs,
    /// backups, exports, deletes, sources and files (see the module docs).
    pub fn reconcile(&mut self) -> Result<CleanupReport> {
        self.reconcile_with(false, false)
    }

    /// `sendense cleanup`: the light pass plus a scan of repositories, scratch and locks.
    pub fn cleanup(&mut self, dry_run: bool) -> Result<CleanupReport> {
        self.reconcile_with(dry_run, true)
    }

    fn reconcile_with(&mut self, dry_run: bool, scan: bool) -> Result<CleanupReport> {
        let mut report = CleanupReport {
            dry_run,
            ..Default::default()
        };
        let dead_jobs = self.fail_dead_jobs(dry_run, &mut report)?;
        // Before the processes go: a filesystem mounted over a loop device over the export
        // of a mount must be unmounted first.
        self.release_dead_mounts(dry_run, &mut report)?;
        self.discard_unfinished_backups(&dead_jobs, dry_run, &mut report)?;
        let grace = Duration::from_secs(self.config().qemu_nbd.stop_timeout_secs);
        self.stop_orphans(dry_run, grace, &mut report)?;
        for e in self.catalog().exports()? {
            if !e.owner().is_alive() {
                self.release_export(&e, dry_run, &mut report);
            }
        }
        // Lock files nobody holds go before the steps below take locks of their own (whose
        // files go again when they are released), so both runs list the same ones.
        self.scan_locks(dry_run, &mut report);
        self.finish_deletes(dry_run, &mut report)?;
        for (action, backup, done) in self.finish_journals(dry_run)? {
            let what = if action == "finish_merge" {
                "its merge into the backups depending on it was interrupted after it was recorded"
            } else {
                "making it a standalone full was interrupted"
            };
            match done {
                Ok(()) => report.add(action, &backup, what),
                Err(e) => report.errors.push(format!("{action} {backup}: {e}")),
            }
        }
        let repaired = self.repair_sources(&dead_jobs, dry_run, &mut report)?;
        self.remove_job_files(&dead_jobs, dry_run, &mut report)?;
        self.remove_scratch(&dead_jobs, &repaired, dry_run, &mut report)?;
        if scan {
            self.scan_repositories(&mut report)?;
            self.abort_s3_uploads(&dead_jobs, dry_run, &mut report);
            if let Err(e) = self.cleanup_s3(dry_run, &mut report) {
                report
                    .errors
                    .push(format!("backups in S3 repositories: {e}"));
            }
        }
        Ok(report)
    }

    /// Multipart uploads left under S3 repositories by interrupted processes: aborted (their
    /// parts are stored and billed, but never visible). Only while no job of this hub that
    /// copies runs — one could be uploading now — and only under the repositories' own
    /// prefixes. A repository that cannot be reached is named in the errors; the rest goes on.
    fn abort_s3_uploads(&mut self, dead_jobs: &[i64], dry_run: bool, report: &mut CleanupReport) {
        let copying = self.catalog().unfinished_jobs().map(|jobs| {
            jobs.into_iter()
                .any(|j| j.kind == crate::catalog::JobKind::Copy && !dead_jobs.contains(&j.id))
        });
        match copying {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                report
                    .errors
                    .push(format!("looking for running copies: {e}"));
                return;
            }
        }
        let repos = match self.catalog().s3_repos() {
            Ok(r) => r,
            Err(e) => {
                report.errors.push(format!("listing S3 repositories: {e}"));
                return;
            }
        };
        for repo in repos {
            let found = self.s3_client(&repo).and_then(|client| {
                crate::rt::block_on(async {
                    let prefix = client.location().list_prefix();
                    let mut done = Vec::new();
                    for u in client.multipart_uploads(&prefix).await? {
                        // Never anything outside the repository's place.
                        if !u.key.starts_with(&prefix) {
                            continue;
                        }
                        let aborted = if dry_run {
                            Ok(())
                        } else {
                            client.abort_upload(&u.key, &u.upload_id).await
                        };
                        done.push((u.key, aborted));
                    }
                    Ok::<_, crate::Error>(done)
                })?
            });
            match found {
                Ok(done) => {
                    for (key, aborted) in done {
                        let target = format!("{}: {key}", repo.name);
                        match aborted {
                            Ok(()) => report.add(
                                "abort_upload",
                                target,
                                "an upload an interrupted process left unfinished",
                            ),
                            Err(e) => report.errors.push(format!("aborting {target}: {e}")),
                        }
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("S3 repository `{}`: {e}", repo.name)),
            }
        }
    }

    /// Mounts whose process is gone: their filesystem mounts, loop devices, export and
    /// directories go (`unmount`), then their record.
    fn release_dead_mounts(&mut self, dry_run: bool, report: &mut CleanupReport) -> Result<()> {
        let host = this_host();
        for m in self.catalog().mounts()? {
            // A mount of another host (a shared state directory) is that host's to undo.
            let elsewhere = self
                .catalog()
                .job(m.job)
                .is_ok_and(|j| j.host.is_some() && j.host != host);
            if m.owner().is_alive() || elsewhere {
                continue;
            }
            let target = m.dir.display().to_string();
            let reason = format!(
                "disk {} of backup {} was mounted there by a process that is gone (pid {})",
                m.disk, m.backup, m.owner_pid
            );
            if dry_run {
                report.add("unmount", target, reason);
                continue;
            }
            let errors = crate::mount::release_mount(&m);
            if errors.is_empty() {
                self.catalog_mut().delete_mount(m.id)?;
                report.add("unmount", target, reason);
            } else {
                report
                    .errors
                    .push(format!("unmounting {target}: {}", errors.join("; ")));
            }
        }
        Ok(())
    }

    /// Step 1: jobs whose process is gone end failed; returns their ids.
    fn fail_dead_jobs(&mut self, dry_run: bool, report: &mut CleanupReport) -> Result<Vec<i64>> {
        let host = this_host();
        let mut dead_jobs = Vec::new();
        for job in self.catalog().unfinished_jobs()? {
            let same_host = job.host.is_none() || job.host == host;
            let alive = match (job.pid, job.pid_start) {
                (Some(pid), Some(start)) => ProcId { pid, start }.is_alive(),
                _ => false,
            };
            if same_host && !alive {
                let reason = match job.pid {
                    Some(pid) => format!("the sendense process running it (pid {pid}) is gone"),
                    None => "no process is running it".to_string(),
                };
                report.add("fail_job", job.id.to_string(), &reason);
                if !dry_run {
                    self.catalog_mut()
                        .finish_job(job.id, JobStatus::Failed, Some(&reason))?;
                }
                dead_jobs.push(job.id);
            }
        }
        Ok(dead_jobs)
    }

    /// Step 2: the backups that jobs no longer running were writing go: files and rows.
    fn discard_unfinished_backups(
        &mut self,
        dead_jobs: &[i64],
        dry_run: bool,
        report: &mut CleanupReport,
    ) -> Result<()> {
        for b in self.catalog().running_backups()? {
            let job_alive = match b.job {
                Some(id) => !dead_jobs.contains(&id) && !self.catalog().job(id)?.status.is_final(),
                None => false,
            };
            if job_alive {
                continue;
            }
            // In a bucket: left to `sendense cleanup` (see `cleanup_s3`).
            if b.in_s3() {
                continue;
            }
            if !self.repo_present(&b, report) {
                continue;
            }
            let why = format!("file of unfinished backup {}", b.id);
            let errors = report.errors.len();
            for f in backup_files(&b) {
                remove_inside(&b.repo_path, &f, &why, dry_run, report);
            }
            report.add("discard_backup", &b.id, "its job did not complete");
            // Its row stays while a file could not go: it is how the next pass finds them.
            if !dry_run && report.errors.len() == errors {
                self.catalog_mut().discard_backup(&b.id)?;
            }
        }
        Ok(())
    }

    /// Step 4: deletes whose process is gone are finished: the backup was marked `deleting`
    /// (and no longer read or built on) before its first file went.
    fn finish_deletes(&mut self, dry_run: bool, report: &mut CleanupReport) -> Result<()> {
        for b in self.catalog().deleting_backups()? {
            if b.in_s3() {
                continue;
            }
            if !self.repo_present(&b, report) {
                continue;
            }
            // A delete in progress holds the VM lock.
            let Some(lock) = self.vm_free(&b.vm, dry_run)? else {
                continue;
            };
            // A delete that was merging the backup into the ones depending on it: finished
            // from its journal (the dependants keep every byte).
            let merging = if dry_run {
                let rel = crate::backup::merge::journal_rel(&b.vm, &b.id);
                Ok(b.repo_path.join(&rel).is_file()
                    || !self.catalog().disk_children(&b.id)?.is_empty())
            } else {
                self.finish_interrupted_merge(&b)
            };
            match merging {
                Ok(false) => {}
                Ok(true) => {
                    report.add(
                        "finish_merge",
                        &b.id,
                        "its merge into the backups depending on it was interrupted",
                    );
                    continue;
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("finishing the merge of backup {}: {e}", b.id));
                    continue;
                }
            }
            let why = format!("file of deleted backup {}", b.id);
            for f in backup_files(&b) {
                remove_inside(&b.repo_path, &f, &why, dry_run, report);
            }
            report.add(
                "finish_delete",
                &b.id,
                "its delete was interrupted; the backup was already marked deleted",
            );
            if !dry_run {
                if let Err(e) = self.catalog_mut().delete_backup(&b.id) {
                    report.errors.push(format!("deleting backup {}: {e}", b.id));
                }
            }
            drop(lock);
        }
        Ok(())
    }

    /// The lock of `vm` when no other process holds it: `Some` (with the lock taken, or in a
    /// dry run nothing taken) to go on, `None` when a backup or a delete of the VM runs. The dry
    /// run decides as the real run does, without taking anything.
    fn vm_free(&self, vm: &str, dry_run: bool) -> Result<Option<Option<crate::lock::VmLock>>> {
        if dry_run {
            return Ok((!crate::lock::VmLock::is_held(self.state_dir(), vm)).then_some(None));
        }
        Ok(crate::lock::VmLock::try_acquire(self.state_dir(), vm)?.map(Some))
    }

    /// Whether backup `b`'s repository is there to work on (mounted, and the one registered);
    /// when it is not, the backup's files are left alone — removing nothing and forgetting them
    /// would orphan them — and the next reconciliation tries again.
    fn repo_present(&self, b: &crate::catalog::BackupRecord, report: &mut CleanupReport) -> bool {
        let present = self.catalog().repo(&b.repo).and_then(|r| {
            crate::repo::check_mount(&r.path, r.require_mount)?;
            crate::repo::check_identity(&r.path, &r.repo_id).map(drop)
        });
        match present {
            Ok(()) => true,
            Err(e) => {
                report.errors.push(format!(
                    "backup {}: its repository is not available: {e}",
                    b.id
                ));
                false
            }
        }
    }

    /// Step 5: the sources of interrupted backups are repaired, VM by VM, each under the VM's
    /// lock (a VM being backed up now is left to that backup, which repairs it first). Returns
    /// the jobs whose sources were repaired (in a dry run: would be).
    fn repair_sources(
        &mut self,
        dead_jobs: &[i64],
        dry_run: bool,
        report: &mut CleanupReport,
    ) -> Result<Vec<i64>> {
        let mut repaired_jobs = Vec::new();
        // Jobs this pass ended count as ended, in a dry run too (where they were not marked).
        let dirty: Vec<(i64, String)> = self
            .catalog()
            .source_dirty_jobs()?
            .into_iter()
            .filter(|(id, _, ended)| *ended || dead_jobs.contains(id))
            .map(|(id, vm, _)| (id, vm))
            .collect();
        let mut vms: Vec<(String, Vec<i64>)> = Vec::new();
        for (job, vm) in dirty {
            match vms.iter_mut().find(|(name, _)| *name == vm) {
                Some((_, jobs)) => jobs.push(job),
                None => vms.push((vm, vec![job])),
            }
        }
        for (name, jobs) in vms {
            // A VM being backed up now is repaired by that backup first.
            let Some(_lock) = self.vm_free(&name, dry_run)? else {
                continue;
            };
            let listed: Vec<String> = jobs.iter().map(|j| j.to_string()).collect();
            report.add(
                "repair_source",
                &name,
                format!("left by interrupted backup job(s) {}", listed.join(", ")),
            );
            if dry_run {
                repaired_jobs.extend(jobs);
                continue;
            }
            let repaired = self.vm(&name).and_then(|vm| {
                let mut source = self.source_of(&vm, None)?;
                self.repair_source(&vm, source.as_mut(), None)
            });
            match repaired {
                Ok(how) => {
                    if how == crate::source::Repaired::Unreachable {
                        tracing::info!(
                            "VM `{name}` is not running: nothing of its backups is left in it"
                        );
                    }
                    repaired_jobs.extend(jobs);
                }
                Err(e) => report
                    .errors
                    .push(format!("repairing the source of VM `{name}`: {e}")),
            }
        }
        Ok(repaired_jobs)
    }

    /// Step 6: files that ended jobs recorded before creating them (a restore's partial file).
    fn remove_job_files(
        &mut self,
        dead_jobs: &[i64],
        dry_run: bool,
        report: &mut CleanupReport,
    ) -> Result<()> {
        let mut jobs: Vec<i64> = Vec::new();
        for (job, path, ended) in self.catalog().job_files()? {
            if !ended && !dead_jobs.contains(&job) {
                continue;
            }
            let staging = path.file_name().and_then(|n| n.to_str())
                == Some(&format!("{}{job}", crate::mount::files::STAGING_PREFIX));
            if staging {
                remove_dir(&path, &format!("left by job {job}"), dry_run, report);
            } else {
                remove_file(&path, &format!("left by job {job}"), dry_run, report);
            }
            if !jobs.contains(&job) {
                jobs.push(job);
            }
        }
        if !dry_run {
            for job in jobs {
                self.catalog_mut().forget_job_files(job)?;
            }
        }
        Ok(())
    }

    /// Step 7: scratch directories of jobs that ended and left nothing on their source (or whose
    /// source step 5 repaired).
    fn remove_scratch(
        &mut self,
        dead_jobs: &[i64],
        repaired: &[i64],
        dry_run: bool,
        report: &mut CleanupReport,
    ) -> Result<()> {
        let scratch = self.scratch_dir();
        let Ok(entries) = std::fs::read_dir(&scratch) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_prefix("job-")
                .and_then(|i| i.parse::<i64>().ok())
            else {
                continue;
            };
            // Kept while the job runs, and while its source still needs a repair that looks
            // there (for the socket of a QEMU NBD server).
            let keep = match self.catalog().job(id) {
                Ok(j) => {
                    let ended = j.status.is_final() || dead_jobs.contains(&id);
                    let repairable = j.vm.as_deref().is_some_and(|vm| self.vm(vm).is_ok());
                    let dirty = j.source_dirty && !repaired.contains(&id);
                    !ended || (dirty && repairable)
                }
                Err(_) => false,
            };
            if keep {
                continue;
            }
            report.add(
                "remove_dir",
                entry.path().display().to_string(),
                format!("scratch of finished job {id}"),
            );
            if !dry_run {
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    report
                        .errors
                        .push(format!("removing {}: {e}", entry.path().display()));
                }
            }
        }
        Ok(())
    }

    /// Step 3: the processes dead sendense processes started ([`crate::supervise::reconcile`]).
    fn stop_orphans(
        &mut self,
        dry_run: bool,
        grace: Duration,
        report: &mut CleanupReport,
    ) -> Result<()> {
        for o in crate::supervise::reconcile(self.catalog_mut(), dry_run, grace)? {
            let r = &o.record;
            let owner = format!("sendense pid {} which is gone", r.owner.pid);
            match o.running.first() {
                Some(p) => report.add(
                    r.kind.stop_action(),
                    p.pid.to_string(),
                    format!("{} ({}) started by {owner}", r.kind, r.label),
                ),
                None => report.add(
                    "forget_process",
                    r.pid
                        .map_or_else(|| format!("record {}", r.id), |p| p.to_string()),
                    format!("{} ({}) of {owner} has ended", r.kind, r.label),
                ),
            }
            if let Some(e) = &o.error {
                report
                    .errors
                    .push(format!("stopping {} ({}): {e}", r.kind, r.label));
            }
        }
        Ok(())
    }

    /// Step 4: the exports of dead sendense processes, once their qemu-nbd is gone.
    fn release_export(&mut self, e: &ExportRecord, dry_run: bool, report: &mut CleanupReport) {
        let what = match (&e.port, &e.socket) {
            (Some(p), _) => format!("port {p}"),
            (None, Some(s)) => s.display().to_string(),
            _ => format!("export {}", e.id),
        };
        report.add(
            "release_port",
            &what,
            format!("allocated by sendense pid {} which is gone", e.owner_pid),
        );
        if dry_run {
            return;
        }
        let run_dir = self.run_dir();
        match crate::export::release_orphan(self.catalog_mut(), e, &run_dir) {
            Ok(true) => {}
            Ok(false) => report.errors.push(format!(
                "{what} stays allocated: its qemu-nbd still runs (see the errors above)"
            )),
            Err(err) => report.errors.push(format!("releasing {what}: {err}")),
        }
    }

    /// `sendense cleanup`'s scan: files in a repository's layout that look like an unfinished
    /// write (`.partial` images and digest files, temporary manifests) but that no job of this
    /// hub can be tied to. They are listed, never removed: they may belong to another hub's
    /// running backup, or to a Sendense that predates recording rows before files.
    fn scan_repositories(&mut self, report: &mut CleanupReport) -> Result<()> {
        let known: std::collections::HashSet<String> = self
            .catalog()
            .backups(&crate::catalog::BackupFilter::default())?
            .into_iter()
            .map(|b| b.id)
            .collect();
        for repo in self.catalog().repos()? {
            if crate::repo::check_mount(&repo.path, repo.require_mount).is_err()
                || !repo.path.is_dir()
            {
                continue;
            }
            let mut found = Vec::new();
            walk(&repo.path, 3, &mut found);
            for f in found {
                let Some(id) = layout_write_of(&repo.path, &f) else {
                    continue;
                };
                if !known.contains(&id) {
                    report.strays.push(f.display().to_string());
                }
            }
        }
        Ok(())
    }

    fn scan_locks(&mut self, dry_run: bool, report: &mut CleanupReport) {
        let dir = self.state_dir().join("locks");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        // The lock a killed backup or delete left in a repository (mounted, the registered one,
        // and the lock file no link).
        for r in self.catalog().repos().unwrap_or_default() {
            let lock = r.path.join("locks").join("writers.lock");
            let present = crate::repo::check_mount(&r.path, r.require_mount)
                .and_then(|()| crate::repo::check_identity(&r.path, &r.repo_id))
                .and_then(|_| crate::repo::chain::check_inside(&r.path, &lock));
            if present.is_ok() && lock.is_file() {
                paths.push(lock);
            }
        }
        for path in paths {
            if dry_run {
                if crate::lock::is_held(&path) {
                    continue;
                }
            } else {
                // Removed only while holding it, so a process about to take it retries.
                match crate::lock::FileLock::try_lock(&path, false, false) {
                    Ok(Some(lock)) => drop(lock),
                    _ => continue,
                }
            }
            report.add(
                "remove_file",
                path.display().to_string(),
                "lock file nobody holds",
            );
        }
    }
}

impl Sendense {
    /// Repairs `vm`'s source after interrupted backups (see [`crate::source::repair`]); the
    /// caller holds the VM lock. `keep_job` is a backup starting now. On success the
    /// interrupted jobs are recorded clean (the reconciliation then removes their scratch).
    pub(crate) fn repair_source(
        &mut self,
        vm: &crate::catalog::VmRecord,
        source: &mut dyn crate::source::Source,
        keep_job: Option<i64>,
    ) -> Result<crate::source::Repaired> {
        let interrupted: Vec<(i64, PathBuf)> = self
            .catalog()
            .source_dirty_jobs()?
            .into_iter()
            .filter(|(id, name, ended)| *ended && *name == vm.name && Some(*id) != keep_job)
            .map(|(id, _, _)| self.snapshot_scratch(vm, id).map(|dir| (id, dir)))
            .collect::<Result<_>>()?;
        let req = crate::source::RepairRequest {
            keep_job,
            interrupted,
            disks: vm
                .disks
                .iter()
                .map(|d| (d.identity.clone(), d.checkpoint.clone()))
                .collect(),
            retired: self.catalog().completed_checkpoints(vm.id)?,
        };
        let repaired = {
            let mut host = crate::source::HubHost {
                sd: self,
                job: keep_job,
            };
            source.repair(&mut host, &req)?
        };
        // Their scratch directories go with the reconciliation's last step.
        for (id, _) in &req.interrupted {
            self.catalog_mut().mark_source_clean(*id)?;
        }
        Ok(repaired)
    }
}

/// Every file a backup may have in its repository: per disk the image and its digest file,
/// `.partial` or committed, then the manifest and its temporary files.
fn backup_files(b: &crate::catalog::BackupRecord) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in &b.disks {
        let digests = crate::repo::digests::digests_of(&d.file);
        files.push(crate::repo::chain::partial_of(&d.file));
        files.push(crate::repo::chain::partial_of(&digests));
        files.push(d.file.clone());
        files.push(digests);
    }
    let manifest = b
        .repo_path
        .join(crate::repo::manifest::manifest_rel(&b.vm, &b.id));
    if let (Some(dir), Some(name)) = (manifest.parent(), manifest.file_name()) {
        let tmp = format!(".{}.tmp-", name.to_string_lossy());
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&tmp) {
                files.push(entry.path());
            }
        }
    }
    files.push(manifest);
    files
}

/// [`remove_file`] for a file of repository `root`, which is only removed while it is inside.
fn remove_inside(root: &Path, path: &Path, why: &str, dry_run: bool, report: &mut CleanupReport) {
    match crate::repo::chain::check_inside(root, path) {
        Ok(()) => remove_file(path, why, dry_run, report),
        Err(e) => report.errors.push(e.to_string()),
    }
}

/// Removes `path` if it exists, as an action of `report` (only reported in a dry run).
/// Removes the directory `path` and what is in it (a staging directory of `files get`; a link
/// there is removed, never followed).
fn remove_dir(path: &Path, why: &str, dry_run: bool, report: &mut CleanupReport) {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return remove_file(path, why, dry_run, report);
    }
    report.add("remove_dir", path.display().to_string(), why);
    if !dry_run {
        if let Err(e) = std::fs::remove_dir_all(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                report
                    .errors
                    .push(format!("removing {}: {e}", path.display()));
            }
        }
    }
}

fn remove_file(path: &Path, why: &str, dry_run: bool, report: &mut CleanupReport) {
    if std::fs::symlink_metadata(path).is_err() {
        return;
    }
    report.add("remove_file", path.display().to_string(), why);
    if !dry_run {
        if let Err(e) = std::fs::remove_file(path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                report
                    .errors
                    .push(format!("removing {}: {e}", path.display()));
            }
        }
    }
}

/// The backup id of `file` when it is an unfinished write in repository `root`'s layout:
/// `<vm>/<key>/<id>.qcow2.partial`, `<vm>/<key>/<id>.digests.partial` or
/// `<vm>/manifests/.<id>.yaml.tmp-<pid>`, with a valid VM name, key and id.
fn layout_write_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let parts: Vec<&str> = rel.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
    let [vm, dir, name] = parts[..] else {
        return None;
    };
    crate::vm::validate_name("VM", vm).ok()?;
    let id = if dir == "manifests" {
        let rest = name.strip_prefix('.')?;
        let (stem, pid) = rest.split_once(".yaml.tmp-")?;
        pid.parse::<u32>().ok()?;
        stem
    } else {
        dir.parse::<u32>().ok().filter(|k| *k >= 2000)?;
        name.strip_suffix(".qcow2.partial")
            .or_else(|| name.strip_suffix(".digests.partial"))?
    };
    crate::repo::chain::is_backup_id(id).then(|| id.to_string())
}

/// Files up to `depth` directories below `dir`.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() && depth > 0 {
            walk(&entry.path(), depth - 1, out);
        } else if ft.is_file() {
            out.push(entry.path());
        }
    }
}
