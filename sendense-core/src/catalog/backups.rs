//! Backup rows: one per VM-level backup, one `backup_disks` row per disk.

use super::Catalog;
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;
use std::path::PathBuf;

/// Full or incremental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupMode {
    /// Every allocated block; the image has no backing file.
    Full,
    /// Changed blocks; the image is backed by the previous backup of the same disk.
    Incremental,
}

impl BackupMode {
    /// Text stored in the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMode::Full => "full",
            BackupMode::Incremental => "incremental",
        }
    }

    fn parse(s: &str) -> BackupMode {
        if s == "incremental" {
            BackupMode::Incremental
        } else {
            BackupMode::Full
        }
    }
}

/// One disk of a backup. Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupDiskRecord {
    /// Disk key.
    pub key: u32,
    /// Full or incremental.
    pub mode: BackupMode,
    /// Why that mode.
    pub reason: String,
    /// Absolute path of the QCOW2 image.
    pub file: PathBuf,
    /// The backup this disk's image is backed by (incrementals).
    pub parent: Option<String>,
    /// Virtual size of the disk.
    pub size_bytes: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written into the image.
    pub bytes_written: u64,
    /// The change-tracking checkpoint this backup ends at.
    pub checkpoint: Option<String>,
    /// Digest of the data written (for verify).
    pub digest: Option<String>,
    /// Length of the committed image file (none for backups made before it was recorded).
    pub image_bytes: Option<u64>,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Backups taken from the source since its last full from the source (0: this one is
    /// such a full; `None`: not known).
    pub since_full: Option<u32>,
    /// The image path relative to the repository.
    #[serde(skip)]
    pub rel_file: String,
}

/// A backup. Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupRecord {
    /// Backup id.
    pub id: String,
    /// VM name.
    pub vm: String,
    /// Repository name.
    pub repo: String,
    /// `running`, `completed`, `failed`, or `deleting` while a delete removes it.
    pub status: String,
    /// When it started.
    pub created_at: String,
    /// When it completed.
    pub completed_at: Option<String>,
    /// The job that made it.
    pub job: Option<i64>,
    /// Why it is damaged, as the last `backup verify` or restore that read it found; `None`
    /// when none found damage. Nothing builds on a damaged backup.
    pub damaged: Option<String>,
    /// The backup this one is a copy of (the first backup of its restore point); `None` for a
    /// backup made from its source.
    pub copy_of: Option<String>,
    /// What kind of repository holds it.
    pub repo_kind: RepoKind,
    /// Set when the backup was asked to go while its objects are locked (or backups it holds
    /// up still need it): it is kept, and `cleanup` deletes it once this instant has passed and
    /// nothing depends on it. S3 repositories only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<String>,
    /// Its disks, by key.
    pub disks: Vec<BackupDiskRecord>,
    #[serde(skip)]
    /// Repository root; empty for a backup in an S3 repository, which has no local file (its
    /// disks' `file` is empty too: code that takes a file finds none).
    pub repo_path: PathBuf,
    #[serde(skip)]
    /// Catalog id of the VM.
    pub vm_id: i64,
    #[serde(skip)]
    /// Catalog id of the repository.
    pub repo_id: i64,
}

/// Where a backup is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    /// A directory repository: files.
    Dir,
    /// An S3 repository: objects in a bucket.
    S3,
}

impl BackupRecord {
    /// Whether it is in an S3 repository.
    pub fn in_s3(&self) -> bool {
        self.repo_kind == RepoKind::S3
    }

    /// Refuses `what` (a command that reads or writes the backup's files) for a backup in an
    /// S3 repository.
    pub fn require_local(&self, what: &str) -> Result<()> {
        if !self.in_s3() {
            return Ok(());
        }
        Err(Error::refused(format!(
            "backup {} is in S3 repository `{}`: {what} works on backups in directory repositories",
            self.id, self.repo
        ))
        .with_help(
            "Restore it from the bucket (`sendense restore`), or use a copy of it in a directory repository (`sendense backup show` lists them).",
        ))
    }
}

/// A disk of a backup being created.
#[derive(Debug, Clone)]
pub struct NewBackupDisk {
    /// Disk key.
    pub key: u32,
    /// Catalog id of the VM disk.
    pub vm_disk_id: Option<i64>,
    /// Mode.
    pub mode: BackupMode,
    /// Reason for the mode.
    pub reason: String,
    /// Image path relative to the repository (final name, without `.partial`).
    pub rel_file: String,
    /// Parent backup (incrementals).
    pub parent: Option<String>,
    /// Disk size.
    pub size_bytes: u64,
    /// Checkpoint the backup ends at.
    pub checkpoint: Option<String>,
    /// Backups taken from the source since its last full from the source (`None`: a full
    /// counts 0, an incremental its parent's count plus one).
    pub since_full: Option<u32>,
}

