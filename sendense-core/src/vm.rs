//! VM registration rules that do not need a source: names and image disks.

use crate::catalog::NewDisk;
use crate::error::{Error, Result};
use crate::tools::qemu_img;
use std::path::Path;

/// Longest VM or repository name, in bytes (a VM name becomes a directory name in repositories).
pub const MAX_NAME_BYTES: usize = 200;

/// Names that would collide with a repository's own layout.
const RESERVED_NAMES: &[&str] = &[crate::repo::META_FILE, "manifests", "locks"];

/// Checks a VM or repository name (`what` is "VM" or "repository"). A VM name becomes a
/// directory in every repository, so names must be safe single path components: letters and
/// digits (Unicode ones too), `.`, `-` and `_`, not starting with `.` or `-`, at most
/// [`MAX_NAME_BYTES`], and none of the repository's own names. The same rule holds for names
/// read from a repository (`repo import`), which are untrusted input.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid {what} name `{}`: {why}",
            name.escape_debug()
        ))
        .with_help(
            "Use letters, digits, `.`, `-` and `_`; no leading `.` or `-`, at most 200 bytes.",
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("it is longer than 200 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("it starts with `.` or `-`");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return bad(&format!("it contains {c:?}"));
    }
    if RESERVED_NAMES.contains(&name) {
        return bad("that name is part of a repository's own layout");
    }
    Ok(())
}

/// Probes one image file for `vm add --disk`: canonical path, format and virtual size.
pub fn probe_image_disk(path: &Path) -> Result<NewDisk> {
    crate::fsutil::require_utf8("disk", path)?;
    let canonical = image_disk_path(path)?;
    crate::fsutil::require_utf8("disk", &canonical)?;
    let info = qemu_img::info(&canonical)?;
    Ok(NewDisk {
        key: None,
        identity: canonical.to_string_lossy().into_owned(),
        size_bytes: info.disk_size(&canonical),
        format: Some(info.format),
    })
}

/// The canonical path of a disk image file (or block device), which is the disk's identity.
pub fn image_disk_path(path: &Path) -> Result<std::path::PathBuf> {
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        Error::io("disk image", path, e)
            .with_help("Pass the path of an existing QCOW2 or raw image file.")
    })?;
    if !canonical.is_file() && !is_block_device(&canonical) {
        return Err(Error::invalid(format!(
            "disk {} is not a regular file or block device",
            canonical.display()
        ))
        .with_help("Pass the path of a QCOW2 or raw image file."));
    }
    Ok(canonical)
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "pgtest1",
            "db-01.prod",
            "Ünïcödé-vm",
            "a_b",
            &"x".repeat(200),
        ] {
            validate_name("VM", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            ".hidden",
            "-opt",
            "a/b",
            "a b",
            "tab\t",
            &"x".repeat(201),
            "..",
            "x$(id)",
            "a:b",
            "zero\u{200b}width",
            "semi;colon",
            "sendense-repo.yaml",
            "manifests",
            "locks",
        ] {
            assert!(validate_name("VM", bad).is_err(), "{bad:?} accepted");
        }
    }
}
