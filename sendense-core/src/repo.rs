//! Backup repositories.
//!
//! A repository is a directory (local disk or a mounted NFS/CIFS share) that describes itself,
//! so the repository alone is enough to restore after the hub is lost:
//!
//! ```text
//! <repo>/sendense-repo.yaml                      repository id, format version
//! <repo>/<vm>/<disk-key>/<backup-id>.qcow2       chain links; backing paths are relative
//! <repo>/<vm>/manifests/<backup-id>.yaml         VM-level manifest, written last
//! ```
//!
//! Rules: files being written carry a `.partial` suffix until commit; the manifest is written
//! last and atomically; a backup exists only when its manifest and catalog row say completed.
//! A repository registered with `require_mount` is refused whenever its path is not a mount
//! point, so an unmounted share never fills the root filesystem.

pub mod chain;
pub mod chain_check;
pub mod chain_read;
pub mod digests;
mod import;
pub mod manifest;
pub mod qcow2_map;
pub mod read_at;
pub mod s3;
mod s3import;
mod salvage;
mod writer;

pub use import::{ImportOptions, ImportReport};
pub use s3import::S3ImportReport;
pub use writer::{
    create_targets, plan_targets, record_targets, remove_targets, DiskPlan, PendingBackup, Target,
};

use crate::error::{Error, ErrorKind, Result};
use crate::fsutil::{self, Capacity};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Name of the file that makes a directory a Sendense repository.
pub const META_FILE: &str = "sendense-repo.yaml";

/// The repository format this Sendense writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Contents of `sendense-repo.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoMeta {
    /// Format version of the layout.
    pub format: u32,
    /// The repository's id; survives re-registration and moves.
    pub id: String,
    /// Name given when it was created.
    pub name: String,
    /// When it was created.
    pub created_at: String,
    /// Which Sendense created it.
    #[serde(default)]
    pub created_by: String,
    /// The hub that writes into it (absent in repositories made before hubs recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<RepoOwner>,
}

/// The hub that owns a repository: the only one that writes backups into it or deletes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoOwner {
    /// The hub's id.
    pub hub: String,
    /// The host it ran on when it took the repository.
    pub host: String,
    /// Since when.
    pub since: String,
}

impl RepoOwner {
    /// This hub, now.
    pub fn now(hub: &str) -> RepoOwner {
        RepoOwner {
            hub: hub.to_string(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "unknown".into()),
            since: crate::time::now_rfc3339(),
        }
    }
}

