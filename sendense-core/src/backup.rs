//! `backup start`: one VM-level backup, end to end.
//!
//! 1. Lock the VM (a second backup of it is refused, `Busy`), create the job (pid and host
//!    recorded), re-discover the disks and match them by identity.
//! 2. Plan per disk ([`plan::decide`]): full or incremental, with the reason.
//! 3. Snapshot: ONE consistent point in time for all disks, starting a new checkpoint.
//! 4. Targets: a `.partial` QCOW2 per disk (an incremental backed by the previous image of the
//!    same disk), each exported writable by qemu-nbd on 127.0.0.1 with an allocated port.
//! 5. Transfer ([`node`]): in-process, or through `sendense-sna transfer` (`transfer: process`).
//! 6. Commit: stop the exports (their locks go with them), `qemu-img check`, rename, manifest
//!    last, catalog completed in one transaction; then the source retires the old checkpoint.
//! 7. Any failure or cancellation: stop every export started, delete every image created, drop
//!    the new checkpoint (the old stays valid), mark the job failed/cancelled. A process killed
//!    outright leaves state that the next command reconciles ([`crate::cleanup`]).

pub mod consolidate;
mod copy;
mod delete;
pub mod merge;
pub mod node;
pub mod plan;
pub(crate) mod process;
mod remote;
mod s3copy;
mod s3delete;
mod targets;

pub use copy::{CopiedLink, CopyReport};
pub use delete::{DeletePlan, DiskFate};

use crate::catalog::{BackupMode, DiskOutcome, JobKind, RepoRecord, VmRecord};
use crate::config::TransferMode;
use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventKind};
use crate::export::RunningExport;
use crate::repo::PendingBackup;
use crate::sendense::Sendense;
use crate::source::{HubHost, Source};
use plan::{PlanInput, Requested};
use serde::Serialize;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One disk in a backup report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskReport {
    /// Disk key.
    pub key: u32,
    /// Full or incremental.
    pub mode: BackupMode,
    /// Why.
    pub reason: String,
    /// The QCOW2 image.
    pub file: std::path::PathBuf,
    /// Parent backup (incrementals).
    pub parent: Option<String>,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes that were zero.
    pub bytes_zero: u64,
    /// Seconds.
    pub seconds: f64,
    /// Read throughput.
    pub mib_per_sec: f64,
}

/// What a backup did. Also the summary object (`--json` last line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupReport {
    /// Backup id.
    pub backup: String,
    /// Job id.
    pub job: i64,
    /// VM.
    pub vm: String,
    /// Repository.
    pub repo: String,
    /// `completed`.
    pub status: String,
    /// Seconds for the whole job.
    pub seconds: f64,
    /// Disks that vanished from the source (not backed up).
    pub vanished: Vec<u32>,
    /// Per disk.
    pub disks: Vec<DiskReport>,
}

/// A backup about to run; see [`Sendense::backup`].
#[derive(Debug)]
pub struct BackupRequest<'a> {
    sd: &'a mut Sendense,
    vm: String,
    repo: Option<String>,
    mode: Requested,
    cancel: CancellationToken,
    require_quiesce: bool,
}

impl Sendense {
    /// Prepares a backup of `vm`: `sd.backup("pgtest1").mode(Requested::Auto).run()`.
    pub fn backup(&mut self, vm: &str) -> BackupRequest<'_> {
        BackupRequest {
            sd: self,
            vm: vm.to_string(),
            repo: None,
            mode: Requested::Auto,
            cancel: CancellationToken::new(),
            require_quiesce: false,
        }
    }

    /// The repository named, else the default one, else the only one.
    pub fn resolve_repo(&self, name: Option<&str>) -> Result<RepoRecord> {
        if let Some(n) = name {
            return self.catalog().repo(n);
        }
        if let Some(r) = self.catalog().default_repo()? {
            return Ok(r);
        }
        let mut all = self.catalog().repos()?;
        match all.len() {
            1 => Ok(all.remove(0)),
            0 => Err(Error::not_found("no repository is registered")
                .with_help("Add one with `sendense repo add NAME --path DIR`.")),
            _ => Err(Error::invalid("several repositories and no default")
                .with_help("Name one with --repo, or set a default with `sendense repo add ... --default`.")),
        }
    }
}

