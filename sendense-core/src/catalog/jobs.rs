//! Job rows and the job log.
//!
//! A job moves `pending → running → completed | failed | cancelled`. The runner's pid and host are
//! recorded when it starts, so a job whose process died can be told apart from one still running.

use super::Catalog;
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the catalog and shown to people.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::invalid(format!(
                        "`{other}` is not a valid {}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }
    };
}

text_enum! {
    /// What a job does.
    JobKind {
        /// A VM backup.
        Backup = "backup",
        /// A restore of disks.
        Restore = "restore",
        /// A verification of backups.
        Verify = "verify",
        /// An NBD export of a restore point.
        Export = "export",
        /// A copy into another repository.
        Copy = "copy",
        /// Retention.
        Prune = "prune",
        /// Orphan cleanup.
        Cleanup = "cleanup",
        /// A restore point mounted (`mount`, `files`).
        Mount = "mount",
    }
}

text_enum! {
    /// Where a job is in its life.
    JobStatus {
        /// Created, not started.
        Pending = "pending",
        /// A process is working on it.
        Running = "running",
        /// Ended well.
        Completed = "completed",
        /// Ended with an error.
        Failed = "failed",
        /// Stopped on request.
        Cancelled = "cancelled",
    }
}

impl JobKind {
    /// Whether a running job of this kind watches for `job cancel` and stops cleanly.
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            JobKind::Backup | JobKind::Restore | JobKind::Verify | JobKind::Export | JobKind::Mount
        )
    }
}

impl JobStatus {
    /// True once the job can no longer change.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// A job as the catalog knows it. This is also the `--json` shape of `job list` / `job show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    /// Job id.
    pub id: i64,
    /// What it does.
    pub kind: JobKind,
    /// The VM it concerns (kept after the VM is removed).
    pub vm: Option<String>,
    /// The repository it used.
    pub repo: Option<String>,
    /// Where it is.
    pub status: JobStatus,
    /// Process that runs or ran it.
    pub pid: Option<u32>,
    /// Start time of that process (identifies it together with the pid).
    #[serde(skip)]
    pub pid_start: Option<u64>,
    /// Host of that process.
    pub host: Option<String>,
    /// When it was created.
    pub created_at: String,
    /// When it started running.
    pub started_at: Option<String>,
    /// When it ended.
    pub ended_at: Option<String>,
    /// Bytes it planned to move.
    pub bytes_total: u64,
    /// Bytes moved so far.
    pub bytes_done: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Its source may still hold objects of it (a backup whose teardown did not run yet).
    #[serde(skip)]
    pub source_dirty: bool,
}

/// One line of a job's log. Also the `job log --json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobLogLine {
    /// When.
    pub ts: String,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// What happened.
    pub message: String,
}

/// Narrows `job list`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only jobs of this VM.
    pub vm: Option<String>,
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only jobs of the VMs in this protection group.
    pub group: Option<String>,
    /// Only jobs of the VMs in the groups that use this policy.
    pub policy: Option<String>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

const SELECT: &str = "SELECT j.id, j.kind, coalesce(v.name, j.vm_name), r.name, j.status, j.pid, \
     j.host, j.created_at, j.started_at, j.ended_at, j.bytes_total, j.bytes_done, j.error, j.pid_start, j.source_dirty \
     FROM jobs j LEFT JOIN vms v ON v.id = j.vm_id LEFT JOIN repositories r ON r.id = j.repo_id";

fn parse_col<T: FromStr<Err = Error>>(r: &Row<'_>, i: usize) -> rusqlite::Result<T> {
    let text: String = r.get(i)?;
    text.parse().map_err(|e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        id: r.get(0)?,
        kind: parse_col(r, 1)?,
        vm: r.get(2)?,
        repo: r.get(3)?,
        status: parse_col(r, 4)?,
        pid: r.get(5)?,
        host: r.get(6)?,
        created_at: r.get(7)?,
        started_at: r.get(8)?,
        ended_at: r.get(9)?,
        bytes_total: r.get::<_, i64>(10)? as u64,
        bytes_done: r.get::<_, i64>(11)? as u64,
        error: r.get(12)?,
        pid_start: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        source_dirty: r.get(14)?,
    })
}

