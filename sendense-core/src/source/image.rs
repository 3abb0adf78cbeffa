//! A stopped VM's disk image files.
//!
//! The files themselves are the consistent snapshot, as long as no QEMU writes them: a file
//! locked by a running QEMU is refused. Checkpoints are persistent bitmaps in the QCOW2
//! (`qemu-img bitmap`); each disk is exported read-only by `qemu-nbd -r -B <previous>` on a
//! Unix socket in the job's scratch directory. Raw images cannot hold bitmaps: full backups only.

use super::repair::{plan_bitmaps, BitmapState, RepairRequest, Repaired};
use super::{CheckpointState, DiscoveredDisk, SnapshotDisk, SnapshotRequest, Source, SourceHost};
use crate::catalog::{DiskRecord, Listen};
use crate::error::{Error, Result};
use crate::export::{ExportSpec, RunningExport};
use crate::tools::qemu_img::{self, ImageInfo};
use crate::tools::{self, QEMU_IMG};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Disk image files of a stopped VM.
#[derive(Debug)]
pub struct ImageSource {
    files: Vec<PathBuf>,
    active: Option<Active>,
    /// What `qemu-img info` said about each file, asked once per source (a job holds the VM
    /// lock, so nothing else of Sendense changes the files meanwhile).
    inspected: HashMap<PathBuf, Inspected>,
}

#[derive(Debug, Default)]
struct Active {
    scratch: PathBuf,
    exports: Vec<RunningExport>,
    /// (file, previous bitmap, new bitmap) of qcow2 disks.
    bitmaps: Vec<(PathBuf, Option<String>, Option<String>)>,
}

/// What the source knows of one image file.
#[derive(Debug, Clone)]
struct Inspected {
    info: ImageInfo,
    /// A running QEMU holds the image.
    in_use: bool,
}

/// `qemu-img info` of `file`, with the image lock (see [`qemu_img::info_and_lock`]).
fn inspect(file: &Path) -> Result<Inspected> {
    let (info, in_use) = qemu_img::info_and_lock(file)?;
    Ok(Inspected { info, in_use })
}

/// The error for an image a running QEMU holds.
fn in_use_error(file: &Path) -> Error {
    Error::busy(format!(
        "{} is in use by a running QEMU (its image lock is held)",
        file.display()
    ))
    .with_help(IN_USE_HELP)
}

const IN_USE_HELP: &str = "Back up a running VM through its QMP socket: register it with `sendense vm add NAME --qmp SOCKET`.";

/// A tool run on an image, with a lock conflict (a QEMU started meanwhile) named as such.
fn run_on(file: &Path, args: &[&str]) -> Result<()> {
    tools::run(QEMU_IMG, args).map(|_| ()).map_err(|e| {
        if qemu_img::is_lock_conflict(&e) {
            in_use_error(file)
        } else {
            e
        }
    })
}

impl ImageSource {
    /// A source over these image files (in disk-key order).
    pub fn new(files: Vec<PathBuf>) -> Self {
        ImageSource {
            files,
            active: None,
            inspected: HashMap::new(),
        }
    }

    /// `qemu-img info` of `file`, once: with the image lock, or shared when a QEMU holds it.
    fn inspect(&mut self, file: &Path) -> Result<Inspected> {
        if let Some(i) = self.inspected.get(file) {
            return Ok(i.clone());
        }
        let inspected = inspect(file)?;
        self.inspected.insert(file.to_path_buf(), inspected.clone());
        Ok(inspected)
    }
}

