//! QCOW2 chain links in a repository, created and checked by `qemu-img` (QEMU's tools own every
//! QCOW2 write). A full is a QCOW2 without backing file; an incremental is backed by the previous
//! completed image of the *same* disk, which lives in the same directory, so the backing path is
//! just its file name and the chain survives moving the whole repository. Images carry a
//! `.partial` suffix until they are committed.

use crate::error::{Error, ErrorKind, Result};
use crate::tools::{self, qemu_img, QEMU_IMG};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Suffix of images being written.
pub const PARTIAL: &str = ".partial";

/// A new, unique, sortable backup id: `20261125T211006Z-1a2b3c`.
pub fn new_backup_id() -> String {
    let now = crate::time::now();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{stamp}-{}", &rand[..6])
}

/// Whether `id` has the form [`new_backup_id`] gives: `20261125T211006Z-1a2b3c`. Ids read from a
/// repository are checked with it before they name a file.
pub fn is_backup_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 23
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Checks that `file`, a path of repository `root`'s layout, stays inside the repository: its
/// directory, every symbolic link resolved, is `root` or below it. A repository is untrusted
/// input: a directory in it replaced by a link to elsewhere must not make Sendense read, write
/// or remove files outside it.
pub fn check_inside(root: &Path, file: &Path) -> Result<()> {
    let escapes = || {
        Error::refused(format!(
            "{} is outside repository {}: a directory on its way is a link to elsewhere",
            file.display(),
            root.display()
        ))
        .with_help("Inspect the repository: nothing outside it is touched. Remove the link, or restore from another repository.")
    };
    if file
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(escapes());
    }
    let root = std::fs::canonicalize(root).map_err(|e| Error::io("resolving", root, e))?;
    let Some(dir) = file.parent() else {
        return Err(escapes());
    };
    match std::fs::canonicalize(dir) {
        Ok(real) if real.starts_with(&root) => {}
        Ok(_) => return Err(escapes()),
        // Nothing there yet (or any more): nothing to follow.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("resolving", dir, e)),
    }
    // Nor is the file itself a link: Sendense never puts one in a repository.
    match std::fs::symlink_metadata(file) {
        Ok(m) if m.file_type().is_symlink() => Err(Error::refused(format!(
            "{} in repository {} is a symbolic link",
            file.display(),
            root.display()
        ))
        .with_help("Sendense writes no links into a repository: inspect it, and remove the link; nothing it points to is touched.")),
        _ => Ok(()),
    }
}

/// Image path of disk `key` of `vm` in backup `id`, relative to the repository root.
pub fn image_rel(vm: &str, key: u32, id: &str) -> String {
    format!("{vm}/{key}/{id}.qcow2")
}

/// `<file>.partial`.
pub fn partial_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(PARTIAL);
    PathBuf::from(s)
}

/// Creates the `.partial` image for `rel` (relative to `repo`): without backing file when
/// `parent_rel` is `None`, else backed by that image of the same disk. Returns the partial path.
pub fn create_image(
    repo: &Path,
    rel: &str,
    size: u64,
    parent_rel: Option<&str>,
) -> Result<PathBuf> {
    let final_path = repo.join(rel);
    let dir = final_path
        .parent()
        .ok_or_else(|| Error::internal(format!("image path {rel} has no directory")))?;
    crate::fsutil::create_private_dir(dir)?;
    let partial = partial_of(&final_path);
    // Clusters of one copy block: the copy engine writes whole blocks, so a target export
    // never needs the backing chain to fill the rest of a cluster (see `ExportSpec::alone`).
    let mut args: Vec<String> = vec![
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-o".into(),
        format!("cluster_size={}", crate::transfer::BLOCK),
    ];
    if let Some(parent) = parent_rel {
        let parent_path = repo.join(parent);
        if parent_path.parent() != Some(dir) {
            return Err(Error::internal(format!(
                "refusing to back {rel} by {parent}: an incremental is backed by the same disk's chain"
            )));
        }
        if !parent_path.is_file() {
            return Err(Error::not_found(format!(
                "the parent image {} is missing",
                parent_path.display()
            ))
            .with_help("Run `sendense backup verify` on the chain; the next backup of this disk must be a full (--full)."));
        }
        let name = parent_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // `-u`: the parent is not opened here (its whole chain would be, at a cost that grows
        // with every backup); the size is given. Chains are checked by `backup verify`.
        args.extend(["-u".into(), "-b".into(), name, "-F".into(), "qcow2".into()]);
    }
    args.push(partial.to_string_lossy().into_owned());
    args.push(size.to_string());
    tools::run(QEMU_IMG, &args)
        .map_err(|e| e.context(format!("creating {}", partial.display())))?;
    Ok(partial)
}

