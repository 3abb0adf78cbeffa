//! An S3 repository as a whole: its `sendense-repo.yaml` object, and the probe `repo add` and
//! `repo test` run to prove the keys may write, read, list and delete there (and lock, when
//! the repository locks what it writes).

use super::{Lock, LockMode, S3Client};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::{RepoMeta, FORMAT_VERSION, META_FILE};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The largest `sendense-repo.yaml` read.
const META_LIMIT: u64 = 64 << 10;

/// What a probe of an S3 repository found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct S3Probe {
    /// Bytes written, read back, listed and deleted.
    pub probe_bytes: u64,
    /// Milliseconds for the write.
    pub write_ms: f64,
    /// Milliseconds for the read.
    pub read_ms: f64,
    /// Whether the bucket has Object Lock enabled.
    pub object_lock: bool,
    /// The lock a locked probe got back, when the repository locks (`compliance` or
    /// `governance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_checked: Option<LockMode>,
    /// Multipart uploads under the repository not completed or aborted (an interrupted
    /// copy leaves them; `cleanup` aborts them).
    pub pending_uploads: usize,
}

impl S3Client {
    /// The repository's `sendense-repo.yaml`, when there is one.
    pub async fn read_meta(&self) -> Result<Option<RepoMeta>> {
        let key = self.location().key(META_FILE);
        if self.size_of(&key).await?.is_none() {
            return Ok(None);
        }
        let text = self.get(&key, META_LIMIT).await?;
        let meta: RepoMeta = serde_yaml_ng::from_slice(&text).map_err(|e| {
            Error::invalid(format!(
                "{}/{META_FILE} is not a valid repository file: {e}",
                self.location()
            ))
        })?;
        if meta.format > FORMAT_VERSION {
            return Err(Error::refused(format!(
                "{}/{META_FILE} has repository format {}, newer than this Sendense supports \
                 ({FORMAT_VERSION})",
                self.location(),
                meta.format
            ))
            .with_help("Use a newer Sendense for this repository."));
        }
        Ok(Some(meta))
    }

    /// Writes the repository's `sendense-repo.yaml`, only if there is none yet.
    pub async fn write_meta(&self, meta: &RepoMeta) -> Result<()> {
        let text = serde_yaml_ng::to_string(meta)
            .map_err(|e| Error::internal(format!("serializing repository metadata: {e}")))?;
        let text = format!(
            "# Sendense backup repository. Do not edit; `sendense repo import` reads this object.\n{text}"
        );
        let key = self.location().key(META_FILE);
        self.put(&key, text.into_bytes(), None, true)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::AlreadyExists => Error::already_exists(format!(
                    "{} holds a Sendense repository already",
                    self.location()
                ))
                .with_help("Register it with `sendense repo import`."),
                _ => e,
            })?;
        Ok(())
    }

    /// Writes the repository's `sendense-repo.yaml` over the one there (a take-over: the
    /// owner changes, nothing else).
    pub async fn replace_meta(&self, meta: &RepoMeta) -> Result<()> {
        let text = serde_yaml_ng::to_string(meta)
            .map_err(|e| Error::internal(format!("serializing repository metadata: {e}")))?;
        let text = format!(
            "# Sendense backup repository. Do not edit; `sendense repo import` reads this object.\n{text}"
        );
        self.put(
            &self.location().key(META_FILE),
            text.into_bytes(),
            None,
            false,
        )
        .await
        .map(drop)
    }

    /// Writes, reads back, lists and deletes a probe object under the repository. On a bucket
    /// with Object Lock the probe is written locked for two seconds (so a default retention of
    /// the bucket does not keep it for days), its retention read back — with `lock`, the
    /// repository's mode — and deleted once the lock expired. `lock` on a bucket without Object
    /// Lock is refused.
    pub async fn probe(&self, lock: Option<LockMode>) -> Result<S3Probe> {
        const SIZE: usize = 1 << 20;
        let object_lock = self.object_lock_enabled().await?;
        if lock.is_some() && !object_lock {
            return Err(Error::refused(format!(
                "bucket {} does not have Object Lock enabled",
                self.location().bucket
            ))
            .with_help(
                "Object Lock can only be enabled when a bucket is created: create one with it \
                 (e.g. `aws s3api create-bucket --object-lock-enabled-for-bucket`), or leave \
                 out --object-lock.",
            ));
        }
        let probe_lock = object_lock.then(|| Lock {
            mode: lock.unwrap_or(LockMode::Compliance),
            until: super::wall_clock() + 2,
        });
        let key = self
            .location()
            .key(&format!(".sendense-probe-{}", uuid::Uuid::new_v4()));
        let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
        let started = Instant::now();
        let written = self.put(&key, data.clone(), probe_lock, false).await?;
        let write_ms = started.elapsed().as_secs_f64() * 1000.0;
        let version = written.version.as_deref();
        let started = Instant::now();
        let back = self.get(&key, SIZE as u64).await;
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        let listed = self.list(&key).await;
        let retention = match probe_lock {
            Some(_) => self.retention(&key, version).await.map(Some),
            None => Ok(None),
        };
        // Deleted whatever the checks found; a locked probe once its lock expired.
        let deleted = self.delete_probe(&key, version, probe_lock.is_some()).await;
        let back = back?;
        if back != data {
            return Err(Error::new(
                ErrorKind::External,
                format!("the probe object {key} read back differently than it was written"),
            ));
        }
        if !listed?.iter().any(|o| o.key == key) {
            return Err(Error::new(
                ErrorKind::External,
                format!("the probe object {key} was written but not listed"),
            ));
        }
        let lock_checked = match (probe_lock, retention?.flatten()) {
            (None, _) => None,
            (Some(want), Some(got)) if got.mode == want.mode && got.until >= want.until => {
                lock.map(|_| want.mode)
            }
            (Some(want), got) => {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "an object written with a {} lock until {} came back with {}",
                        want.mode.as_str(),
                        want.until,
                        got.map_or_else(
                            || "no retention".to_string(),
                            |l| format!("a {} lock until {}", l.mode.as_str(), l.until)
                        )
                    ),
                ))
            }
        };
        deleted?;
        let pending_uploads = self
            .multipart_uploads(&self.location().list_prefix())
            .await?
            .len();
        Ok(S3Probe {
            probe_bytes: SIZE as u64,
            write_ms,
            read_ms,
            object_lock,
            lock_checked,
            pending_uploads,
        })
    }

    /// Deletes the probe `key` (its `version`); a `locked` one once its two seconds are over
    /// (by the server's clock: tried again for a while).
    async fn delete_probe(&self, key: &str, version: Option<&str>, locked: bool) -> Result<()> {
        if !locked {
            return self.delete(key, version).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(700)).await;
            match self.delete(key, version).await {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline => {}
                Err(e) => {
                    return Err(e.context(format!(
                        "the probe {key} (locked for two seconds) could not be deleted"
                    )))
                }
            }
        }
    }
}