/// What a disk moved, recorded at commit.
#[derive(Debug, Clone, Default)]
pub struct DiskOutcome {
    /// Disk key.
    pub key: u32,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Digest of the data.
    pub digest: Option<String>,
    /// Length of the committed image file.
    pub image_bytes: Option<u64>,
    /// The scheme the block digests were written in.
    pub digest_scheme: crate::repo::digests::Scheme,
}

/// The newest completed image of one disk in one repository: the parent of the next incremental.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTop {
    /// Backup id.
    pub backup: String,
    /// Image path relative to the repository.
    pub rel_file: String,
    /// Disk size at that backup.
    pub size_bytes: u64,
    /// Checkpoint it ended at.
    pub checkpoint: Option<String>,
}

/// A completed backup as a manifest describes it.
#[derive(Debug, Clone)]
pub struct ImportedBackup {
    /// Backup id.
    pub id: String,
    /// Catalog id of the VM.
    pub vm_id: i64,
    /// Catalog id of the repository.
    pub repo_id: i64,
    /// When it started.
    pub created_at: String,
    /// When it completed.
    pub completed_at: String,
    /// Manifest path relative to the repository.
    pub manifest: String,
    /// The backup it is a copy of.
    pub copy_of: Option<String>,
    /// Its disks and what they moved.
    pub disks: Vec<(NewBackupDisk, DiskOutcome)>,
}

/// A copy of a backup being written into another repository: a backup of its own there,
/// `running` until committed, with the time of the restore point it copies.
#[derive(Debug, Clone)]
pub struct NewCopy {
    /// The copy's backup id.
    pub id: String,
    /// Catalog id of the VM.
    pub vm_id: i64,
    /// Catalog id of the destination repository.
    pub repo_id: i64,
    /// The copy job.
    pub job: i64,
    /// When the restore point was taken (the original's `created_at`).
    pub created_at: String,
    /// The first backup of the restore point.
    pub copy_of: String,
    /// Its disks, parents being copies in the destination.
    pub disks: Vec<NewBackupDisk>,
}

/// Where a restore point is: one backup in one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyLocation {
    /// The backup id there.
    pub backup: String,
    /// The repository's name.
    pub repo: String,
    /// The backup's status there.
    pub status: String,
}

/// Narrows `backup list`.
#[derive(Debug, Clone, Default)]
pub struct BackupFilter {
    /// Only this VM.
    pub vm: Option<String>,
    /// Only this repository.
    pub repo: Option<String>,
    /// Only this status.
    pub status: Option<String>,
}

// A backup being deleted shows as `deleting` whatever it was before; one kept until it may go
// (S3 repositories) as `expired`.
const SELECT: &str = "SELECT b.id, v.name, r.name, \
     CASE WHEN b.deleting_at IS NOT NULL THEN 'deleting' WHEN b.delete_after IS NOT NULL THEN 'expired' ELSE b.status END, b.created_at, b.completed_at, \
     b.job_id, r.path, b.vm_id, b.repo_id, b.damaged, b.copy_of, r.kind, b.delete_after \
     FROM backups b JOIN vms v ON v.id = b.vm_id \
     JOIN repositories r ON r.id = b.repo_id";

fn from_row(r: &Row<'_>) -> rusqlite::Result<BackupRecord> {
    let repo_kind = match r.get::<_, String>(12)?.as_str() {
        "s3" => RepoKind::S3,
        _ => RepoKind::Dir,
    };
    Ok(BackupRecord {
        id: r.get(0)?,
        vm: r.get(1)?,
        repo: r.get(2)?,
        status: r.get(3)?,
        created_at: r.get(4)?,
        completed_at: r.get(5)?,
        job: r.get(6)?,
        repo_path: match repo_kind {
            RepoKind::Dir => PathBuf::from(r.get::<_, String>(7)?),
            RepoKind::S3 => PathBuf::new(),
        },
        repo_kind,
        delete_after: r.get(13)?,
        vm_id: r.get(8)?,
        repo_id: r.get(9)?,
        damaged: r.get(10)?,
        copy_of: r.get(11)?,
        disks: Vec::new(),
    })
}