impl Source for ImageSource {
    fn kind(&self) -> &'static str {
        "image"
    }

    fn repair(&mut self, host: &mut dyn SourceHost, req: &RepairRequest) -> Result<Repaired> {
        // The qemu-nbd exports of an interrupted backup are the reconciliation's (recorded in
        // the catalog); what is left in the files are its checkpoint bitmaps.
        for (identity, recorded) in &req.disks {
            let file = Path::new(identity);
            if !file.exists() {
                continue;
            }
            // Asked once per source: discovery and planning use the same answer.
            let inspected = self.inspect(file)?;
            if inspected.info.format != "qcow2" {
                continue;
            }
            if inspected.in_use {
                // A QEMU runs on it now: the next backup refuses the file, and repairs it
                // once it is free again.
                return Ok(Repaired::Unreachable);
            }
            let states: Vec<BitmapState> = inspected
                .info
                .bitmaps
                .iter()
                .map(|b| BitmapState {
                    name: b.name.clone(),
                    enabled: b.enabled,
                })
                .collect();
            let plan = plan_bitmaps(&states, recorded.as_deref(), &req.retired);
            if plan.is_empty() {
                continue;
            }
            host.log(&plan.describe(identity));
            let f = file.to_string_lossy();
            if let Some(r) = recorded {
                for b in &plan.merge {
                    run_on(file, &["bitmap", "--merge", b, &f, r])?;
                }
            }
            if let Some(r) = &plan.enable {
                run_on(file, &["bitmap", "--enable", &f, r])?;
            }
            for b in &plan.remove {
                run_on(file, &["bitmap", "--remove", &f, b])?;
            }
            // What this source learnt of the file before is stale now.
            self.inspected.remove(file);
        }
        Ok(Repaired::Done)
    }

    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>> {
        let known = &self.inspected;
        let files = crate::par::map(&self.files, |f| {
            let file = crate::vm::image_disk_path(f)?;
            let inspected = match known.get(&file) {
                Some(i) => i.clone(),
                None => inspect(&file)?,
            };
            Ok::<_, Error>((file, inspected))
        });
        let mut out = Vec::new();
        for found in files {
            let (file, inspected) = found?;
            out.push(DiscoveredDisk {
                identity: file.to_string_lossy().into_owned(),
                format: Some(inspected.info.format.clone()),
                size_bytes: inspected.info.disk_size(&file),
                detail: String::new(),
                key: None,
            });
            self.inspected.insert(file, inspected);
        }
        Ok(out)
    }

    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>> {
        disks
            .iter()
            .map(|d| {
                let file = Path::new(&d.identity);
                if !file.exists() {
                    return Ok(CheckpointState::Missing);
                }
                let info = self.inspect(file)?.info;
                // The format is the one recorded when the disk was added, never what the file
                // looks like now: a file replaced, damaged, or a raw disk whose guest wrote an
                // image header into it is not backed up as something else.
                if let Some(recorded) = d.format.as_deref().filter(|f| *f != info.format) {
                    return Err(Error::refused(format!(
                        "disk {} ({}) was added as a {recorded} image, but the file now reads as {}",
                        d.key,
                        file.display(),
                        info.format
                    ))
                    .with_help("The file was replaced or damaged: put the VM's disk back. If the new file is meant to be the disk, add the VM again under a new name (`sendense vm add`); the backups of this one stay restorable."));
                }
                if info.format != "qcow2" {
                    return Ok(CheckpointState::Unsupported(
                        "raw image: no change tracking, so every backup is full".into(),
                    ));
                }
                let Some(name) = &d.checkpoint else {
                    return Ok(CheckpointState::None);
                };
                Ok(match info.bitmaps.into_iter().find(|b| &b.name == name) {
                    None => CheckpointState::Missing,
                    Some(b) if b.in_use => CheckpointState::Inconsistent,
                    Some(_) => CheckpointState::Present,
                })
            })
            .collect()
    }

    fn snapshot(
        &mut self,
        host: &mut dyn SourceHost,
        req: &SnapshotRequest,
    ) -> Result<Vec<SnapshotDisk>> {
        // An image a running QEMU holds would change under the backup.
        let mut infos = Vec::new();
        for d in &req.disks {
            let file = Path::new(&d.identity);
            let inspected = self.inspect(file)?;
            if inspected.in_use {
                return Err(in_use_error(file));
            }
            infos.push(inspected.info);
        }
        crate::fsutil::create_private_dir(&req.scratch)?;
        let active = self.active.insert(Active {
            scratch: req.scratch.clone(),
            ..Default::default()
        });
        // The new checkpoint of every disk, side by side. The previous one stays enabled: a
        // read-only qemu-nbd exports an enabled bitmap as it is, and nothing writes the image.
        let work: Vec<_> = req.disks.iter().zip(&infos).collect();
        let checkpoints = crate::par::map(&work, |(d, info)| {
            start_checkpoint(
                Path::new(&d.identity),
                info,
                d.recorded.as_deref(),
                &req.checkpoint,
            )
        });
        let mut failure = None;
        let mut recorded_of = Vec::new();
        for ((d, info), started) in work.iter().zip(checkpoints) {
            match started {
                Ok(recorded) => {
                    if info.format == "qcow2" {
                        active.bitmaps.push((
                            PathBuf::from(&d.identity),
                            recorded.clone(),
                            Some(req.checkpoint.clone()),
                        ));
                    }
                    recorded_of.push(recorded);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                    recorded_of.push(None);
                }
            }
        }
        // The files' bitmaps changed: what this source learnt of them is stale now.
        self.inspected.clear();
        if let Some(e) = failure {
            return Err(e);
        }
        let mut specs = Vec::new();
        let mut disks = Vec::new();
        for ((d, info), recorded) in work.iter().zip(&recorded_of) {
            let qcow2 = info.format == "qcow2";
            let previous = d
                .previous
                .clone()
                .filter(|p| qcow2 && Some(p) == recorded.as_ref());
            specs.push(ExportSpec {
                file: PathBuf::from(&d.identity),
                format: info.format.clone(),
                name: d.export.clone(),
                listen: Listen::Socket(req.scratch.join(format!("disk-{}.sock", d.key))),
                shared: 8,
                read_only: true,
                bitmap: previous.clone(),
                discard_writes: false,
                skip_flushes: false,
                alone: false,
                job: Some(req.job),
            });
            disks.push((
                d.key,
                info.disk_size(Path::new(&d.identity)),
                previous,
                qcow2,
            ));
        }
        let exports = host.start_exports(&specs).map_err(|e| {
            if qemu_img::is_lock_conflict(&e) {
                Error::busy(e.message().to_string()).with_help(IN_USE_HELP)
            } else {
                e
            }
        })?;
        let out = disks
            .into_iter()
            .zip(&exports)
            .map(|((key, size_bytes, bitmap, qcow2), export)| SnapshotDisk {
                key,
                url: export.url.clone(),
                size_bytes,
                bitmap,
                extents: None,
                checkpoint: qcow2.then(|| req.checkpoint.clone()),
            })
            .collect();
        active.exports = exports;
        Ok(out)
    }

    fn take_exports(&mut self) -> Vec<RunningExport> {
        self.active
            .as_mut()
            .map(|a| std::mem::take(&mut a.exports))
            .unwrap_or_default()
    }

    fn finish(&mut self, host: &mut dyn SourceHost, success: bool) -> Result<()> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        self.inspected.clear();
        let mut errors = Vec::new();
        if let Err(err) = host.stop_exports(active.exports) {
            errors.push(err.to_string());
        }
        let outcomes = crate::par::map(&active.bitmaps, |(file, prev, new)| {
            end_checkpoint(file, prev.as_deref(), new.as_deref(), success)
        });
        errors.extend(outcomes.into_iter().flatten());
        let _ = std::fs::remove_dir_all(&active.scratch);
        super::teardown_result(host, &errors)
    }
}