/// Why the chain `links` (top first) cannot be trusted to build on, if it cannot: its links
/// as recorded (present, of their lengths, backed by the recorded parents, of the recorded
/// sizes), every link's digest file and manifest as its backup left them, and no link found
/// damaged by a verify or a restore. Cheap: file lengths, image headers and digest records;
/// `backup verify` reads the data.
fn chain_problem(links: &[crate::repo::chain::ExpectedLink]) -> Option<String> {
    if let Some(p) = crate::repo::chain::chain_problems(links).into_iter().next() {
        return Some(p);
    }
    for link in links {
        let id = &link.backup;
        if let Some(why) = &link.damaged {
            return Some(format!("backup {id} is damaged: {why}"));
        }
        if let Some(manifest) = &link.manifest {
            if !manifest.is_file() {
                return Some(format!("backup {id}'s manifest is missing"));
            }
        }
        let Some(want) = link.digest.as_deref() else {
            continue;
        };
        let file = crate::repo::digests::digests_of(&link.file);
        use crate::repo::digests::{check_path, Checked};
        match check_path(&file, want) {
            Ok(Checked::Intact(_)) => {}
            Ok(Checked::Changed) => return Some(format!("backup {id}'s digest file was changed")),
            Ok(Checked::UnknownScheme) => {
                return Some(format!("backup {id}'s digest names an unknown scheme"))
            }
            Err(e) => return Some(format!("backup {id}'s digest file: {}", e.message())),
        }
    }
    None
}

/// The incremental disks of `transfer` whose dirty bitmap missed changes, with what shows it:
/// zero, clean ranges at the end of the disk (see [`crate::transfer::untracked`]) where its
/// chain recorded data. The chain's digest files were checked while planning, under the VM
/// lock that still holds.
fn untracked_changes(
    sd: &Sendense,
    source: &mut dyn Source,
    transfer: &node::TransferPlan,
    decisions: &[(u32, &plan::Decision)],
) -> Result<Vec<(u32, String)>> {
    let mut found = Vec::new();
    for disk in &transfer.disks {
        let (Some(bitmap), BackupMode::Incremental) = (&disk.bitmap, disk.mode) else {
            continue;
        };
        let Some(parent) = decisions
            .iter()
            .find(|(k, _)| *k == disk.key)
            .and_then(|(_, d)| d.parent.as_ref())
        else {
            continue;
        };
        let url: crate::nbd::NbdUrl = disk.source.parse()?;
        let suspects = source.resize_suspects(&url, bitmap).map_err(|e| {
            e.context(format!(
                "disk {}: reading its allocation and changes",
                disk.key
            ))
        })?;
        if suspects.is_empty() {
            continue;
        }
        let links = sd.catalog().disk_chain(&parent.backup, disk.key)?;
        let check = crate::repo::chain_check::ChainCheck::open_trusted(disk.key, &links)?;
        // A GiB at a time: the blocks a step looks at stay few whatever the disk's size.
        let steps = suspects.into_iter().flat_map(|(start, end)| {
            (start..end)
                .step_by(1 << 30)
                .map(move |s| (s, end.min(s + (1 << 30))))
        });
        for (start, end) in steps {
            if let Some((offset, backup)) = check.recorded_data(start, end - start)? {
                found.push((
                    disk.key,
                    format!(
                        "it reads as zeroes at offset {offset}, where backup {backup} holds \
                         data, and its dirty bitmap does not say it changed"
                    ),
                ));
                break;
            }
        }
    }
    Ok(found)
}