impl Catalog {
    /// Creates a pending job owned by this process. A backup job starts with its source marked
    /// as possibly holding its objects (see [`Catalog::mark_source_clean`]).
    pub fn create_job(
        &mut self,
        kind: JobKind,
        vm: Option<&str>,
        repo: Option<&str>,
    ) -> Result<JobRecord> {
        let now = crate::time::now_rfc3339();
        let me = crate::proc::ProcId::current();
        let host = hostname();
        // Synced: a job id, once shown, is never given to another job.
        let id = self.write(|tx| {
            tx.execute(
                "INSERT INTO jobs (kind, vm_id, vm_name, repo_id, status, created_at, pid, pid_start, host, source_dirty) VALUES \
                 (?1, (SELECT id FROM vms WHERE name = ?2), ?2, \
                  (SELECT id FROM repositories WHERE name = ?3), 'pending', ?4, ?5, ?6, ?7, ?8)",
                (kind.as_str(), vm, repo, &now, me.pid, me.start as i64, host, kind == JobKind::Backup),
            )?;
            Ok(tx.last_insert_rowid())
        })?;
        self.job(id)
    }

    /// Marks a job running in this process.
    pub fn start_job(&mut self, id: i64) -> Result<()> {
        let now = crate::time::now_rfc3339();
        let me = crate::proc::ProcId::current();
        let host = hostname();
        self.write_unsynced(|tx| {
            let n = tx.execute(
                "UPDATE jobs SET status = 'running', pid = ?1, pid_start = ?2, host = ?3, started_at = ?4 \
                 WHERE id = ?5 AND status = 'pending'",
                (me.pid, me.start as i64, host, now, id),
            )?;
            if n == 0 {
                return Err(Error::internal(format!("job {id} is not pending")));
            }
            Ok(())
        })
    }