/// Starts checkpoint `new` in a qcow2 `file` (nothing for raw); what an interrupted backup left
/// was repaired before ([`Source::repair`]). Returns the recorded checkpoint when the file still
/// has it.
fn start_checkpoint(
    file: &Path,
    info: &ImageInfo,
    recorded: Option<&str>,
    new: &str,
) -> Result<Option<String>> {
    if info.format != "qcow2" {
        return Ok(None);
    }
    let f = file.to_string_lossy();
    let recorded = recorded.filter(|r| info.bitmaps.iter().any(|b| b.name == *r));
    run_on(file, &["bitmap", "--add", &f, new])?;
    Ok(recorded.map(str::to_string))
}

/// Ends a checkpoint started by [`start_checkpoint`]: on success the previous one goes; on
/// failure the new one's changes go back into the previous one and the new one goes. Returns
/// the errors.
fn end_checkpoint(
    file: &Path,
    prev: Option<&str>,
    new: Option<&str>,
    success: bool,
) -> Vec<String> {
    let f = file.to_string_lossy();
    let mut errors = Vec::new();
    let mut run = |args: &[&str]| {
        if let Err(e) = tools::run(QEMU_IMG, args) {
            errors.push(e.to_string());
        }
    };
    if success {
        if let Some(p) = prev {
            run(&["bitmap", "--remove", &f, p]);
        }
    } else {
        if let (Some(p), Some(n)) = (prev, new) {
            run(&["bitmap", "--merge", n, "--enable", &f, p]);
        } else if let Some(p) = prev {
            run(&["bitmap", "--enable", &f, p]);
        }
        if let Some(n) = new {
            run(&["bitmap", "--remove", &f, n]);
        }
    }
    errors
}