/// Renames checked `.partial` files (images, digests) to their final names, durably: every
/// directory they are in is synced once, after all renames.
pub fn commit_files(partials: &[&Path]) -> Result<()> {
    let mut dirs: Vec<&Path> = Vec::new();
    for partial in partials {
        let name = partial.to_string_lossy();
        let final_path = PathBuf::from(name.strip_suffix(PARTIAL).ok_or_else(|| {
            Error::internal(format!("{} is not a partial file", partial.display()))
        })?);
        std::fs::rename(partial, &final_path).map_err(|e| Error::io("committing", partial, e))?;
        let dir = partial.parent().unwrap_or(Path::new("."));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.into_iter().try_for_each(crate::fsutil::fsync_dir)
}

/// One link of a disk's chain as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedLink {
    /// The backup that wrote it.
    pub backup: String,
    /// Its image.
    pub file: PathBuf,
    /// The disk's size at that backup.
    pub size: u64,
    /// The recorded digest of its digest file (none for a link being written).
    pub digest: Option<String>,
    /// The recorded length of its image file (none for a link being written, and for backups
    /// made before lengths were recorded).
    pub image_bytes: Option<u64>,
    /// Why its backup is damaged, as a check found.
    pub damaged: Option<String>,
    /// Its backup's manifest (none for a link being written).
    pub manifest: Option<PathBuf>,
    /// The repository it is in.
    pub repo: PathBuf,
}

impl ExpectedLink {
    /// Whether the link is an object in an S3 repository (which has no local path).
    pub fn in_bucket(&self) -> bool {
        self.repo.as_os_str().is_empty()
    }
}

/// QEMU rounds an image's virtual size up to whole 512-byte sectors.
fn qemu_size(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

/// The fields of a QCOW2 header a chain depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    /// Virtual size of the disk, in bytes.
    pub size: u64,
    /// The backing file name, as written.
    pub backing: Option<String>,
    /// The backing file's format, from the header extension, when there is one.
    pub backing_format: Option<String>,
}

/// QCOW2 magic: `QFI\xfb`.
const QCOW2_MAGIC: u32 = 0x5146_49fb;
/// Header extension holding the backing file's format.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;

/// Reads the header of the QCOW2 image at `path` — only reads: QEMU's tools own every QCOW2
/// write. Reading ~4 KiB makes checking a whole chain cheap enough to run before every restore
/// and every incremental.
pub fn qcow2_header(path: &Path) -> std::result::Result<Qcow2Header, String> {
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    qcow2_header_of(&f)
}

/// [`qcow2_header`] of an image wherever it is (a file, an object in a bucket).
pub fn qcow2_header_of(
    src: &dyn crate::repo::read_at::ReadAt,
) -> std::result::Result<Qcow2Header, String> {
    let len = src.len().map_err(|e| e.to_string())?.min(4096);
    let mut buf = vec![0u8; len as usize];
    src.read_full_at(&mut buf, 0).map_err(|e| e.to_string())?;
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_be_bytes(buf.get(o..o + 4)?.try_into().ok()?)) };
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_be_bytes(buf.get(o..o + 8)?.try_into().ok()?)) };
    if u32_at(0) != Some(QCOW2_MAGIC) {
        return Err("it is not a QCOW2 image (bad magic)".into());
    }
    let version = u32_at(4).ok_or("its header is cut short")?;
    if !(2..=3).contains(&version) {
        return Err(format!("unknown QCOW2 version {version}"));
    }
    let size = u64_at(24).ok_or("its header is cut short")?;
    let (off, len) = (
        u64_at(8).ok_or("its header is cut short")?,
        u32_at(16).ok_or("its header is cut short")?,
    );
    let backing = if off == 0 {
        None
    } else {
        let range = usize::try_from(off)
            .ok()
            .filter(|_| len <= 1023)
            .and_then(|o| buf.get(o..o + len as usize))
            .ok_or("its backing file name lies outside its header")?;
        Some(String::from_utf8(range.to_vec()).map_err(|_| "its backing file name is not UTF-8")?)
    };
    let mut backing_format = None;
    // Extensions follow the header: 72 bytes in version 2, `header_length` in version 3.
    let mut at = if version == 2 {
        72
    } else {
        u32_at(100).ok_or("its header is cut short")? as usize
    };
    while let (Some(kind), Some(len)) = (u32_at(at), u32_at(at + 4)) {
        if kind == 0 {
            break;
        }
        let data = buf
            .get(at + 8..at + 8 + len as usize)
            .ok_or("a header extension lies outside its header")?;
        if kind == EXT_BACKING_FORMAT {
            backing_format = Some(String::from_utf8_lossy(data).into_owned());
        }
        at += 8 + (len as usize).div_ceil(8) * 8;
    }
    Ok(Qcow2Header {
        size,
        backing,
        backing_format,
    })
}