    /// Ends a job. A job already final is left as it is.
    pub fn finish_job(&mut self, id: i64, status: JobStatus, error: Option<&str>) -> Result<()> {
        if !status.is_final() {
            return Err(Error::internal(format!(
                "finish_job({id}) with non-final status {status}"
            )));
        }
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "UPDATE jobs SET status = ?1, error = ?2, ended_at = ?3 \
                 WHERE id = ?4 AND status IN ('pending', 'running')",
                (status.as_str(), error, now, id),
            )?;
            Ok(())
        })
    }

    /// Appends a line to a job's log. The line is durable once the next state change is (a
    /// line of its own costs no sync).
    pub fn log_job(
        &mut self,
        id: i64,
        level: &str,
        message: &str,
        data: Option<&str>,
    ) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write_unsynced(|tx| {
            tx.execute(
                "INSERT INTO job_events (job_id, ts, level, message, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                (id, now, level, message, data),
            )?;
            Ok(())
        })
    }

    /// A job's log, oldest first: (time, level, message).
    pub fn job_log(&self, id: i64) -> Result<Vec<JobLogLine>> {
        self.job(id)?;
        let mut stmt = self
            .conn()
            .prepare("SELECT ts, level, message FROM job_events WHERE job_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([id], |r| {
            Ok(JobLogLine {
                ts: r.get(0)?,
                level: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Asks the process running job `id` to cancel it; refused for a job that has ended or
    /// whose kind cannot be cancelled.
    pub fn request_cancel(&mut self, id: i64) -> Result<JobRecord> {
        let job = self.job(id)?;
        if job.status.is_final() {
            return Err(Error::refused(format!(
                "job {id} has already ended ({})",
                job.status
            )));
        }
        if !job.kind.cancellable() {
            return Err(Error::refused(format!(
                "job {id} is a {} job, which cannot be cancelled",
                job.kind
            ))
            .with_help("Let it finish; it ends on its own."));
        }
        self.write(|tx| {
            tx.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])?;
            Ok(())
        })?;
        self.job(id)
    }

    /// True when someone asked to cancel job `id`.
    pub fn cancel_requested(&self, id: i64) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT cancel_requested FROM jobs WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?)
    }

    /// Jobs not yet final.
    pub fn unfinished_jobs(&self) -> Result<Vec<JobRecord>> {
        let mut stmt = self.conn().prepare(&format!(
            "{SELECT} WHERE j.status IN ('pending', 'running') ORDER BY j.id"
        ))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that job `id`'s source holds nothing of it any more (its teardown ran, or it
    /// never touched the source). Unsynced: should a power loss take it back, the
    /// reconciliation only repairs a clean source once more.
    pub fn mark_source_clean(&mut self, id: i64) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute("UPDATE jobs SET source_dirty = 0 WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Jobs whose source may still hold their objects: (job id, VM name, whether the job has
    /// ended), oldest first.
    pub fn source_dirty_jobs(&self) -> Result<Vec<(i64, String, bool)>> {
        let mut stmt = self.conn().prepare(
            "SELECT j.id, v.name, j.status IN ('completed', 'failed', 'cancelled') \
             FROM jobs j JOIN vms v ON v.id = j.vm_id WHERE j.source_dirty = 1 ORDER BY j.id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records a file job `id` is about to create outside the repository, so that it is
    /// removed should the job die (synced: the file may outlive a power loss).
    pub fn add_job_file(&mut self, id: i64, path: &std::path::Path) -> Result<()> {
        let path = path.to_string_lossy();
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO job_files (job_id, path) VALUES (?1, ?2)",
                (id, path.as_ref()),
            )?;
            Ok(())
        })
    }

    /// Forgets the files of job `id` (they were completed or removed).
    pub fn forget_job_files(&mut self, id: i64) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute("DELETE FROM job_files WHERE job_id = ?1", [id])?;
            Ok(())
        })
    }

    /// Files jobs recorded before creating them: (job id, path, whether the job has ended).
    pub fn job_files(&self) -> Result<Vec<(i64, std::path::PathBuf, bool)>> {
        let mut stmt = self.conn().prepare(
            "SELECT f.job_id, f.path, j.status IN ('completed', 'failed', 'cancelled') \
             FROM job_files f JOIN jobs j ON j.id = f.job_id ORDER BY f.job_id, f.path",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                std::path::PathBuf::from(r.get::<_, String>(1)?),
                r.get(2)?,
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records how many bytes a job has moved.
    pub fn set_job_progress(&mut self, id: i64, done: u64, total: u64) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute(
                "UPDATE jobs SET bytes_done = ?1, bytes_total = ?2 WHERE id = ?3",
                (done as i64, total as i64, id),
            )?;
            Ok(())
        })
    }

    /// Jobs, newest first.
    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut sql = format!("{SELECT} WHERE 1 = 1");
        let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
        if let Some(vm) = &filter.vm {
            sql.push_str(" AND coalesce(v.name, j.vm_name) = ?");
            args.push(Box::new(vm.clone()));
        }
        if let Some(group) = &filter.group {
            sql.push_str(
                " AND j.vm_id IN (SELECT m.vm_id FROM group_members m \
                 JOIN protection_groups g ON g.id = m.group_id WHERE g.name = ?)",
            );
            args.push(Box::new(group.clone()));
        }
        if let Some(policy) = &filter.policy {
            sql.push_str(
                " AND j.vm_id IN (SELECT m.vm_id FROM group_members m \
                 JOIN protection_groups g ON g.id = m.group_id \
                 JOIN policies p ON p.id = g.policy_id WHERE p.name = ?)",
            );
            args.push(Box::new(policy.clone()));
        }
        if let Some(status) = filter.status {
            sql.push_str(" AND j.status = ?");
            args.push(Box::new(status.as_str()));
        }
        sql.push_str(" ORDER BY j.id DESC");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn().prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The job with this id.
    pub fn job(&self, id: i64) -> Result<JobRecord> {
        self.conn()
            .query_row(&format!("{SELECT} WHERE j.id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| {
                Error::not_found(format!("no job with id {id}"))
                    .with_help("See `sendense job list` for the job ids.")
            })
    }
}

