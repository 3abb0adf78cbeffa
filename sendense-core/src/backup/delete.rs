//! `backup delete`: a backup's manifest, images, digest files and rows go together, safely
//! beside everything else Sendense runs and at any crash instant. Any backup can be deleted:
//! one that later backups depend on is merged into them ([`super::merge`]).
//!
//! 1. Take the VM lock: no backup of the VM runs (none can plan on the backup as its parent).
//! 2. Take the backup's lock exclusively: no restore, export or verify reads it — or any backup
//!    that depends on it (they hold it shared, for the whole chain they read).
//! 3. In one synced transaction, check that it is completed (and, for a merge, that exactly the
//!    planned backups depend on it), and mark it `deleting`: from here on nothing reads it or
//!    builds on it, and should this process die the reconciliation finishes the delete
//!    ([`crate::cleanup`]).
//! 4. Nothing depends on it: remove the manifest first (the repository no longer claims the
//!    backup, `repo import` will not bring it back), then images and digest files, each
//!    directory synced; then the rows. Something does: the merge's journal, then its steps.

use super::merge::{remove_durably, Journal};
use crate::catalog::BackupRecord;
use crate::error::{Error, Result};
use crate::lock::{BackupDeleteLock, VmLock};
use crate::sendense::Sendense;
use serde::Serialize;
use std::path::Path;

/// What deleting a backup does, disk by disk (`backup delete --dry-run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeletePlan {
    /// The backup.
    pub backup: String,
    /// Its VM.
    pub vm: String,
    /// Its disks.
    pub disks: Vec<DiskFate>,
    /// In an S3 repository: why it would be kept, expired, instead of deleted now (its
    /// objects' locks, backups depending on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

/// What happens to one disk's image of a deleted backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskFate {
    /// Disk key.
    pub key: u32,
    /// The backup whose image takes this image's data (`None`: nothing depends on it, it is
    /// removed).
    pub merge_into: Option<String>,
    /// That backup's new parent for this disk (`None`: it becomes a full).
    pub new_parent: Option<String>,
}

impl Sendense {
    /// What [`Sendense::delete_backup`] would do, without doing anything.
    pub fn delete_plan(&self, id: &str) -> Result<DeletePlan> {
        let b = self.catalog().backup(id)?;
        if b.in_s3() {
            let hold = self.s3_hold(id)?;
            return Ok(DeletePlan {
                backup: b.id.clone(),
                vm: b.vm.clone(),
                disks: Vec::new(),
                kept: (!hold.is_free()).then(|| hold.reason()),
            });
        }
        let journal = self.merge_journal(&b, true)?;
        Ok(DeletePlan {
            backup: b.id.clone(),
            vm: b.vm.clone(),
            disks: journal
                .disks
                .iter()
                .map(|d| DiskFate {
                    key: d.key,
                    new_parent: d.child.as_ref().and(d.parent.clone()),
                    merge_into: d.child.clone(),
                })
                .collect(),
            kept: None,
        })
    }

    /// The merge plan of backup `b` from the catalog; `checked`: refused for a damaged backup or
    /// digests of an older scheme (a merge that was decided already is only planned again).
    fn merge_journal(&self, b: &BackupRecord, checked: bool) -> Result<Journal> {
        let children = self.catalog().disk_children(&b.id)?;
        let mut records = Vec::new();
        for c in &children {
            if !records.iter().any(|r: &BackupRecord| r.id == c.child) {
                records.push(self.catalog().backup(&c.child)?);
            }
        }
        for r in std::iter::once(b).chain(&records).filter(|_| checked) {
            if let Some(why) = &r.damaged {
                if !children.is_empty() {
                    return Err(Error::refused(format!(
                        "backup {} is damaged ({why}); its data is not merged into another backup",
                        r.id
                    ))
                    .with_help(
                        "Take a full backup (`sendense backup start VM --full`), then delete the \
                         damaged chain newest first.",
                    ));
                }
            }
        }
        Journal::plan(b, &children, &records)
    }

