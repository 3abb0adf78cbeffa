//! Removing a backup that later backups depend on, without losing a byte they need.
//!
//! Removing backup B whose image of disk K backs image C (the next backup of K): C's clusters
//! are committed into B's image (`qemu-img commit`, B opened without its own backing chain),
//! and B's image, now holding exactly what C read as, takes C's place under C's name; its
//! backing file stays B's parent. So C restores to the same bytes, backed by B's parent (or
//! standalone, when B was a full), and every backup above C is untouched. The block digests
//! follow the data: C's new digest file is B's records overlaid with C's. Each merge costs what
//! C holds, not the disk's size; removing a run of backups oldest first costs what they hold.
//!
//! Crash safety: the catalog marks B `deleting` (synced) before anything changes; the
//! repository journal `<vm>/merges/<B>.yaml` says what merges into what; then B's manifest
//! goes (the repository no longer claims B). Per disk, in order:
//!
//! ```text
//! a. commit C into B's image, sync it            B.qcow2 exists → redo from here (idempotent:
//! b. C's records written over B.digests, synced                     C is never written)
//! c. rename B.qcow2 → C.qcow2, sync the directory   ← the merged image is C now
//! d. rename B.digests → C.digests, sync the directory   B.digests exists → redo from here
//! ```
//!
//! then C's manifest is rewritten (parent, mode, digest, length; idempotent), the catalog
//! repoints C and deletes B in one transaction, and the journal goes. Before anything changes,
//! every disk's link (C backed by B, B by its recorded parent), both images and both digest
//! files are checked ([`preflight`]), and each commit checks the link again; readers of a chain
//! with a link being removed are refused, and so is removing a backup whose parent is being
//! removed. After a crash the catalog, which still holds B, finishes from the journal (or
//! plans it again, when the process died before writing it); a journal left after the catalog
//! step is finished by the reconciliation (every step finds itself done). A kill at any instant
//! leaves every other backup restorable to exactly its data (C's image is only ever replaced
//! whole, by an image that reads the same), and the next command — or `repo import`, from the
//! repository alone — finishes the merge ([`roll_forward`]).

use crate::catalog::{BackupRecord, DiskChild, MergedDisk};
use crate::error::{Error, Result};
use crate::repo::chain::{image_rel, is_backup_id};
use crate::repo::digests::{self, Scheme};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Journal format version.
const JOURNAL_FORMAT: u32 = 1;

/// What a merge does, kept in the repository until it is done: `<vm>/merges/<backup>.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version.
    pub format: u32,
    /// The backup being removed.
    pub backup: String,
    /// Its VM.
    pub vm: String,
    /// Its disks.
    pub disks: Vec<JournalDisk>,
}

/// One disk of a backup being removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalDisk {
    /// Disk key.
    pub key: u32,
    /// The removed backup's parent for this disk: the merged image's parent.
    pub parent: Option<String>,
    /// The backup whose image takes the data (`None`: nothing depends on this disk's image).
    pub child: Option<String>,
}

/// The journal path of a merge of `backup` of `vm`, relative to the repository.
pub fn journal_rel(vm: &str, backup: &str) -> String {
    format!("{vm}/merges/{backup}.yaml")
}

