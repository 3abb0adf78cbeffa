//! A live QEMU/KVM VM over QMP.
//!
//! Snapshot = ONE QMP `transaction` that, for every disk, adds the new persistent dirty bitmap,
//! disables the previous one, and starts `blockdev-backup sync=none` into a fleecing overlay
//! (a qcow2 in the job's scratch directory whose backing node is the disk). The guest keeps
//! running and writing; reads of the overlay stay frozen at the transaction instant. QEMU's own
//! NBD server (`nbd-server-start` on a Unix socket in the scratch directory) exports each
//! overlay with `block-export-add`, with the previous checkpoint's bitmap attached.
//!
//! QMP commands used: query-block, blockdev-add, transaction (block-dirty-bitmap-add,
//! block-dirty-bitmap-disable, blockdev-backup), nbd-server-start, block-export-add,
//! block-export-del, nbd-server-stop, block-job-cancel, query-block-jobs, blockdev-del,
//! transaction (block-dirty-bitmap-merge, block-dirty-bitmap-enable, block-dirty-bitmap-remove).

use super::qmp::{BlockDevice, Qmp};
use super::{CheckpointState, DiscoveredDisk, SnapshotDisk, SnapshotRequest, Source, SourceHost};
use crate::catalog::DiskRecord;
use crate::error::{Error, Result};
use crate::nbd::NbdUrl;
use crate::tools::{self, QEMU_IMG};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// A VM reached through its QMP socket.
#[derive(Debug)]
pub struct QemuSource {
    socket: PathBuf,
    qmp: Option<Qmp>,
    active: Option<Active>,
}

/// What a snapshot set up, for `finish`.
#[derive(Debug, Default)]
struct Active {
    scratch: PathBuf,
    /// (node, recorded checkpoint, new bitmap) per disk.
    bitmaps: Vec<(String, Option<String>, Option<String>)>,
    fleece_nodes: Vec<String>,
    jobs: Vec<String>,
    exports: Vec<String>,
    nbd_server: bool,
}

impl QemuSource {
    /// A source for the VM behind `socket`.
    pub fn new(socket: PathBuf) -> Self {
        QemuSource {
            socket,
            qmp: None,
            active: None,
        }
    }

    fn qmp(&mut self) -> Result<&mut Qmp> {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.socket)?);
        }
        self.qmp
            .as_mut()
            .ok_or_else(|| Error::internal("QMP connection missing"))
    }

    fn devices(&mut self) -> Result<Vec<BlockDevice>> {
        self.qmp()?.block_devices()
    }

    fn device_for(devices: &[BlockDevice], identity: &str) -> Result<BlockDevice> {
        devices
            .iter()
            .find(|d| d.qdev == identity)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("the VM has no disk `{identity}` any more"))
                    .with_help("Run `sendense vm discover --qmp SOCKET` to see its disks now.")
            })
    }
}

fn tracks_changes(dev: &BlockDevice) -> Option<String> {
    (dev.format != "qcow2").then(|| {
        format!(
            "{} disk: persistent change tracking needs qcow2, so every backup is full",
            dev.format
        )
    })
}

/// `sd<job>-` names are Sendense's: `tag_job("sd12-fleece-2000") == Some(12)`.
fn tag_job(name: &str) -> Option<i64> {
    name.strip_prefix("sd")?.split('-').next()?.parse().ok()
}

impl QemuSource {
    /// Removes what an interrupted backup left inside QEMU: its NBD exports and server, its
    /// fleecing jobs and nodes. Only names Sendense gives (`sd<job>-...`) are touched.
    fn clean_leftovers(&mut self, host: &mut dyn SourceHost, job: i64) -> Result<()> {
        let qmp = self.qmp()?;
        let mut ours_removed = false;
        let exports = qmp.execute("query-block-exports", json!({}))?;
        let mut foreign_exports = false;
        for e in exports.as_array().into_iter().flatten() {
            let id = e["id"].as_str().unwrap_or_default();
            match tag_job(id) {
                Some(j) if j != job => {
                    host.log(&format!("removing export {id} left by job {j}"));
                    qmp.execute("block-export-del", json!({"id": id, "mode": "hard"}))?;
                    ours_removed = true;
                }
                Some(_) => {}
                None => foreign_exports = true,
            }
        }
        if ours_removed && !foreign_exports {
            let _ = qmp.execute("nbd-server-stop", json!({}));
        }
        let jobs = qmp.execute("query-block-jobs", json!({}))?;
        for j in jobs.as_array().into_iter().flatten() {
            let id = j["device"].as_str().unwrap_or_default().to_string();
            if tag_job(&id).is_some_and(|n| n != job) {
                host.log(&format!(
                    "cancelling block job {id} left by an interrupted backup"
                ));
                qmp.execute("block-job-cancel", json!({"device": id, "force": true}))?;
                qmp.wait_job_gone(&id, Duration::from_secs(30))?;
            }
        }
        let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
        for n in nodes.as_array().into_iter().flatten() {
            let name = n["node-name"].as_str().unwrap_or_default().to_string();
            if name.contains("-fleece-") && tag_job(&name).is_some_and(|j| j != job) {
                host.log(&format!(
                    "removing fleecing node {name} left by an interrupted backup"
                ));
                qmp.execute("blockdev-del", json!({"node-name": name}))?;
            }
        }
        Ok(())
    }