    /// Deletes a backup. Backups that depend on it keep their data: it is merged into them
    /// first. Refused while a backup of its VM, or a restore, export or verify of it or of a
    /// backup depending on it, runs (`Busy`).
    pub fn delete_backup(&mut self, id: &str) -> Result<BackupRecord> {
        let b = self.catalog().backup(id)?;
        if b.in_s3() {
            return self.delete_s3_backup(b);
        }
        // An unmounted share or another repository at the path: nothing there is this backup's,
        // and a delete that removed only the row would orphan the files.
        let repo = self.catalog().repo(&b.repo)?;
        let hub = self.catalog().hub_id()?;
        crate::repo::check_mount(&repo.path, repo.require_mount)
            .and_then(|()| crate::repo::check_identity(&repo.path, &repo.repo_id))
            .and_then(|_| crate::repo::check_owner(&repo.path, &hub))
            .map_err(|e| {
                e.context(format!(
                    "deleting backup {id} from repository `{}`",
                    repo.name
                ))
            })?;
        let manifest = b
            .repo_path
            .join(crate::repo::manifest::manifest_rel(&b.vm, &b.id));
        for f in b.disks.iter().map(|d| &d.file).chain([&manifest]) {
            crate::repo::chain::check_inside(&repo.path, f)?;
        }
        let _vm = VmLock::acquire(self.state_dir(), &b.vm)?;
        let _backup = BackupDeleteLock::acquire(self.state_dir(), id)?;
        crate::repo::claim_if_unowned(&repo.path, &hub)?;
        let _writing = crate::lock::RepoWriteLock::writer(&repo.path)?;
        // Checked again under the lock: a take-over may have happened just before.
        crate::repo::check_owner(&repo.path, &hub)?;
        // The catalog is not the only witness: an image or a manifest in the repository that
        // depends on this backup (another hub's, or one this catalog never held) keeps it.
        let catalog = self.catalog();
        let known = |id: &str| catalog.backup(id).is_ok();
        if let Some(dependant) = repository_dependant(&repo.path, &b, &known)? {
            return Err(Error::refused(format!(
                "backup {id} cannot be deleted: {dependant} depends on it"
            ))
            .with_help(
                "That backup is not in this hub's catalog: another hub's, one being written, or \
                 one `repo import` could not register. Deleting this one would break it.",
            ));
        }
        let b = self.catalog().backup(id)?;
        let journal = self.merge_journal(&b, true)?;
        if journal.disks.iter().any(|d| d.child.is_some()) {
            let children = self.catalog().disk_children(id)?;
            if let Some(pending) = super::consolidate::pending_for(&repo.path, &b.vm) {
                return Err(Error::busy(format!(
                    "backup {pending} of `{}` is being made a standalone full",
                    b.vm
                ))
                .with_help("Run `sendense cleanup` to finish it, then try again."));
            }
            // Everything the merge will read is checked before anything changes: each disk's
            // chain link as recorded, both images, both digest files.
            for c in children.iter().map(|c| &c.child) {
                let child = self.catalog().backup(c)?;
                super::merge::preflight(&repo.path, &journal, &b, &child)?;
            }
            self.catalog_mut().mark_merging(id, &children)?;
            crate::crash::point("merge.marked");
            journal.write(&repo.path)?;
            crate::crash::point("merge.journal-written");
            self.finish_merge(&repo.path, &journal)?;
            let mut b = b;
            b.status = "deleted".into();
            return Ok(b);
        }
        let mut b = self.catalog_mut().mark_deleting(id)?;
        crate::crash::point("delete.marked");
        remove_durably(&manifest)?;
        crate::crash::point("delete.manifest-removed");
        for d in &b.disks {
            remove_durably(&d.file)?;
            remove_durably(&crate::repo::digests::digests_of(&d.file))?;
            crate::crash::point("delete.disk-removed");
        }
        self.catalog_mut().delete_backup(id)?;
        b.status = "deleted".into();
        Ok(b)
    }

