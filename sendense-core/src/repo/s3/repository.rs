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

    /// Writes, reads back, lists and deletes a probe object under the repository; with `lock`
    /// (days and mode of the repository's Object Lock), also checks the bucket locks: a small
    /// probe is locked for two seconds, its retention read back, and deleted once it expired.
    pub async fn probe(&self, lock: Option<LockMode>) -> Result<S3Probe> {
        const SIZE: usize = 1 << 20;
        let key = self
            .location()
            .key(&format!(".sendense-probe-{}", uuid::Uuid::new_v4()));
        let data: Vec<u8> = (0..SIZE).map(|i| (i * 31 % 251) as u8).collect();
        let started = Instant::now();
        let written = self.put(&key, data.clone(), None, false).await?;
        let write_ms = started.elapsed().as_secs_f64() * 1000.0;
        let started = Instant::now();
        let back = self.get(&key, SIZE as u64).await;
        let read_ms = started.elapsed().as_secs_f64() * 1000.0;
        let listed = self.list(&key).await;
        let deleted = self.delete(&key, written.version.as_deref()).await;
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
        deleted?;
        let object_lock = self.object_lock_enabled().await?;
        let lock_checked =
            match lock {
                None => None,
                Some(_) if !object_lock => return Err(Error::refused(format!(
                    "bucket {} does not have Object Lock enabled",
                    self.location().bucket
                ))
                .with_help(
                    "Object Lock can only be enabled when a bucket is created: create one with \
                     it (e.g. `aws s3api create-bucket --object-lock-enabled-for-bucket`), or \
                     leave out --object-lock.",
                )),
                Some(mode) => Some(self.probe_lock(mode).await?),
            };
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

    /// Writes a small probe locked for two seconds in `mode`, checks its retention, and
    /// deletes it once the lock expired.
    async fn probe_lock(&self, mode: LockMode) -> Result<LockMode> {
        let key = self
            .location()
            .key(&format!(".sendense-lock-probe-{}", uuid::Uuid::new_v4()));
        let until = super::wall_clock() + 2;
        let written = self
            .put(
                &key,
                b"lock probe".to_vec(),
                Some(Lock { mode, until }),
                false,
            )
            .await?;
        let got = self.retention(&key, written.version.as_deref()).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            tokio::time::sleep(Duration::from_millis(700)).await;
            match self.delete(&key, written.version.as_deref()).await {
                Ok(()) => break,
                Err(_) if Instant::now() < deadline => {}
                Err(e) => {
                    return Err(e.context(format!(
                        "the lock probe {key} (locked for two seconds) could not be deleted"
                    )))
                }
            }
        }
        match got {
            Some(l) if l.mode == mode && l.until >= until => Ok(mode),
            other => Err(Error::new(
                ErrorKind::External,
                format!(
                    "an object written with a {} lock until {until} came back with {}",
                    mode.as_str(),
                    other.map_or_else(
                        || "no retention".to_string(),
                        |l| format!("a {} lock until {}", l.mode.as_str(), l.until)
                    )
                ),
            )),
        }
    }
}