    /// Folds the bitmaps a killed job left into the recorded checkpoint (so it misses no write)
    /// and makes sure the recorded checkpoint records.
    fn repair(
        &mut self,
        host: &mut dyn SourceHost,
        key: u32,
        dev: &BlockDevice,
        recorded: Option<&str>,
        new: &str,
    ) -> Result<()> {
        let stale = super::leftovers(dev.bitmaps.iter().map(|b| b.name.as_str()), recorded, new);
        let mut actions = Vec::new();
        if let Some(r) = recorded {
            if !stale.is_empty() {
                actions.push(json!({"type": "block-dirty-bitmap-merge",
                    "data": {"node": dev.node, "target": r, "bitmaps": stale}}));
            }
            if !stale.is_empty() || dev.bitmaps.iter().any(|b| b.name == r && !b.recording) {
                actions.push(json!({"type": "block-dirty-bitmap-enable", "data": {"node": dev.node, "name": r}}));
            }
        }
        for b in &stale {
            actions.push(
                json!({"type": "block-dirty-bitmap-remove", "data": {"node": dev.node, "name": b}}),
            );
        }
        if actions.is_empty() {
            return Ok(());
        }
        host.log(&format!(
            "disk {key}: repairing checkpoints left by an interrupted backup ({stale:?})"
        ));
        self.qmp()?
            .execute("transaction", json!({ "actions": actions }))?;
        Ok(())
    }
}

impl Source for QemuSource {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn prepare(&mut self, host: &mut dyn SourceHost, job: i64) -> Result<()> {
        self.clean_leftovers(host, job)
    }

    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>> {
        Ok(self
            .devices()?
            .into_iter()
            .map(|d| DiscoveredDisk {
                identity: d.qdev.clone(),
                format: Some(d.format.clone()),
                size_bytes: d.size,
                detail: format!("node {}, file {}", d.node, d.file),
            })
            .collect())
    }

    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>> {
        let devices = self.devices()?;
        Ok(disks
            .iter()
            .map(|d| {
                let Some(dev) = devices.iter().find(|x| x.qdev == d.identity) else {
                    return CheckpointState::Missing;
                };
                if let Some(why) = tracks_changes(dev) {
                    return CheckpointState::Unsupported(why);
                }
                match &d.checkpoint {
                    None => CheckpointState::None,
                    Some(name) => match dev.bitmaps.iter().find(|b| &b.name == name) {
                        None => CheckpointState::Missing,
                        Some(b) if b.inconsistent || !b.persistent => CheckpointState::Inconsistent,
                        Some(_) => CheckpointState::Present,
                    },
                }
            })
            .collect())
    }

