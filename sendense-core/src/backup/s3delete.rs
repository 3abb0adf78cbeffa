//! Deleting backups in S3 repositories. Objects are never rewritten, so nothing is merged: a
//! backup goes once no backup depends on it and no lock keeps its objects. Asked to go before
//! that, it is marked expired (`delete_after`: when its last lock ends) and kept — restorable,
//! never built on — until `cleanup` finds it free to go. Prune does the same for backups kept
//! ones depend on. The manifest goes first (the restore point is no longer committed), then
//! the images and digest files; a delete cut short is finished by `cleanup`.

use crate::catalog::BackupRecord;
use crate::cleanup::CleanupReport;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{BackupDeleteLock, VmLock};
use crate::repo::s3::wall_clock;
use crate::repo::s3::S3Client;
use crate::sendense::Sendense;

/// Why a backup in an S3 repository cannot go now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct S3Hold {
    /// The instant (Unix seconds) its last lock ends, when that is ahead.
    pub locked_until: Option<i64>,
    /// Backups whose images are backed by its images.
    pub dependants: Vec<String>,
}

impl S3Hold {
    /// Nothing holds it.
    pub fn is_free(&self) -> bool {
        self.locked_until.is_none() && self.dependants.is_empty()
    }

    /// Why it stays, for messages.
    pub fn reason(&self) -> String {
        let mut why = Vec::new();
        if let Some(u) = self.locked_until {
            why.push(format!(
                "its objects are locked until {}",
                crate::time::format_unix(u)
            ));
        }
        if !self.dependants.is_empty() {
            why.push(format!(
                "backups {} depend on it",
                self.dependants.join(", ")
            ));
        }
        why.join("; ")
    }
}

impl Sendense {
    /// What keeps backup `id` (in an S3 repository) from going now.
    pub(crate) fn s3_hold(&self, id: &str) -> Result<S3Hold> {
        let now = wall_clock();
        let locked_until = self
            .catalog()
            .s3_objects(id)?
            .iter()
            .filter_map(|o| o.retain_until)
            .filter(|u| *u > now)
            .max();
        Ok(S3Hold {
            locked_until,
            dependants: self.catalog().dependents(id)?,
        })
    }

    /// [`Sendense::delete_backup`] of a backup in an S3 repository: deleted when nothing holds
    /// it, else marked expired (returned with status `expired` and its `delete_after`).
    pub(crate) fn delete_s3_backup(&mut self, b: BackupRecord) -> Result<BackupRecord> {
        if b.status == "expired" {
            let hold = self.s3_hold(&b.id)?;
            return Err(Error::refused(format!(
                "backup {} is expired already, kept: {}",
                b.id,
                hold.reason()
            ))
            .with_help("`sendense cleanup` deletes it once nothing holds it."));
        }
        if b.status != "completed" {
            return Err(Error::busy(format!("backup {} is {}", b.id, b.status)));
        }
        let _vm = VmLock::acquire(self.state_dir(), &b.vm)?;
        let _backup = BackupDeleteLock::acquire(self.state_dir(), &b.id)?;
        let rec = self.catalog().s3_repo(&b.repo)?;
        let client = self.s3_client(&rec)?;
        self.check_s3_owner(&rec, &client)
            .map_err(|e| e.context(format!("deleting backup {}", b.id)))?;
        let hold = self.s3_hold(&b.id)?;
        let kept = if hold.is_free() {
            self.delete_s3_locked(&b.id, &client)
                .map_err(|e| e.context(format!("deleting backup {}", b.id)))?
        } else {
            let after = crate::time::format_unix(hold.locked_until.unwrap_or_else(wall_clock));
            self.catalog_mut().set_delete_after(&b.id, &after)?;
            tracing::info!("backup {} expired, kept: {}", b.id, hold.reason());
            Some(hold.locked_until.unwrap_or_else(wall_clock))
        };
        match kept {
            None => {
                let mut b = b;
                b.status = "deleted".into();
                Ok(b)
            }
            Some(_) => self.catalog().backup(&b.id),
        }
    }

