//! A live QEMU/KVM VM over QMP.
//!
//! Snapshot = ONE QMP `transaction` that, for every disk, adds the new persistent dirty bitmap,
//! disables the previous one, and starts `blockdev-backup sync=none` into a fleecing overlay
//! (a qcow2 in the job's scratch directory whose backing node is the disk). The guest keeps
//! running and writing; reads of the overlay stay frozen at the transaction instant. QEMU's own
//! NBD server (`nbd-server-start` on a Unix socket in the scratch directory) exports each
//! overlay with `block-export-add`, with the previous checkpoint's bitmap attached.
//!
//! Every object a backup creates in QEMU is named `sd<job>-...`, so the teardown and the repair
//! after an interrupted backup ([`Source::repair`]) find exactly Sendense's objects by listing
//! them, and never touch anyone else's.
//!
//! QMP commands used: query-block, blockdev-add, transaction (block-dirty-bitmap-add,
//! block-dirty-bitmap-disable, blockdev-backup), nbd-server-start, block-export-add,
//! query-block-exports, block-export-del, nbd-server-stop, query-block-jobs, block-job-cancel,
//! query-named-block-nodes, blockdev-del, transaction (block-dirty-bitmap-merge,
//! block-dirty-bitmap-enable, block-dirty-bitmap-remove).

use super::qmp::{BlockDevice, Qmp};
use super::repair::{plan_bitmaps, BitmapState, RepairRequest, Repaired};
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
    job: i64,
    scratch: PathBuf,
    /// (node, recorded checkpoint, new bitmap) per disk.
    bitmaps: Vec<(String, Option<String>, Option<String>)>,
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