impl Catalog {
    /// Records a backup in `running` state with its planned disks.
    pub fn insert_backup(
        &mut self,
        id: &str,
        vm_id: i64,
        repo_id: i64,
        job: Option<i64>,
        disks: &[NewBackupDisk],
    ) -> Result<()> {
        let now = crate::time::now_rfc3339();
        // Synced: after a power loss the row is there for the reconciliation to find the
        // backup's files — also once they are renamed, before the completion is recorded.
        self.write(|tx| {
            tx.execute(
                "INSERT INTO backups (id, vm_id, repo_id, job_id, status, created_at) VALUES (?1, ?2, ?3, ?4, 'running', ?5)",
                (id, vm_id, repo_id, job, &now),
            )?;
            insert_disks(tx, id, disks, "running")?;
            Ok(())
        })
    }

    /// Records the checkpoint each disk of a running backup ends at.
    pub fn set_backup_checkpoints(
        &mut self,
        id: &str,
        checkpoints: &[(u32, Option<String>)],
    ) -> Result<()> {
        self.write_unsynced(|tx| {
            for (key, checkpoint) in checkpoints {
                tx.execute(
                    "UPDATE backup_disks SET checkpoint = ?1 WHERE backup_id = ?2 AND disk_key = ?3",
                    (checkpoint, id, key),
                )?;
            }
            Ok(())
        })
    }

