//! Steps 3 and 4 of a backup, side by side: the source takes its snapshot while a worker
//! thread creates the target images, records the backup as running and exports the targets.
//! The targets depend only on the plan, so neither waits for the other.

use super::node::{TransferDisk, TransferPlan};
use super::plan::Decision;
use super::{emit, Run};
use crate::catalog::{BackupMode, DiskRecord, RepoRecord, VmRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::event::EventKind;
use crate::export::{export_name, ExportSpec};
use crate::repo::digests::Scheme;
use crate::repo::{
    chain, create_targets, plan_targets, record_targets, remove_targets, DiskPlan, Target,
};
use crate::sendense::Sendense;
use crate::source::{HubHost, SnapshotDiskRequest, SnapshotRequest, Source};

impl Run {
    /// Takes the snapshot and prepares the targets; returns what the node is to copy. From its
    /// return on, the rollback undoes both (the source, the pending backup and the exports are
    /// in `self`).
    pub(super) fn snapshot_and_targets(
        &mut self,
        sd: &mut Sendense,
        source: Box<dyn Source>,
        vm: &VmRecord,
        repo: &RepoRecord,
        disks: &[DiskRecord],
        decisions: &[Decision],
    ) -> Result<TransferPlan> {
        let job = self.job;
        let id = chain::new_backup_id();
        let checkpoint = format!("sendense-{id}");
        let req = SnapshotRequest {
            job,
            vm: vm.name.clone(),
            checkpoint,
            scratch: sd.snapshot_scratch(vm, job)?,
            require_quiesce: self.require_quiesce,
            disks: disks
                .iter()
                .zip(decisions)
                .map(|(d, dec)| SnapshotDiskRequest {
                    key: d.key,
                    identity: d.identity.clone(),
                    export: export_name(&vm.name, d.key),
                    previous: dec.previous_checkpoint.clone(),
                    recorded: d.checkpoint.clone(),
                })
                .collect(),
        };
        let plans: Vec<DiskPlan> = disks
            .iter()
            .zip(decisions)
            .map(|(d, dec)| DiskPlan {
                key: d.key,
                mode: dec.mode,
                reason: dec.reason.clone(),
                parent: dec.parent.clone(),
                size_bytes: d.size_bytes,
                checkpoint: None,
            })
            .collect();
        let copy = sd.config().copy;
        let ports = (sd.config().nbd_ports.first, sd.config().nbd_ports.last);
        let specs = |targets: &[Target]| -> Vec<ExportSpec> {
            targets
                .iter()
                .map(|t| ExportSpec {
                    // Thrown away unless the backup commits, which fsyncs it first: QCOW2's
                    // ordering flushes while the image grows only cost time.
                    skip_flushes: true,
                    // Written in whole clusters only: the chain below is never read.
                    alone: true,
                    ..ExportSpec::target(
                        t.partial.clone(),
                        export_name(&vm.name, t.plan.key),
                        ports,
                        copy.connections + 1,
                        Some(job),
                    )
                })
                .collect()
        };
        let worker = sd.worker();
        self.snapshot_taken = true;
        let src = self.source.insert(source);
        let (snap, prepared) = std::thread::scope(|s| {
            // Created, recorded as running (so a crash leaves rows cleanup follows), exported.
            let prepared = s.spawn(|| {
                let targets = plan_targets(repo, vm, &id, &plans)?;
                let mut catalog = worker.catalog()?;
                let pending = record_targets(&mut catalog, &id, vm, repo, Some(job), targets)?;
                let exports = create_targets(&pending)
                    .and_then(|()| worker.start_exports(&mut catalog, &specs(&pending.targets)));
                match exports {
                    Ok(exports) => Ok((pending, exports)),
                    Err(e) => {
                        remove_targets(repo, &pending.targets);
                        let _ = catalog.discard_backup(&id);
                        Err(e)
                    }
                }
            });
            let mut host = HubHost { sd, job: Some(job) };
            let snap = src.snapshot(&mut host, &req);
            // A panic is a bug; as an error it still lets the rollback undo the snapshot.
            let prepared = prepared.join().unwrap_or_else(|_| {
                Err(Error::internal("preparing the targets failed unexpectedly"))
            });
            (snap, prepared)
        });
        // From here the rollback undoes the targets too.
        let targets_failed = match prepared {
            Ok((pending, exports)) => {
                self.pending = Some(pending);
                self.exports = exports;
                None
            }
            Err(e) => Some(e),
        };
        let snap = snap?;
        if let Some(e) = targets_failed {
            return Err(e);
        }
        emit(sd, job, EventKind::SnapshotTaken { disks: snap.len() });
        sd.job_log(job, &format!("snapshot of {} disk(s) taken", snap.len()));

        // Incrementals whose changes the source cannot give (its checkpoint vanished during the
        // snapshot, or VMware reset the disk's change tracking): the run starts again with
        // these disks in full.
        self.lost = plans
            .iter()
            .filter(|p| p.mode == BackupMode::Incremental)
            .filter(|p| {
                snap.iter()
                    .any(|s| s.key == p.key && s.bitmap.is_none() && s.extents.is_none())
            })
            .map(|p| p.key)
            .collect();
        if !self.lost.is_empty() {
            let keys: Vec<String> = self.lost.iter().map(u32::to_string).collect();
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "disk(s) {}: the changes since the last checkpoint cannot be read from the source",
                    keys.join(", ")
                ),
            ));
        }
        check_snapshot(&plans, &snap)?;
        let snap_of = |key: u32| {
            snap.iter()
                .find(|s| s.key == key)
                .ok_or_else(|| Error::internal(format!("the snapshot has no disk {key}")))
        };
        let checkpoints: Vec<(u32, Option<String>)> =
            snap.iter().map(|s| (s.key, s.checkpoint.clone())).collect();
        sd.catalog_mut().set_backup_checkpoints(&id, &checkpoints)?;
        let pending = self
            .pending
            .as_mut()
            .ok_or_else(|| Error::internal("backup lost its pending state"))?;
        for t in pending.targets.iter_mut() {
            t.plan.checkpoint = snap_of(t.plan.key)?.checkpoint.clone();
        }
        self.check_cancel()?;
        self.transfer_plan(sd, vm, &snap)
    }

    /// What the node is to copy: per disk, the snapshot's export and the target's.
    fn transfer_plan(
        &self,
        sd: &mut Sendense,
        vm: &VmRecord,
        snap: &[crate::source::SnapshotDisk],
    ) -> Result<TransferPlan> {
        let pending = self
            .pending
            .as_ref()
            .ok_or_else(|| Error::internal("backup lost its pending state"))?;
        let copy = sd.config().copy;
        let mut disks = Vec::new();
        let mut target_urls = Vec::new();
        for t in &pending.targets {
            let p = &t.plan;
            let s = snap
                .iter()
                .find(|s| s.key == p.key)
                .ok_or_else(|| Error::internal(format!("the snapshot has no disk {}", p.key)))?;
            let name = export_name(&vm.name, p.key);
            let export = self
                .exports
                .iter()
                .find(|e| e.record.export == name)
                .ok_or_else(|| Error::internal(format!("no target export for disk {}", p.key)))?;
            target_urls.push((p.key, export.url.clone()));
            disks.push(TransferDisk {
                key: p.key,
                mode: p.mode,
                reason: p.reason.clone(),
                source: s.url.to_string(),
                target: export.url.to_string(),
                bitmap: s
                    .bitmap
                    .clone()
                    .filter(|_| p.mode == BackupMode::Incremental),
                extents: s
                    .extents
                    .clone()
                    .filter(|_| p.mode == BackupMode::Incremental),
                size_bytes: s.size_bytes,
                record_digests: true,
                digest_scheme: Some(Scheme::CURRENT.tag().into()),
            });
        }
        let targets: Vec<String> = target_urls
            .iter()
            .map(|(k, u)| format!("{k}:{u}"))
            .collect();
        sd.job_log(self.job, &format!("targets {}", targets.join(",")));
        Ok(TransferPlan {
            protocol: super::node::PROTOCOL,
            job: Some(self.job),
            disks,
            connections: copy.connections,
            requests: copy.requests,
            request_size: copy.request_size,
        })
    }
}

/// The snapshot must match the plan the targets were made for; only a change on the source
/// between planning and the snapshot (a checkpoint deleted, a disk resized in those
/// milliseconds) makes it differ, and then the next run plans afresh.
fn check_snapshot(plans: &[DiskPlan], snap: &[crate::source::SnapshotDisk]) -> Result<()> {
    for p in plans {
        let Some(s) = snap.iter().find(|s| s.key == p.key) else {
            return Err(Error::internal(format!(
                "the snapshot has no disk {}",
                p.key
            )));
        };
        // (An incremental without its changes was taken care of before: it goes again in full.)
        if s.size_bytes == p.size_bytes {
            continue;
        }
        let why = format!("disk {}: it was resized during the snapshot", p.key);
        return Err(Error::refused(why).with_help(
            "Run the backup again: it plans from the source as it is now (a full where needed).",
        ));
    }
    Ok(())
}