    /// The merge's file work ([`super::merge::roll_forward`]), then the catalog's one
    /// transaction, then the journal goes. Runs again, from the start, after a crash; a journal
    /// left after the catalog is done is finished the same way (every step finds itself done).
    pub(crate) fn finish_merge(&mut self, repo: &Path, journal: &Journal) -> Result<()> {
        let merged = super::merge::roll_forward(repo, journal)?;
        if self.catalog().backup(&journal.backup).is_ok() {
            self.catalog_mut().finish_merge(&journal.backup, &merged)?;
        }
        crate::crash::point("merge.catalog-done");
        journal.remove(repo)?;
        crate::crash::point("merge.journal-removed");
        Ok(())
    }

    /// Finishes the delete of backup `b`, marked `deleting` by a process that died, when it was
    /// a merge (its journal or its dependants say so): from its journal — or, when the process
    /// died before writing the journal, planned again from the catalog. Holds
    /// what the live delete holds (the caller holds the VM lock): the backup's exclusive lock
    /// (a reader of a dependant holds it too), the repository's writer lock, and ownership.
    /// Returns false when it was no merge, or someone still reads the chain (later, then).
    pub(crate) fn finish_interrupted_merge(&mut self, b: &BackupRecord) -> Result<bool> {
        let rel = super::merge::journal_rel(&b.vm, &b.id);
        let journaled = b.repo_path.join(&rel).is_file();
        if !journaled && self.catalog().disk_children(&b.id)?.is_empty() {
            return Ok(false);
        }
        let Ok(_backup) = BackupDeleteLock::acquire(self.state_dir(), &b.id) else {
            return Ok(false);
        };
        let hub = self.catalog().hub_id()?;
        crate::repo::check_owner(&b.repo_path, &hub)?;
        let _writing = crate::lock::RepoWriteLock::writer(&b.repo_path)?;
        let journal = if journaled {
            Journal::read(&b.repo_path, &rel)?
        } else {
            // The process died before writing the journal: the plan again, from the catalog,
            // which still holds it (readers of the chain are refused meanwhile, so nothing was
            // marked damaged since it was checked).
            let j = self.merge_journal(b, false)?;
            j.write(&b.repo_path)?;
            j
        };
        self.finish_merge(&b.repo_path.clone(), &journal)?;
        Ok(true)
    }
}

/// What in backup `b`'s repository depends on it that the catalog does not know (`known`
/// tells; the catalog's own dependants are refused by the catalog): an image of its disks
/// backed by its image (finished or being written), or a manifest naming it as a parent.
fn repository_dependant(
    repo: &Path,
    b: &BackupRecord,
    known: &dyn Fn(&str) -> bool,
) -> Result<Option<String>> {
    use crate::repo::manifest::Manifest;
    for d in &b.disks {
        let own = format!("{}.qcow2", b.id);
        let Some(dir) = d.file.parent() else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name
                .strip_suffix(".qcow2")
                .or_else(|| name.strip_suffix(".qcow2.partial"))
            else {
                continue;
            };
            if name == own || known(id) {
                continue;
            }
            let header = crate::repo::chain::qcow2_header(&e.path());
            if header.is_ok_and(|h| h.backing.as_deref() == Some(own.as_str())) {
                return Ok(Some(format!(
                    "image {} (backed by its image)",
                    e.path().strip_prefix(repo).unwrap_or(&e.path()).display()
                )));
            }
        }
    }
    // The manifests of its VM (a backup's parent is always of the same VM).
    let dir = repo.join(&b.vm).join("manifests");
    let found = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
        .filter_map(|e| {
            let rel = format!("{}/manifests/{}", b.vm, e.file_name().to_string_lossy());
            Manifest::read(&e.path()).ok().map(|m| (rel, m))
        });
    for (rel, m) in found {
        let names_it = m.disks.iter().any(|d| d.parent.as_deref() == Some(&b.id));
        if m.backup != b.id && names_it && !known(&m.backup) {
            return Ok(Some(format!("backup {} (manifest {rel})", m.backup)));
        }
    }
    Ok(None)
}
