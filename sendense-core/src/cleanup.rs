//! Reconciliation: what a dead sendense process left behind is found and removed.
//!
//! Guarantees, whatever killed the process (an error, Ctrl-C, SIGKILL, a reboot of the hub):
//!
//! - a job left `pending`/`running` by a process that is gone ends `failed` with the reason;
//! - its running backup is discarded: catalog rows and `.partial` images;
//! - every qemu-nbd it started is stopped — only when pid, start time and command line still
//!   match what was recorded (a foreign qemu-nbd, or a reused pid, is never touched) — and its
//!   port is freed;
//! - its fleecing/scratch directory (`<scratch>/job-<id>`) and temporary manifest files go.
//!
//! The light pass ([`Sendense::reconcile`]) runs when a state directory is opened and looks only
//! at what the catalog records. `sendense cleanup` adds a scan of every repository for `.partial`
//! images and temporary files no live job owns, and of the lock directory.

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
    /// `fail_job`, `discard_backup`, `stop_qemu_nbd`, `release_port`, `remove_file`,
    /// `remove_dir`.
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
}

impl CleanupReport {
    fn add(&mut self, action: &str, target: impl Into<String>, reason: impl Into<String>) {
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
    /// The light reconciliation: jobs, backups and exports of dead processes.
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
        let host = this_host();
        let grace = Duration::from_secs(self.config().qemu_nbd.stop_timeout_secs);

        // 1. Jobs whose process is gone.
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

        // 2. Their backups: images and rows.
        for b in self.catalog().running_backups()? {
            let job_alive = match b.job {
                Some(id) => !dead_jobs.contains(&id) && !self.catalog().job(id)?.status.is_final(),
                None => false,
            };
            if job_alive {
                continue;
            }
            for d in &b.disks {
                let partial = crate::repo::chain::partial_of(&d.file);
                let digests = crate::repo::digests::digests_of(&d.file);
                let digests_partial = crate::repo::chain::partial_of(&digests);
                for f in [partial, d.file.clone(), digests, digests_partial] {
                    if f.exists() {
                        report.add(
                            "remove_file",
                            f.display().to_string(),
                            format!("image of unfinished backup {}", b.id),
                        );
                        if !dry_run {
                            if let Err(e) = std::fs::remove_file(&f) {
                                report.errors.push(format!("removing {}: {e}", f.display()));
                            }
                        }
                    }
                }
            }
            report.add("discard_backup", &b.id, "its job did not complete");
            if !dry_run {
                self.catalog_mut().discard_backup(&b.id)?;
            }
        }

        // 3. Exports whose starter is gone.
        for e in self.catalog().exports()? {
            if e.owner().is_alive() {
                continue;
            }
            self.reap_export(&e, dry_run, grace, &mut report);
        }

        // 4. Scratch directories of jobs that are not running.
        let scratch = self.scratch_dir();
        if let Ok(entries) = std::fs::read_dir(&scratch) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name
                    .strip_prefix("verify-")
                    .and_then(|p| p.parse::<u32>().ok())
                {
                    // A verify's scratch, left when its process died.
                    if ProcId::of(pid).is_none() {
                        report.add(
                            "remove_dir",
                            entry.path().display().to_string(),
                            "scratch of a verify that ended",
                        );
                        if !dry_run {
                            let _ = std::fs::remove_dir_all(entry.path());
                        }
                    }
                    continue;
                }
                let Some(id) = name
                    .strip_prefix("job-")
                    .and_then(|i| i.parse::<i64>().ok())
                else {
                    continue;
                };
                let running = self
                    .catalog()
                    .job(id)
                    .map(|j| !j.status.is_final())
                    .unwrap_or(false);
                if !running {
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
            }
        }

        if scan {
            self.scan_repositories(dry_run, &mut report)?;
            self.scan_locks(dry_run, &mut report);
        }
        Ok(report)
    }

    fn reap_export(
        &mut self,
        e: &ExportRecord,
        dry_run: bool,
        grace: Duration,
        report: &mut CleanupReport,
    ) {
        let what = match (&e.port, &e.socket) {
            (Some(p), _) => format!("port {p}"),
            (None, Some(s)) => s.display().to_string(),
            _ => format!("export {}", e.id),
        };
        let server_alive = e.server().is_some_and(|s| s.is_alive());
        if server_alive {
            let pid = e.pid.unwrap_or(0);
            report.add(
                "stop_qemu_nbd",
                pid.to_string(),
                format!(
                    "serves `{}` on {what} for a sendense process that is gone",
                    e.export
                ),
            );
        }
        report.add(
            "release_port",
            &what,
            format!("allocated by sendense pid {} which is gone", e.owner_pid),
        );
        if dry_run {
            return;
        }
        if let Err(err) = crate::export::stop_orphan(self.catalog_mut(), e, grace) {
            report
                .errors
                .push(format!("stopping qemu-nbd {:?}: {err}", e.pid));
        }
    }

    fn scan_repositories(&mut self, dry_run: bool, report: &mut CleanupReport) -> Result<()> {
        let live_backups: Vec<String> = self
            .catalog()
            .running_backups()?
            .into_iter()
            .filter(|b| {
                b.job.is_some_and(|j| {
                    self.catalog()
                        .job(j)
                        .map(|j| !j.status.is_final())
                        .unwrap_or(false)
                })
            })
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
                let name = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let partial_stem = name
                    .strip_suffix(".qcow2.partial")
                    .or_else(|| name.strip_suffix(".digests.partial"));
                let stale = if let Some(stem) = partial_stem {
                    !live_backups.iter().any(|b| b == stem)
                } else if name.starts_with('.') && name.contains(".tmp-") {
                    name.rsplit(".tmp-")
                        .next()
                        .and_then(|p| p.parse::<u32>().ok())
                        .is_none_or(|pid| ProcId::of(pid).is_none())
                } else {
                    false
                };
                if stale {
                    report.add(
                        "remove_file",
                        f.display().to_string(),
                        "left by an unfinished backup",
                    );
                    if !dry_run {
                        if let Err(e) = std::fs::remove_file(&f) {
                            report.errors.push(format!("removing {}: {e}", f.display()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn scan_locks(&mut self, dry_run: bool, report: &mut CleanupReport) {
        let dir = self.state_dir().join("locks");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if dry_run {
                if crate::lock::is_held(&path) {
                    continue;
                }
            } else {
                // Removed only while holding it, so a process about to take it retries.
                match crate::lock::VmLock::try_lock(&path, false) {
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