/// Removes Sendense's objects in QEMU of the jobs `ours` selects (by their `sd<job>-` names):
/// NBD exports, then the NBD server when it is Sendense's (`server_ours`, or one of our exports
/// was on it) and serves no one else's export, then block jobs, then fleecing nodes — the order
/// QEMU needs. Every step is tried; returns what was removed and the errors.
fn remove_objects(
    qmp: &mut Qmp,
    ours: &dyn Fn(i64) -> bool,
    server_ours: bool,
) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    fn note(errors: &mut Vec<String>, r: Result<serde_json::Value>) -> Option<serde_json::Value> {
        r.map_err(|e| errors.push(e.to_string())).ok()
    }
    let list =
        |qmp: &mut Qmp, cmd: &str, args: serde_json::Value| -> Result<Vec<serde_json::Value>> {
            Ok(qmp
                .execute(cmd, args)?
                .as_array()
                .cloned()
                .unwrap_or_default())
        };
    let mut server_ours = server_ours;
    let mut foreign_export = false;
    match list(qmp, "query-block-exports", json!({})) {
        Ok(exports) => {
            for e in exports {
                let id = e["id"].as_str().unwrap_or_default();
                match tag_job(id) {
                    Some(j) if ours(j) => {
                        let deleted =
                            qmp.execute("block-export-del", json!({"id": id, "mode": "hard"}));
                        if note(&mut errors, deleted).is_some() {
                            removed.push(format!("export {id}"));
                        }
                        server_ours = true;
                    }
                    Some(_) => {}
                    None => foreign_export = true,
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    if server_ours && !foreign_export {
        match qmp.execute("nbd-server-stop", json!({})) {
            Ok(_) => removed.push("NBD server".into()),
            Err(e) if e.message().contains("not running") => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    match list(qmp, "query-block-jobs", json!({})) {
        Ok(jobs) => {
            for j in jobs {
                let id = j["device"].as_str().unwrap_or_default().to_string();
                if !tag_job(&id).is_some_and(ours) {
                    continue;
                }
                let cancelled =
                    qmp.execute("block-job-cancel", json!({"device": id, "force": true}));
                note(&mut errors, cancelled);
                match qmp.wait_job_gone(&id, Duration::from_secs(30)) {
                    Ok(()) => removed.push(format!("block job {id}")),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    match list(qmp, "query-named-block-nodes", json!({"flat": true})) {
        Ok(nodes) => {
            for n in nodes {
                let name = n["node-name"].as_str().unwrap_or_default().to_string();
                if !name.contains("-fleece-") || !tag_job(&name).is_some_and(ours) {
                    continue;
                }
                match delete_node(qmp, &name) {
                    Ok(()) => removed.push(format!("fleecing node {name}")),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    (removed, errors)
}

/// `blockdev-del`, retried while a cancelled job or a closing export still holds the node.
fn delete_node(qmp: &mut Qmp, name: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        match qmp.execute("blockdev-del", json!({"node-name": name})) {
            Ok(_) => return Ok(()),
            Err(e) if tries < 50 && e.message().contains("in use") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Source for QemuSource {
    fn kind(&self) -> &'static str {
        "qemu"
    }

    fn repair(&mut self, host: &mut dyn SourceHost, req: &RepairRequest) -> Result<Repaired> {
        if self.qmp.is_none() {
            match Qmp::connect_if_running(&self.socket)? {
                Some(qmp) => self.qmp = Some(qmp),
                None => return Ok(Repaired::Unreachable),
            }
        }
        let keep = req.keep_job;
        // An interrupted job's NBD server had its socket in the job's scratch directory.
        let server_ours = req
            .interrupted
            .iter()
            .any(|(_, dir)| dir.join("nbd.sock").exists());
        let qmp = self.qmp()?;
        let (removed, errors) = remove_objects(qmp, &|j| Some(j) != keep, server_ours);
        for r in &removed {
            host.log(&format!("removed {r} left by an interrupted backup"));
        }
        if !errors.is_empty() {
            return Err(Error::new(
                crate::ErrorKind::External,
                format!(
                    "removing what an interrupted backup left in QEMU: {}",
                    errors.join("; ")
                ),
            ));
        }
        let devices = self.devices()?;
        for (identity, recorded) in &req.disks {
            let Some(dev) = devices.iter().find(|d| &d.qdev == identity) else {
                continue;
            };
            let states: Vec<BitmapState> = dev
                .bitmaps
                .iter()
                .map(|b| BitmapState {
                    name: b.name.clone(),
                    enabled: b.recording,
                })
                .collect();
            let plan = plan_bitmaps(&states, recorded.as_deref(), &req.retired);
            if plan.is_empty() {
                continue;
            }
            host.log(&plan.describe(identity));
            let node = &dev.node;
            let mut actions = Vec::new();
            if let (Some(r), false) = (recorded, plan.merge.is_empty()) {
                actions.push(json!({"type": "block-dirty-bitmap-merge",
                    "data": {"node": node, "target": r, "bitmaps": plan.merge}}));
            }
            if let Some(r) = &plan.enable {
                actions.push(
                    json!({"type": "block-dirty-bitmap-enable", "data": {"node": node, "name": r}}),
                );
            }
            for b in &plan.remove {
                actions.push(
                    json!({"type": "block-dirty-bitmap-remove", "data": {"node": node, "name": b}}),
                );
            }
            self.qmp()?
                .execute("transaction", json!({ "actions": actions }))?;
        }
        Ok(Repaired::Done)
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
                key: None,
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
            job: req.job,
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
            let new = tracks_changes(&dev)
                .is_none()
                .then(|| req.checkpoint.clone());
            let recorded = d
                .recorded
                .clone()
                .filter(|r| dev.bitmaps.iter().any(|b| &b.name == r));
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
        crate::crash::point("qemu.snapshot-taken");
        if let Some(active) = self.active.as_mut() {
            for (_, dev, _, _, _, recorded, new) in &plan {
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
        crate::crash::point("qemu.nbd-server-started");
        let mut out = Vec::new();
        for (d, dev, node, _, prev, _, new) in plan {
            let export_id = format!("{tag}-export-{}", d.key);
            let mut args = json!({"type": "nbd", "id": export_id, "node-name": node,
                "name": d.export, "writable": false});
            if let Some(p) = &prev {
                args["bitmaps"] = json!([p]);
            }
            self.qmp()?.execute("block-export-add", args)?;
            out.push(SnapshotDisk {
                key: d.key,
                url: NbdUrl::unix(&sock, &d.export),
                size_bytes: dev.size,
                bitmap: prev,
                extents: None,
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
            let job = active.job;
            let (_, failed) = remove_objects(qmp, &|j| j == job, active.nbd_server);
            errors.extend(failed);
            crate::crash::point("qemu.teardown-objects-removed");
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
        // Kept after a failed teardown of a QEMU that still runs: the repair finds the NBD
        // server's socket there. A QEMU that is gone took all of it with it.
        let gone = !errors.is_empty() && {
            self.qmp = None;
            matches!(Qmp::connect_if_running(&self.socket), Ok(None))
        };
        if errors.is_empty() || gone {
            if let Err(e) = std::fs::remove_dir_all(&active.scratch) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    errors.push(format!("removing {}: {e}", active.scratch.display()));
                }
            }
        }
        super::teardown_result(host, &errors)
    }
}