impl BackupRequest<'_> {
    /// Into this repository (default: the default repository).
    pub fn repo(mut self, repo: Option<&str>) -> Self {
        self.repo = repo.map(String::from);
        self
    }

    /// Full, incremental, or whatever is possible.
    pub fn mode(mut self, mode: Requested) -> Self {
        self.mode = mode;
        self
    }

    /// Fail rather than back up from a snapshot whose guest was not quiesced (VMware VMs; other
    /// sources refuse it).
    pub fn require_quiesce(mut self, require: bool) -> Self {
        self.require_quiesce = require;
        self
    }

    /// Cancelling this token cancels the backup (as Ctrl-C does).
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Runs the backup.
    pub fn run(self) -> Result<BackupReport> {
        let BackupRequest {
            sd,
            vm,
            repo,
            mode,
            cancel,
            require_quiesce,
        } = self;
        let started = Instant::now();
        let vm_rec = sd.vm(&vm)?;
        if require_quiesce && vm_rec.source != "vmware" {
            return Err(Error::invalid(format!(
                "--require-quiesce: the snapshots of VM `{}` ({}) never quiesce its guest",
                vm_rec.name, vm_rec.source
            ))
            .with_help(
                "It applies to VMware VMs, whose snapshots quiesce the guest through VMware Tools.",
            ));
        }
        let repo = sd.resolve_repo(repo.as_deref())?;
        let _lock = crate::lock::VmLock::acquire(sd.state_dir(), &vm_rec.name)?;
        // Held to the end: the repository is not taken over while this backup writes into it.
        crate::repo::check_mount(&repo.path, repo.require_mount)?;
        crate::repo::claim_if_unowned(&repo.path, &sd.catalog().hub_id()?)?;
        let _writing = crate::lock::RepoWriteLock::writer(&repo.path)?;
        let job = sd.begin_job(
            JobKind::Backup,
            Some(&vm_rec.name),
            Some(&repo.name),
            cancel,
        )?;
        crate::crash::point("backup.started");
        let mut forced_full = Vec::new();
        let (run, result) = loop {
            let mut run = Run {
                job: job.id,
                cancel: job.cancel.clone(),
                source: None,
                source_dirty: false,
                snapshot_taken: false,
                pending: None,
                exports: Vec::new(),
                forced_full: forced_full.clone(),
                untracked: Vec::new(),
                lost: Vec::new(),
                node: None,
                require_quiesce,
            };
            match run.execute(sd, &vm_rec, &repo, mode, started) {
                Ok(report) => {
                    let total: u64 = report.disks.iter().map(|d| d.bytes_read).sum();
                    if let Err(e) = sd.catalog_mut().set_job_progress(job.id, total, total) {
                        tracing::warn!("job {}: recording its progress: {e}", job.id);
                    }
                    sd.job_log(job.id, &format!("backup {} completed", report.backup));
                    consolidate_long_chains(sd, job.id, &report, &repo);
                    break (run, Ok(report));
                }
                Err(e) => {
                    run.rollback(sd);
                    // Once, the disks whose change tracking missed changes (or whose changes
                    // could not be read) again, in full.
                    if (run.untracked.is_empty() && run.lost.is_empty()) || !forced_full.is_empty()
                    {
                        break (run, Err(e));
                    }
                    for key in &run.lost {
                        let msg = format!(
                            "disk {key}: its changes since the last checkpoint cannot be read (checkpoint missing on source): the backup starts again with this disk in full"
                        );
                        sd.job_log(job.id, &msg);
                        emit(sd, job.id, EventKind::Warning { message: msg });
                    }
                    for (key, why) in &run.untracked {
                        let msg = format!(
                            "disk {key}: {why}: the backup starts again with this disk in full"
                        );
                        sd.job_log(job.id, &msg);
                        emit(sd, job.id, EventKind::Warning { message: msg });
                    }
                    forced_full = run
                        .untracked
                        .iter()
                        .map(|(k, _)| (*k, UNTRACKED_REASON.to_string()))
                        .chain(
                            run.lost
                                .iter()
                                .map(|k| (*k, "checkpoint missing on source".to_string())),
                        )
                        .collect();
                }
            }
        };
        if !run.source_dirty {
            if let Err(e) = sd.catalog_mut().mark_source_clean(job.id) {
                tracing::warn!("job {}: {e}", job.id);
            }
        }
        crate::crash::point("backup.finished");
        let id = job.id;
        sd.end_job(job, result)
            .map_err(|e| e.context(format!("backup of `{}` (job {id})", vm_rec.name)))
    }
}

