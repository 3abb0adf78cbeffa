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
}

/// Runs `qemu-img info` on `path`. `--force-share` lets it read an image a running QEMU holds.
pub fn info(path: &Path) -> Result<ImageInfo> {
    let out = run(
        QEMU_IMG,
        [
            "info".as_ref(),
            "--output=json".as_ref(),
            "--force-share".as_ref(),
            path.as_os_str(),
        ],
    )
    .map_err(|e| {
        if e.kind() == ErrorKind::External {
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
    serde_json::from_slice(&out.stdout).map_err(|e| {
        Error::new(
            ErrorKind::External,
            format!(
                "unexpected `qemu-img info` output for {}: {e}",
                path.display()
            ),
        )
    })
}
