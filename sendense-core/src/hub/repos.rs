//! Repositories as the handle sees them: add, check, refresh, remove.

use crate::catalog::{NewRepo, RepoRecord};
use crate::error::{Error, Result};
use crate::fsutil::{self, Capacity};
use crate::repo::{self, ProbeReport};
use crate::sendense::Sendense;
use crate::vm;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A registered repository with a live capacity reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoStatus {
    /// What the catalog holds.
    #[serde(flatten)]
    pub record: RepoRecord,
    /// Whether the path is a mount point now.
    pub mount_point: bool,
    /// Problem found with the repository, if any (missing, not mounted, another id).
    pub problem: Option<String>,
}

/// A request to create and register a repository.
#[derive(Debug, Clone)]
pub struct AddRepo {
    /// Name.
    pub name: String,
    /// Directory (created when missing, unless `require_mount`).
    pub path: PathBuf,
    /// Refuse the path unless it is a mount point, now and at every use.
    pub require_mount: bool,
    /// Make it the default repository (the first one always is).
    pub make_default: bool,
}

impl AddRepo {
    /// A plain repository at `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        AddRepo {
            name: name.into(),
            path: path.into(),
            require_mount: false,
            make_default: false,
        }
    }

    /// Sets the mount guard.
    pub fn require_mount(mut self, yes: bool) -> Self {
        self.require_mount = yes;
        self
    }

    /// Makes it the default.
    pub fn make_default(mut self, yes: bool) -> Self {
        self.make_default = yes;
        self
    }
}

impl Sendense {
    /// Creates and registers a repository at `path`.
    pub fn add_repo(&mut self, req: &AddRepo) -> Result<RepoRecord> {
        vm::validate_name("repository", &req.name)?;
        crate::fsutil::require_utf8("repository path", &req.path)?;
        if self.catalog().repo(&req.name).is_ok() || self.catalog().s3_repo(&req.name).is_ok() {
            return Err(Error::already_exists(format!(
                "a repository named `{}` is already registered",
                req.name
            ))
            .with_help("Choose another name, or see `sendense repo list`."));
        }
        if let Ok(canonical) = std::fs::canonicalize(&req.path) {
            if let Some(other) = self
                .catalog()
                .repos()?
                .into_iter()
                .find(|r| r.path == canonical)
            {
                return Err(Error::already_exists(format!(
                    "{} is already registered as repository `{}`",
                    canonical.display(),
                    other.name
                )));
            }
        }
        self.refuse_overlapping_repo(&req.path)?;
        let hub = self.catalog().hub_id()?;
        let (path, meta) = repo::initialise(&req.path, &req.name, req.require_mount, &hub)?;
        let cap = fsutil::capacity(&path)?;
        let inserted = self.catalog_mut().insert_repo(&NewRepo {
            name: req.name.clone(),
            path: path.clone(),
            repo_id: meta.id,
            require_mount: req.require_mount,
            is_default: req.make_default,
            total_bytes: cap.total_bytes,
            available_bytes: cap.available_bytes,
        });
        if inserted.is_err() {
            // Registration failed: leave the directory as we found it.
            let _ = std::fs::remove_file(path.join(repo::META_FILE));
        }
        inserted
    }

    /// Refuses a repository at `path` that would share files with something else Sendense owns:
    /// `/`, the state directory (or a directory holding it), or another registered repository
    /// (inside it, or holding it) — cleanup and deletes of one would touch the other.
    pub(crate) fn refuse_overlapping_repo(&self, path: &Path) -> Result<()> {
        let real = fsutil::resolve_existing_prefix(path)?;
        fsutil::require_utf8("repository path", &real)?;
        let refuse = |why: String| {
            Err(Error::refused(format!("{} cannot be a repository: {why}", path.display()))
                .with_help("Choose a directory of its own for every repository, outside the state directory."))
        };
        if real.parent().is_none() {
            return refuse("it is the root directory".into());
        }
        let state = fsutil::resolve_existing_prefix(self.state_dir())?;
        if real.starts_with(&state) || state.starts_with(&real) {
            return refuse(format!(
                "it overlaps the state directory {}",
                state.display()
            ));
        }
        for r in self.catalog().repos()? {
            if real.starts_with(&r.path) || r.path.starts_with(&real) {
                return refuse(format!(
                    "it overlaps repository `{}` at {}",
                    r.name,
                    r.path.display()
                ));
            }
        }
        Ok(())
    }

    /// All repositories.
    pub fn repos(&self) -> Result<Vec<RepoRecord>> {
        self.catalog().repos()
    }

    /// One repository with a live capacity reading (stored in the catalog too).
    pub fn repo_status(&mut self, name: &str) -> Result<RepoStatus> {
        let record = self.catalog().repo(name)?;
        Ok(self.refresh_one(record))
    }

    /// Re-reads capacity and checks every repository; problems are reported, not fatal.
    pub fn refresh_repos(&mut self) -> Result<Vec<RepoStatus>> {
        let repos = self.catalog().repos()?;
        Ok(repos.into_iter().map(|r| self.refresh_one(r)).collect())
    }

    fn refresh_one(&mut self, mut record: RepoRecord) -> RepoStatus {
        let hub = self.catalog().hub_id().unwrap_or_default();
        let check = repo::check_mount(&record.path, record.require_mount)
            .and_then(|_| repo::check_identity(&record.path, &record.repo_id))
            .and_then(|meta| match &meta.owner {
                Some(o) if o.hub != hub => Err(repo::owned_elsewhere(&record.path, o)),
                _ => Ok(()),
            })
            .and_then(|_| fsutil::capacity(&record.path));
        let problem = match check {
            Ok(Capacity {
                total_bytes,
                available_bytes,
                ..
            }) => match self.catalog_mut().update_repo_capacity(
                record.id,
                total_bytes,
                available_bytes,
            ) {
                Ok(()) => {
                    record.total_bytes = Some(total_bytes);
                    record.available_bytes = Some(available_bytes);
                    record.refreshed_at = Some(crate::time::now_rfc3339());
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            Err(e) => Some(e.to_string()),
        };
        RepoStatus {
            mount_point: fsutil::is_mount_point(&record.path).unwrap_or(false),
            record,
            problem,
        }
    }

    /// Checks a repository end to end: mount guard, identity, a durable write, capacity.
    pub fn test_repo(&mut self, name: &str) -> Result<ProbeReport> {
        let record = self.catalog().repo(name)?;
        let ctx = format!("repository `{name}`");
        repo::check_mount(&record.path, record.require_mount).map_err(|e| e.context(&ctx))?;
        repo::check_identity(&record.path, &record.repo_id).map_err(|e| e.context(&ctx))?;
        let report = repo::probe(&record.path).map_err(|e| e.context(&ctx))?;
        self.catalog_mut().update_repo_capacity(
            record.id,
            report.capacity.total_bytes,
            report.capacity.available_bytes,
        )?;
        Ok(report)
    }

    /// Unregisters a repository (its files stay); refused while backups reference it.
    pub fn remove_repo(&mut self, name: &str) -> Result<RepoRecord> {
        self.catalog_mut().delete_repo(name)
    }

    /// One repository as registered.
    pub fn repo(&self, name: &str) -> Result<RepoRecord> {
        self.catalog().repo(name)
    }
}