    /// Deletes completed backup `id` (nothing holding it, its locks taken by the caller): marked
    /// deleting, then its objects removed, manifest first. Returns when the bucket keeps
    /// objects of it locked (a lock the catalog did not know of): the backup is then expired
    /// until that instant, whole still. A delete the bucket refused before the manifest went
    /// leaves it expired too; one cut short after is finished by `cleanup`.
    fn delete_s3_locked(&mut self, id: &str, client: &S3Client) -> Result<Option<i64>> {
        self.catalog_mut().mark_deleting(id)?;
        crate::crash::point("s3delete.marked");
        let result = self.discard_s3_backup(id, client);
        let manifest_left = || -> Result<bool> {
            let b = self.catalog().backup(id)?;
            let rel = crate::repo::manifest::manifest_rel(&b.vm, id);
            Ok(self.catalog().s3_objects(id)?.iter().any(|o| o.rel == rel))
        };
        match result {
            Ok(None) => Ok(None),
            Ok(Some(until)) => {
                if manifest_left()? {
                    self.catalog_mut()
                        .unmark_deleting(id, &crate::time::format_unix(until))?;
                }
                Ok(Some(until))
            }
            Err(e) => {
                if manifest_left().unwrap_or(false) {
                    let now = crate::time::format_unix(wall_clock());
                    self.catalog_mut().unmark_deleting(id, &now)?;
                }
                Err(e)
            }
        }
    }

    /// Completes a copy into an S3 repository whose process died after its manifest was
    /// committed (and before the catalog recorded it): the manifest read back at its committed
    /// version, checked to describe exactly this backup. Returns whether it did.
    fn finish_s3_copy(
        &mut self,
        b: &BackupRecord,
        rec: &crate::catalog::S3RepoRecord,
        client: &S3Client,
    ) -> Result<bool> {
        use crate::repo::manifest::{manifest_rel, Manifest};
        let rel = manifest_rel(&b.vm, &b.id);
        let Some(planned) = self
            .catalog()
            .s3_objects(&b.id)?
            .into_iter()
            .find(|o| o.rel == rel)
        else {
            return Ok(false);
        };
        let key = client.location().key(&rel);
        let read = crate::rt::block_on(async {
            let Some(version) = client.committed_version(&key).await? else {
                return Ok(None);
            };
            let text = client.get_of(&key, version.as_deref(), 4 << 20).await?;
            Ok::<_, Error>(Some((version, text)))
        })??;
        let Some((version, text)) = read else {
            return Ok(false);
        };
        // A manifest that does not read as one is not a commit: the copy is discarded.
        let Ok(m) = Manifest::parse(&text, &key).and_then(|m| m.validate(&rel).map(|()| m)) else {
            return Ok(false);
        };
        let agrees = m.backup == b.id
            && m.repository == rec.repo_id
            && m.disks.len() == b.disks.len()
            && b.disks.iter().all(|d| {
                m.disks.iter().any(|md| {
                    md.key == d.key
                        && md.file == d.rel_file
                        && md.parent == d.parent
                        && md.size_bytes == d.size_bytes
                })
            });
        if !agrees {
            // Not this copy's: never removed as if it were.
            self.catalog_mut().forget_s3_object(&b.id, &rel)?;
            return Ok(false);
        }
        let outcomes: Vec<crate::catalog::DiskOutcome> =
            m.disks.iter().map(|d| d.outcome()).collect();
        self.catalog_mut().s3_object_written(
            &b.id,
            &rel,
            version.as_deref(),
            text.len() as u64,
            planned.retain_until,
        )?;
        self.catalog_mut()
            .complete_backup(&b.id, &rel, &outcomes, &[])?;
        Ok(true)
    }

    /// `cleanup`'s step for backups in S3 repositories (it reaches the buckets, so it runs in
    /// `sendense cleanup`, not in the reconciliation every command starts with): copies whose
    /// job ended unfinished — completed when their manifest was committed, else their objects
    /// removed —, deletes cut short finished, and expired backups deleted once nothing holds
    /// them. Each under its VM's lock and its own (a busy one is left for the next pass), in a
    /// repository this hub owns.
    pub(crate) fn cleanup_s3(&mut self, dry_run: bool, report: &mut CleanupReport) -> Result<()> {
        for b in self
            .catalog()
            .backups(&crate::catalog::BackupFilter::default())?
        {
            if !b.in_s3() {
                continue;
            }
            let unfinished = b.status == "running"
                && match b.job {
                    Some(job) => self.catalog().job(job)?.status.is_final(),
                    None => true,
                };
            let deleting = b.status == "deleting";
            if !unfinished && !deleting {
                continue;
            }
            let (action, why) = if unfinished {
                ("discard_backup", "its copy did not complete")
            } else {
                (
                    "finish_delete",
                    "its delete was interrupted; the backup was already marked deleted",
                )
            };
            if dry_run {
                report.add(action, &b.id, why);
                continue;
            }
            let Some((_vm, _backup)) = self.s3_locks(&b, report) else {
                continue;
            };
            let Some((rec, client)) = self.s3_owned(&b, report) else {
                continue;
            };
            if unfinished {
                match self.finish_s3_copy(&b, &rec, &client) {
                    Ok(true) => {
                        report.add(
                            "finish_copy",
                            &b.id,
                            "its manifest was committed before the copy was cut short",
                        );
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        report.errors.push(format!("backup {}: {e}", b.id));
                        continue;
                    }
                }
            }
            match self.discard_s3_backup(&b.id, &client) {
                Ok(None) => report.add(action, &b.id, why),
                Ok(Some(until)) => {
                    let after = crate::time::format_unix(until);
                    if unfinished {
                        // Shown expired until its lock ends; then it goes.
                        self.catalog_mut().set_delete_after(&b.id, &after)?;
                    }
                    report.add(
                        "keep_locked",
                        &b.id,
                        format!("{why}; objects of it are locked until {after}, it goes then"),
                    );
                }
                Err(e) => report.errors.push(format!("backup {}: {e}", b.id)),
            }
        }
        self.delete_expired_s3(dry_run, report)
    }

