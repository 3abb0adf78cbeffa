//! Rows of repositories in S3-compatible object storage (`kind = 's3'`): their address in
//! `path`, their settings as JSON — never a key.

use super::{unique_violation, Catalog};
use crate::error::{Error, Result};
use crate::repo::s3::LockMode;
use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How an S3 repository is reached and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Settings {
    /// The region.
    pub region: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// The credentials file named at `repo add` (else: the environment, AWS's profile files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// The profile in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Extra CA certificates to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Every object written is locked this many days (Object Lock); none: not locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_days: Option<u32>,
    /// The lock's mode.
    #[serde(default = "compliance")]
    pub lock_mode: LockMode,
}

fn compliance() -> LockMode {
    LockMode::Compliance
}

/// A registered S3 repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3RepoRecord {
    /// Catalog row id.
    #[serde(skip)]
    pub id: i64,
    /// Name chosen by the operator.
    pub name: String,
    /// `https://ENDPOINT/BUCKET[/PREFIX]`.
    pub url: String,
    /// The repository's own id (from its `sendense-repo.yaml` object).
    pub repo_id: String,
    /// How it is reached.
    #[serde(flatten)]
    pub settings: S3Settings,
    /// When it was registered.
    pub created_at: String,
    /// Completed backups stored in it.
    pub backups: u64,
}

/// What `repo add --s3` stores.
#[derive(Debug, Clone)]
pub struct NewS3Repo {
    /// Name.
    pub name: String,
    /// Its address, checked.
    pub url: String,
    /// Repository id written to its `sendense-repo.yaml`.
    pub repo_id: String,
    /// Settings.
    pub settings: S3Settings,
}

const SELECT: &str = "SELECT r.id, r.name, r.path, r.repo_uuid, r.settings, r.created_at, \
     (SELECT count(*) FROM backups b WHERE b.repo_id = r.id AND b.status = 'completed') \
     FROM repositories r WHERE r.kind = 's3'";

fn from_row(r: &Row<'_>) -> rusqlite::Result<S3RepoRecord> {
    let settings: Option<String> = r.get(4)?;
    let settings = settings
        .as_deref()
        .map(serde_json::from_str::<S3Settings>)
        .transpose()
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
        })?
        .ok_or(rusqlite::Error::InvalidColumnType(
            4,
            "settings".into(),
            rusqlite::types::Type::Null,
        ))?;
    Ok(S3RepoRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
        repo_id: r.get(3)?,
        settings,
        created_at: r.get(5)?,
        backups: r.get::<_, i64>(6)? as u64,
    })
}

impl Catalog {
    /// Registers an S3 repository (never the default: backups are written to directories).
    pub fn insert_s3_repo(&mut self, new: &NewS3Repo) -> Result<S3RepoRecord> {
        let now = crate::time::now_rfc3339();
        let settings = serde_json::to_string(&new.settings)
            .map_err(|e| Error::internal(format!("the settings of {}: {e}", new.name)))?;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO repositories (name, path, repo_uuid, require_mount, is_default, \
                 kind, settings, created_at) VALUES (?1, ?2, ?3, 0, 0, 's3', ?4, ?5)",
                (&new.name, &new.url, &new.repo_id, &settings, &now),
            )
            .map_err(|e| {
                unique_violation(e, || {
                    Error::already_exists(format!(
                        "a repository named `{}`, at {}, or with id {} is already registered",
                        new.name, new.url, new.repo_id
                    ))
                    .with_help("Choose another name, or see `sendense repo list`.")
                })
            })?;
            Ok(())
        })?;
        self.s3_repo(&new.name)
    }

    /// All S3 repositories, by name.
    pub fn s3_repos(&self) -> Result<Vec<S3RepoRecord>> {
        let mut stmt = self.conn().prepare(&format!("{SELECT} ORDER BY r.name"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The S3 repository called `name`.
    pub fn s3_repo(&self, name: &str) -> Result<S3RepoRecord> {
        self.conn()
            .query_row(&format!("{SELECT} AND r.name = ?1"), [name], from_row)
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no S3 repository named `{name}`")))
    }

    /// Removes an S3 repository's row, refused as [`Catalog::delete_repo`] says.
    pub fn delete_s3_repo(&mut self, name: &str) -> Result<S3RepoRecord> {
        let repo = self.s3_repo(name).map_err(|_| self.repo_not_found(name))?;
        self.delete_repo_row(repo.id, name)?;
        Ok(repo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::NewRepo;

    #[test]
    fn s3_repositories_are_kept_apart_from_directories() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.db"), true).unwrap();
        let settings = S3Settings {
            region: "us-east-1".into(),
            path_style: true,
            credentials_file: Some("/etc/sendense/s3".into()),
            profile: None,
            ca_file: None,
            lock_days: Some(30),
            lock_mode: LockMode::Compliance,
        };
        let s3 = cat
            .insert_s3_repo(&NewS3Repo {
                name: "offsite".into(),
                url: "https://s3.example.com/bkt/hub1".into(),
                repo_id: "r-s3".into(),
                settings: settings.clone(),
            })
            .unwrap();
        assert_eq!((s3.settings.clone(), s3.backups), (settings, 0));
        // Not a directory: not listed, not the default, not found as one; the first directory
        // still becomes the default.
        assert!(cat.repos().unwrap().is_empty());
        assert!(cat.default_repo().unwrap().is_none());
        let e = cat.repo("offsite").unwrap_err();
        assert!(e.to_string().contains("S3 repository"), "{e}");
        let d = cat
            .insert_repo(&NewRepo {
                name: "local".into(),
                path: "/srv/backups".into(),
                repo_id: "r-dir".into(),
                require_mount: false,
                is_default: false,
                total_bytes: 1,
                available_bytes: 1,
            })
            .unwrap();
        assert!(d.is_default);
        // One name space for both kinds.
        let again = cat.insert_s3_repo(&NewS3Repo {
            name: "local".into(),
            url: "https://s3.example.com/other".into(),
            repo_id: "r-2".into(),
            settings: s3.settings.clone(),
        });
        assert!(again.is_err());
        assert!(cat.s3_repo("local").is_err());
        assert_eq!(cat.delete_s3_repo("offsite").unwrap().name, "offsite");
        assert!(cat.s3_repos().unwrap().is_empty());
        assert!(cat.delete_s3_repo("local").is_err());
    }
}