impl RepoMeta {
    /// Reads `<dir>/sendense-repo.yaml`; `Ok(None)` when there is none.
    pub fn read(dir: &Path) -> Result<Option<RepoMeta>> {
        let path = dir.join(META_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        let meta: RepoMeta = serde_yaml_ng::from_str(&text).map_err(|e| {
            Error::invalid(format!(
                "{} is not a valid repository file: {e}",
                path.display()
            ))
        })?;
        if meta.format > FORMAT_VERSION {
            return Err(Error::refused(format!(
                "{} has repository format {}, newer than this Sendense supports ({FORMAT_VERSION})",
                path.display(),
                meta.format
            ))
            .with_help("Use a newer Sendense for this repository."));
        }
        Ok(Some(meta))
    }

    /// Makes `hub` the owner and writes the file.
    pub fn take(mut self, dir: &Path, hub: &str) -> Result<RepoMeta> {
        self.owner = Some(RepoOwner::now(hub));
        self.write(dir)?;
        Ok(self)
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_yaml_ng::to_string(self)
            .map_err(|e| Error::internal(format!("serializing repository metadata: {e}")))?;
        let text = format!(
            "# Sendense backup repository. Do not edit; `sendense repo import` reads this file.\n{text}"
        );
        fsutil::write_atomic(&dir.join(META_FILE), text.as_bytes(), 0o644)
    }
}

/// Creates (if needed) and initialises a repository directory. Returns its canonical path and
/// metadata. Refuses a directory that already holds a repository and, with `require_mount`, a
/// path that is not a mount point.
pub fn initialise(
    path: &Path,
    name: &str,
    require_mount: bool,
    hub: &str,
) -> Result<(PathBuf, RepoMeta)> {
    if require_mount {
        if !path.is_dir() {
            return Err(Error::refused(format!(
                "repository path {} does not exist, and --require-mount needs a mounted filesystem there",
                path.display()
            ))
            .with_help("Create the mount point and mount the backup filesystem on it first."));
        }
    } else {
        fsutil::create_private_dir(path)?;
    }
    let canonical = fs::canonicalize(path).map_err(|e| Error::io("resolving", path, e))?;
    if !canonical.is_dir() {
        return Err(Error::invalid(format!(
            "repository path {} is not a directory",
            canonical.display()
        )));
    }
    check_mount(&canonical, require_mount)?;
    if let Some(meta) = RepoMeta::read(&canonical)? {
        return Err(Error::already_exists(format!(
            "{} is already a Sendense repository (id {}, created as `{}`)",
            canonical.display(),
            meta.id,
            meta.name
        ))
        .with_help("Register an existing repository with `sendense repo import PATH`, or choose an empty directory."));
    }
    let meta = RepoMeta {
        format: FORMAT_VERSION,
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        created_at: crate::time::now_rfc3339(),
        created_by: format!("sendense {}", env!("CARGO_PKG_VERSION")),
        owner: Some(RepoOwner::now(hub)),
    };
    meta.write(&canonical)?;
    Ok((canonical, meta))
}

/// With `require_mount`, refuses a path that is not a mount point.
pub fn check_mount(path: &Path, require_mount: bool) -> Result<()> {
    if require_mount && !fsutil::is_mount_point(path)? {
        return Err(Error::refused(format!(
            "repository path {} is not a mount point (the backup filesystem is not mounted)",
            path.display()
        ))
        .with_help("Mount the backup filesystem there, or register the repository without --require-mount."));
    }
    Ok(())
}

/// Checks that `path` still holds the repository with id `expected_id`.
pub fn check_identity(path: &Path, expected_id: &str) -> Result<RepoMeta> {
    match RepoMeta::read(path)? {
        Some(meta) if meta.id == expected_id => Ok(meta),
        Some(meta) => Err(Error::refused(format!(
            "{} holds repository {} but the catalog expects {expected_id}",
            path.display(),
            meta.id
        ))
        .with_help("Another repository was put at this path; check the mount, or remove and import it again.")),
        None => Err(Error::not_found(format!(
            "{} has no {META_FILE}: the repository is missing or not mounted",
            path.display()
        ))
        .with_help("Mount the backup filesystem, or remove the repository with `sendense repo remove`.")),
    }
}

/// Refuses to write into the repository at `path` unless this hub (`hub`) owns it (or nobody
/// does yet: see [`claim_if_unowned`]).
pub fn check_owner(path: &Path, hub: &str) -> Result<()> {
    match RepoMeta::read(path)?.and_then(|m| m.owner) {
        Some(o) if o.hub != hub => Err(owned_elsewhere(path, &o)),
        _ => Ok(()),
    }
}

/// Makes this hub the owner of a repository made before owners were recorded, under the
/// repository's lock held exclusively (so two hubs cannot both claim it); called before the
/// lock is taken for writing.
pub fn claim_if_unowned(path: &Path, hub: &str) -> Result<()> {
    if RepoMeta::read(path)?.is_none_or(|m| m.owner.is_some()) {
        return Ok(());
    }
    let _claiming = crate::lock::RepoWriteLock::take_over(path)?;
    match RepoMeta::read(path)? {
        Some(meta) if meta.owner.is_none() => meta.take(path, hub).map(drop),
        _ => Ok(()),
    }
}

/// The error for a repository another hub owns.
pub fn owned_elsewhere(path: &Path, o: &RepoOwner) -> Error {
    Error::refused(format!(
        "repository {} is owned by another hub (hub {} on host {}, since {}); this hub does not \
         write to it",
        path.display(),
        o.hub,
        o.host,
        o.since
    ))
    .with_help(
        "Two hubs writing into one repository destroy each other's backups. Keep using it from \
         its owner; or, once that hub no longer uses it, take it over with `sendense repo \
         import PATH --take-over` (remove it here first with `sendense repo remove`).",
    )
}

/// What `repo test` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// Bytes written, fsynced, read back and deleted.
    pub probe_bytes: u64,
    /// Milliseconds for write + fsync.
    pub write_ms: f64,
    /// Capacity of the filesystem.
    #[serde(flatten)]
    pub capacity: Capacity,
    /// Whether the path is a mount point.
    pub mount_point: bool,
}

/// Writes, fsyncs, reads back and deletes a probe file in `dir`, then reads capacity.
pub fn probe(dir: &Path) -> Result<ProbeReport> {
    const SIZE: usize = 1 << 20;
    let path = dir.join(format!(".sendense-probe-{}", uuid::Uuid::new_v4()));
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("creating probe file", &path, e))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("writing probe file", &path, e))?;
        let write_ms = started.elapsed().as_secs_f64() * 1000.0;
        let mut back = Vec::with_capacity(SIZE);
        fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut back))
            .map_err(|e| Error::io("reading probe file", &path, e))?;
        if back != data {
            return Err(Error::new(
                ErrorKind::Io,
                format!("probe file {} read back different data", path.display()),
            ));
        }
        Ok(write_ms)
    })();
    let removed = fs::remove_file(&path);
    let write_ms = result?;
    removed.map_err(|e| Error::io("removing probe file", &path, e))?;
    fsutil::fsync_dir(dir)?;
    Ok(ProbeReport {
        probe_bytes: SIZE as u64,
        write_ms,
        capacity: fsutil::capacity(dir)?,
        mount_point: fsutil::is_mount_point(dir)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialise_writes_meta_once() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b/repo");
        let (path, meta) = initialise(&target, "r1", false, "hub-a").unwrap();
        assert_eq!(path, fs::canonicalize(&target).unwrap());
        assert_eq!(RepoMeta::read(&path).unwrap().unwrap(), meta);
        let err = initialise(&target, "r2", false, "hub-a").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.message().contains(&meta.id));
        check_identity(&path, &meta.id).unwrap();
        assert_eq!(
            check_identity(&path, "other").unwrap_err().kind(),
            ErrorKind::Refused
        );
    }

    #[test]
    fn require_mount_refuses_plain_dir_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = initialise(dir.path(), "r", true, "hub-a").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert!(!dir.path().join(META_FILE).exists());
        let err = initialise(&dir.path().join("missing"), "r", true, "hub-a").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn probe_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let report = probe(dir.path()).unwrap();
        assert_eq!(report.probe_bytes, 1 << 20);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(META_FILE),
            "format: 9\nid: x\nname: y\ncreated_at: z\n",
        )
        .unwrap();
        assert_eq!(
            RepoMeta::read(dir.path()).unwrap_err().kind(),
            ErrorKind::Refused
        );
    }
}
