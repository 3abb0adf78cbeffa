//! The SQLite catalog: the only place with SQL.
//!
//! One file, `<state-dir>/sendense.db`, mode 0600, opened with WAL, `busy_timeout` and foreign
//! keys on. Every write runs in a `BEGIN IMMEDIATE` transaction: taking the write lock up front
//! means two `sendense` processes queue behind each other (up to [`BUSY_TIMEOUT`]) instead of
//! failing with "database is locked" when a read transaction tries to upgrade.

mod backups;
mod children;
mod exports;
mod jobs;
mod merges;
mod mounts;
mod nodes;
mod policies;
mod repos;
mod s3objects;
mod s3repos;
mod schema;
mod vcenters;
mod vms;

pub use backups::{
    BackupDiskRecord, BackupFilter, BackupMode, BackupRecord, ChainTop, CopyLocation, DiskOutcome,
    ImportedBackup, NewBackupDisk, NewCopy, RepoKind,
};
pub use children::{ChildRecord, NewChild};
pub use exports::{ExportRecord, Listen};
pub use jobs::{JobFilter, JobKind, JobLogLine, JobRecord, JobStatus};
pub use merges::{DiskChild, MergedDisk, MERGED_FULL_REASON};
pub use mounts::{MountRecord, NewMount};
pub use nodes::{NewNode, NodeRecord};
pub use policies::{CopyRule, GroupRecord, NewPolicy, PolicyRecord, PolicySettings};
pub use repos::{NewRepo, RepoRecord};
pub use s3objects::S3ObjectRecord;
pub use s3repos::{NewS3Repo, S3RepoRecord, S3Settings};
pub use vcenters::{NewVcenter, VcenterRecord};
pub use vms::{DiskRecord, NewDisk, VmRecord};

use crate::error::{Error, ErrorKind, Result};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a writer waits for another process to finish its transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// An open catalog.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

impl Catalog {
    /// Opens (creating when `create` is set) the catalog at `path` and applies migrations.
    pub fn open(path: &Path, create: bool) -> Result<Catalog> {
        if create {
            create_private_file(path)?;
        } else if !path.exists() {
            return Err(
                Error::not_found(format!("no catalog at {}", path.display()))
                    .with_help("Run `sendense init` first, or pass the right --state-dir."),
            );
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags)
            .map_err(|e| Error::from(e).context(format!("opening {}", path.display())))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mut catalog = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        // Switching a new catalog to WAL needs a moment of exclusive access, and SQLite reports
        // two openers racing for it as busy at once instead of waiting in the busy handler
        // (each holds the shared lock the other needs released). Retrying covers that race.
        retry_while_busy(|| {
            catalog.conn.pragma_update(None, "journal_mode", "WAL")?;
            catalog.conn.pragma_update(None, "synchronous", "FULL")?;
            catalog.conn.pragma_update(None, "foreign_keys", "ON")?;
            catalog.migrate()
        })?;
        Ok(catalog)
    }

    /// Where the catalog lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What SQLite's quick check of every page finds wrong (nothing when the catalog is whole).
    pub fn quick_check(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare("PRAGMA quick_check")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            let row = row?;
            if row != "ok" {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// This hub's id (made when the catalog was created or migrated to schema 3).
    pub fn hub_id(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("SELECT hub_id FROM hub WHERE id = 1", [], |r| r.get(0))?)
    }

    /// The number of migrations applied.
    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn migrate(&mut self) -> Result<()> {
        let known = schema::MIGRATIONS.len() as u32;
        if self.schema_version()? == known {
            return Ok(());
        }
        // Foreign keys are off while migrations run (SQLite changes them only outside a
        // transaction): a migration that rebuilds a table drops the old one, which must
        // neither cascade nor rewrite the references of other tables. They are checked as a
        // whole before the commit.
        self.conn.pragma_update(None, "foreign_keys", "OFF")?;
        let migrated = self.migrate_unchecked(known);
        self.conn.pragma_update(None, "foreign_keys", "ON")?;
        migrated
    }

    fn migrate_unchecked(&mut self, known: u32) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: u32 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        // References broken before (none in a catalog Sendense wrote) are not the migration's.
        let broken_before: i64 = if current == 0 {
            0
        } else {
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?
        };
        if current > known {
            return Err(Error::refused(format!(
                "the catalog {} has schema version {current}, newer than this Sendense knows ({known})",
                self.path.display()
            ))
            .with_help("Use the Sendense version that wrote this catalog, or a newer one."));
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)
                .map_err(|e| Error::from(e).context(format!("catalog migration {}", i + 1)))?;
            tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        }
        let broken: i64 =
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if broken > broken_before {
            return Err(Error::new(
                crate::ErrorKind::Catalog,
                format!(
                    "migrating the catalog would break {} reference(s); nothing was changed",
                    broken - broken_before
                ),
            )
            .with_help(
                "Keep using the Sendense version that wrote this catalog, and report this.",
            ));
        }
        if current == 0 {
            tx.execute(
                "INSERT OR IGNORE INTO catalog_info (key, value) VALUES ('catalog_id', ?1), ('created_at', ?2)",
                (uuid::Uuid::new_v4().to_string(), crate::time::now_rfc3339()),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Runs `f` in an immediate (write-locked) transaction, committing when it returns `Ok`.
    pub(crate) fn write<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        write_on(&self.conn, f)
    }

    /// Runs `f` in an IMMEDIATE transaction whose commit is not synced on its own: it becomes
    /// durable with the next synced commit of any connection (the write-ahead log keeps order,
    /// so a power loss can only take back the newest unsynced commits, never one before a
    /// synced one). A killed process loses nothing: the commit is in the log. Only for what
    /// may be lost with the power without leaving the catalog wrong: job log lines and
    /// progress, a job moving to running, the rows about qemu-nbd processes (a power loss ends
    /// them), the disks a discovery found, the checkpoints a running backup is taking. What
    /// must outlive a power loss — a new job (its id is shown at once), a backup once its
    /// files exist (so the reconciliation finds them), a completed backup with the
    /// checkpoints it leaves, a job's end, what a user asked for — is synced.
    pub(crate) fn write_unsynced<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        /// Puts the connection back to synced commits however the transaction ends, a panic
        /// in `f` included.
        struct Synced<'a>(&'a Connection);
        impl Drop for Synced<'_> {
            fn drop(&mut self) {
                let _ = self.0.pragma_update(None, "synchronous", "FULL");
            }
        }
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let guard = Synced(&self.conn);
        let out = write_on(&self.conn, f);
        std::mem::forget(guard);
        let restored = self.conn.pragma_update(None, "synchronous", "FULL");
        let out = out?;
        restored?;
        Ok(out)
    }

    /// Read access for queries.
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// A value from `catalog_info`.
    pub fn info(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM catalog_info WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }
}