/// `max_chain_length`: the disks of the new backup whose chain got longer are made standalone
/// fulls at once. A failure is a warning — the backup is complete either way, and the journal
/// of a consolidation cut short is finished by the next command.
fn consolidate_long_chains(sd: &mut Sendense, job: i64, report: &BackupReport, repo: &RepoRecord) {
    let max = sd.config().max_chain_length;
    if max == 0 {
        return;
    }
    for d in report.disks.iter().filter(|d| d.parent.is_some()) {
        let links = match sd.catalog().disk_chain(&report.backup, d.key) {
            Ok(chain) => chain.len(),
            Err(e) => {
                tracing::warn!("job {job}: {e}");
                continue;
            }
        };
        if links <= max as usize {
            continue;
        }
        let result = sd.consolidate_locked(&report.backup, Some(d.key), &repo.path);
        let msg = match result {
            Ok(_) => format!(
                "disk {}: its chain of {links} backups is longer than max_chain_length ({max}): \
                 made a standalone full from the repository",
                d.key
            ),
            Err(e) => {
                let msg = format!(
                    "disk {}: consolidating its chain of {links} backups: {e}",
                    d.key
                );
                emit(
                    sd,
                    job,
                    EventKind::Warning {
                        message: msg.clone(),
                    },
                );
                msg
            }
        };
        sd.job_log(job, &msg);
    }
}

fn emit(sd: &Sendense, job: i64, kind: EventKind) {
    sd.sink().emit(&Event::now(Some(job), kind));
}

fn step(sd: &mut Sendense, job: i64, message: String) {
    sd.job_log(job, &message);
    emit(sd, job, EventKind::Step { message });
}

/// What a running backup holds, so a failure can undo exactly that.
struct Run {
    job: i64,
    cancel: CancellationToken,
    source: Option<Box<dyn Source>>,
    /// The source may hold objects of this job (or of interrupted ones) until a teardown or
    /// repair succeeds; while set the job's catalog row says so (see
    /// [`crate::catalog::Catalog::mark_source_clean`]).
    source_dirty: bool,
    snapshot_taken: bool,
    pending: Option<PendingBackup>,
    exports: Vec<RunningExport>,
    /// Disks to back up in full whatever else allows, with the reason.
    forced_full: Vec<(u32, String)>,
    /// Disks found to have changes their dirty bitmap does not show (this attempt fails; the
    /// next one takes them in full).
    untracked: Vec<(u32, String)>,
    /// Incremental disks whose changes the source could not give at the snapshot (this
    /// attempt fails; the next one takes them in full).
    lost: Vec<u32>,
    /// The remote node the VM runs on (its transfer runs there).
    node: Option<crate::catalog::NodeRecord>,
    /// No snapshot without a quiesced guest.
    require_quiesce: bool,
}

/// The source of a backup, ready, and the VM's disks as it has them now.
struct OpenedSource {
    source: Box<dyn Source>,
    /// The VM with its disks matched by identity.
    vm: VmRecord,
    /// The disks still there.
    disks: Vec<crate::catalog::DiskRecord>,
    /// Keys of the disks that vanished from the source.
    vanished: Vec<u32>,
}

/// The reason of a full for a disk whose change tracking missed changes.
const UNTRACKED_REASON: &str = "disk resized or changed behind its change tracking (shrunk and \
     grown since the previous backup, or zeroed where its dirty bitmap does not show it)";

