//! Several jobs at once in one process: a scheduler, or an integrator, runs backups of different
//! VMs, restores and verifies side by side.
//!
//! Each job runs on a thread of its own with a [`Sendense`] handle of its own — its own catalog
//! connection (SQLite in WAL mode with a busy handler serialises the writes of all of them), its
//! own cancellation token, its own job row and log; their events all go to the runner's sink,
//! each tagged with its job. What keeps two jobs off one thing is what keeps two processes off
//! it: the VM lock (a second backup of a VM is refused, `Busy`), the backup read and delete
//! locks. The runner reconciles the state directory once, when it is created; the jobs' handles
//! do not, so no job mistakes another's work for a dead process's.
//!
//! ```no_run
//! use sendense_core::backup::plan::Requested;
//! use sendense_core::runner::Runner;
//! use sendense_core::OpenOptions;
//!
//! let runner = Runner::new(OpenOptions::new().state_dir("/var/lib/sendense"))?;
//! let jobs: Vec<_> = ["web1", "web2", "db1"]
//!     .iter()
//!     .map(|vm| runner.backup(vm, Requested::Auto))
//!     .collect();
//! for job in jobs {
//!     let report = job.wait()?;
//!     println!("{} {}", report.vm, report.backup);
//! }
//! # Ok::<(), sendense_core::Error>(())
//! ```

use crate::backup::plan::Requested;
use crate::backup::BackupReport;
use crate::error::{Error, Result};
use crate::restore::{RestoreReport, RestoreRequest};
use crate::sendense::{OpenOptions, Sendense};
use crate::verify::{VerifyReport, VerifyTarget};
use tokio_util::sync::CancellationToken;

/// Starts jobs, each on its own thread; see the module documentation.
#[derive(Debug, Clone)]
pub struct Runner {
    opts: OpenOptions,
}

/// A job started by a [`Runner`].
#[derive(Debug)]
pub struct JobHandle<T> {
    what: String,
    cancel: CancellationToken,
    thread: std::thread::JoinHandle<Result<T>>,
}

impl Runner {
    /// A runner on the state directory `opts` names; opening it reconciles what killed
    /// processes left, once, for all the jobs it will start.
    pub fn new(opts: OpenOptions) -> Result<Runner> {
        drop(opts.clone().open()?);
        Ok(Runner {
            opts: opts.without_reconcile(),
        })
    }

    /// A backup of `vm` into its default repository.
    pub fn backup(&self, vm: &str, mode: Requested) -> JobHandle<BackupReport> {
        self.backup_into(vm, None, mode)
    }

    /// A backup of `vm` into repository `repo` (the default one when `None`).
    pub fn backup_into(
        &self,
        vm: &str,
        repo: Option<&str>,
        mode: Requested,
    ) -> JobHandle<BackupReport> {
        let (vm, repo) = (vm.to_string(), repo.map(String::from));
        self.spawn(format!("backup of `{vm}`"), move |sd, cancel| {
            sd.backup(&vm)
                .repo(repo.as_deref())
                .mode(mode)
                .cancel_token(cancel)
                .run()
        })
    }

    /// A restore.
    pub fn restore(&self, req: RestoreRequest) -> JobHandle<RestoreReport> {
        self.spawn(
            format!("restore of backup {}", req.backup),
            move |sd, cancel| sd.restore(&req, cancel),
        )
    }

    /// A verify.
    pub fn verify(&self, target: VerifyTarget) -> JobHandle<VerifyReport> {
        self.spawn("verify".to_string(), move |sd, cancel| {
            sd.verify(&target, cancel)
        })
    }

    /// Runs `job` on a thread of its own with a handle of its own.
    pub fn spawn<T, F>(&self, what: String, job: F) -> JobHandle<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Sendense, CancellationToken) -> Result<T> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let (opts, token) = (self.opts.clone(), cancel.clone());
        let thread = std::thread::Builder::new()
            .name(format!("sendense {what}"))
            .spawn(move || {
                let mut sd = opts.open()?;
                job(&mut sd, token)
            });
        let thread = match thread {
            Ok(t) => t,
            // No thread to be had: the job fails at once, through the same handle.
            Err(e) => {
                let msg = format!("starting a thread for the {what}: {e}");
                std::thread::spawn(move || Err(Error::internal(msg)))
            }
        };
        JobHandle {
            what,
            cancel,
            thread,
        }
    }
}

impl<T> JobHandle<T> {
    /// Asks the job to stop; it undoes what it started and ends as cancelled.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// True once the job has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the job's end and returns what it did.
    pub fn wait(self) -> Result<T> {
        let what = self.what;
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Error::internal(format!("the {what} panicked"))))
    }
}