impl Journal {
    /// The plan to remove `b`, whose dependants are `children`: refused (`Refused`) where two
    /// images depend on one, or where digests of an older scheme cannot follow the data.
    pub fn plan(
        b: &BackupRecord,
        children: &[DiskChild],
        child_records: &[BackupRecord],
    ) -> Result<Journal> {
        let mut disks = Vec::new();
        for d in &b.disks {
            let mine: Vec<&DiskChild> = children.iter().filter(|c| c.key == d.key).collect();
            if mine.len() > 1 {
                return Err(Error::refused(format!(
                    "disk {} of backup {} backs {} images ({}); Sendense merges into one",
                    d.key,
                    b.id,
                    mine.len(),
                    mine.iter()
                        .map(|c| c.child.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .with_help("Delete the newer branches first."));
            }
            let child = mine.first().map(|c| c.child.clone());
            if let Some(c) = &child {
                let cd = child_records
                    .iter()
                    .find(|r| &r.id == c)
                    .and_then(|r| r.disks.iter().find(|x| x.key == d.key))
                    .ok_or_else(|| Error::internal(format!("backup {c} has no disk {}", d.key)))?;
                for (id, digest) in [(&b.id, &d.digest), (c, &cd.digest)] {
                    let scheme = digest.as_deref().and_then(Scheme::of_digest);
                    if scheme != Some(Scheme::CURRENT) {
                        return Err(Error::refused(format!(
                            "disk {} of backup {id} has digests of an older Sendense ({}), which \
                             cannot follow its data into another image",
                            d.key,
                            digest.as_deref().unwrap_or("none")
                        ))
                        .with_help(
                            "Take a full backup (`sendense backup start VM --full`); the older \
                             chain can then be removed whole, newest first.",
                        ));
                    }
                }
            }
            disks.push(JournalDisk {
                key: d.key,
                parent: d.parent.clone(),
                child,
            });
        }
        Ok(Journal {
            format: JOURNAL_FORMAT,
            backup: b.id.clone(),
            vm: b.vm.clone(),
            disks,
        })
    }

    /// Writes the journal into `repo` (atomically, synced).
    pub fn write(&self, repo: &Path) -> Result<()> {
        write_journal(repo, &journal_rel(&self.vm, &self.backup), self)
    }

    /// Reads the journal at `rel` in `repo` — untrusted input: every id, name and key is
    /// checked, and the journal must sit where the layout puts it.
    pub fn read(repo: &Path, rel: &str) -> Result<Journal> {
        let path = repo.join(rel);
        crate::repo::chain::check_inside(repo, &path)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
        let j: Journal = serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::invalid(format!("merge journal {rel}: {e}")))?;
        let bad = |why: String| Err(Error::invalid(format!("merge journal {rel}: {why}")));
        if j.format != JOURNAL_FORMAT {
            return bad(format!("format {} is not {JOURNAL_FORMAT}", j.format));
        }
        crate::vm::validate_name("VM", &j.vm)
            .map_err(|e| e.context(format!("merge journal {rel}")))?;
        if !is_backup_id(&j.backup) || rel != journal_rel(&j.vm, &j.backup) {
            return bad("it does not describe the backup its name says".into());
        }
        for d in &j.disks {
            let ids = d.parent.iter().chain(&d.child);
            if d.key < 2000 || ids.clone().any(|id| !is_backup_id(id) || *id == j.backup) {
                return bad(format!("disk {} names no valid backups", d.key));
            }
        }
        Ok(j)
    }

    /// Removes the journal, durably.
    pub fn remove(&self, repo: &Path) -> Result<()> {
        remove_durably(&repo.join(journal_rel(&self.vm, &self.backup)))
    }

    fn image(&self, repo: &Path, key: u32, id: &str) -> PathBuf {
        repo.join(image_rel(&self.vm, key, id))
    }
}

/// Checks, before anything changes, what the merge of `b` into its dependant `child` will read:
/// for every disk `child` takes, the link between the two images as the catalog records it
/// (the child's image backed by the removed one, the removed one by its recorded parent), both
/// images (`qemu-img check`, each alone), and both digest files against their recorded digests.
pub fn preflight(
    repo: &Path,
    journal: &Journal,
    b: &BackupRecord,
    child: &BackupRecord,
) -> Result<()> {
    for d in journal
        .disks
        .iter()
        .filter(|d| d.child.as_deref() == Some(child.id.as_str()))
    {
        let removed = journal.image(repo, d.key, &journal.backup);
        let target = journal.image(repo, d.key, &child.id);
        check_link(&removed, &target, d.parent.as_deref())?;
        for (id, image, rec) in [(&b.id, &removed, b), (&child.id, &target, child)] {
            crate::repo::chain::check_image_alone(image)
                .map_err(|e| e.context(format!("backup {id}, disk {}", d.key)))?;
            let recorded = rec
                .disks
                .iter()
                .find(|x| x.key == d.key)
                .and_then(|x| x.digest.clone())
                .unwrap_or_default();
            let dfile = digests::digests_of(image);
            match digests::check_path(&dfile, &recorded)? {
                digests::Checked::Intact(_) => {}
                _ => {
                    return Err(Error::refused(format!(
                        "the digest file {} of backup {id} was changed since the backup; its \
                         data is not merged into another backup",
                        dfile.display()
                    ))
                    .with_help("Run `sendense backup verify` on the chain."))
                }
            }
        }
    }
    Ok(())
}

/// Refuses unless `target`'s image is backed by `removed`'s, and `removed`'s by `parent`'s
/// image (none for a full): a merge commits `target` into `removed` as its backing file, which
/// must be what it reads through.
fn check_link(removed: &Path, target: &Path, parent: Option<&str>) -> Result<()> {
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let backing = |p: &Path| {
        crate::repo::chain::qcow2_header(p)
            .map(|h| h.backing)
            .map_err(|e| Error::invalid(format!("{}: {e}", p.display())))
    };
    let parent_image = parent.map(|p| format!("{p}.qcow2"));
    if backing(target)? != name(removed) || backing(removed)? != parent_image {
        return Err(Error::refused(format!(
            "{} is not backed by {} as recorded (or that by its recorded parent): the merge is \
             not done",
            target.display(),
            removed.display()
        ))
        .with_help("Run `sendense backup verify` on the chain."));
    }
    Ok(())
}

/// Does (or finishes) the file work of `journal` in `repo` — the removed backup's manifest,
/// each disk's merge, the dependants' manifests — and returns what each merged disk is now.
/// Idempotent: every step can run again after a crash at any instant.
pub fn roll_forward(repo: &Path, journal: &Journal) -> Result<Vec<MergedDisk>> {
    let manifest = repo.join(crate::repo::manifest::manifest_rel(
        &journal.vm,
        &journal.backup,
    ));
    crate::repo::chain::check_inside(repo, &manifest)?;
    remove_durably(&manifest)?;
    crate::crash::point("merge.manifest-removed");
    let mut merged = Vec::new();
    for d in &journal.disks {
        let removed = journal.image(repo, d.key, &journal.backup);
        crate::repo::chain::check_inside(repo, &removed)?;
        match &d.child {
            Some(child) => {
                let target = journal.image(repo, d.key, child);
                crate::repo::chain::check_inside(repo, &target)?;
                merge_disk(&removed, &target, d.parent.as_deref())?;
                let image_bytes = std::fs::metadata(&target)
                    .map_err(|e| Error::io("reading", &target, e))?
                    .len();
                let digest = digests::file_digest(&digests::digests_of(&target), Scheme::CURRENT)?;
                merged.push(MergedDisk {
                    backup: child.clone(),
                    key: d.key,
                    parent: d.parent.clone(),
                    digest,
                    image_bytes,
                });
            }
            None => {
                remove_durably(&removed)?;
                remove_durably(&digests::digests_of(&removed))?;
            }
        }
    }
    rewrite_manifests(repo, journal, &merged)?;
    crate::crash::point("merge.manifests-rewritten");
    Ok(merged)
}

/// Steps a–d of one disk (see the module docs).
fn merge_disk(removed: &Path, target: &Path, parent: Option<&str>) -> Result<()> {
    let removed_digests = digests::digests_of(removed);
    let target_digests = digests::digests_of(target);
    if removed.exists() {
        // Never commit into an image the target does not read through.
        check_link(removed, target, parent)?;
        commit(target, removed)?;
        crate::crash::point("merge.committed");
        // The removed backup's digest file takes the target's records, in place: it is the
        // merged image's digest file from now on (the removed backup's manifest is gone).
        let merged = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&removed_digests)
            .map_err(|e| Error::io("opening", &removed_digests, e))?;
        digests::overlay_onto(&merged, &removed_digests, &target_digests)?;
        crate::crash::point("merge.digests-written");
        std::fs::rename(removed, target).map_err(|e| Error::io("renaming", removed, e))?;
        sync_parent(target)?;
        crate::crash::point("merge.image-renamed");
    }
    if removed_digests.exists() {
        std::fs::rename(&removed_digests, &target_digests)
            .map_err(|e| Error::io("renaming", &removed_digests, e))?;
        sync_parent(&target_digests)?;
        crate::crash::point("merge.digests-renamed");
    }
    Ok(())
}

/// Commits the clusters of `top` into `base` (its backing file), opening `base` without its own
/// backing chain, leaving `top` untouched; then makes `base` durable and checks it.
fn commit(top: &Path, base: &Path) -> Result<()> {
    let file = |p: &Path| -> Result<serde_json::Value> {
        Ok(serde_json::json!({"driver": "file", "filename": crate::repo::chain::json_path(p)?}))
    };
    let spec = serde_json::json!({
        "driver": "qcow2",
        "file": file(top)?,
        "backing": {"driver": "qcow2", "file": file(base)?, "backing": null},
    });
    crate::tools::run(
        crate::tools::QEMU_IMG,
        ["commit", "-q", "-d", &format!("json:{spec}")],
    )
    .map_err(|e| e.context(format!("merging {} into {}", top.display(), base.display())))?;
    std::fs::File::open(base)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("syncing", base, e))?;
    crate::repo::chain::check_image_alone(base)
        .map_err(|e| e.context(format!("checking {} after the merge", base.display())))?;
    Ok(())
}

