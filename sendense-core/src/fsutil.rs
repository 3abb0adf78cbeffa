//! Filesystem helpers with the durability and permission rules Sendense relies on.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Refuses a path that is not valid UTF-8: the catalog, manifests and logs keep paths as text,
/// and a path altered to fit (replacement characters) would name another file, or none.
pub fn require_utf8(what: &str, path: &Path) -> Result<()> {
    if path.to_str().is_some() {
        return Ok(());
    }
    Err(
        Error::invalid(format!("{what} {} is not valid UTF-8", path.display())).with_help(
            "Sendense records paths exactly, as text: rename the file or directory, or pass a \
         symbolic link whose path is UTF-8.",
        ),
    )
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating directory", dir, e))
}

/// fsyncs a directory so a rename or unlink inside it is durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("syncing directory", dir, e))
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory. Readers see the old content or the new one, never a torn file.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("writing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// True when files in `dir` can be opened with O_DIRECT (tmpfs, for one, cannot). The probe is
/// an unnamed file (O_TMPFILE), so a process killed while probing leaves nothing in `dir`; only
/// where the filesystem has no unnamed files is a named probe created and removed.
pub fn supports_direct_io(dir: &Path) -> bool {
    let unnamed = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE | libc::O_DIRECT)
        .open(dir);
    match unnamed {
        Ok(_) => return true,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return false,
        Err(_) => {}
    }
    let probe = dir.join(format!(".sendense-odirect-{}", std::process::id()));
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = fs::remove_file(&probe);
    result.is_ok()
}

/// Space on the filesystem holding `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Capacity {
    /// Size of the filesystem in bytes.
    pub total_bytes: u64,
    /// Bytes an unprivileged writer may still use.
    pub available_bytes: u64,
    /// Bytes free including reserved blocks.
    pub free_bytes: u64,
}

/// Reads the capacity of the filesystem that holds `path` (statvfs).
pub fn capacity(path: &Path) -> Result<Capacity> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io("reading capacity of", path, std::io::Error::from(e)))?;
    let frag = st.fragment_size() as u64;
    Ok(Capacity {
        total_bytes: st.blocks() as u64 * frag,
        available_bytes: st.blocks_available() as u64 * frag,
        free_bytes: st.blocks_free() as u64 * frag,
    })
}

/// True when `path` is itself a mount point (an entry in /proc/self/mountinfo).
pub fn is_mount_point(path: &Path) -> Result<bool> {
    let canonical = fs::canonicalize(path).map_err(|e| Error::io("resolving", path, e))?;
    match fs::read_to_string("/proc/self/mountinfo") {
        Ok(info) => Ok(mount_points(&info).any(|m| m == canonical)),
        Err(_) => {
            // No /proc: a mount point has a different device than its parent (not exact for
            // bind mounts of the same filesystem).
            use std::os::unix::fs::MetadataExt;
            let parent = canonical.parent().unwrap_or(Path::new("/"));
            let here = fs::metadata(&canonical).map_err(|e| Error::io("reading", &canonical, e))?;
            let up = fs::metadata(parent).map_err(|e| Error::io("reading", parent, e))?;
            Ok(here.dev() != up.dev() || canonical == Path::new("/"))
        }
    }
}

/// Mount points listed in mountinfo text (field 5, with octal escapes decoded).
fn mount_points(info: &str) -> impl Iterator<Item = PathBuf> + '_ {
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
}

fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|oct| std::str::from_utf8(oct).ok())
            .and_then(|oct| u8::from_str_radix(oct, 8).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    40 22 0:5 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        let points: Vec<_> = mount_points(info).collect();
        assert_eq!(
            points,
            vec![PathBuf::from("/"), PathBuf::from("/mnt/with space")]
        );
        assert_eq!(unescape_mountinfo("a\\134b"), "a\\b");
        assert_eq!(unescape_mountinfo("trailing\\"), "trailing\\");
    }

    #[test]
    fn root_is_a_mount_point_and_a_fresh_dir_is_not() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()).unwrap());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.yaml");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn capacity_is_sane() {
        let c = capacity(Path::new("/")).unwrap();
        assert!(c.total_bytes > 0 && c.available_bytes <= c.total_bytes);
    }
}

/// `path` with its longest existing prefix resolved (symbolic links, `..`) and the rest, not
/// there yet, applied to it (`..` included): where a file created at `path` would really be.
pub fn resolve_existing_prefix(path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::io("resolving", path, e))?
            .join(path)
    };
    let parts: Vec<Component<'_>> = absolute.components().collect();
    for split in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..split].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut real) => {
                let mut climbed = false;
                for part in &parts[split..] {
                    match part {
                        Component::ParentDir => {
                            real.pop();
                            climbed = true;
                        }
                        Component::Normal(name) => real.push(name),
                        _ => {}
                    }
                }
                // Climbing back out of what does not exist can lead into what does (a link
                // among it): resolve once more, now without `..`.
                return if climbed {
                    resolve_existing_prefix(&real)
                } else {
                    Ok(real)
                };
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("resolving", &prefix, e)),
        }
    }
    Ok(absolute)
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

    #[test]
    fn where_a_new_file_would_really_be() {
        let dir = tempfile::tempdir().unwrap();
        let d = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        let r = |p: &Path| resolve_existing_prefix(p).unwrap();
        assert_eq!(r(&d.join("link/new/file")), d.join("real/new/file"));
        assert_eq!(r(&d.join("new/../real/x")), d.join("real/x"));
        assert_eq!(r(&d.join("a/b/../../link/y")), d.join("real/y"));
    }
}

#[cfg(test)]
mod utf8_tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn paths_that_are_not_utf8_are_refused_naming_them() {
        assert!(require_utf8("disk", Path::new("/srv/vm/disk.qcow2")).is_ok());
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"/srv/bad\xff\xfename.qcow2"));
        let err = require_utf8("disk", bad).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(err.message().starts_with("disk /srv/bad"), "{err}");
        assert!(err.message().contains("is not valid UTF-8"), "{err}");
    }
}

/// Copies file `src` (never through a symbolic link) into a new file `dst` (created 0600,
/// refused when it exists) with only its data regions: holes stay holes. Checks `cancel`
/// between chunks. Returns the bytes written; on failure `dst` is removed. The caller syncs
/// `dst`.
pub fn copy_sparse(
    src: &Path,
    dst: &Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let from = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(|e| Error::io("reading", src, e))?;
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| Error::io("creating", dst, e))?;
    let copied = copy_data(&from, src, &to, dst, cancel);
    if copied.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    copied
}

fn copy_data(
    from: &std::fs::File,
    src: &Path,
    to: &std::fs::File,
    dst: &Path,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 4 << 20;
    let len = from
        .metadata()
        .map_err(|e| Error::io("reading", src, e))?
        .len();
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    let mut pos = 0u64;
    while pos < len {
        let Some((start, end)) = crate::repo::digests::data_region(from, pos, len)
            .map_err(|e| Error::io("reading", src, e))?
        else {
            break;
        };
        let mut at = start;
        while at < end {
            if cancel.is_cancelled() {
                return Err(Error::new(crate::ErrorKind::Cancelled, "copy cancelled"));
            }
            let n = ((end - at) as usize).min(CHUNK);
            from.read_exact_at(&mut buf[..n], at)
                .map_err(|e| Error::io("reading", src, e))?;
            to.write_all_at(&buf[..n], at)
                .map_err(|e| Error::io("writing", dst, e))?;
            at += n as u64;
            written += n as u64;
        }
        pos = end.max(pos + 1);
    }
    to.set_len(len).map_err(|e| Error::io("writing", dst, e))?;
    Ok(written)
}