    /// Marks a backup completed with what each disk moved and records the checkpoint each
    /// disk's source now has (`(disk id, checkpoint)`), in one transaction.
    pub fn complete_backup(
        &mut self,
        id: &str,
        manifest: &str,
        outcomes: &[DiskOutcome],
        checkpoints: &[(i64, &str)],
    ) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            for (disk_id, checkpoint) in checkpoints {
                tx.execute(
                    "UPDATE vm_disks SET checkpoint = ?1 WHERE id = ?2",
                    (checkpoint, disk_id),
                )?;
            }
            for o in outcomes {
                tx.execute(
                    "UPDATE backup_disks SET status = 'completed', bytes_read = ?1, bytes_written = ?2, digest = ?3, \
                     image_bytes = ?4 WHERE backup_id = ?5 AND disk_key = ?6",
                    (o.bytes_read as i64, o.bytes_written as i64, &o.digest, o.image_bytes.map(|b| b as i64), id, o.key),
                )?;
            }
            let n = tx.execute(
                "UPDATE backups SET status = 'completed', completed_at = ?1, manifest = ?2 WHERE id = ?3 AND status = 'running'",
                (&now, manifest, id),
            )?;
            if n == 0 {
                return Err(Error::internal(format!("backup {id} is not running")));
            }
            Ok(())
        })
    }

    /// Removes a backup that did not complete (its files are gone or going).
    pub fn discard_backup(&mut self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM backups WHERE id = ?1 AND status != 'completed'",
                [id],
            )?;
            Ok(())
        })
    }

    /// Records a copy being written (see [`NewCopy`]), synced like a backup starting: after a
    /// power loss the reconciliation finds its files through it.
    pub fn insert_copy(&mut self, c: &NewCopy) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO backups (id, vm_id, repo_id, job_id, status, created_at, copy_of) \
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6)",
                (&c.id, c.vm_id, c.repo_id, c.job, &c.created_at, &c.copy_of),
            )?;
            insert_disks(tx, &c.id, &c.disks, "running")?;
            Ok(())
        })
    }

    /// The completed backup of restore point `point` (the id of its first backup) in repository
    /// `repo_id`: the first backup itself or a copy of it; not one being deleted; `whole`: not
    /// one found damaged or expired either — one to build on (an undamaged one first in any
    /// case).
    pub fn point_in(&self, point: &str, repo_id: i64, whole: bool) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id FROM backups WHERE (id = ?1 OR copy_of = ?1) AND repo_id = ?2 \
                 AND status = 'completed' AND deleting_at IS NULL \
                 AND (?3 = 0 OR (damaged IS NULL AND delete_after IS NULL)) \
                 ORDER BY damaged IS NOT NULL, rowid LIMIT 1",
                (point, repo_id, whole),
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Every backup of restore point `point` (its first backup and the copies of it), in the
    /// order they were made.
    pub fn point_locations(&self, point: &str) -> Result<Vec<CopyLocation>> {
        let mut stmt = self.conn().prepare(
            "SELECT b.id, r.name, CASE WHEN b.deleting_at IS NOT NULL THEN 'deleting' WHEN b.delete_after IS NOT NULL THEN 'expired' ELSE b.status END \
             FROM backups b JOIN repositories r ON r.id = b.repo_id \
             WHERE b.id = ?1 OR b.copy_of = ?1 ORDER BY b.rowid",
        )?;
        let rows = stmt.query_map([point], |r| {
            Ok(CopyLocation {
                backup: r.get(0)?,
                repo: r.get(1)?,
                status: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a completed backup read from a repository manifest (`repo import`).
    pub fn import_backup(&mut self, b: &ImportedBackup) -> Result<()> {
        let ImportedBackup {
            id,
            vm_id,
            repo_id,
            created_at,
            completed_at,
            manifest,
            copy_of,
            disks,
        } = b;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO backups (id, vm_id, repo_id, status, created_at, completed_at, manifest, copy_of) \
                 VALUES (?1, ?2, ?3, 'completed', ?4, ?5, ?6, ?7)",
                (id, vm_id, repo_id, created_at, completed_at, manifest, copy_of),
            )
            .map_err(|e| super::unique_violation(e, || Error::already_exists(format!("backup {id} is already in the catalog"))))?;
            let plain: Vec<NewBackupDisk> = disks.iter().map(|(d, _)| d.clone()).collect();
            let id = id.as_str();
            insert_disks(tx, id, &plain, "completed")?;
            for (d, o) in disks {
                tx.execute(
                    "UPDATE backup_disks SET bytes_read = ?1, bytes_written = ?2, digest = ?3, image_bytes = ?4 \
                     WHERE backup_id = ?5 AND disk_key = ?6",
                    (o.bytes_read as i64, o.bytes_written as i64, &o.digest, o.image_bytes.map(|b| b as i64), id, d.key),
                )?;
            }
            Ok(())
        })
    }

    /// Backups, newest first.
    pub fn backups(&self, filter: &BackupFilter) -> Result<Vec<BackupRecord>> {
        let mut sql = format!("{SELECT} WHERE 1 = 1");
        let mut args: Vec<String> = Vec::new();
        if let Some(vm) = &filter.vm {
            args.push(vm.clone());
            sql.push_str(&format!(" AND v.name = ?{}", args.len()));
        }
        if let Some(repo) = &filter.repo {
            args.push(repo.clone());
            sql.push_str(&format!(" AND r.name = ?{}", args.len()));
        }
        if let Some(status) = &filter.status {
            args.push(status.clone());
            sql.push_str(&format!(
                " AND (CASE WHEN b.deleting_at IS NOT NULL THEN 'deleting' WHEN b.delete_after IS NOT NULL THEN 'expired' ELSE b.status END) = ?{}",
                args.len()
            ));
        }
        // Insertion order is creation order (import inserts parents first): ids made in the same
        // second do not sort by time.
        sql.push_str(" ORDER BY b.rowid DESC");
        let mut stmt = self.conn().prepare(&sql)?;
        let mut list = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for b in &mut list {
            b.disks = self.backup_disks(&b.id, &b.repo_path)?;
        }
        Ok(list)
    }

    /// Backups still `running`.
    pub fn running_backups(&self) -> Result<Vec<BackupRecord>> {
        self.backups(&BackupFilter {
            status: Some("running".into()),
            ..Default::default()
        })
    }

    /// One backup.
    pub fn backup(&self, id: &str) -> Result<BackupRecord> {
        let mut b = self
            .conn()
            .query_row(&format!("{SELECT} WHERE b.id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| {
                Error::not_found(format!("no backup with id `{id}`"))
                    .with_help("See `sendense backup list` for the backup ids.")
            })?;
        b.disks = self.backup_disks(&b.id, &b.repo_path)?;
        Ok(b)
    }

    fn backup_disks(&self, id: &str, repo_path: &std::path::Path) -> Result<Vec<BackupDiskRecord>> {
        let mut stmt = self.conn().prepare(
            "SELECT disk_key, mode, reason, file, parent_backup_id, size_bytes, bytes_read, bytes_written, \
             checkpoint, digest, status, error, image_bytes, since_full FROM backup_disks WHERE backup_id = ?1 ORDER BY disk_key",
        )?;
        let rows = stmt.query_map([id], |r| {
            let rel: String = r.get(3)?;
            Ok(BackupDiskRecord {
                key: r.get(0)?,
                mode: BackupMode::parse(&r.get::<_, String>(1)?),
                reason: r.get(2)?,
                // No local file for a backup in an S3 repository (see `BackupRecord`).
                file: if repo_path.as_os_str().is_empty() {
                    PathBuf::new()
                } else {
                    repo_path.join(&rel)
                },
                parent: r.get(4)?,
                size_bytes: r.get::<_, i64>(5)? as u64,
                bytes_read: r.get::<_, i64>(6)? as u64,
                bytes_written: r.get::<_, i64>(7)? as u64,
                checkpoint: r.get(8)?,
                digest: r.get(9)?,
                status: r.get(10)?,
                error: r.get(11)?,
                image_bytes: r.get::<_, Option<i64>>(12)?.map(|b| b as u64),
                since_full: r.get(13)?,
                rel_file: rel,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The newest completed image of disk `key` of a VM in a repository.
    pub fn chain_top(&self, vm_id: i64, repo_id: i64, key: u32) -> Result<Option<ChainTop>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT d.backup_id, d.file, d.size_bytes, d.checkpoint FROM backup_disks d \
                 JOIN backups b ON b.id = d.backup_id \
                 WHERE b.vm_id = ?1 AND b.repo_id = ?2 AND d.disk_key = ?3 AND b.status = 'completed' \
                 AND b.deleting_at IS NULL \
                 ORDER BY b.rowid DESC LIMIT 1",
                (vm_id, repo_id, key),
                |r| {
                    Ok(ChainTop {
                        backup: r.get(0)?,
                        rel_file: r.get(1)?,
                        size_bytes: r.get::<_, i64>(2)? as u64,
                        checkpoint: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    /// The chain of disk `key` of backup `id` as recorded, top first down to the full.
    pub fn disk_chain(&self, id: &str, key: u32) -> Result<Vec<crate::repo::chain::ExpectedLink>> {
        let mut chain: Vec<crate::repo::chain::ExpectedLink> = Vec::new();
        let mut cur = Some(id.to_string());
        while let Some(b) = cur {
            if chain.iter().any(|l| l.backup == b) {
                return Err(Error::internal(format!(
                    "the chain of backup {id} loops at {b}"
                )));
            }
            let rec = self.backup(&b)?;
            let disk = rec
                .disks
                .into_iter()
                .find(|d| d.key == key)
                .ok_or_else(|| Error::not_found(format!("backup {b} has no disk {key}")))?;
            cur = disk.parent;
            chain.push(crate::repo::chain::ExpectedLink {
                backup: b.clone(),
                file: disk.file,
                size: disk.size_bytes,
                digest: disk.digest,
                image_bytes: disk.image_bytes,
                damaged: rec.damaged.clone(),
                manifest: (rec.repo_kind == RepoKind::Dir).then(|| {
                    rec.repo_path
                        .join(crate::repo::manifest::manifest_rel(&rec.vm, &rec.id))
                }),
                repo: rec.repo_path.clone(),
            });
        }
        Ok(chain)
    }

    /// Records what a check found wrong with backup `id` (`None`: it found the backup whole).
    pub fn set_damaged(&mut self, id: &str, damaged: Option<&str>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE backups SET damaged = ?1 WHERE id = ?2",
                (damaged, id),
            )?;
            Ok(())
        })
    }

    /// Backup `id` and every backup its images are backed by, directly or not.
    pub fn chain_ids(&self, id: &str) -> Result<Vec<String>> {
        let mut stmt = self.conn().prepare(
            "WITH RECURSIVE chain(id) AS (SELECT ?1 UNION \
             SELECT d.parent_backup_id FROM backup_disks d JOIN chain c ON d.backup_id = c.id \
             WHERE d.parent_backup_id IS NOT NULL) SELECT id FROM chain",
        )?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Backups whose images are backed by `id`'s images.
    pub fn dependents(&self, id: &str) -> Result<Vec<String>> {
        dependents_on(self.conn(), id)
    }

    /// Marks completed backup `id` as being deleted — refused while another backup depends on
    /// it — and returns it. Synced, and checked in the same transaction that marks it: from here
    /// on no one reads or builds on the backup, and should the deleting process die the
    /// reconciliation finishes the delete.
    pub fn mark_deleting(&mut self, id: &str) -> Result<BackupRecord> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            refuse_unless_deletable(tx, id)?;
            refuse_if_depended_on(tx, id)?;
            tx.execute(
                "UPDATE backups SET deleting_at = ?1 WHERE id = ?2",
                (&now, id),
            )?;
            Ok(())
        })?;
        self.backup(id)
    }

    /// Backups whose delete was started: their files may be partly gone.
    pub fn deleting_backups(&self) -> Result<Vec<BackupRecord>> {
        self.backups(&BackupFilter {
            status: Some("deleting".into()),
            ..Default::default()
        })
    }

    /// Deletes a backup's rows; refused while another backup depends on it.
    pub fn delete_backup(&mut self, id: &str) -> Result<()> {
        self.write(|tx| {
            refuse_if_depended_on(tx, id)?;
            tx.execute("DELETE FROM backups WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// The checkpoints that completed backups of VM `vm_id` ended at: a bitmap of one of them
    /// that is not the recorded checkpoint was left only because its retirement was cut short.
    pub fn completed_checkpoints(&self, vm_id: i64) -> Result<std::collections::HashSet<String>> {
        let mut stmt = self.conn().prepare(
            "SELECT DISTINCT d.checkpoint FROM backup_disks d JOIN backups b ON b.id = d.backup_id \
             WHERE b.vm_id = ?1 AND b.status = 'completed' AND d.checkpoint IS NOT NULL",
        )?;
        let rows = stmt.query_map([vm_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// `NotFound` for an unknown backup, `Busy` for one being written or already being deleted.
pub(super) fn refuse_unless_deletable(conn: &rusqlite::Connection, id: &str) -> Result<()> {
    let state: Option<(String, Option<String>)> = conn
        .query_row(
            "SELECT status, deleting_at FROM backups WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match state {
        None => Err(Error::not_found(format!("no backup with id `{id}`"))
            .with_help("See `sendense backup list` for the backup ids.")),
        Some((_, Some(_))) => Err(Error::busy(format!("backup {id} is already being deleted"))),
        Some((status, None)) if status != "completed" => {
            Err(Error::busy(format!("backup {id} is still being written")))
        }
        Some(_) => {
            let parent_deleting: Option<String> = conn
                .query_row(
                    "SELECT p.id FROM backup_disks d JOIN backups p ON p.id = d.parent_backup_id \
                     WHERE d.backup_id = ?1 AND p.deleting_at IS NOT NULL LIMIT 1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            match parent_deleting {
                Some(p) => Err(Error::busy(format!(
                    "backup {p}, which backup {id} depends on, is being removed"
                ))
                .with_help("Run `sendense cleanup` to finish its removal, then try again.")),
                None => Ok(()),
            }
        }
    }
}

/// `Refused` while other backups' images are backed by `id`'s.
fn refuse_if_depended_on(conn: &rusqlite::Connection, id: &str) -> Result<()> {
    let deps = dependents_on(conn, id)?;
    if deps.is_empty() {
        return Ok(());
    }
    Err(
        Error::refused(format!("backup {id} is the parent of {}", deps.join(", ")))
            .with_help("Delete the backups that depend on it first, newest first."),
    )
}

/// Backups whose images are backed by `id`'s images (also inside a write transaction).
pub(super) fn dependents_on(conn: &rusqlite::Connection, id: &str) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT backup_id FROM backup_disks WHERE parent_backup_id = ?1 ORDER BY backup_id",
    )?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn insert_disks(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    disks: &[NewBackupDisk],
    status: &str,
) -> Result<()> {
    for d in disks {
        tx.execute(
            "INSERT INTO backup_disks (backup_id, disk_key, vm_disk_id, mode, reason, file, parent_backup_id, \
             checkpoint, size_bytes, status, since_full) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
             coalesce(?11, CASE WHEN ?4 = 'full' THEN 0 ELSE (SELECT p.since_full + 1 FROM backup_disks p \
             WHERE p.backup_id = ?7 AND p.disk_key = ?2) END))",
            (
                id,
                d.key,
                d.vm_disk_id,
                d.mode.as_str(),
                &d.reason,
                &d.rel_file,
                &d.parent,
                &d.checkpoint,
                d.size_bytes as i64,
                status,
                d.since_full,
            ),
        )
        .map_err(|e| match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                Error::refused(format!(
                    "disk {} of backup {id}: its parent {:?} is not a backup of the same disk, or the mode and parent disagree",
                    d.key, d.parent
                ))
                .with_source(e)
            }
            _ => Error::from(e),
        })?;
    }
    Ok(())
}
