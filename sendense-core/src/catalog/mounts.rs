//! Mount rows: a restore point mounted as files, recorded before anything of it exists.

use super::Catalog;
use crate::error::{Error, Result};
use crate::proc::ProcId;
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// A mounted (or mounting) restore point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountRecord {
    /// Row id.
    #[serde(skip)]
    pub id: i64,
    /// The job serving it.
    pub job: i64,
    /// The backup.
    pub backup: String,
    /// The disk.
    pub disk: u32,
    /// Where its partitions are mounted (`DIR/p1`, ...).
    pub dir: PathBuf,
    /// The private directory of the export file and the overlay.
    #[serde(skip)]
    pub work_dir: PathBuf,
    /// Whether Sendense made `dir` (and removes it again).
    #[serde(skip)]
    pub created_dir: bool,
    /// The sendense process holding it.
    pub owner_pid: u32,
    #[serde(skip)]
    /// Its start time.
    pub owner_start: u64,
    /// Unmounted after this long without a read (0: never).
    pub idle_secs: u64,
    /// What got mounted, once it is ready.
    pub partitions: Option<serde_json::Value>,
    /// Since when.
    pub created_at: String,
    /// When everything was mounted.
    pub ready_at: Option<String>,
}

impl MountRecord {
    /// The process holding the mount.
    pub fn owner(&self) -> ProcId {
        ProcId {
            pid: self.owner_pid,
            start: self.owner_start,
        }
    }
}

const SELECT: &str = "SELECT id, job_id, backup_id, disk_key, dir, work_dir, created_dir, \
     owner_pid, owner_start, idle_secs, partitions, created_at, ready_at FROM mounts";

fn from_row(r: &Row<'_>) -> rusqlite::Result<MountRecord> {
    let partitions: Option<String> = r.get(10)?;
    Ok(MountRecord {
        id: r.get(0)?,
        job: r.get(1)?,
        backup: r.get(2)?,
        disk: r.get(3)?,
        dir: PathBuf::from(r.get::<_, String>(4)?),
        work_dir: PathBuf::from(r.get::<_, String>(5)?),
        created_dir: r.get(6)?,
        owner_pid: r.get(7)?,
        owner_start: r.get::<_, i64>(8)? as u64,
        idle_secs: r.get::<_, i64>(9)? as u64,
        partitions: partitions.and_then(|p| serde_json::from_str(&p).ok()),
        created_at: r.get(11)?,
        ready_at: r.get(12)?,
    })
}

/// What a new mount row records.
#[derive(Debug, Clone)]
pub struct NewMount<'a> {
    /// The job.
    pub job: i64,
    /// The backup.
    pub backup: &'a str,
    /// The disk.
    pub disk: u32,
    /// Where.
    pub dir: &'a Path,
    /// The private directory.
    pub work_dir: &'a Path,
    /// Whether Sendense makes `dir`.
    pub created_dir: bool,
    /// Idle time before it is unmounted (0: never).
    pub idle_secs: u64,
}

impl Catalog {
    /// Records a mount held by this process; refused when `dir` is mounted already.
    pub fn insert_mount(&mut self, m: &NewMount<'_>) -> Result<MountRecord> {
        let me = ProcId::current();
        let now = crate::time::now_rfc3339();
        let dir = m.dir.to_string_lossy().into_owned();
        let id = self.write(|tx| {
            tx.execute(
                "INSERT INTO mounts (job_id, backup_id, disk_key, dir, work_dir, created_dir, \
                 owner_pid, owner_start, idle_secs, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                (
                    m.job,
                    m.backup,
                    m.disk,
                    &dir,
                    m.work_dir.to_string_lossy(),
                    m.created_dir,
                    me.pid,
                    me.start as i64,
                    m.idle_secs as i64,
                    &now,
                ),
            )
            .map_err(|e| {
                super::unique_violation(e, || {
                    Error::busy(format!("a backup is mounted at {dir} already")).with_help(
                        "Unmount it with `sendense umount DIR`, or choose another directory.",
                    )
                })
            })?;
            Ok(tx.last_insert_rowid())
        })?;
        self.mount_row(id)
    }

    /// Records what mount `id` mounted, and that it is ready.
    pub fn set_mount_ready(&mut self, id: i64, partitions: &serde_json::Value) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "UPDATE mounts SET partitions = ?1, ready_at = ?2 WHERE id = ?3",
                (partitions.to_string(), &now, id),
            )?;
            Ok(())
        })
    }

    /// Forgets mount `id` (nothing of it is left).
    pub fn delete_mount(&mut self, id: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM mounts WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    fn mount_row(&self, id: i64) -> Result<MountRecord> {
        self.conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no mount with id {id}")))
    }

    /// The mount at `dir`.
    pub fn mount_at(&self, dir: &Path) -> Result<Option<MountRecord>> {
        Ok(self
            .conn()
            .query_row(
                &format!("{SELECT} WHERE dir = ?1"),
                [dir.to_string_lossy()],
                from_row,
            )
            .optional()?)
    }

    /// Every recorded mount, oldest first.
    pub fn mounts(&self) -> Result<Vec<MountRecord>> {
        let mut stmt = self.conn().prepare(&format!("{SELECT} ORDER BY id"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
