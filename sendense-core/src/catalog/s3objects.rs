//! The objects a backup in an S3 repository consists of: recorded before each upload (so what
//! a killed copy wrote is found and removed), then with the version the bucket gave, the size,
//! and how long its lock holds.

use super::Catalog;
use crate::error::{Error, Result};
use serde::Serialize;

/// One object of a backup in an S3 repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3ObjectRecord {
    /// Its path in the repository (the key is the repository's prefix and this).
    pub rel: String,
    /// The version the bucket gave it (versioned buckets).
    pub version: Option<String>,
    /// Its size.
    pub size: Option<u64>,
    /// Locked until (Unix seconds).
    pub retain_until: Option<i64>,
    /// Whether its upload finished (false: it may be there, partly or not at all).
    pub written: bool,
}

impl Catalog {
    /// Records that object `rel` of backup `backup` is about to be uploaded, locked until
    /// `retain_until` (so what a killed upload left is known to be locked too).
    pub fn plan_s3_object(
        &mut self,
        backup: &str,
        rel: &str,
        retain_until: Option<i64>,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO s3_objects (backup_id, rel, retain_until) VALUES (?1, ?2, ?3)",
                (backup, rel, retain_until),
            )?;
            Ok(())
        })
    }

    /// Records object `rel` of backup `backup` uploaded: its version, size and lock.
    pub fn s3_object_written(
        &mut self,
        backup: &str,
        rel: &str,
        version: Option<&str>,
        size: u64,
        retain_until: Option<i64>,
    ) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE s3_objects SET version = ?1, size = ?2, retain_until = ?3, written = 1 \
                 WHERE backup_id = ?4 AND rel = ?5",
                (version, size as i64, retain_until, backup, rel),
            )?;
            if n == 0 {
                return Err(Error::internal(format!(
                    "object {rel} of backup {backup} was not planned"
                )));
            }
            Ok(())
        })
    }

    /// Records that the lock of object `rel` of `backup` holds until `until` now.
    pub fn s3_object_locked(&mut self, backup: &str, rel: &str, until: i64) -> Result<()> {
        // Synced: a lock forgotten after a power cut would let a delete be tried too early.
        self.write(|tx| {
            tx.execute(
                "UPDATE s3_objects SET retain_until = max(coalesce(retain_until, 0), ?1) \
                 WHERE backup_id = ?2 AND rel = ?3",
                (until, backup, rel),
            )?;
            Ok(())
        })
    }

    /// The objects of backup `backup`, by path.
    pub fn s3_objects(&self, backup: &str) -> Result<Vec<S3ObjectRecord>> {
        let mut stmt = self.conn().prepare(
            "SELECT rel, version, size, retain_until, written FROM s3_objects \
             WHERE backup_id = ?1 ORDER BY rel",
        )?;
        let rows = stmt.query_map([backup], |r| {
            Ok(S3ObjectRecord {
                rel: r.get(0)?,
                version: r.get(1)?,
                size: r.get::<_, Option<i64>>(2)?.map(|s| s as u64),
                retain_until: r.get(3)?,
                written: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Forgets object `rel` of backup `backup` (it was removed from the bucket).
    pub fn forget_s3_object(&mut self, backup: &str, rel: &str) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute(
                "DELETE FROM s3_objects WHERE backup_id = ?1 AND rel = ?2",
                (backup, rel),
            )?;
            Ok(())
        })
    }

    /// Marks backup `id` expired: kept until `after` (RFC 3339) and while backups depend on
    /// it, then deleted by `cleanup`. An earlier mark stays unless `after` is later.
    pub fn set_delete_after(&mut self, id: &str, after: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE backups SET delete_after = CASE WHEN delete_after IS NULL OR delete_after < ?1 \
                 THEN ?1 ELSE delete_after END WHERE id = ?2",
                (after, id),
            )?;
            Ok(())
        })
    }

    /// Takes back the `deleting` mark of backup `id` (the bucket refused the delete): it is
    /// whole still, and is marked expired instead, until `after` (RFC 3339).
    pub fn unmark_deleting(&mut self, id: &str, after: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE backups SET deleting_at = NULL, delete_after = ?1 WHERE id = ?2",
                (after, id),
            )?;
            Ok(())
        })
    }

    /// Backups marked expired, oldest mark first.
    pub fn expired_backups(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn().prepare(
            "SELECT id FROM backups WHERE delete_after IS NOT NULL ORDER BY delete_after, rowid DESC",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