    fn snapshot(
        &mut self,
        host: &mut dyn SourceHost,
        req: &SnapshotRequest,
    ) -> Result<Vec<SnapshotDisk>> {
        crate::fsutil::create_private_dir(&req.scratch)?;
        let devices = self.devices()?;
        self.active = Some(Active {
            scratch: req.scratch.clone(),
            ..Default::default()
        });
        let tag = format!("sd{}", req.job);
        let mut actions = Vec::new();
        let mut plan = Vec::new();
        for d in &req.disks {
            let dev = Self::device_for(&devices, &d.identity)?;
            let fleece = req.scratch.join(format!("fleece-{}.qcow2", d.key));
            tools::run(
                QEMU_IMG,
                [
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    &fleece.to_string_lossy(),
                    &dev.size.to_string(),
                ],
            )?;
            let node = format!("{tag}-fleece-{}", d.key);
            self.qmp()?.execute(
                "blockdev-add",
                json!({
                    "driver": "qcow2",
                    "node-name": node,
                    "file": {"driver": "file", "filename": fleece.to_string_lossy()},
                    "backing": dev.node,
                }),
            )?;
            if let Some(a) = self.active.as_mut() {
                a.fleece_nodes.push(node.clone());
            }
            let new = tracks_changes(&dev)
                .is_none()
                .then(|| req.checkpoint.clone());
            let recorded = d
                .recorded
                .clone()
                .filter(|r| dev.bitmaps.iter().any(|b| &b.name == r));
            if new.is_some() {
                self.repair(host, d.key, &dev, recorded.as_deref(), &req.checkpoint)?;
            }
            let previous = d.previous.clone().filter(|p| Some(p) == recorded.as_ref());
            if let Some(new) = &new {
                actions.push(json!({"type": "block-dirty-bitmap-add",
                    "data": {"node": dev.node, "name": new, "persistent": true}}));
            }
            if let Some(r) = &recorded {
                actions.push(json!({"type": "block-dirty-bitmap-disable",
                    "data": {"node": dev.node, "name": r}}));
            }
            let job = format!("{tag}-backup-{}", d.key);
            actions.push(json!({"type": "blockdev-backup",
                "data": {"job-id": job, "device": dev.node, "target": node, "sync": "none"}}));
            plan.push((d.clone(), dev.clone(), node, job, previous, recorded, new));
        }
        host.log(&format!(
            "QMP transaction with {} actions for {} disk(s)",
            actions.len(),
            req.disks.len()
        ));
        self.qmp()?
            .execute("transaction", json!({ "actions": actions }))?;
        if let Some(active) = self.active.as_mut() {
            for (_, dev, _, job, _, recorded, new) in &plan {
                active.jobs.push(job.clone());
                active
                    .bitmaps
                    .push((dev.node.clone(), recorded.clone(), new.clone()));
            }
        }
        let sock = req.scratch.join("nbd.sock");
        self.qmp()?.execute(
            "nbd-server-start",
            json!({"addr": {"type": "unix", "data": {"path": sock.to_string_lossy()}}}),
        )?;
        if let Some(a) = self.active.as_mut() {
            a.nbd_server = true;
        }
        let mut out = Vec::new();
        for (d, dev, node, _, prev, _, new) in plan {
            let export_id = format!("{tag}-export-{}", d.key);
            let mut args = json!({"type": "nbd", "id": export_id, "node-name": node,
                "name": d.export, "writable": false});
            if let Some(p) = &prev {
                args["bitmaps"] = json!([p]);
            }
            self.qmp()?.execute("block-export-add", args)?;
            if let Some(a) = self.active.as_mut() {
                a.exports.push(export_id);
            }
            out.push(SnapshotDisk {
                key: d.key,
                url: NbdUrl::unix(&sock, &d.export),
                size_bytes: dev.size,
                bitmap: prev,
                checkpoint: new,
            });
        }
        Ok(out)
    }

    fn finish(&mut self, host: &mut dyn SourceHost, success: bool) -> Result<()> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let mut errors: Vec<String> = Vec::new();
        fn note(errors: &mut Vec<String>, r: Result<serde_json::Value>) {
            if let Err(e) = r {
                errors.push(e.to_string());
            }
        }
        if let Ok(qmp) = self.qmp() {
            for e in &active.exports {
                note(
                    &mut errors,
                    qmp.execute("block-export-del", json!({"id": e, "mode": "hard"})),
                );
            }
            if active.nbd_server {
                note(&mut errors, qmp.execute("nbd-server-stop", json!({})));
            }
            for j in &active.jobs {
                note(
                    &mut errors,
                    qmp.execute("block-job-cancel", json!({"device": j, "force": true})),
                );
                if let Err(e) = qmp.wait_job_gone(j, Duration::from_secs(30)) {
                    errors.push(e.to_string());
                }
            }
            for n in &active.fleece_nodes {
                let mut tries = 0;
                loop {
                    match qmp.execute("blockdev-del", json!({"node-name": n})) {
                        Ok(_) => break,
                        Err(e) if tries < 50 && e.message().contains("in use") => {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            errors.push(e.to_string());
                            break;
                        }
                    }
                }
            }
            for (node, prev, new) in &active.bitmaps {
                let mut actions = Vec::new();
                if success {
                    if let Some(p) = prev {
                        actions.push(json!({"type": "block-dirty-bitmap-remove", "data": {"node": node, "name": p}}));
                    }
                } else {
                    // Keep the previous checkpoint whole: fold in what the new one recorded.
                    if let (Some(p), Some(n)) = (prev, new) {
                        actions.push(json!({"type": "block-dirty-bitmap-merge",
                            "data": {"node": node, "target": p, "bitmaps": [n]}}));
                    }
                    if let Some(p) = prev {
                        actions.push(json!({"type": "block-dirty-bitmap-enable", "data": {"node": node, "name": p}}));
                    }
                    if let Some(n) = new {
                        actions.push(json!({"type": "block-dirty-bitmap-remove", "data": {"node": node, "name": n}}));
                    }
                }
                if !actions.is_empty() {
                    note(
                        &mut errors,
                        qmp.execute("transaction", json!({ "actions": actions })),
                    );
                }
            }
        } else {
            errors.push(format!(
                "the VM's QMP socket {} is gone",
                self.socket.display()
            ));
        }
        if let Err(e) = std::fs::remove_dir_all(&active.scratch) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("removing {}: {e}", active.scratch.display()));
            }
        }
        super::teardown_result(host, &errors)
    }
}
