//! Jobs: every long operation (backup, restore, verify, export) runs as a job — a catalog row
//! that moves `pending → running → completed | failed | cancelled`, records the process and
//! host running it (so a dead runner is detected, see [`crate::cleanup`]), and can be cancelled
//! from anywhere: the token its caller passes (Ctrl-C, a library caller) or `sendense job
//! cancel ID` from another process, which a watcher thread picks up from the catalog.
//!
//! [`signals`] turns SIGINT, SIGTERM and SIGHUP into a cancellation for command-line frontends.

mod cancel;
pub mod signals;

use crate::catalog::{JobKind, JobStatus};
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventKind};
use crate::sendense::Sendense;
use tokio_util::sync::CancellationToken;

/// A job this process runs: its id, its cancellation and the watcher feeding it. Ended by
/// [`Sendense::end_job`]; dropped without that (a panic in a long-lived process), it ends the
/// job failed itself, so no job stays `running` while its process lives on.
#[derive(Debug)]
pub(crate) struct JobRun {
    /// The job's id.
    pub id: i64,
    /// Cancelled by the caller's token or by `job cancel`.
    pub cancel: CancellationToken,
    _watcher: cancel::CancelWatcher,
    catalog: std::path::PathBuf,
    ended: bool,
}

impl Drop for JobRun {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let ended = crate::catalog::Catalog::open(&self.catalog, false).and_then(|mut c| {
            c.finish_job(
                self.id,
                JobStatus::Failed,
                Some("the job ended without reporting its outcome"),
            )
        });
        if let Err(e) = ended {
            tracing::warn!("job {}: recording its end: {e}", self.id);
        }
    }
}

impl Sendense {
    /// Creates job `kind` and marks it running in this process, watched for `job cancel`;
    /// `cancel` is the caller's own token (it cancels the job too).
    pub(crate) fn begin_job(
        &mut self,
        kind: JobKind,
        vm: Option<&str>,
        repo: Option<&str>,
        cancel: CancellationToken,
    ) -> Result<JobRun> {
        let job = self.catalog_mut().create_job(kind, vm, repo)?;
        if let Err(e) = self.catalog_mut().start_job(job.id) {
            let _ = self
                .catalog_mut()
                .finish_job(job.id, JobStatus::Failed, Some(e.message()));
            return Err(e);
        }
        self.sink().emit(&Event::now(
            Some(job.id),
            EventKind::JobStarted {
                kind,
                vm: vm.map(String::from),
            },
        ));
        let watcher = cancel::CancelWatcher::start(self.catalog().path(), job.id, cancel.clone());
        Ok(JobRun {
            id: job.id,
            cancel,
            _watcher: watcher,
            catalog: self.catalog().path().to_path_buf(),
            ended: false,
        })
    }

    /// Ends `job` with the outcome of its work: completed, cancelled (a `Cancelled` error, or
    /// any error once the job was asked to stop) or failed, logged and reported to the sink.
    /// Returns the result, an error turned into `Cancelled` where the job was cancelled.
    pub(crate) fn end_job<T>(&mut self, mut job: JobRun, result: Result<T>) -> Result<T> {
        job.ended = true;
        let result = match result {
            Err(e) if job.cancel.is_cancelled() && e.kind() != ErrorKind::Cancelled => Err(
                Error::new(ErrorKind::Cancelled, format!("cancelled ({})", e.message())),
            ),
            other => other,
        };
        let (status, error) = match &result {
            Ok(_) => (JobStatus::Completed, None),
            Err(e) if e.kind() == ErrorKind::Cancelled => (JobStatus::Cancelled, Some(e)),
            Err(e) => (JobStatus::Failed, Some(e)),
        };
        if let Some(e) = error {
            self.job_log(job.id, &format!("error: {e}"));
        }
        if let Err(e) = self
            .catalog_mut()
            .finish_job(job.id, status, error.map(|e| e.message()))
        {
            tracing::warn!("job {}: recording its end: {e}", job.id);
        }
        self.sink().emit(&Event::now(
            Some(job.id),
            EventKind::JobFinished {
                status,
                error: error.map(|e| e.to_string()),
            },
        ));
        result
    }

    /// A line in job `id`'s log (and the tracing log); a failure to record it is only warned.
    pub(crate) fn job_log(&mut self, id: i64, message: &str) {
        tracing::info!("job {id}: {message}");
        if let Err(e) = self.catalog_mut().log_job(id, "info", message, None) {
            tracing::warn!("job log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_ends_once_and_never_stays_running() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sd, _) = crate::OpenOptions::new()
            .state_dir(dir.path())
            .init()
            .unwrap();
        let fresh = || CancellationToken::new();
        // Dropped without an end (a panic in a long-lived process): failed, not running.
        let job = sd.begin_job(JobKind::Verify, None, None, fresh()).unwrap();
        let id = job.id;
        assert_eq!(sd.job(id).unwrap().status, JobStatus::Running);
        drop(job);
        assert_eq!(sd.job(id).unwrap().status, JobStatus::Failed);
        // An error after a cancellation is the cancellation.
        let job = sd.begin_job(JobKind::Restore, None, None, fresh()).unwrap();
        let id = job.id;
        job.cancel.cancel();
        let r: Result<()> = sd.end_job(job, Err(Error::new(ErrorKind::External, "broken pipe")));
        assert_eq!(r.unwrap_err().kind(), ErrorKind::Cancelled);
        assert_eq!(sd.job(id).unwrap().status, JobStatus::Cancelled);
        // Success is success, and the end is not overwritten by the drop.
        let job = sd.begin_job(JobKind::Export, None, None, fresh()).unwrap();
        let id = job.id;
        sd.end_job(job, Ok(())).unwrap();
        assert_eq!(sd.job(id).unwrap().status, JobStatus::Completed);
        // `job cancel` from elsewhere reaches the job's token.
        let job = sd.begin_job(JobKind::Verify, None, None, fresh()).unwrap();
        sd.catalog_mut().request_cancel(job.id).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !job.cancel.is_cancelled() {
            assert!(
                std::time::Instant::now() < deadline,
                "the watcher missed it"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = sd.end_job(job, Ok(()));
    }
}
