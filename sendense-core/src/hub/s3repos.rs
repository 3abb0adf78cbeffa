//! S3 repositories as the handle sees them: add (proving the keys may write, read, list, delete
//! and lock there), test, show, remove.

use crate::catalog::{NewS3Repo, S3RepoRecord, S3Settings};
use crate::error::{Error, Result};
use crate::repo::s3::{credentials, LockMode, S3Client, S3Location, S3Options, S3Probe};
use crate::repo::{RepoMeta, RepoOwner, FORMAT_VERSION, META_FILE};
use crate::sendense::Sendense;
use crate::vm;
use std::path::PathBuf;

/// The longest Object Lock Sendense sets (100 years).
const MAX_LOCK_DAYS: u32 = 36_500;

/// A request to register an S3 repository.
#[derive(Debug, Clone)]
pub struct AddS3Repo {
    /// Name.
    pub name: String,
    /// `https://ENDPOINT/BUCKET[/PREFIX]`.
    pub url: String,
    /// The region (`us-east-1` when none is given).
    pub region: Option<String>,
    /// Path-style addressing.
    pub path_style: bool,
    /// A credentials file (0600).
    pub credentials_file: Option<PathBuf>,
    /// The profile in it (or in AWS's profile files).
    pub profile: Option<String>,
    /// Extra CA certificates to trust (PEM).
    pub ca_file: Option<PathBuf>,
    /// Lock every object written this many days.
    pub lock_days: Option<u32>,
    /// The lock's mode.
    pub lock_mode: LockMode,
}

impl AddS3Repo {
    /// An S3 repository at `url`, with the defaults.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        AddS3Repo {
            name: name.into(),
            url: url.into(),
            region: None,
            path_style: false,
            credentials_file: None,
            profile: None,
            ca_file: None,
            lock_days: None,
            lock_mode: LockMode::Compliance,
        }
    }
}

/// An S3 repository and what a probe of it found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct S3RepoStatus {
    /// What the catalog holds.
    #[serde(flatten)]
    pub record: S3RepoRecord,
    /// The probe.
    pub probe: S3Probe,
}

/// An S3 repository as `repo show` sees it: looked at, nothing written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct S3RepoShown {
    /// What the catalog holds.
    #[serde(flatten)]
    pub record: S3RepoRecord,
    /// Whether the bucket has Object Lock enabled (`None`: not reached).
    pub object_lock: Option<bool>,
    /// Multipart uploads left unfinished under the repository (`None`: not reached).
    pub pending_uploads: Option<usize>,
    /// What is wrong: not reachable, keys refused, another repository or none there.
    pub problem: Option<String>,
}

/// The place and settings `req` asks for, checked.
pub(crate) fn s3_settings(req: &AddS3Repo) -> Result<(S3Location, S3Settings)> {
    let location = S3Location::parse(&req.url)?;
    if let Some(days) = req.lock_days {
        if !(1..=MAX_LOCK_DAYS).contains(&days) {
            return Err(Error::invalid(format!(
                "--object-lock {days}: a lock of 1 to {MAX_LOCK_DAYS} days"
            )));
        }
    }
    let settings = S3Settings {
        region: req.region.clone().unwrap_or_else(|| "us-east-1".into()),
        path_style: req.path_style,
        credentials_file: req.credentials_file.as_deref().map(absolute).transpose()?,
        profile: req.profile.clone(),
        ca_file: req.ca_file.as_deref().map(absolute).transpose()?,
        lock_days: req.lock_days,
        lock_mode: req.lock_mode,
    };
    Ok((location, settings))
}

/// A file path made absolute and real (it is read again at every use, from anywhere).
fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| Error::io("reading", path, e))
}