fn hostname() -> Option<String> {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        for k in JobKind::ALL {
            assert_eq!(k.as_str().parse::<JobKind>().unwrap(), *k);
        }
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        let err = "sideways".parse::<JobStatus>().unwrap_err();
        assert!(err.message().contains("pending, running"));
    }

    #[test]
    fn log_lines_leave_the_connection_synced_and_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.db"), true).unwrap();
        let job = cat.create_job(JobKind::Backup, None, None).unwrap();
        let sync = |cat: &Catalog| -> i64 {
            cat.conn()
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(sync(&cat), 2, "FULL");
        cat.log_job(job.id, "info", "one", None).unwrap();
        assert_eq!(sync(&cat), 2, "back to FULL after a log line");
        // Also after a failed one (the job does not exist).
        assert!(cat.log_job(job.id + 100, "info", "two", None).is_err());
        assert_eq!(sync(&cat), 2);
        // And after a panic inside the transaction (a library user may catch it).
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = cat.write_unsynced(|_| -> Result<()> { panic!("inside the transaction") });
        }));
        assert!(caught.is_err());
        assert_eq!(sync(&cat), 2, "back to FULL after a panic");
        assert!(
            cat.conn().is_autocommit(),
            "the transaction was rolled back"
        );
        cat.finish_job(job.id, JobStatus::Completed, None).unwrap();
        drop(cat);
        let cat = Catalog::open(&dir.path().join("c.db"), false).unwrap();
        let lines = cat.job_log(job.id).unwrap();
        assert_eq!(lines.len(), 1);
    }

    #[test]
    fn lifecycle_is_recorded_and_final_states_stick() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = Catalog::open(&dir.path().join("c.db"), true).unwrap();
        let job = cat
            .create_job(JobKind::Backup, Some("ghost"), None)
            .unwrap();
        assert_eq!(job.status, JobStatus::Pending);
        assert_eq!(job.vm.as_deref(), Some("ghost"));
        cat.start_job(job.id).unwrap();
        let running = cat.job(job.id).unwrap();
        assert_eq!(running.status, JobStatus::Running);
        assert_eq!(running.pid, Some(std::process::id()));
        assert!(running.started_at.is_some());
        cat.finish_job(job.id, JobStatus::Failed, Some("boom"))
            .unwrap();
        cat.finish_job(job.id, JobStatus::Completed, None).unwrap();
        let done = cat.job(job.id).unwrap();
        assert_eq!(done.status, JobStatus::Failed);
        assert_eq!(done.error.as_deref(), Some("boom"));
        assert!(cat.start_job(job.id).is_err());

        let filtered = cat
            .jobs(&JobFilter {
                status: Some(JobStatus::Completed),
                ..Default::default()
            })
            .unwrap();
        assert!(filtered.is_empty());
        assert_eq!(cat.jobs(&JobFilter::default()).unwrap().len(), 1);
        assert_eq!(cat.job(999).unwrap_err().kind(), crate::ErrorKind::NotFound);

        // A kind that does not watch for `job cancel` is refused, not silently ignored.
        let copy = cat.create_job(JobKind::Copy, None, None).unwrap();
        let err = cat.request_cancel(copy.id).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Refused);
        assert!(err.message().contains("cannot be cancelled"), "{err}");
        assert!(!cat.cancel_requested(copy.id).unwrap());
    }
}
