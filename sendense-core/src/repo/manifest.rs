//! VM-level manifests: `<repo>/<vm>/manifests/<backup-id>.yaml`, written last and atomically.
//! A manifest alone describes a backup well enough to rebuild the catalog (`repo import`).

use crate::catalog::BackupMode;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Manifest format version.
pub const MANIFEST_FORMAT: u32 = 1;

/// The VM as it was at the backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestVm {
    /// Name.
    pub name: String,
    /// Source kind.
    pub source: String,
    /// Source settings.
    #[serde(default)]
    pub source_options: serde_json::Value,
}

/// One disk of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDisk {
    /// Disk key.
    pub key: u32,
    /// Identity on the source.
    pub identity: String,
    /// Full or incremental.
    pub mode: BackupMode,
    /// Why.
    pub reason: String,
    /// Image, relative to the repository root.
    pub file: String,
    /// Parent backup id (incrementals).
    pub parent: Option<String>,
    /// Disk size.
    pub size_bytes: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Change-tracking checkpoint the backup ends at.
    pub checkpoint: Option<String>,
    /// Integrity digest of the data written.
    pub digest: Option<String>,
    /// Length of the image file as committed (absent in manifests of backups made before it
    /// was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
    /// Backups taken from the source since its last full from the source (absent where not
    /// known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_full: Option<u32>,
}

impl ManifestDisk {
    /// What the disk's backup moved, as the catalog records it at completion.
    pub fn outcome(&self) -> crate::catalog::DiskOutcome {
        crate::catalog::DiskOutcome {
            key: self.key,
            bytes_read: self.bytes_read,
            bytes_written: self.bytes_written,
            digest: self.digest.clone(),
            image_bytes: self.image_bytes,
            digest_scheme: self
                .digest
                .as_deref()
                .and_then(super::digests::Scheme::of_digest)
                .unwrap_or_default(),
        }
    }
}

/// A backup manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub format: u32,
    /// Backup id.
    pub backup: String,
    /// Repository id it belongs to.
    pub repository: String,
    /// The VM.
    pub vm: ManifestVm,
    /// When the backup started.
    pub created_at: String,
    /// When it completed.
    pub completed_at: String,
    /// The backup this one is a copy of (absent for a backup made from its source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// Its disks.
    pub disks: Vec<ManifestDisk>,
}

/// The manifests of a repository.
#[derive(Debug, Default)]
pub struct ManifestScan {
    /// Readable manifests with their paths relative to the repository, oldest first.
    pub found: Vec<(String, Manifest)>,
    /// Manifests that could not be read.
    pub errors: Vec<Error>,
}

/// Manifest path relative to the repository.
pub fn manifest_rel(vm: &str, backup: &str) -> String {
    format!("{vm}/manifests/{backup}.yaml")
}

impl Manifest {
    /// Writes the manifest atomically (temp file, fsync, rename, fsync dir). Returns its
    /// relative path.
    pub fn write(&self, repo: &Path) -> Result<String> {
        let rel = manifest_rel(&self.vm.name, &self.backup);
        let path = repo.join(&rel);
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir(dir)?;
        }
        crate::fsutil::write_atomic(&path, self.to_yaml()?.as_bytes(), 0o600)?;
        Ok(rel)
    }

    /// The manifest as it is stored.
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self)
            .map_err(|e| Error::internal(format!("serializing manifest: {e}")))
    }

    /// A manifest from its stored text (`name` names it in messages); refused when written by
    /// a newer Sendense. Not yet validated (see [`Manifest::validate`]).
    pub fn parse(text: &[u8], name: &str) -> Result<Manifest> {
        let m: Manifest = serde_yaml_ng::from_slice(text)
            .map_err(|e| Error::invalid(format!("{name} is not a valid manifest: {e}")))?;
        if m.format > MANIFEST_FORMAT {
            return Err(Error::refused(format!(
                "{name} has manifest format {}, newer than this Sendense supports",
                m.format
            )));
        }
        Ok(m)
    }

    /// Checks a manifest read from a repository — untrusted input — before anything it says is
    /// used: the VM name by the rule for names, the backup id, keys and parents by their
    /// formats, the manifest at `rel` and every image exactly where the layout puts them. A
    /// manifest that fails is reported, never followed.
    pub fn validate(&self, rel: &str) -> Result<()> {
        let bad = |why: String| Err(Error::invalid(format!("manifest {rel}: {why}")));
        crate::vm::validate_name("VM", &self.vm.name)
            .map_err(|e| e.context(format!("manifest {rel}")))?;
        if !super::chain::is_backup_id(&self.backup) {
            return bad(format!("{:?} is not a backup id", self.backup));
        }
        if rel != manifest_rel(&self.vm.name, &self.backup) {
            return bad(format!(
                "it describes backup {} of VM `{}`, whose manifest is not at this path",
                self.backup, self.vm.name
            ));
        }
        if let Some(of) = &self.copy_of {
            if !super::chain::is_backup_id(of) || *of == self.backup {
                return bad(format!("{of:?} cannot be the backup it is a copy of"));
            }
        }
        if self.disks.is_empty() {
            return bad("it lists no disks".into());
        }
        let mut keys = std::collections::HashSet::new();
        for d in &self.disks {
            if d.key < 2000 || !keys.insert(d.key) {
                return bad(format!("disk key {} is invalid or repeated", d.key));
            }
            let want = super::chain::image_rel(&self.vm.name, d.key, &self.backup);
            if d.file != want {
                return bad(format!(
                    "disk {}: its image {:?} is not where the layout puts it ({want})",
                    d.key, d.file
                ));
            }
            match (d.mode, &d.parent) {
                (BackupMode::Full, None) => {}
                (BackupMode::Incremental, Some(p)) if super::chain::is_backup_id(p) => {}
                _ => {
                    return bad(format!(
                        "disk {}: a {} with parent {:?}",
                        d.key,
                        d.mode.as_str(),
                        d.parent
                    ))
                }
            }
        }
        Ok(())
    }

    /// Reads one manifest.
    pub fn read(path: &Path) -> Result<Manifest> {
        let text = std::fs::read(path).map_err(|e| Error::io("reading manifest", path, e))?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Every manifest in the repository, oldest first (parents before children). Unreadable
    /// manifests are returned as errors alongside, not silently skipped.
    pub fn read_all(repo: &Path) -> Result<ManifestScan> {
        let mut found = Vec::new();
        let mut errors = Vec::new();
        let entries = std::fs::read_dir(repo).map_err(|e| Error::io("reading", repo, e))?;
        for vm_dir in entries.flatten() {
            let mdir = vm_dir.path().join("manifests");
            let Ok(files) = std::fs::read_dir(&mdir) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !name.ends_with(".yaml") {
                    continue;
                }
                match Manifest::read(&f.path()) {
                    Ok(m) => {
                        let rel = f
                            .path()
                            .strip_prefix(repo)
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or(name);
                        found.push((rel, m));
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        found.sort_by(|a, b| (&a.1.created_at, &a.1.backup).cmp(&(&b.1.created_at, &b.1.backup)));
        Ok(ManifestScan { found, errors })
    }
}