/// What is wrong with a disk's chain, `links` top first down to the full, as recorded: a link
/// outside its repository (through a link to elsewhere), missing or no QCOW2 image, a backing name that is not the recorded parent (an unsafe
/// rebase, a botched repair, tampering) or a backing format other than qcow2, a virtual size
/// that is not the recorded one. Reads only image headers, so it is cheap enough to run before
/// every restore and every incremental. Empty when the chain is sound.
pub fn chain_problems(links: &[ExpectedLink]) -> Vec<String> {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if links.is_empty() {
        return vec!["the chain has no image".into()];
    }
    let mut problems = Vec::new();
    for (i, link) in links.iter().enumerate() {
        if let Err(e) = check_inside(&link.repo, &link.file) {
            problems.push(e.message().to_string());
            break;
        }
        if !link.file.is_file() {
            problems.push(format!(
                "the image of backup {} ({}) is missing",
                link.backup,
                link.file.display()
            ));
            break;
        }
        let header = match qcow2_header(&link.file) {
            Ok(h) => h,
            Err(e) => {
                problems.push(format!(
                    "the image of backup {} cannot be opened: {e}",
                    link.backup
                ));
                break;
            }
        };
        let want = links.get(i + 1).map(|p| name(&p.file));
        if header.backing != want {
            problems.push(format!(
                "backup {}'s image is backed by {}, not by {}",
                link.backup,
                header.backing.as_deref().unwrap_or("nothing"),
                want.as_deref().unwrap_or("nothing (it is a full)")
            ));
            break;
        }
        if header.backing.is_some() && header.backing_format.as_deref() != Some("qcow2") {
            problems.push(format!(
                "backup {}'s image names its backing file's format {:?}, not qcow2",
                link.backup, header.backing_format
            ));
            break;
        }
        if let Some(want) = link.image_bytes {
            let got = std::fs::metadata(&link.file).map(|m| m.len()).unwrap_or(0);
            if got != want {
                problems.push(format!(
                    "backup {}'s image is {got} bytes long; the backup left it {want} bytes \
                     (truncated or appended to since)",
                    link.backup
                ));
                break;
            }
        }
        if header.size != qemu_size(link.size) {
            problems.push(format!(
                "backup {}'s image says its disk has {} bytes; the backup recorded {}",
                link.backup, header.size, link.size
            ));
        }
    }
    problems
}

/// What `qemu-img check` reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    /// Corruptions found.
    #[serde(default)]
    pub corruptions: u64,
    /// Leaked clusters (harmless: space only).
    #[serde(default)]
    pub leaks: u64,
    /// Errors while checking.
    #[serde(default)]
    pub check_errors: u64,
}

/// Runs `qemu-img check` on one image alone, its backing chain not opened (chains are checked
/// link by link, by their headers): a check costs the same however long the chain is;
/// corruption is an error.
pub fn check_image_alone(path: &Path) -> Result<CheckReport> {
    check(path, without_backing(path)?.into(), &[])
}

/// `path` as QEMU's `json:` filenames need it: valid UTF-8.
pub fn json_path(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::invalid(format!(
            "{} is not valid UTF-8, which QEMU's JSON filenames need",
            path.display()
        ))
        .with_help("Keep repositories under paths of valid UTF-8.")
    })
}

/// A `json:` filename that opens the qcow2 `path` without its backing chain.
pub fn without_backing(path: &Path) -> Result<String> {
    let spec = serde_json::json!({
        "driver": "qcow2",
        "file": {"driver": "file", "filename": json_path(path)?},
        "backing": null,
    });
    Ok(format!("json:{spec}"))
}