impl Run {
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, "backup cancelled"));
        }
        Ok(())
    }

    /// The whole backup, step by step; on an error the caller rolls back what `self` holds.
    fn execute(
        &mut self,
        sd: &mut Sendense,
        vm: &VmRecord,
        repo: &RepoRecord,
        mode: Requested,
        started: Instant,
    ) -> Result<BackupReport> {
        crate::repo::check_mount(&repo.path, repo.require_mount)?;
        crate::repo::check_identity(&repo.path, &repo.repo_id)?;
        crate::repo::check_owner(&repo.path, &sd.catalog().hub_id()?)?;
        let OpenedSource {
            mut source,
            vm,
            disks,
            vanished,
        } = self.open_source(sd, vm)?;
        let decisions = self.plan_disks(sd, source.as_mut(), &vm, repo, &disks, mode)?;
        self.check_cancel()?;
        crate::crash::point("backup.planned");

        // The snapshot, and meanwhile the targets.
        self.source_dirty = true;
        let transfer = self.snapshot_and_targets(sd, source, &vm, repo, &disks, &decisions)?;
        crate::crash::point("backup.snapshot-taken");
        self.refuse_untracked_changes(sd, &transfer, &disks, &decisions)?;
        let results = self.transfer(sd, transfer)?;
        self.commit(sd, &vm, repo, vanished, results, started)
    }

    /// Step 1: the source, cleared of what an interrupted backup left, and the VM's disks
    /// matched by identity (the ones still there, and the keys of those that vanished). One
    /// source object serves the whole job, so what it learnt once is not asked again.
    fn open_source(&mut self, sd: &mut Sendense, vm: &VmRecord) -> Result<OpenedSource> {
        let job = self.job;
        if let Some(node) = &vm.node {
            self.node = Some(sd.node(node)?);
        }
        let mut source = sd.source_of(vm, Some(job))?;
        self.source_dirty = true;
        sd.repair_source(vm, source.as_mut(), Some(job))?;
        self.source_dirty = false;
        let found = source.discover()?;
        let vm = sd.record_discovered_disks(&vm.name, found)?;
        let vanished: Vec<u32> = vm
            .disks
            .iter()
            .filter(|d| !d.present)
            .map(|d| d.key)
            .collect();
        for d in vm.disks.iter().filter(|d| !d.present) {
            let msg = format!(
                "disk {} ({}) vanished from the source; it is not backed up",
                d.key, d.identity
            );
            sd.job_log(job, &msg);
            emit(sd, job, EventKind::Warning { message: msg });
        }
        let disks: Vec<_> = vm.disks.iter().filter(|d| d.present).cloned().collect();
        if disks.is_empty() {
            return Err(Error::invalid(format!(
                "VM `{}` has no disks on its source",
                vm.name
            )));
        }
        Ok(OpenedSource {
            source,
            vm,
            disks,
            vanished,
        })
    }

    /// Step 2: full or incremental per disk, with the reason; every chain to build on is
    /// checked first, the disks side by side.
    fn plan_disks(
        &self,
        sd: &mut Sendense,
        source: &mut dyn Source,
        vm: &VmRecord,
        repo: &RepoRecord,
        disks: &[crate::catalog::DiskRecord],
        mode: Requested,
    ) -> Result<Vec<plan::Decision>> {
        let job = self.job;
        let states = source.checkpoints(disks)?;
        let tops = disks
            .iter()
            .map(|d| sd.catalog().chain_top(vm.id, repo.id, d.key))
            .collect::<Result<Vec<_>>>()?;
        let vm_has_backups = tops.iter().any(|t| t.is_some());
        let chains = disks
            .iter()
            .zip(&tops)
            .map(|(d, top)| match top {
                Some(t) => sd.catalog().disk_chain(&t.backup, d.key),
                None => Ok(Vec::new()),
            })
            .collect::<Result<Vec<_>>>()?;
        // (A full by request builds on nothing: no chain to check.)
        let problems = crate::par::map(&chains, |links| {
            if links.is_empty() || mode == Requested::Full {
                None
            } else {
                chain_problem(links)
            }
        });
        let mut decisions = Vec::new();
        for (((d, state), chain_top), chain_problem) in
            disks.iter().zip(states).zip(tops).zip(problems)
        {
            let input = PlanInput {
                size_bytes: d.size_bytes,
                chain_top,
                recorded_checkpoint: d.checkpoint.clone(),
                state,
                vm_has_backups,
                chain_problem,
                forced_full: self
                    .forced_full
                    .iter()
                    .find(|(k, _)| *k == d.key)
                    .map(|(_, why)| why.clone()),
            };
            let decision = plan::decide(mode, &input).map_err(|reason| {
                Error::refused(format!(
                    "disk {}: an incremental backup is not possible: {reason}",
                    d.key
                ))
                .with_help(
                    "Run without --incremental (a full is taken where needed), or with --full.",
                )
            })?;
            step(
                sd,
                job,
                format!(
                    "disk {}: {} ({})",
                    d.key,
                    decision.mode.as_str(),
                    decision.reason
                ),
            );
            decisions.push(decision);
        }
        Ok(decisions)
    }

    /// After the snapshot: fails (recording the disks in `self.untracked`, for the job to start again with
    /// them in full) when an incremental disk's dirty bitmap missed changes.
    fn refuse_untracked_changes(
        &mut self,
        sd: &Sendense,
        transfer: &node::TransferPlan,
        disks: &[crate::catalog::DiskRecord],
        decisions: &[plan::Decision],
    ) -> Result<()> {
        let planned: Vec<(u32, &plan::Decision)> =
            disks.iter().map(|d| d.key).zip(decisions).collect();
        let source = self
            .source
            .as_deref_mut()
            .ok_or_else(|| Error::internal("the backup lost its source"))?;
        self.untracked = untracked_changes(sd, source, transfer, &planned)?;
        match self.untracked.first() {
            None => Ok(()),
            Some((key, why)) => Err(Error::new(
                ErrorKind::External,
                format!("disk {key}: its change tracking missed changes ({why})"),
            )),
        }
    }

    /// Step 5: the data, in this process or through `sendense-sna`; the hub writes every
    /// disk's digest file, whichever side computes the records.
    fn transfer(
        &mut self,
        sd: &mut Sendense,
        transfer: node::TransferPlan,
    ) -> Result<Vec<node::TransferResult>> {
        let keys: Vec<u32> = transfer.disks.iter().map(|d| d.key).collect();
        let digest_files: Vec<(u32, std::path::PathBuf)> = self
            .pending
            .as_ref()
            .map(|p| {
                p.targets
                    .iter()
                    .map(|t| (t.plan.key, t.digests.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let open_digests = |key: u32, scheme: crate::repo::digests::Scheme| {
            let (_, path) = digest_files
                .iter()
                .find(|(k, _)| *k == key)
                .ok_or_else(|| Error::internal(format!("no digest file for disk {key}")))?;
            crate::repo::digests::DigestFile::open(path, scheme).map(std::sync::Arc::new)
        };
        // Every disk's digest file, for a transfer in another process.
        let all_digests = || {
            transfer
                .disks
                .iter()
                .map(|d| {
                    let scheme = crate::repo::digests::Scheme::from_tag(
                        d.digest_scheme.as_deref().unwrap_or_default(),
                    )
                    .unwrap_or_default();
                    open_digests(d.key, scheme).map(|f| (d.key, f))
                })
                .collect::<Result<Vec<_>>>()
        };
        let results = match (&self.node, sd.config().transfer) {
            // A VM on a remote node: the node copies, whatever the hub's own mode.
            (Some(node), _) => {
                let files = all_digests()?;
                remote::run_remote_transfer(sd, node, &transfer, &files, &self.cancel)?
            }
            (None, TransferMode::InProcess) => {
                let sink = sd.sink().clone();
                let cancel = self.cancel.clone();
                let digests_for = |key: u32, scheme| {
                    open_digests(key, scheme)
                        .map(|f| Some(f as std::sync::Arc<dyn crate::transfer::BlockDigests>))
                };
                crate::rt::block_on(async move {
                    node::run_transfer(&transfer, &sink, &cancel, &digests_for).await
                })??
            }
            (None, TransferMode::Process) => {
                let files = all_digests()?;
                process::run_node_process(sd, &transfer, &files, &self.cancel)?
            }
        };
        self.check_cancel()?;
        node::check_results(&keys, &results)?;
        crate::crash::point("backup.transferred");
        let moved: u64 = results.iter().map(|r| r.bytes_read).sum();
        sd.job_log(self.job, &format!("transfer finished: {moved} bytes read"));
        Ok(results)
    }

    /// Step 6: the exports stop, the images are checked and committed, then the source retires
    /// the old checkpoint. The source's exports of the snapshot stop together with the targets;
    /// only a target still running stops the commit (its image could still change).
    fn commit(
        &mut self,
        sd: &mut Sendense,
        vm: &VmRecord,
        repo: &RepoRecord,
        vanished: Vec<u32>,
        results: Vec<node::TransferResult>,
        started: Instant,
    ) -> Result<BackupReport> {
        let job = self.job;
        let mut exports = std::mem::take(&mut self.exports);
        let targets: Vec<crate::proc::ProcId> = exports.iter().map(|e| e.server).collect();
        if let Some(src) = self.source.as_mut() {
            exports.extend(src.take_exports());
        }
        if let Err(e) = sd.stop_exports(exports) {
            if targets.iter().any(|t| t.is_alive()) {
                return Err(e);
            }
            let msg = format!("stopping the snapshot's exports: {e} (cleanup retries)");
            sd.job_log(job, &msg);
            emit(sd, job, EventKind::Warning { message: msg });
        }
        crate::crash::point("backup.exports-stopped");
        sd.job_log(job, "exports stopped; checking and committing the images");
        let outcomes: Vec<DiskOutcome> = results
            .iter()
            .map(|r| {
                Ok(DiskOutcome {
                    key: r.key,
                    bytes_read: r.bytes_read,
                    bytes_written: r.bytes_written,
                    digest: None,
                    image_bytes: None,
                    digest_scheme: node::result_scheme(r)?,
                })
            })
            .collect::<Result<_>>()?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| Error::internal("backup lost its pending state"))?;
        // Recorded with the backup: the checkpoint each disk's source now has.
        let record = sd.commit_backup(pending, &outcomes)?;
        sd.job_log(job, "images checked, manifest written, backup recorded");
        // The backup is safe now; the old checkpoint can go.
        if let Some(mut src) = self.source.take() {
            let mut host = HubHost { sd, job: Some(job) };
            match src.finish(&mut host, true) {
                Ok(()) => self.source_dirty = false,
                Err(e) => {
                    let msg = format!(
                        "the backup is complete, but retiring the old checkpoint failed: {e} (the next sendense command repairs it)"
                    );
                    sd.job_log(job, &msg);
                    emit(sd, job, EventKind::Warning { message: msg });
                }
            }
        }
        self.snapshot_taken = false;
        Ok(BackupReport {
            backup: record.id.clone(),
            job,
            vm: vm.name.clone(),
            repo: repo.name.clone(),
            status: record.status.clone(),
            seconds: started.elapsed().as_secs_f64(),
            vanished,
            disks: record
                .disks
                .iter()
                .map(|d| {
                    let r = results
                        .iter()
                        .find(|r| r.key == d.key)
                        .cloned()
                        .unwrap_or_default();
                    DiskReport {
                        key: d.key,
                        mode: d.mode,
                        reason: d.reason.clone(),
                        file: d.file.clone(),
                        parent: d.parent.clone(),
                        bytes_read: r.bytes_read,
                        bytes_written: r.bytes_written,
                        bytes_zero: r.bytes_zero,
                        seconds: r.seconds,
                        mib_per_sec: if r.seconds > 0.0 {
                            r.bytes_read as f64 / r.seconds / 1048576.0
                        } else {
                            0.0
                        },
                    }
                })
                .collect(),
        })
    }

    /// Undoes everything this run started: exports, images, the new checkpoint. What it
    /// cannot undo stays recorded for the reconciliation.
    fn rollback(&mut self, sd: &mut Sendense) {
        let mut exports = std::mem::take(&mut self.exports);
        if let Some(src) = self.source.as_mut() {
            exports.extend(src.take_exports());
        }
        if let Err(err) = sd.stop_exports(exports) {
            sd.job_log(self.job, &format!("rollback: stopping exports: {err}"));
        }
        crate::crash::point("backup.rollback-exports-stopped");
        if let Some(p) = self.pending.take() {
            sd.abort_backup(p);
        }
        if self.snapshot_taken {
            if let Some(mut src) = self.source.take() {
                let mut host = HubHost {
                    sd,
                    job: Some(self.job),
                };
                match src.finish(&mut host, false) {
                    Ok(()) => self.source_dirty = false,
                    Err(err) => sd.job_log(
                        self.job,
                        &format!("rollback: {err} (the next sendense command repairs it)"),
                    ),
                }
            }
        }
        if !self.source_dirty {
            let scratch = sd.job_scratch(self.job);
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}