impl Sendense {
    /// The client of S3 repository `rec`, with its keys read now.
    pub fn s3_client(&self, rec: &S3RepoRecord) -> Result<S3Client> {
        let keys = credentials::resolve(
            rec.settings.credentials_file.as_deref(),
            rec.settings.profile.as_deref(),
        )
        .map_err(|e| e.context(format!("repository `{}`", rec.name)))?;
        S3Client::new(
            &S3Options {
                location: S3Location::parse(&rec.url)?,
                region: rec.settings.region.clone(),
                path_style: rec.settings.path_style,
                ca_file: rec.settings.ca_file.clone(),
            },
            &keys,
        )
    }

    /// Creates an S3 repository at `req.url` and registers it: the keys are proven to write,
    /// read, list and delete there (and lock, with `lock_days`), then its
    /// `sendense-repo.yaml` is written — only if none is there. A place that holds a
    /// repository already, or other objects, is refused.
    pub fn add_s3_repo(&mut self, req: &AddS3Repo) -> Result<S3RepoStatus> {
        vm::validate_name("repository", &req.name)?;
        if self.catalog().repo(&req.name).is_ok() || self.catalog().s3_repo(&req.name).is_ok() {
            return Err(Error::already_exists(format!(
                "a repository named `{}` is already registered",
                req.name
            ))
            .with_help("Choose another name, or see `sendense repo list`."));
        }
        let (location, settings) = s3_settings(req)?;
        let mut record = S3RepoRecord {
            id: 0,
            name: req.name.clone(),
            url: location.to_string(),
            repo_id: uuid::Uuid::new_v4().to_string(),
            settings,
            created_at: crate::time::now_rfc3339(),
            backups: 0,
        };
        let client = self.s3_client(&record)?;
        let meta = RepoMeta {
            format: FORMAT_VERSION,
            id: record.repo_id.clone(),
            name: req.name.clone(),
            created_at: record.created_at.clone(),
            created_by: format!("sendense {}", env!("CARGO_PKG_VERSION")),
            owner: Some(RepoOwner::now(&self.catalog().hub_id()?)),
        };
        let lock = req.lock_days.map(|_| req.lock_mode);
        let probe = crate::rt::block_on(async {
            if client.read_meta().await?.is_some() {
                return Err(Error::already_exists(format!(
                    "{location} holds a Sendense repository already"
                ))
                .with_help("Register it with `sendense repo import`."));
            }
            if let Some(key) = client.any_under(&location.list_prefix()).await? {
                return Err(Error::refused(format!(
                    "{location} is not empty (it holds {key}, among others maybe)"
                ))
                .with_help(
                    "Name an empty bucket, or a prefix of its own: https://ENDPOINT/BUCKET/PREFIX.",
                ));
            }
            let probe = client.probe(lock).await?;
            client.write_meta(&meta).await?;
            Ok(probe)
        })??;
        let stored = self.catalog_mut().insert_s3_repo(&NewS3Repo {
            name: record.name.clone(),
            url: record.url.clone(),
            repo_id: record.repo_id.clone(),
            settings: record.settings.clone(),
        });
        match stored {
            Ok(r) => record = r,
            Err(e) => {
                // Not registered: the repository object goes again, so the place stays free.
                let _ = crate::rt::block_on(client.delete(&location.key(META_FILE), None));
                return Err(e);
            }
        }
        Ok(S3RepoStatus { record, probe })
    }

    /// Checks S3 repository `name` end to end: its identity, then a probe (see
    /// [`S3Client::probe`]).
    pub fn test_s3_repo(&mut self, name: &str) -> Result<S3RepoStatus> {
        let record = self.catalog().s3_repo(name)?;
        let client = self.s3_client(&record)?;
        let ctx = format!("repository `{name}`");
        let lock = record.settings.lock_days.map(|_| record.settings.lock_mode);
        let probe = crate::rt::block_on(async {
            match client.read_meta().await? {
                Some(meta) if meta.id == record.repo_id => {}
                Some(meta) => {
                    return Err(Error::refused(format!(
                        "{} holds another repository (id {}, not {})",
                        record.url, meta.id, record.repo_id
                    )))
                }
                None => {
                    return Err(
                        Error::not_found(format!("{} holds no {META_FILE}", record.url)).with_help(
                            "Was the bucket or its prefix emptied? Check with an S3 client.",
                        ),
                    )
                }
            }
            client.probe(lock).await
        })?
        .map_err(|e| e.context(&ctx))?;
        Ok(S3RepoStatus { record, probe })
    }

