//! `qemu-img`: probing images. QEMU's own tools own every QCOW2 write.

use super::{run, QEMU_IMG};
use crate::error::{Error, ErrorKind, Result};
use serde::Deserialize;
use std::path::Path;

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    /// Format (`qcow2`, `raw`, ...).
    pub format: String,
    /// Size the guest sees, in bytes.
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    /// Bytes allocated on the host filesystem.
    #[serde(rename = "actual-size", default)]
    pub actual_size: Option<u64>,
    /// Backing file, as written in the image.
    #[serde(rename = "backing-filename", default)]
    pub backing_filename: Option<String>,
    /// Persistent dirty bitmaps stored in a qcow2.
    #[serde(skip)]
    pub bitmaps: Vec<StoredBitmap>,
}

impl ImageInfo {
    /// The size of the disk the image holds, in bytes: for a raw file its exact length (QEMU
    /// reports it rounded up to whole 512-byte sectors), else the virtual size.
    pub fn disk_size(&self, file: &Path) -> u64 {
        if self.format == "raw" {
            if let Ok(m) = std::fs::metadata(file) {
                if m.is_file() {
                    return m.len();
                }
            }
        }
        self.virtual_size
    }
}

/// A persistent dirty bitmap stored in a qcow2 file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBitmap {
    /// Its name.
    pub name: String,
    /// Recording writes (`auto` flag).
    pub enabled: bool,
    /// Not saved cleanly (`in-use` flag): it cannot be trusted.
    pub in_use: bool,
}

/// Runs `qemu-img info` on `path`. `--force-share` lets it read an image a running QEMU holds.
pub fn info(path: &Path) -> Result<ImageInfo> {
    query(path, true)
}

/// Runs `qemu-img info` on `path` taking the image lock as a reader that needs the image
/// unchanged; when a running QEMU holds the lock, asks again sharing it. Returns whether a QEMU
/// holds the image.
pub fn info_and_lock(path: &Path) -> Result<(ImageInfo, bool)> {
    match query(path, false) {
        Ok(info) => Ok((info, false)),
        Err(e) if is_lock_conflict(&e) => Ok((query(path, true)?, true)),
        Err(e) => Err(e),
    }
}

/// Whether a failed QEMU tool met an image lock held by another process.
pub fn is_lock_conflict(err: &Error) -> bool {
    err.message().contains("lock")
}

fn query(path: &Path, share: bool) -> Result<ImageInfo> {
    let mut args = vec!["info".as_ref(), "--output=json".as_ref()];
    if share {
        args.push("--force-share".as_ref());
    }
    args.push(path.as_os_str());
    let out = run(QEMU_IMG, args).map_err(|e| {
        if e.kind() == ErrorKind::External && !is_lock_conflict(&e) {
            Error::invalid(format!(
                "{} is not a readable disk image: {}",
                path.display(),
                e.message()
            ))
            .with_help("Pass a QCOW2 or raw disk image file.")
        } else {
            e
        }
    })?;
    let unexpected = |e: serde_json::Error| {
        Error::new(
            ErrorKind::External,
            format!(
                "unexpected `qemu-img info` output for {}: {e}",
                path.display()
            ),
        )
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(unexpected)?;
    let mut info: ImageInfo = serde_json::from_value(v.clone()).map_err(unexpected)?;
    info.bitmaps = v["format-specific"]["data"]["bitmaps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let flag = |f: &str| {
                b["flags"]
                    .as_array()
                    .is_some_and(|fs| fs.iter().any(|x| x.as_str() == Some(f)))
            };
            StoredBitmap {
                name: b["name"].as_str().unwrap_or_default().to_string(),
                enabled: flag("auto"),
                in_use: flag("in-use"),
            }
        })
        .collect();
    Ok(info)
}
