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
    /// (node, previous bitmap, new bitmap) per disk.
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

impl Source for QemuSource {
    fn kind(&self) -> &'static str {
        "qemu"
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
        let mut active = Active {
            scratch: req.scratch.clone(),
            ..Default::default()
        };
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
            active.fleece_nodes.push(node.clone());
            let new = tracks_changes(&dev)
                .is_none()
                .then(|| req.checkpoint.clone());
            let previous = d
                .previous
                .clone()
                .filter(|p| dev.bitmaps.iter().any(|b| &b.name == p));
            if let Some(new) = &new {
                actions.push(json!({"type": "block-dirty-bitmap-add",
                    "data": {"node": dev.node, "name": new, "persistent": true}}));
            }
            if let Some(prev) = &previous {
                actions.push(json!({"type": "block-dirty-bitmap-disable",
                    "data": {"node": dev.node, "name": prev}}));
            }
            let job = format!("{tag}-backup-{}", d.key);
            actions.push(json!({"type": "blockdev-backup",
                "data": {"job-id": job, "device": dev.node, "target": node, "sync": "none"}}));
            plan.push((d.clone(), dev.clone(), node, job, previous, new));
        }
        self.active = Some(active);
        host.log(&format!(
            "QMP transaction with {} actions for {} disk(s)",
            actions.len(),
            req.disks.len()
        ));
        self.qmp()?
            .execute("transaction", json!({ "actions": actions }))?;
        if let Some(active) = self.active.as_mut() {
            for (d, dev, _, job, prev, new) in &plan {
                let _ = d;
                active.jobs.push(job.clone());
                active
                    .bitmaps
                    .push((dev.node.clone(), prev.clone(), new.clone()));
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
        for (d, dev, node, _, prev, new) in plan {
            let mut args = json!({"type": "nbd", "id": d.export, "node-name": node,
                "name": d.export, "writable": false});
            if let Some(p) = &prev {
                args["bitmaps"] = json!([p]);
            }
            self.qmp()?.execute("block-export-add", args)?;
            if let Some(a) = self.active.as_mut() {
                a.exports.push(d.export.clone());
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
        for e in &errors {
            host.log(&format!("teardown: {e}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                crate::ErrorKind::External,
                format!("tearing down the snapshot: {}", errors.join("; ")),
            ))
        }
    }
}
