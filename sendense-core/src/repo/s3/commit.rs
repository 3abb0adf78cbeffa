//! Writing an object exactly once, and keeping a chain locked as one generation.
//!
//! A restore point in an S3 repository is committed by its manifest, uploaded last: it must be
//! written once, by one writer. `If-None-Match: *` says so on an unversioned bucket, but
//! versioned buckets (every Object Lock bucket) ignore it — Ceph RGW 16.2 writes a new version
//! each time. So after the write, the versions of the key are listed: the oldest one is the
//! committed one; a writer whose version is not the oldest lost the race and says so (its own
//! version goes again where the bucket lets it).
//!
//! With Object Lock, every link of a chain must stay as long as the newest link that needs it:
//! adding a link extends the retention of its ancestors' objects to the new link's date, never
//! shortening one (a COMPLIANCE retention cannot be shortened anyway).

use super::{Lock, S3Client};
use crate::error::{Error, ErrorKind, Result};

/// How a commit went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// This writer's version is the object.
    Written {
        /// Its version id, on a versioned bucket.
        version: Option<String>,
    },
    /// Someone else's was there first; this one was removed again (or, locked, stays as a
    /// later version no reader takes).
    Lost,
}

impl S3Client {
    /// Writes `data` as `key` only if no one has written it (see the module docs).
    pub async fn commit_once(
        &self,
        key: &str,
        data: Vec<u8>,
        lock: Option<Lock>,
    ) -> Result<Committed> {
        let written = match self.put(key, data, lock, true).await {
            Ok(w) => w,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(Committed::Lost),
            Err(e) => return Err(e),
        };
        let Some(mine) = written.version else {
            // Unversioned: If-None-Match decided.
            return Ok(Committed::Written { version: None });
        };
        // Versioned: the oldest version of the key is the one committed. Listings give the
        // versions of a key newest first.
        let versions: Vec<_> = self
            .versions(key)
            .await?
            .into_iter()
            .filter(|v| v.key == key && !v.delete_marker)
            .collect();
        match versions.last() {
            Some(first) if first.version == mine => Ok(Committed::Written {
                version: Some(mine),
            }),
            Some(_) => {
                // Not ours: take ours back where the lock allows; a locked one stays, never
                // the latest that readers take (they read the oldest).
                if lock.is_none() {
                    let _ = self.delete(key, Some(&mine)).await;
                }
                Ok(Committed::Lost)
            }
            None => Err(Error::new(
                ErrorKind::External,
                format!("{key} was written but its versions list none"),
            )),
        }
    }

    /// The version of `key` a reader takes: the oldest on a versioned bucket (see
    /// [`S3Client::commit_once`]), `Some(None)` on an unversioned one (the object as it is);
    /// `None` when there is none, or when the key's latest entry is a delete marker (it was
    /// deleted).
    pub async fn committed_version(&self, key: &str) -> Result<Option<Option<String>>> {
        let versions: Vec<_> = self
            .versions(key)
            .await?
            .into_iter()
            .filter(|v| v.key == key)
            .collect();
        if versions.iter().any(|v| v.latest && v.delete_marker) {
            return Ok(None);
        }
        Ok(versions
            .into_iter()
            .rfind(|v| !v.delete_marker)
            .map(|v| (v.version != "null").then_some(v.version)))
    }

    /// Extends the retention of version `version` of `key` to `lock.until` when it ends
    /// sooner; a longer one stays. Returns whether it changed.
    pub async fn extend_retention(
        &self,
        key: &str,
        version: Option<&str>,
        lock: Lock,
    ) -> Result<bool> {
        match self.retention(key, version).await? {
            Some(now) if now.until >= lock.until => Ok(false),
            Some(now) => {
                // The mode stays what it is: COMPLIANCE never becomes GOVERNANCE.
                self.set_retention(
                    key,
                    version,
                    Lock {
                        mode: now.mode,
                        until: lock.until,
                    },
                )
                .await?;
                Ok(true)
            }
            None => {
                self.set_retention(key, version, lock).await?;
                Ok(true)
            }
        }
    }
}
