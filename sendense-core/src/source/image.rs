//! A stopped VM's disk image files.
//!
//! The files themselves are the consistent snapshot, as long as no QEMU writes them: a file
//! locked by a running QEMU is refused. Checkpoints are persistent bitmaps in the QCOW2
//! (`qemu-img bitmap`); each disk is exported read-only by `qemu-nbd -r -B <previous>` on a
//! Unix socket in the job's scratch directory. Raw images cannot hold bitmaps: full backups only.

use super::{CheckpointState, DiscoveredDisk, SnapshotDisk, SnapshotRequest, Source, SourceHost};
use crate::catalog::{DiskRecord, Listen};
use crate::error::{Error, ErrorKind, Result};
use crate::export::{ExportSpec, RunningExport};
use crate::tools::{self, QEMU_IMG};
use std::path::{Path, PathBuf};

/// Disk image files of a stopped VM.
#[derive(Debug)]
pub struct ImageSource {
    files: Vec<PathBuf>,
    active: Option<Active>,
}

#[derive(Debug, Default)]
struct Active {
    scratch: PathBuf,
    exports: Vec<RunningExport>,
    /// (file, previous bitmap, new bitmap) of qcow2 disks.
    bitmaps: Vec<(PathBuf, Option<String>, Option<String>)>,
}

/// A bitmap stored in a qcow2 file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredBitmap {
    name: String,
    enabled: bool,
    in_use: bool,
}

/// What one `qemu-img info` says about an image: format, size and stored bitmaps.
#[derive(Debug, Clone)]
struct Inspected {
    format: String,
    size: u64,
    bitmaps: Vec<StoredBitmap>,
}

/// One `qemu-img info`. With `shared == false` the image lock is taken as a writer would, so an
/// image a running QEMU holds is refused (it would change under the backup).
fn inspect(file: &Path, shared: bool) -> Result<Inspected> {
    let mut cmd = QEMU_IMG.command();
    cmd.args(["info", "--output=json"]);
    if shared {
        cmd.arg("-U");
    }
    let out = cmd.arg(file).output().map_err(|_| QEMU_IMG.missing())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("lock") {
            return Err(Error::busy(format!(
                "{} is in use by a running QEMU (its image lock is held)",
                file.display()
            ))
            .with_help("Back up a running VM through its QMP socket: register it with `sendense vm add NAME --qmp SOCKET`."));
        }
        return Err(Error::new(
            ErrorKind::External,
            format!("qemu-img info {}: {}", file.display(), err.trim()),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::new(ErrorKind::External, format!("qemu-img info: {e}")))?;
    let bitmaps = v["format-specific"]["data"]["bitmaps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let flags: Vec<&str> = b["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .collect();
            StoredBitmap {
                name: b["name"].as_str().unwrap_or_default().to_string(),
                enabled: flags.contains(&"auto"),
                in_use: flags.contains(&"in-use"),
            }
        })
        .collect();
    Ok(Inspected {
        format: v["format"].as_str().unwrap_or_default().to_string(),
        size: v["virtual-size"].as_u64().unwrap_or(0),
        bitmaps,
    })
}

impl ImageSource {
    /// A source over these image files (in disk-key order).
    pub fn new(files: Vec<PathBuf>) -> Self {
        ImageSource {
            files,
            active: None,
        }
    }
}

impl Source for ImageSource {
    fn kind(&self) -> &'static str {
        "image"
    }

    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>> {
        self.files
            .iter()
            .map(|f| {
                let d = crate::vm::probe_image_disk(f)?;
                Ok(DiscoveredDisk {
                    identity: d.identity,
                    format: d.format,
                    size_bytes: d.size_bytes,
                    detail: String::new(),
                })
            })
            .collect()
    }

    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>> {
        disks
            .iter()
            .map(|d| {
                let file = Path::new(&d.identity);
                if !file.exists() {
                    return Ok(CheckpointState::Missing);
                }
                let info = inspect(file, true)?;
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
        // One look at every image, which also refuses an image a running QEMU holds.
        let infos = req
            .disks
            .iter()
            .map(|d| inspect(Path::new(&d.identity), false))
            .collect::<Result<Vec<_>>>()?;
        crate::fsutil::create_private_dir(&req.scratch)?;
        self.active = Some(Active {
            scratch: req.scratch.clone(),
            ..Default::default()
        });
        let mut out = Vec::new();
        for (d, info) in req.disks.iter().zip(infos) {
            let file = PathBuf::from(&d.identity);
            let qcow2 = info.format == "qcow2";
            let new = qcow2.then(|| req.checkpoint.clone());
            let mut previous = None;
            if let Some(new) = &new {
                let f = file.to_string_lossy().into_owned();
                let stored = &info.bitmaps;
                let recorded = d
                    .recorded
                    .clone()
                    .filter(|r| stored.iter().any(|b| &b.name == r));
                // Repair what a killed job left: fold its changes into the recorded checkpoint.
                let stale = super::leftovers(
                    stored.iter().map(|b| b.name.as_str()),
                    recorded.as_deref(),
                    new,
                );
                for b in &stale {
                    if let Some(r) = &recorded {
                        tools::run(QEMU_IMG, ["bitmap", "--merge", b, "--enable", &f, r])?;
                    }
                    tools::run(QEMU_IMG, ["bitmap", "--remove", &f, b])?;
                }
                if let Some(r) = &recorded {
                    if stored.iter().any(|b| &b.name == r && !b.enabled) {
                        tools::run(QEMU_IMG, ["bitmap", "--enable", &f, r])?;
                    }
                }
                tools::run(QEMU_IMG, ["bitmap", "--add", &f, new])?;
                if let Some(r) = &recorded {
                    tools::run(QEMU_IMG, ["bitmap", "--disable", &f, r])?;
                }
                if let Some(a) = self.active.as_mut() {
                    a.bitmaps
                        .push((file.clone(), recorded.clone(), Some(new.clone())));
                }
                previous = d.previous.clone().filter(|p| Some(p) == recorded.as_ref());
            }
            let spec = ExportSpec {
                file: file.clone(),
                format: info.format.clone(),
                name: d.export.clone(),
                listen: Listen::Socket(req.scratch.join(format!("disk-{}.sock", d.key))),
                shared: 8,
                read_only: true,
                bitmap: previous.clone(),
                discard_writes: false,
                job: Some(req.job),
            };
            let export = host.start_export(&spec)?;
            let url = export.url.clone();
            if let Some(a) = self.active.as_mut() {
                a.exports.push(export);
            }
            out.push(SnapshotDisk {
                key: d.key,
                url,
                size_bytes: info.size,
                bitmap: previous,
                checkpoint: new,
            });
        }
        Ok(out)
    }

    fn finish(&mut self, host: &mut dyn SourceHost, success: bool) -> Result<()> {
        let Some(active) = self.active.take() else {
            return Ok(());
        };
        let mut errors = Vec::new();
        for e in active.exports {
            if let Err(err) = host.stop_export(e) {
                errors.push(err.to_string());
            }
        }
        for (file, prev, new) in &active.bitmaps {
            let f = file.to_string_lossy().into_owned();
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
        }
        let _ = std::fs::remove_dir_all(&active.scratch);
        super::teardown_result(host, &errors)
    }
}
