//! Repository rows.

use super::{unique_violation, Catalog};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;
use std::path::PathBuf;

/// A registered repository as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoRecord {
    /// Catalog row id.
    #[serde(skip)]
    pub id: i64,
    /// Name chosen by the operator.
    pub name: String,
    /// Absolute path of the repository directory.
    pub path: PathBuf,
    /// The repository's own id (from `sendense-repo.yaml`).
    pub repo_id: String,
    /// Refuse to use the path unless it is a mount point.
    pub require_mount: bool,
    /// Used when a command names no repository.
    pub is_default: bool,
    /// Filesystem size at the last refresh.
    pub total_bytes: Option<u64>,
    /// Space available to Sendense at the last refresh.
    pub available_bytes: Option<u64>,
    /// When the capacity was last read.
    pub refreshed_at: Option<String>,
    /// When it was registered.
    pub created_at: String,
    /// Completed backups stored in it.
    pub backups: u64,
}

/// What `repo add` stores.
#[derive(Debug, Clone)]
pub struct NewRepo {
    /// Name.
    pub name: String,
    /// Canonical path.
    pub path: PathBuf,
    /// Repository id from its `sendense-repo.yaml`.
    pub repo_id: String,
    /// Mount guard.
    pub require_mount: bool,
    /// Make it the default repository.
    pub is_default: bool,
    /// Capacity read at registration.
    pub total_bytes: u64,
    /// Available space read at registration.
    pub available_bytes: u64,
}

const SELECT: &str = "SELECT r.id, r.name, r.path, r.repo_uuid, r.require_mount, r.is_default, \
     r.total_bytes, r.available_bytes, r.refreshed_at, r.created_at, \
     (SELECT count(*) FROM backups b WHERE b.repo_id = r.id AND b.status = 'completed') \
     FROM repositories r WHERE r.kind = 'dir'";

fn from_row(r: &Row<'_>) -> rusqlite::Result<RepoRecord> {
    Ok(RepoRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        path: PathBuf::from(r.get::<_, String>(2)?),
        repo_id: r.get(3)?,
        require_mount: r.get(4)?,
        is_default: r.get(5)?,
        total_bytes: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        available_bytes: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
        refreshed_at: r.get(8)?,
        created_at: r.get(9)?,
        backups: r.get::<_, i64>(10)? as u64,
    })
}

impl Catalog {
    /// Registers a repository. The first one becomes the default.
    pub fn insert_repo(&mut self, new: &NewRepo) -> Result<RepoRecord> {
        let now = crate::time::now_rfc3339();
        let path = new.path.to_string_lossy().into_owned();
        self.write(|tx| {
            let existing: i64 = tx.query_row(
                "SELECT count(*) FROM repositories WHERE kind = 'dir'",
                [],
                |r| r.get(0),
            )?;
            let make_default = new.is_default || existing == 0;
            if make_default {
                tx.execute("UPDATE repositories SET is_default = 0", [])?;
            }
            tx.execute(
                "INSERT INTO repositories (name, path, repo_uuid, require_mount, is_default, \
                 total_bytes, available_bytes, refreshed_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                (
                    &new.name,
                    &path,
                    &new.repo_id,
                    new.require_mount,
                    make_default,
                    new.total_bytes as i64,
                    new.available_bytes as i64,
                    &now,
                ),
            )
            .map_err(|e| {
                unique_violation(e, || {
                    Error::already_exists(format!(
                        "a repository named `{}`, at {}, or with id {} is already registered",
                        new.name, path, new.repo_id
                    ))
                    .with_help("Choose another name, or see `sendense repo list`.")
                })
            })?;
            Ok(())
        })?;
        self.repo(&new.name)
    }

    /// All repositories, by name.
    pub fn repos(&self) -> Result<Vec<RepoRecord>> {
        let mut stmt = self.conn().prepare(&format!("{SELECT} ORDER BY r.name"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The repository directory called `name` (an S3 repository of that name is refused: it
    /// is not a directory).
    pub fn repo(&self, name: &str) -> Result<RepoRecord> {
        self.conn()
            .query_row(&format!("{SELECT} AND r.name = ?1"), [name], from_row)
            .optional()?
            .ok_or_else(|| match self.s3_repo(name) {
                Ok(_) => Error::refused(format!(
                    "`{name}` is an S3 repository: this needs a repository directory"
                ))
                .with_help("Name a repository directory (`sendense repo list` shows the kinds)."),
                Err(_) => self.repo_not_found(name),
            })
    }

    /// The catalog id of the repository called `name`, a directory or a bucket (for what
    /// works on both: copies, listings, `--repo` of a restore point).
    pub fn any_repo_id(&self, name: &str) -> Result<i64> {
        match self.s3_repo(name) {
            Ok(r) => Ok(r.id),
            Err(_) => self.repo(name).map(|r| r.id),
        }
    }

    /// The default repository, if one is set.
    pub fn default_repo(&self) -> Result<Option<RepoRecord>> {
        Ok(self
            .conn()
            .query_row(&format!("{SELECT} AND r.is_default = 1"), [], from_row)
            .optional()?)
    }

    pub(super) fn repo_not_found(&self, name: &str) -> Error {
        let mut names: Vec<String> = self
            .repos()
            .map(|rs| rs.into_iter().map(|r| r.name).collect())
            .unwrap_or_default();
        names.extend(
            self.s3_repos()
                .map(|rs| rs.into_iter().map(|r| r.name).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        names.sort();
        let help = if names.is_empty() {
            "No repositories are registered; add one with `sendense repo add NAME --path DIR`."
                .to_string()
        } else {
            format!("Registered repositories: {}.", names.join(", "))
        };
        Error::not_found(format!("no repository named `{name}`")).with_help(help)
    }

    /// Stores a fresh capacity reading.
    pub fn update_repo_capacity(&mut self, id: i64, total: u64, available: u64) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write_unsynced(|tx| {
            tx.execute(
                "UPDATE repositories SET total_bytes = ?1, available_bytes = ?2, refreshed_at = ?3 WHERE id = ?4",
                (total as i64, available as i64, now, id),
            )?;
            Ok(())
        })
    }

    /// Removes a repository directory's row; refused while any backup (in any state), policy
    /// or copy rule references it.
    pub fn delete_repo(&mut self, name: &str) -> Result<RepoRecord> {
        let repo = self.repo(name)?;
        self.delete_repo_row(repo.id, name)?;
        Ok(repo)
    }

    /// Removes repository row `id` (called `name`), refused as [`Catalog::delete_repo`] says.
    pub(super) fn delete_repo_row(&mut self, id: i64, name: &str) -> Result<()> {
        self.write(|tx| {
            let backups: i64 = tx.query_row(
                "SELECT count(*) FROM backups WHERE repo_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            if backups > 0 {
                return Err(Error::refused(format!(
                    "repository `{name}` still holds {backups} backup(s)"
                ))
                .with_help(format!(
                    "Delete them first (`sendense backup list --repo {name}`, then `sendense backup delete ID`)."
                )));
            }
            let refs: i64 = tx.query_row(
                "SELECT (SELECT count(*) FROM copy_rules WHERE dest_repo_id = ?1) \
                      + (SELECT count(*) FROM policies WHERE repo_id = ?1)",
                [id],
                |r| r.get(0),
            )?;
            if refs > 0 {
                return Err(Error::refused(format!(
                    "repository `{name}` is used by {refs} policy(ies) or copy rule(s)"
                ))
                .with_help("Point them at another repository first."));
            }
            tx.execute("DELETE FROM repositories WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}