fn check(path: &Path, target: std::ffi::OsString, format: &[&str]) -> Result<CheckReport> {
    let out = QEMU_IMG
        .command()
        .args(["check", "--output=json"])
        .args(format)
        .arg(target)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                QEMU_IMG.missing()
            } else {
                Error::new(
                    ErrorKind::External,
                    format!("cannot run qemu-img check: {e}"),
                )
            }
        })?;
    // Exit codes: 0 clean, 2 corrupted, 3 leaks only, 1 could not check.
    let report: Option<CheckReport> = serde_json::from_slice(&out.stdout).ok();
    match (out.status.code(), report) {
        (Some(0 | 3), Some(r)) => Ok(r),
        (Some(2), Some(r)) => Err(Error::new(
            ErrorKind::External,
            format!(
                "{} is corrupt: {} corruption(s) found by qemu-img check",
                path.display(),
                r.corruptions
            ),
        )),
        _ => Err(Error::new(
            ErrorKind::External,
            format!(
                "qemu-img check of {} failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        )),
    }
}

/// The backing file an image records, as written in the image.
pub fn backing_file(path: &Path) -> Result<Option<String>> {
    Ok(qemu_img::info(path)?.backing_filename)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_are_unique() {
        let a = new_backup_id();
        let b = new_backup_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20261125T211006Z-1a2b3c".len());
        assert!(a.ends_with(|c: char| c.is_ascii_hexdigit()));
        assert_eq!(image_rel("vm", 2000, &a), format!("vm/2000/{a}.qcow2"));
        assert_eq!(
            partial_of(Path::new("/r/x.qcow2")),
            PathBuf::from("/r/x.qcow2.partial")
        );
    }

    #[test]
    fn backup_ids_are_recognised_and_nothing_else() {
        assert!(is_backup_id(&new_backup_id()));
        assert!(is_backup_id("20261125T211006Z-1a2b3c"));
        for bad in [
            "",
            "../../etc/passwd",
            "20261125T211006Z-1a2b3",
            "20261125T211006Z-1A2B3C",
            "20261125X211006Z-1a2b3c",
            "20261125T211006Z/1a2b3c",
            "20261125T211006Z-1a2b3c.qcow2",
        ] {
            assert!(!is_backup_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_link_out_of_the_repository_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("vm/2000")).unwrap();
        std::fs::create_dir_all(outside.join("2000")).unwrap();
        check_inside(&root, &root.join("vm/2000/x.qcow2")).unwrap();
        check_inside(&root, &root.join("new/2000/x.qcow2")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        let err = check_inside(&root, &root.join("evil/2000/x.qcow2")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert!(err.message().contains("outside repository"), "{err}");
        assert!(check_inside(&root, &root.join("vm/../../outside/2000/x")).is_err());
        // The file itself a link, to a file outside or inside: refused either way.
        std::fs::write(outside.join("2000/victim.qcow2"), b"precious").unwrap();
        std::os::unix::fs::symlink(
            outside.join("2000/victim.qcow2"),
            root.join("vm/2000/y.qcow2"),
        )
        .unwrap();
        let err = check_inside(&root, &root.join("vm/2000/y.qcow2")).unwrap_err();
        assert!(err.message().contains("is a symbolic link"), "{err}");
    }

    #[test]
    fn headers_read_as_qemu_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let top = dir.path().join("top.qcow2");
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("qemu-img")
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "qemu-img {args:?}");
        };
        run(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            base.to_str().unwrap(),
            "1000001",
        ]);
        run(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            top.to_str().unwrap(),
            "1000001",
        ]);
        let h = qcow2_header(&base).unwrap();
        assert_eq!((h.size, h.backing, h.backing_format), (1000448, None, None));
        let h = qcow2_header(&top).unwrap();
        assert_eq!(h.backing.as_deref(), Some("base.qcow2"));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        let links = |top_size: u64| {
            vec![
                ExpectedLink {
                    backup: "t".into(),
                    file: top.clone(),
                    size: top_size,
                    digest: None,
                    image_bytes: None,
                    damaged: None,
                    manifest: None,
                    repo: dir.path().into(),
                },
                ExpectedLink {
                    backup: "b".into(),
                    file: base.clone(),
                    size: 1000001,
                    digest: None,
                    image_bytes: None,
                    damaged: None,
                    manifest: None,
                    repo: dir.path().into(),
                },
            ]
        };
        assert!(chain_problems(&links(1000001)).is_empty());
        assert!(chain_problems(&links(2000000))[0].contains("says its disk has"));
        // A recorded length that differs from the file's: truncated or appended to.
        let mut cut = links(1000001);
        let len = std::fs::metadata(&base).unwrap().len();
        cut[1].image_bytes = Some(len);
        assert!(chain_problems(&cut).is_empty());
        cut[1].image_bytes = Some(len + 512);
        let p = chain_problems(&cut);
        assert!(
            p[0].contains(&format!("image is {len} bytes long")),
            "{p:?}"
        );
        run(&[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "raw",
            top.to_str().unwrap(),
        ]);
        assert!(chain_problems(&links(1000001))[0].contains("not qcow2"));
        std::fs::write(dir.path().join("junk"), b"not an image").unwrap();
        assert!(qcow2_header(&dir.path().join("junk")).is_err());
    }
}
