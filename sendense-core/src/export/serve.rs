//! `sendense export`: a restore point served over NBD until it is stopped.
//!
//! qemu-nbd serves the backup's chain on 127.0.0.1 or a Unix socket — read-only, or with
//! writes going to a temporary overlay that qemu-nbd discards at exit; the backup itself is
//! never modified. The export is a job: it shows in `job list`, ends with Ctrl-C (the caller's
//! token) or `sendense job cancel`, and holds shared locks on the chain, so nothing it serves
//! is deleted under it.

use super::{ExportSpec, RunningExport};
use crate::catalog::{JobKind, Listen};
use crate::error::{Error, ErrorKind, Result};
use crate::jobs::JobRun;
use crate::lock::BackupReadLocks;
use crate::nbd::NbdUrl;
use crate::sendense::Sendense;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A restore point being served; end it with [`Sendense::end_export`].
#[derive(Debug)]
pub struct ServedExport {
    export: RunningExport,
    job: JobRun,
    _locks: BackupReadLocks,
}

impl ServedExport {
    /// Where clients connect.
    pub fn url(&self) -> &NbdUrl {
        &self.export.url
    }

    /// The job serving it.
    pub fn job(&self) -> i64 {
        self.job.id
    }

    /// Blocks until the export is asked to stop (the caller's token, `job cancel`) or its
    /// qemu-nbd ends on its own.
    pub fn wait(&self) {
        while !self.job.cancel.is_cancelled() && self.export.server.is_alive() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Sendense {
    /// Serves disk `key` of backup `id` over NBD (see the module docs) until
    /// [`Sendense::end_export`]; `cancel` is the caller's way to stop it.
    pub fn export_backup(
        &mut self,
        id: &str,
        key: u32,
        listen: Listen,
        writable: bool,
        cancel: CancellationToken,
    ) -> Result<ServedExport> {
        let (b, locks) = self.read_backup(id)?;
        b.require_local("exporting")?;
        let disk = crate::restore::select_disks(&b, Some(&[key]))?.remove(0);
        self.refuse_broken_chain(&b.id, key)?;
        if !disk.file.is_file() {
            return Err(Error::not_found(format!(
                "the image of disk {key} ({}) is missing",
                disk.file.display()
            ))
            .with_help("Run `sendense backup verify` to check the chain."));
        }
        let job = self.begin_job(JobKind::Export, Some(&b.vm), Some(&b.repo), cancel)?;
        let spec = ExportSpec {
            file: disk.file.clone(),
            format: "qcow2".into(),
            name: super::export_name(&b.vm, key),
            listen,
            shared: 16,
            read_only: !writable,
            bitmap: None,
            discard_writes: writable,
            skip_flushes: false,
            alone: false,
            job: Some(job.id),
        };
        match self.start_export(&spec) {
            Ok(export) => {
                self.job_log(
                    job.id,
                    &format!("serving disk {key} of backup {id} at {}", export.url),
                );
                Ok(ServedExport {
                    export,
                    job,
                    _locks: locks,
                })
            }
            Err(e) => self.end_job(job, Err(e)),
        }
    }

    /// Stops an export started by [`Sendense::export_backup`] and ends its job: completed when
    /// it was stopped by its caller, cancelled after `job cancel`, failed when qemu-nbd had
    /// ended on its own or would not stop.
    pub fn end_export(&mut self, served: ServedExport) -> Result<()> {
        let ServedExport {
            export,
            job,
            _locks,
        } = served;
        let ended_alone = !export.server.is_alive();
        let stopped = self.stop_export(export);
        // The caller's stop cancels the token too: that is the export's normal end, so only a
        // `job cancel` (recorded in the catalog) makes it a cancellation.
        let result = match stopped {
            Err(e) => Err(e),
            Ok(()) if ended_alone => Err(Error::new(
                ErrorKind::External,
                "qemu-nbd ended on its own; see its log line in `sendense job log`",
            )),
            Ok(()) if self.catalog().cancel_requested(job.id).unwrap_or(false) => Err(Error::new(
                ErrorKind::Cancelled,
                "stopped by `sendense job cancel`",
            )),
            Ok(()) => Ok(()),
        };
        self.end_job(job, result)
    }
}
