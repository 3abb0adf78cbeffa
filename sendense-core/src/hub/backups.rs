//! Backups as the handle sees them: list and show, and which backup holds a restore point in
//! a repository (taking, deleting, copying and reading them: [`crate::backup`],
//! [`crate::restore`], [`crate::verify`]).

use crate::catalog::{BackupRecord, CopyLocation};
use crate::error::{Error, Result};
use crate::sendense::Sendense;

impl Sendense {
    /// Backups, newest first.
    pub fn backups(&self, filter: &crate::catalog::BackupFilter) -> Result<Vec<BackupRecord>> {
        if let Some(r) = &filter.repo {
            self.catalog().any_repo_id(r)?;
        }
        self.catalog().backups(filter)
    }

    /// One backup. A backup that is gone while copies of it stay is an error naming them.
    pub fn backup_record(&self, id: &str) -> Result<BackupRecord> {
        self.catalog()
            .backup(id)
            .map_err(|e| self.with_copies_named(id, e))
    }

    /// `e`, a failure to read backup `id` (its repository lost or unmounted, say), with the
    /// other repositories that hold its restore point, when there are.
    pub(crate) fn with_copies_elsewhere(&self, id: &str, e: Error) -> Error {
        if e.kind() == crate::ErrorKind::Cancelled {
            return e;
        }
        let others: Vec<String> = self
            .backup_locations(id)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.backup != id && c.status == "completed")
            .map(|c| c.repo)
            .collect();
        match others.first() {
            Some(first) => e.with_help(format!(
                "Copies of this backup are in: {}. Restore from one with `--repo {first}`.",
                others.join(", ")
            )),
            None => e,
        }
    }

    /// `e`, for backup `id` that the catalog does not hold, with the copies of it that stay.
    fn with_copies_named(&self, id: &str, e: Error) -> Error {
        if e.kind() != crate::ErrorKind::NotFound {
            return e;
        }
        let copies: Vec<CopyLocation> = self
            .catalog()
            .point_locations(id)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.status == "completed")
            .collect();
        match copies.first() {
            None => e,
            Some(first) => Error::not_found(format!(
                "backup {id} is gone, but copies of it stay: {}",
                copies
                    .iter()
                    .map(|c| format!("{} in `{}`", c.backup, c.repo))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .with_help(format!(
                "Use one by its id, or by this id with `--repo {}` (restore, verify, export).",
                first.repo
            )),
        }
    }

    /// Every backup of the restore point of backup `id` — the first backup and its copies in
    /// other repositories — in the order they were made. `id` may be any of them, or the id
    /// of a first backup that is gone while copies stay.
    pub fn backup_locations(&self, id: &str) -> Result<Vec<CopyLocation>> {
        let point = self.restore_point(id)?;
        let list = self.catalog().point_locations(&point)?;
        if list.is_empty() {
            return Err(Error::not_found(format!("no backup with id `{id}`"))
                .with_help("See `sendense backup list` for the backup ids."));
        }
        Ok(list)
    }

    /// The backup that holds the restore point of backup `id` in repository `repo` (`None`:
    /// backup `id` itself): `id` when it is there, else its copy there. `id` may also name a
    /// first backup that is gone while its copies stay.
    pub fn backup_in(&self, id: &str, repo: Option<&str>) -> Result<BackupRecord> {
        let Some(repo) = repo else {
            return self.backup_record(id);
        };
        let repo_id = self.catalog().any_repo_id(repo)?;
        if let Ok(b) = self.catalog().backup(id) {
            if b.repo_id == repo_id {
                return Ok(b);
            }
        }
        let point = self.restore_point(id)?;
        match self.catalog().point_in(&point, repo_id, false)? {
            Some(there) => self.catalog().backup(&there),
            None => Err(Error::not_found(format!(
                "repository `{repo}` holds no copy of backup {id}"
            ))
            .with_help(format!(
                "`sendense backup show {id}` lists the repositories that hold it; `sendense backup copy {id} --to {repo}` copies it there."
            ))),
        }
    }

    /// The restore point (its first backup's id) of backup `id`; `id` itself when the catalog
    /// no longer holds it (copies may).
    fn restore_point(&self, id: &str) -> Result<String> {
        Ok(match self.catalog().backup(id) {
            Ok(b) => b.copy_of.unwrap_or(b.id),
            Err(e) if e.kind() == crate::ErrorKind::NotFound => id.to_string(),
            Err(e) => return Err(e),
        })
    }
}
