//! Catalog side of removing a backup that others depend on (see [`crate::backup::merge`]): the
//! backup is marked `deleting` while its dependants still name it as their parent; the last
//! step repoints them and deletes it, in one transaction.

use super::Catalog;
use crate::error::{Error, Result};

/// A disk of a backup whose image another backup's image is backed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskChild {
    /// Disk key.
    pub key: u32,
    /// The backup whose image of that disk is backed by it.
    pub child: String,
}

/// What a merged disk of a dependant looks like afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedDisk {
    /// The dependant backup.
    pub backup: String,
    /// Disk key.
    pub key: u32,
    /// Its new parent: the removed backup's parent (`None`: it is a full now).
    pub parent: Option<String>,
    /// The digest of its merged digest file.
    pub digest: String,
    /// The length of its merged image.
    pub image_bytes: u64,
}

/// The reason a disk that became a full by a merge records.
pub const MERGED_FULL_REASON: &str = "merged: holds the data of the removed backups it depended on";

impl Catalog {
    /// The disks of backup `id` that other backups' images are backed by, by key.
    pub fn disk_children(&self, id: &str) -> Result<Vec<DiskChild>> {
        let mut stmt = self.conn().prepare(
            "SELECT disk_key, backup_id FROM backup_disks WHERE parent_backup_id = ?1 \
             ORDER BY disk_key, backup_id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(DiskChild {
                key: r.get(0)?,
                child: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks completed backup `id` as being removed by merging it into exactly the dependants
    /// `children` lists (checked in the same synced transaction: a dependant that appeared since
    /// is refused). From here on nothing reads or builds on it, and should this process die the
    /// reconciliation finishes the merge.
    pub fn mark_merging(&mut self, id: &str, children: &[DiskChild]) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            super::backups::refuse_unless_deletable(tx, id)?;
            let mut stmt = tx.prepare(
                "SELECT d.disk_key, d.backup_id, b.status, b.deleting_at FROM backup_disks d \
                 JOIN backups b ON b.id = d.backup_id WHERE d.parent_backup_id = ?1 \
                 ORDER BY d.disk_key, d.backup_id",
            )?;
            let now_children: Vec<(DiskChild, String, Option<String>)> = stmt
                .query_map([id], |r| {
                    Ok((
                        DiskChild {
                            key: r.get(0)?,
                            child: r.get(1)?,
                        },
                        r.get(2)?,
                        r.get(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<_>>()?;
            if let Some((c, _, _)) = now_children.iter().find(|(c, status, deleting)| {
                status != "completed" || deleting.is_some() || !children.contains(c)
            }) {
                return Err(Error::busy(format!(
                    "backup {} (disk {}) depends on backup {id} and is being written or removed",
                    c.child, c.key
                ))
                .with_help("Try again once it has ended."));
            }
            tx.execute(
                "UPDATE backups SET deleting_at = ?1 WHERE id = ?2",
                (&now, id),
            )?;
            Ok(())
        })
    }

    /// Records disk `key` of backup `id` as standalone (a consolidation): no parent, mode full,
    /// its new digest and image length.
    pub fn set_disk_standalone(
        &mut self,
        id: &str,
        key: u32,
        digest: &str,
        image_bytes: u64,
        reason: &str,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE backup_disks SET parent_backup_id = NULL, mode = 'full', digest = ?1, \
                 image_bytes = ?2, reason = CASE WHEN mode = 'full' THEN reason ELSE ?3 END \
                 WHERE backup_id = ?4 AND disk_key = ?5",
                (digest, image_bytes as i64, reason, id, key),
            )?;
            Ok(())
        })
    }

    /// The last step of a merge, in one synced transaction: the dependants' disks take their
    /// merged images (new parent, mode, digest, length) and backup `id` goes.
    pub fn finish_merge(&mut self, id: &str, merged: &[MergedDisk]) -> Result<()> {
        self.write(|tx| {
            for m in merged {
                let mode = if m.parent.is_some() {
                    "incremental"
                } else {
                    "full"
                };
                tx.execute(
                    "UPDATE backup_disks SET parent_backup_id = ?1, mode = ?2, digest = ?3, \
                     image_bytes = ?4, reason = CASE WHEN ?2 = mode THEN reason ELSE ?5 END \
                     WHERE backup_id = ?6 AND disk_key = ?7 AND parent_backup_id = ?8",
                    (
                        &m.parent,
                        mode,
                        &m.digest,
                        m.image_bytes as i64,
                        MERGED_FULL_REASON,
                        &m.backup,
                        m.key,
                        id,
                    ),
                )?;
            }
            let deps = super::backups::dependents_on(tx, id)?;
            if !deps.is_empty() {
                return Err(Error::internal(format!(
                    "backup {id} still has dependants after its merge: {}",
                    deps.join(", ")
                )));
            }
            tx.execute("DELETE FROM backups WHERE id = ?1", [id])?;
            Ok(())
        })
    }
}