/// Runs `f` again while it fails with [`ErrorKind::Busy`], for up to [`BUSY_TIMEOUT`].
fn retry_while_busy<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        match f() {
            Err(e) if e.kind() == ErrorKind::Busy && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Creates `path` with mode 0600 if it does not exist (SQLite then keeps that mode for the
/// database and gives its -wal and -shm files the same).
fn create_private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io("creating catalog", path, e)),
    }
}

/// Maps a UNIQUE constraint failure to `AlreadyExists` with `message`, other errors unchanged.
pub(crate) fn unique_violation(err: rusqlite::Error, message: impl FnOnce() -> Error) -> Error {
    match &err {
        rusqlite::Error::SqliteFailure(e, _)
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            let mut out = message();
            if out.kind() != ErrorKind::AlreadyExists {
                out = Error::already_exists(out.message().to_string());
            }
            out.with_source(err)
        }
        _ => Error::from(err),
    }
}

/// Runs `f` in an immediate (write-locked) transaction on `conn`, committing when it returns
/// `Ok` (rolled back otherwise, also on a panic).
fn write_on<T>(
    conn: &Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>,
) -> Result<T> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_from_empty_and_reopens_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sendense.db");
        let cat = Catalog::open(&path, true).unwrap();
        assert_eq!(
            cat.schema_version().unwrap(),
            schema::MIGRATIONS.len() as u32
        );
        let id = cat.info("catalog_id").unwrap().unwrap();
        drop(cat);
        let cat = Catalog::open(&path, false).unwrap();
        assert_eq!(
            cat.schema_version().unwrap(),
            schema::MIGRATIONS.len() as u32
        );
        assert_eq!(cat.info("catalog_id").unwrap().unwrap(), id);
        let fk: i64 = cat
            .conn()
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let mode: String = cat
            .conn()
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        use std::os::unix::fs::PermissionsExt;
        let perm = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(perm, 0o600);
    }

    #[test]
    fn the_jobs_and_children_of_a_version_8_catalog_survive_their_tables_being_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sendense.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "foreign_keys", "ON").unwrap();
            for sql in &schema::MIGRATIONS[..8] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 8).unwrap();
            conn.execute_batch(
                "INSERT INTO jobs (id, kind, status, created_at, source_dirty) \
                     VALUES (7, 'backup', 'completed', 't', 1);
                 INSERT INTO job_events (job_id, ts, level, message) VALUES (7, 't', 'info', 'hello');
                 INSERT INTO children (id, kind, label, job_id, owner_pid, owner_start, cmdline, \
                     started_at) VALUES (3, 'qemu-nbd', 'x', 7, 1, 2, '[]', 't');
                 INSERT INTO nbd_exports (port, export_name, job_id, owner_pid, owner_start, \
                     allocated_at, child_id) VALUES (10100, 'e', 7, 1, 2, 't', 3);",
            )
            .unwrap();
        }
        let mut cat = Catalog::open(&path, false).unwrap();
        let job = cat.job(7).unwrap();
        assert_eq!(
            (job.kind, job.status),
            (JobKind::Backup, JobStatus::Completed)
        );
        assert_eq!(cat.job_log(7).unwrap().len(), 1);
        assert_eq!(cat.exports().unwrap()[0].child, Some(3));
        let problems: Vec<String> = {
            let mut stmt = cat.conn().prepare("PRAGMA foreign_key_check").unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
            rows.map(|r| r.unwrap()).collect()
        };
        assert!(problems.is_empty(), "{problems:?}");
        let sql: String = cat
            .conn()
            .query_row(
                "SELECT group_concat(sql, ' ') FROM sqlite_master WHERE sql LIKE '%_v9%'",
                [],
                |r| r.get::<_, Option<String>>(0),
            )
            .unwrap()
            .unwrap_or_default();
        assert_eq!(sql, "", "references to the old tables are left");
        // The new kinds are accepted, and the foreign keys still act.
        cat.create_job(JobKind::Mount, None, None).unwrap();
        cat.conn()
            .execute("DELETE FROM jobs WHERE id = 7", [])
            .unwrap();
        let left: i64 = cat
            .conn()
            .query_row("SELECT count(*) FROM job_events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    #[test]
    fn a_qemu_nbd_recorded_by_an_older_catalog_moves_into_the_child_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sendense.db");
        {
            // A catalog as the previous schema left it, with one running export.
            let conn = Connection::open(&path).unwrap();
            for sql in &schema::MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO nbd_exports (port, export_name, owner_pid, owner_start, pid, \
                 pid_start, cmdline, allocated_at) \
                 VALUES (10100, 'vm-disk-2000', 11, 22, 33, 44, '[\"qemu-nbd\",\"-x\"]', 't')",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO nbd_exports (port, export_name, owner_pid, owner_start, allocated_at) \
                 VALUES (10101, 'vm-disk-2001', 11, 22, 't')",
                [],
            )
            .unwrap();
        }
        let cat = Catalog::open(&path, false).unwrap();
        let exports = cat.exports().unwrap();
        assert_eq!(exports.len(), 2);
        let (served, allocated) = (&exports[0], &exports[1]);
        assert_eq!(served.server().map(|p| (p.pid, p.start)), Some((33, 44)));
        assert_eq!(
            served.cmdline.as_deref(),
            Some(&["qemu-nbd".into(), "-x".into()][..])
        );
        assert_eq!((allocated.server(), allocated.child), (None, None));
        let children = cat.children().unwrap();
        assert_eq!(children.len(), 1);
        assert_eq!(Some(children[0].id), served.child);
        assert_eq!(children[0].kind, crate::supervise::ChildKind::QemuNbd);
        assert_eq!(children[0].owner.pid, 11);
        assert_eq!(children[0].label, "export vm-disk-2000");
    }

    #[test]
    fn backups_of_an_older_catalog_get_their_count_since_the_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sendense.db");
        {
            // A chain of three backups of two disks as schema 5 recorded it.
            let conn = Connection::open(&path).unwrap();
            for sql in &schema::MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute_batch(
                "INSERT INTO repositories (id, name, path, repo_uuid, created_at) VALUES (1, 'r', '/r', 'x', 't');
                 INSERT INTO vms (id, name, source_kind, created_at, updated_at) VALUES (1, 'vm', 'image', 't', 't');",
            )
            .unwrap();
            for (i, id) in ["a", "b", "c"].iter().enumerate() {
                conn.execute(
                    "INSERT INTO backups (id, vm_id, repo_id, status, created_at) VALUES (?1, 1, 1, 'completed', 't')",
                    [id],
                )
                .unwrap();
                for key in [2000, 2001] {
                    // Disk 2001 starts a new chain at the last backup.
                    let parent = match (i, key) {
                        (0, _) | (2, 2001) => None,
                        _ => Some(["a", "b"][i - 1]),
                    };
                    let mode = if parent.is_some() {
                        "incremental"
                    } else {
                        "full"
                    };
                    conn.execute(
                        "INSERT INTO backup_disks (backup_id, disk_key, mode, reason, file, parent_backup_id, \
                         size_bytes, status) VALUES (?1, ?2, ?3, '', 'f', ?4, 1, 'completed')",
                        rusqlite::params![id, key, mode, parent],
                    )
                    .unwrap();
                }
            }
        }
        let cat = Catalog::open(&path, false).unwrap();
        let counts = |id: &str| -> Vec<Option<u32>> {
            cat.backup(id)
                .unwrap()
                .disks
                .iter()
                .map(|d| d.since_full)
                .collect()
        };
        assert_eq!(counts("a"), [Some(0), Some(0)]);
        assert_eq!(counts("b"), [Some(1), Some(1)]);
        assert_eq!(counts("c"), [Some(2), Some(0)]);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sendense.db");
        let cat = Catalog::open(&path, true).unwrap();
        cat.conn().pragma_update(None, "user_version", 999).unwrap();
        drop(cat);
        let err = Catalog::open(&path, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused);
        assert!(err.message().contains("999"));
    }

    #[test]
    fn missing_catalog_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = Catalog::open(&dir.path().join("nope.db"), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.help().unwrap().contains("sendense init"));
    }

    #[test]
    fn concurrent_openers_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sendense.db");
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || Catalog::open(&p, true).map(|_| ()))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        let cat = Catalog::open(&path, false).unwrap();
        let n: i64 = cat
            .conn()
            .query_row(
                "SELECT count(*) FROM catalog_info WHERE key = 'catalog_id'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
    }
}