/// The dependants' manifests, their merged disks rewritten: parent, mode, digest, length.
fn rewrite_manifests(repo: &Path, journal: &Journal, merged: &[MergedDisk]) -> Result<()> {
    use crate::repo::manifest::{manifest_rel, Manifest};
    let mut children: Vec<&str> = merged.iter().map(|m| m.backup.as_str()).collect();
    children.dedup();
    for child in children {
        let rel = manifest_rel(&journal.vm, child);
        let path = repo.join(&rel);
        let mut m = Manifest::read(&path)?;
        m.validate(&rel)?;
        for md in merged.iter().filter(|md| md.backup == child) {
            let Some(disk) = m.disks.iter_mut().find(|d| d.key == md.key) else {
                return Err(Error::invalid(format!(
                    "manifest {rel} has no disk {}",
                    md.key
                )));
            };
            if disk.parent.as_deref() == Some(journal.backup.as_str()) {
                disk.parent = md.parent.clone();
                if disk.parent.is_none() {
                    disk.mode = crate::catalog::BackupMode::Full;
                    disk.reason = crate::catalog::MERGED_FULL_REASON.into();
                }
            }
            disk.digest = Some(md.digest.clone());
            disk.image_bytes = Some(md.image_bytes);
        }
        m.write(repo)?;
    }
    Ok(())
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) => crate::fsutil::fsync_dir(dir),
        None => Ok(()),
    }
}