    /// S3 repository `name` as it is now, read only (`repo test` writes a probe; this does not).
    pub fn show_s3_repo(&mut self, name: &str) -> Result<S3RepoShown> {
        let record = self.catalog().s3_repo(name)?;
        let looked = self.s3_client(&record).and_then(|client| {
            crate::rt::block_on(async {
                let problem = match client.read_meta().await? {
                    Some(meta) if meta.id == record.repo_id => None,
                    Some(meta) => Some(format!(
                        "{} holds another repository (id {}, not {})",
                        record.url, meta.id, record.repo_id
                    )),
                    None => Some(format!("{} holds no {META_FILE}", record.url)),
                };
                let lock = client.object_lock_enabled().await?;
                let pending = client
                    .multipart_uploads(&client.location().list_prefix())
                    .await?
                    .len();
                Ok::<_, Error>((problem, lock, pending))
            })?
        });
        Ok(match looked {
            Ok((problem, lock, pending)) => S3RepoShown {
                record,
                object_lock: Some(lock),
                pending_uploads: Some(pending),
                problem,
            },
            Err(e) => S3RepoShown {
                record,
                object_lock: None,
                pending_uploads: None,
                problem: Some(e.to_string()),
            },
        })
    }

    /// All S3 repositories.
    pub fn s3_repos(&self) -> Result<Vec<S3RepoRecord>> {
        self.catalog().s3_repos()
    }

    /// One S3 repository as registered.
    pub fn s3_repo(&self, name: &str) -> Result<S3RepoRecord> {
        self.catalog().s3_repo(name)
    }

    /// Unregisters S3 repository `name` (its objects stay); refused while backups reference
    /// it.
    pub fn remove_s3_repo(&mut self, name: &str) -> Result<S3RepoRecord> {
        self.catalog_mut().delete_s3_repo(name)
    }
}

impl Sendense {
    /// The client of the S3 repository holding backup `b`, its place checked to hold that
    /// repository still.
    pub(crate) fn s3_client_of(&self, b: &crate::catalog::BackupRecord) -> Result<S3Client> {
        let rec = self.catalog().s3_repo(&b.repo)?;
        let client = self.s3_client(&rec)?;
        self.check_s3_identity(&rec, &client).map_err(|e| {
            e.context(format!(
                "reading backup {} in repository `{}`",
                b.id, b.repo
            ))
        })?;
        Ok(client)
    }

    /// The chain of disk `key` of backup `id` (in an S3 repository), top first, with each
    /// link's image path in the bucket.
    pub(crate) fn bucket_links(
        &self,
        id: &str,
        key: u32,
    ) -> Result<Vec<crate::repo::s3::chain::BucketLink>> {
        let mut out = Vec::new();
        for expected in self.catalog().disk_chain(id, key)? {
            let b = self.catalog().backup(&expected.backup)?;
            if !b.in_s3() {
                return Err(Error::internal(format!(
                    "the chain of backup {id} leaves its S3 repository at {}",
                    b.id
                )));
            }
            let rel = b
                .disks
                .iter()
                .find(|d| d.key == key)
                .map(|d| d.rel_file.clone())
                .ok_or_else(|| Error::not_found(format!("backup {} has no disk {key}", b.id)))?;
            let objects = self.catalog().s3_objects(&b.id)?;
            let version = |rel: &str| {
                objects
                    .iter()
                    .find(|o| o.rel == rel)
                    .and_then(|o| o.version.clone())
            };
            let versions = [
                version(&rel),
                version(&crate::repo::s3::chain::digests_rel(&rel)),
            ];
            out.push(crate::repo::s3::chain::BucketLink {
                expected,
                rel,
                versions,
            });
        }
        Ok(out)
    }
}
