//! VM sources: where disks come from and how one consistent snapshot of all of them is taken.
//!
//! A [`Source`] discovers disks, takes ONE point-in-time snapshot covering ALL disks of a VM
//! that also starts a new change-tracking checkpoint, exposes each disk as an NBD export (with
//! the dirty bitmap of the previous checkpoint when an incremental is possible), and finishes:
//! on success the previous checkpoint is retired, on failure the new one is dropped (its changes
//! merged back) so the previous stays valid. Teardown — exports, jobs, fleecing overlays — always
//! runs in `finish`, also after errors.
//!
//! Checkpoint lifecycle (per disk, bitmap `sendense-<backup-id>`):
//!
//! ```text
//! repair:    leftovers of killed jobs (other `sendense-*` bitmaps) are merged into the
//!            recorded checkpoint (or only removed, when a completed backup ended there),
//!            which is re-enabled (see [`repair`])
//! snapshot:  add new (recording)  + disable previous    (one atomic step for all disks)
//! export:    previous = changes from the previous backup up to the snapshot instant
//! success:   remove previous              -> new is the checkpoint of the chain top
//! failure:   merge new into previous, enable previous, remove new  -> as if nothing happened
//! ```
//!
//! Implementations: [`qemu::QemuSource`] (a live VM over QMP), [`image::ImageSource`] (a stopped
//! VM's image files), [`nbd::NbdSource`] (existing NBD exports, full backups, with hooks).

pub mod image;
pub mod nbd;
pub mod node;
pub mod qemu;
pub mod qmp;
pub mod repair;
pub mod vmware;

pub use repair::{RepairRequest, Repaired};

use crate::catalog::DiskRecord;
use crate::error::Result;
use crate::nbd::NbdUrl;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A disk found on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredDisk {
    /// Identity: qdev path, file path or URL.
    pub identity: String,
    /// Format (`qcow2`, `raw`), when known.
    pub format: Option<String>,
    /// Virtual size.
    pub size_bytes: u64,
    /// Source-specific details (node name, file).
    pub detail: String,
    /// The key the source names the disk by (a VMware device key), when it has one; other
    /// disks get the next free key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u32>,
}

/// State of a disk's change-tracking checkpoint on the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum CheckpointState {
    /// The recorded checkpoint is there and usable.
    Present,
    /// No checkpoint was recorded yet.
    None,
    /// The recorded checkpoint is gone from the source.
    Missing,
    /// The checkpoint exists but cannot be trusted (not saved cleanly).
    Inconsistent,
    /// This disk cannot track changes (raw image, external export).
    Unsupported(String),
}

impl CheckpointState {
    /// Why an incremental is impossible, or `None` when it is possible.
    pub fn full_reason(&self) -> Option<String> {
        match self {
            CheckpointState::Present => None,
            CheckpointState::None => Some("first backup in repository".into()),
            CheckpointState::Missing => Some("checkpoint missing on source".into()),
            CheckpointState::Inconsistent => Some("checkpoint inconsistent on source".into()),
            CheckpointState::Unsupported(why) => Some(why.clone()),
        }
    }
}

/// One disk to snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotDiskRequest {
    /// Disk key.
    pub key: u32,
    /// Identity on the source.
    pub identity: String,
    /// Export name to use.
    pub export: String,
    /// The previous checkpoint to export changes from (incremental); `None` for a full.
    pub previous: Option<String>,
    /// The checkpoint Sendense recorded for this disk (kept valid if this backup fails).
    pub recorded: Option<String>,
}

/// What to snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// The job.
    pub job: i64,
    /// VM name (for hooks and messages).
    pub vm: String,
    /// Name of the new checkpoint.
    pub checkpoint: String,
    /// Private scratch directory for this job (fleecing overlays, sockets).
    pub scratch: PathBuf,
    /// The disks.
    pub disks: Vec<SnapshotDiskRequest>,
    /// Fail rather than take a snapshot whose guest was not quiesced (sources that can
    /// quiesce: VMware).
    #[serde(default)]
    pub require_quiesce: bool,
}

/// A disk of the snapshot, readable over NBD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDisk {
    /// Disk key.
    pub key: u32,
    /// Where to read it.
    pub url: NbdUrl,
    /// Size at the snapshot.
    pub size_bytes: u64,
    /// Dirty bitmap (name) holding the changes since the previous checkpoint, for incrementals.
    pub bitmap: Option<String>,
    /// Or the changed areas since the previous checkpoint, as `(offset, length)`, sorted and
    /// disjoint (VMware's changed block tracking), for incrementals.
    pub extents: Option<Vec<(u64, u64)>>,
    /// The checkpoint the backup ends at, when the disk tracks changes.
    pub checkpoint: Option<String>,
}

/// What a source needs from the hub while it works: exports and the job log.
pub trait SourceHost {
    /// Starts a qemu-nbd export.
    fn start_export(
        &mut self,
        spec: &crate::export::ExportSpec,
    ) -> Result<crate::export::RunningExport>;
    /// Stops an export.
    fn stop_export(&mut self, export: crate::export::RunningExport) -> Result<()>;
    /// Starts several exports; all or none.
    fn start_exports(
        &mut self,
        specs: &[crate::export::ExportSpec],
    ) -> Result<Vec<crate::export::RunningExport>> {
        let mut started = Vec::new();
        for spec in specs {
            match self.start_export(spec) {
                Ok(e) => started.push(e),
                Err(err) => {
                    let _ = self.stop_exports(started);
                    return Err(err);
                }
            }
        }
        Ok(started)
    }
    /// Stops several exports; the first error is returned after all were tried.
    fn stop_exports(&mut self, exports: Vec<crate::export::RunningExport>) -> Result<()> {
        let mut result = Ok(());
        for e in exports {
            if let Err(err) = self.stop_export(e) {
                if result.is_ok() {
                    result = Err(err);
                }
            }
        }
        result
    }
    /// Writes a line to the job log.
    fn log(&mut self, message: &str);
    /// Where the processes a source starts (hooks) are recorded; `None` on a node, which has
    /// no catalog (the hub records the node, and what the node starts dies with it).
    fn ledger(&self) -> Option<crate::supervise::Ledger> {
        None
    }
}