/// Writes `journal` as YAML at `rel` in `repo`, atomically and synced — the `merges` directory
/// too, when it is new, so the journal survives a power cut.
pub(crate) fn write_journal(repo: &Path, rel: &str, journal: &impl Serialize) -> Result<()> {
    let path = repo.join(rel);
    crate::repo::chain::check_inside(repo, &path)?;
    if let Some(dir) = path.parent() {
        if !dir.is_dir() {
            crate::fsutil::create_private_dir(dir)?;
            crate::fsutil::fsync_dir(dir.parent().unwrap_or(repo))?;
        }
    }
    let text = serde_yaml_ng::to_string(journal)
        .map_err(|e| Error::internal(format!("serializing the journal {rel}: {e}")))?;
    crate::fsutil::write_atomic(&path, text.as_bytes(), 0o600)
}

/// Removes `path` (a missing file is fine) and syncs its directory.
pub(crate) fn remove_durably(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("removing", path, e)),
    }
    sync_parent(path)
}

/// The journals of unfinished merges in `repo`, relative to it.
pub fn journals(repo: &Path) -> Vec<String> {
    all_journals(repo)
        .into_iter()
        .filter(|rel| !rel.ends_with(".full.yaml"))
        .collect()
}

/// Every journal in `repo` (merges and consolidations), relative to it.
pub(crate) fn all_journals(repo: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for vm in std::fs::read_dir(repo).into_iter().flatten().flatten() {
        let Ok(name) = vm.file_name().into_string() else {
            continue;
        };
        let dir = vm.path().join("merges");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if let Ok(file) = e.file_name().into_string() {
                if file.ends_with(".yaml") {
                    found.push(format!("{name}/merges/{file}"));
                }
            }
        }
    }
    found.sort();
    found
}