    /// The locks cleanup takes on backup `b` before it changes it; `None` (reported) when
    /// another process holds one.
    fn s3_locks(
        &self,
        b: &BackupRecord,
        report: &mut CleanupReport,
    ) -> Option<(VmLock, BackupDeleteLock)> {
        let locks = VmLock::acquire(self.state_dir(), &b.vm).and_then(|vm| {
            BackupDeleteLock::acquire(self.state_dir(), &b.id).map(|backup| (vm, backup))
        });
        match locks {
            Ok(l) => Some(l),
            Err(e) if e.kind() == ErrorKind::Busy => None,
            Err(e) => {
                report.errors.push(format!("backup {}: {e}", b.id));
                None
            }
        }
    }

    /// The S3 repository of backup `b` and its client, when this hub owns it (else reported).
    fn s3_owned(
        &self,
        b: &BackupRecord,
        report: &mut CleanupReport,
    ) -> Option<(crate::catalog::S3RepoRecord, S3Client)> {
        let owned = self.catalog().s3_repo(&b.repo).and_then(|rec| {
            let client = self.s3_client(&rec)?;
            self.check_s3_owner(&rec, &client)?;
            Ok((rec, client))
        });
        match owned {
            Ok(o) => Some(o),
            Err(e) => {
                report.errors.push(format!("backup {}: {e}", b.id));
                None
            }
        }
    }

    /// Expired backups in S3 repositories that nothing holds any more (no lock ahead, no backup
    /// depending on it) are deleted — newest first, so a chain expired whole goes in one pass.
    fn delete_expired_s3(&mut self, dry_run: bool, report: &mut CleanupReport) -> Result<()> {
        let mut expired: Vec<BackupRecord> = self
            .catalog()
            .expired_backups()?
            .iter()
            .filter_map(|id| self.catalog().backup(id).ok())
            .collect();
        // Children were made after their parents: newest first frees the parents.
        expired.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        let mut gone: Vec<String> = Vec::new();
        for b in expired {
            let mut hold = self.s3_hold(&b.id)?;
            hold.dependants.retain(|d| !gone.contains(d));
            if !hold.is_free() {
                report.add(
                    "keep_expired",
                    &b.id,
                    format!("expired, kept: {}", hold.reason()),
                );
                continue;
            }
            let why = "expired, and nothing holds it any more";
            if dry_run {
                report.add("delete_expired", &b.id, why);
                gone.push(b.id.clone());
                continue;
            }
            let Some((_vm, _backup)) = self.s3_locks(&b, report) else {
                continue;
            };
            let Some((_, client)) = self.s3_owned(&b, report) else {
                continue;
            };
            // A copy that never completed goes as it is; a completed backup through its delete.
            let done = if b.completed_at.is_none() {
                self.discard_s3_backup(&b.id, &client)
            } else {
                self.delete_s3_locked(&b.id, &client)
            };
            match done {
                Ok(None) => {
                    report.add("delete_expired", &b.id, why);
                    gone.push(b.id.clone());
                }
                Ok(Some(until)) => report.add(
                    "keep_expired",
                    &b.id,
                    format!(
                        "expired, kept: objects of it are locked until {}",
                        crate::time::format_unix(until)
                    ),
                ),
                Err(e) => report
                    .errors
                    .push(format!("deleting expired backup {}: {e}", b.id)),
            }
        }
        Ok(())
    }
}