/// A place disks come from.
pub trait Source: Send {
    /// `qemu`, `image` or `nbd`.
    fn kind(&self) -> &'static str;
    /// The disks, in device order.
    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>>;
    /// Removes what interrupted backups of this VM left on the source and repairs its
    /// checkpoints (see [`repair`]). Called holding the VM lock — by a backup before anything
    /// else, and by the reconciliation — so no backup of the VM is running.
    fn repair(&mut self, _host: &mut dyn SourceHost, _req: &RepairRequest) -> Result<Repaired> {
        Ok(Repaired::Done)
    }
    /// The state of each disk's recorded checkpoint.
    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>>;
    /// One consistent snapshot of all `req.disks`, starting checkpoint `req.checkpoint`.
    fn snapshot(
        &mut self,
        host: &mut dyn SourceHost,
        req: &SnapshotRequest,
    ) -> Result<Vec<SnapshotDisk>>;
    /// The copy is over: hands back the exports it started through
    /// [`SourceHost::start_exports`], so the hub stops them together with its targets. The
    /// snapshot and checkpoints stay until [`Source::finish`].
    fn take_exports(&mut self) -> Vec<crate::export::RunningExport> {
        Vec::new()
    }
    /// Retires the previous checkpoint (`success`) or drops the new one, and tears everything
    /// down. Safe to call after a failed or partial `snapshot`, and more than once.
    fn finish(&mut self, host: &mut dyn SourceHost, success: bool) -> Result<()>;
    /// The zero, clean ranges at the end of a snapshot disk served at `url`, whose changes are
    /// in `bitmap` ([`crate::transfer::untracked::resize_suspects`]): read where the snapshot
    /// is served (on a remote node, by the node).
    fn resize_suspects(
        &mut self,
        url: &crate::nbd::NbdUrl,
        bitmap: &str,
    ) -> Result<Vec<(u64, u64)>> {
        crate::rt::block_on(crate::transfer::untracked::resize_suspects(
            url,
            bitmap,
            crate::transfer::BLOCK,
        ))?
    }
}

/// Prefix of every checkpoint bitmap Sendense creates.
pub const CHECKPOINT_PREFIX: &str = "sendense-";

/// Logs the problems of a teardown into the job log and turns them into one error.
pub(crate) fn teardown_result(host: &mut dyn SourceHost, errors: &[String]) -> Result<()> {
    for e in errors {
        host.log(&format!("teardown: {e}"));
    }
    if errors.is_empty() {
        return Ok(());
    }
    Err(crate::error::Error::new(
        crate::ErrorKind::External,
        format!("tearing down the snapshot: {}", errors.join("; ")),
    ))
}

/// The source of a registered VM.
pub fn for_vm(
    vm: &crate::catalog::VmRecord,
    hook_timeout: std::time::Duration,
) -> Result<Box<dyn Source>> {
    let opts = &vm.source_options;
    match vm.source.as_str() {
        "qemu" => {
            let socket = opts["qmp"].as_str().unwrap_or_default();
            Ok(Box::new(qemu::QemuSource::new(socket.into())))
        }
        "image" => Ok(Box::new(image::ImageSource::new(
            vm.disks
                .iter()
                .map(|d| PathBuf::from(&d.identity))
                .collect(),
        ))),
        "nbd" => Ok(Box::new(nbd::NbdSource::from_options(vm, hook_timeout)?)),
        other => Err(crate::error::Error::invalid(format!(
            "VM `{}` has source `{other}`, which this Sendense cannot read",
            vm.name
        ))),
    }
}

/// The hub side of a source's work: exports through the catalog, log lines into the job log.
#[derive(Debug)]
pub struct HubHost<'a> {
    /// The open state directory.
    pub sd: &'a mut crate::Sendense,
    /// The job whose log receives the lines.
    pub job: Option<i64>,
}

impl SourceHost for HubHost<'_> {
    fn start_export(
        &mut self,
        spec: &crate::export::ExportSpec,
    ) -> Result<crate::export::RunningExport> {
        self.sd.start_export(spec)
    }

    fn stop_export(&mut self, export: crate::export::RunningExport) -> Result<()> {
        self.sd.stop_export(export)
    }

    fn start_exports(
        &mut self,
        specs: &[crate::export::ExportSpec],
    ) -> Result<Vec<crate::export::RunningExport>> {
        self.sd.start_exports(specs)
    }

    fn stop_exports(&mut self, exports: Vec<crate::export::RunningExport>) -> Result<()> {
        self.sd.stop_exports(exports)
    }

    fn ledger(&self) -> Option<crate::supervise::Ledger> {
        Some(self.sd.ledger(self.job))
    }

    fn log(&mut self, message: &str) {
        tracing::info!("{message}");
        if let Some(job) = self.job {
            if let Err(e) = self.sd.catalog_mut().log_job(job, "info", message, None) {
                tracing::warn!("job log: {e}");
            }
        }
    }
}
