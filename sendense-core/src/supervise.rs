//! Every process Sendense starts: one record format, one guard, one reconciliation.
//!
//! Sendense starts four kinds of children ([`ChildKind`]): qemu-nbd (the hub's NBD exports),
//! nbdkit (sources served through a plugin), `sendense-sna` (the node side of a backup or of a
//! source) and hook commands. Whatever the kind, the same three things hold:
//!
//! - **One record** ([`crate::catalog::ChildRecord`], table `children`): kind, label, job, the
//!   sendense process that started it (pid + start time), the child's pid + start time and its
//!   exact command line. A server that forks (qemu-nbd `--fork`) is recorded with its command
//!   line *before* it starts, and its pid as soon as it is known; a foreground child is recorded
//!   as soon as it runs. Rows are removed when the child was seen to end.
//! - **One guard** ([`Supervised`]) that owns the child and stops it on every path: dropped
//!   without an explicit stop — an early return, a panic — it stops the child (SIGTERM, SIGKILL
//!   after the grace period, wait until gone) and forgets the record. A foreground child also
//!   runs in a process group of its own (stopped as a whole, so what it started goes too) and
//!   dies with the thread that started it (`PR_SET_PDEATHSIG`: a `kill -9` of the hub takes its
//!   node process with it at once). A server must outlive the thread that started it (other
//!   threads use it), so the kernel cannot tie it to its starter; the record is what finds it.
//! - **One reconciliation** ([`reconcile`]): a record whose starting sendense process is gone
//!   names a child nobody owns. If that process still runs as recorded — same pid, same start
//!   time, same command line (or, for a server recorded before its pid, exactly the recorded
//!   command line, which is unique: it names a file in the state directory) — it is stopped;
//!   either way the record goes. `sendense cleanup` and the reconciliation every command runs
//!   at start do this.
//!
//! Processes are only ever signalled by pid *and* start time (and command line, for records),
//! never by name: a reused pid or a process Sendense did not start is never touched.
//!
//! A node records nothing: it has no catalog. The hub records the node process, and whatever
//! the node starts dies with it (parent-death signal) or is stopped by it.

mod guard;
pub mod reconcile;

pub use guard::{die_with_parent, Supervised};
pub use reconcile::Orphan;

use crate::catalog::{Catalog, NewChild};
use crate::error::Result;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The environment variable that marks a foreground child and everything it starts.
pub const TOKEN_VAR: &str = "SENDENSE_SUPERVISED";

/// What a child process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChildKind {
    /// An NBD server of the hub (targets, restores, exports, image sources).
    QemuNbd,
    /// An nbdkit server (a source read through a plugin).
    Nbdkit,
    /// The node side of a transfer or of a source.
    #[serde(rename = "sendense-sna")]
    Sna,
    /// A user's hook command.
    Hook,
    /// A FUSE export of a mounted restore point.
    StorageDaemon,
}

impl ChildKind {
    /// Every kind.
    pub const ALL: [ChildKind; 5] = [
        ChildKind::QemuNbd,
        ChildKind::Nbdkit,
        ChildKind::Sna,
        ChildKind::Hook,
        ChildKind::StorageDaemon,
    ];

    /// Its name in the catalog and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::QemuNbd => "qemu-nbd",
            ChildKind::Nbdkit => "nbdkit",
            ChildKind::Sna => "sendense-sna",
            ChildKind::Hook => "hook",
            ChildKind::StorageDaemon => "qemu-storage-daemon",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<ChildKind> {
        ChildKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The cleanup action that stops one: `stop_qemu_nbd`, `stop_nbdkit`, `stop_sendense_sna`,
    /// `stop_hook`, `stop_qemu_storage_daemon`.
    pub fn stop_action(self) -> &'static str {
        match self {
            ChildKind::QemuNbd => "stop_qemu_nbd",
            ChildKind::Nbdkit => "stop_nbdkit",
            ChildKind::Sna => "stop_sendense_sna",
            ChildKind::Hook => "stop_hook",
            ChildKind::StorageDaemon => "stop_qemu_storage_daemon",
        }
    }
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a guard records its child: the catalog and the job it works for. Cheap to clone, so
/// every part of a job that starts processes can carry one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    catalog: PathBuf,
    job: Option<i64>,
}

impl Ledger {
    /// Records into the catalog at `catalog`, for `job`.
    pub fn new(catalog: &Path, job: Option<i64>) -> Ledger {
        Ledger {
            catalog: catalog.to_path_buf(),
            job,
        }
    }

    /// The job the children work for.
    pub fn job(&self) -> Option<i64> {
        self.job
    }

    fn open(&self) -> Result<Catalog> {
        Catalog::open(&self.catalog, false)
    }

    fn record(&self, child: &NewChild<'_>) -> Result<i64> {
        self.open()?.record_child(child)
    }

    fn set_process(&self, id: i64, process: crate::proc::ProcId) -> Result<()> {
        self.open()?.set_child_process(id, process)
    }

    fn forget(&self, id: i64) {
        if let Err(e) = self.open().and_then(|mut c| c.forget_child(id)) {
            // The record stays: the reconciliation finds the process gone and drops it.
            tracing::warn!("forgetting child record {id}: {e}");
        }
    }
}

/// The exact command line `cmd` runs with (as `/proc/PID/cmdline` will show it).
pub fn command_line(cmd: &std::process::Command) -> Vec<String> {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Stops every recorded child whose starting process is gone and forgets the records (see the
/// module docs); a child that could not be stopped keeps its record and carries the error. With
/// `dry_run`, only lists them.
pub fn reconcile(
    catalog: &mut Catalog,
    dry_run: bool,
    grace: std::time::Duration,
) -> Result<Vec<Orphan>> {
    let mut orphans = reconcile::orphans(catalog)?;
    if !dry_run {
        for o in &mut orphans {
            if let Err(e) = reconcile::stop(catalog, o, grace) {
                o.error.get_or_insert_with(|| e.message().to_string());
            }
        }
    }
    Ok(orphans)
}
