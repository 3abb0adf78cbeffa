//! Child process rows: the one record of every process Sendense starts (see
//! [`crate::supervise`]).

use super::Catalog;
use crate::error::{Error, Result};
use crate::proc::ProcId;
use crate::supervise::ChildKind;
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;

/// A process Sendense started and has not yet seen end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildRecord {
    /// Row id.
    pub id: i64,
    /// What it is.
    pub kind: ChildKind,
    /// What it does, for people ("export pgtest1-disk-2000", "pre-snapshot hook").
    pub label: String,
    /// The job it works for.
    pub job: Option<i64>,
    /// The sendense process that started it.
    #[serde(skip)]
    pub owner: ProcId,
    /// The child, once it runs (`None` while it starts).
    #[serde(skip)]
    pub process: Option<ProcId>,
    /// Its pid, once known.
    pub pid: Option<u32>,
    /// Its exact command line, as started.
    #[serde(skip)]
    pub cmdline: Vec<String>,
    /// It leads a process group of its own, stopped as a whole.
    pub group_leader: bool,
    /// The marker in its environment (`SENDENSE_SUPERVISED=<token>`), inherited by everything
    /// it starts.
    #[serde(skip)]
    pub token: Option<String>,
    /// When it was started (RFC 3339).
    pub started_at: String,
}

/// What to record about a child about to start (or just started).
#[derive(Debug, Clone)]
pub struct NewChild<'a> {
    /// What it is.
    pub kind: ChildKind,
    /// What it does.
    pub label: &'a str,
    /// The job it works for.
    pub job: Option<i64>,
    /// The child, when it already runs.
    pub process: Option<ProcId>,
    /// Its exact command line.
    pub cmdline: &'a [String],
    /// It leads a process group of its own.
    pub group_leader: bool,
    /// The marker in its environment.
    pub token: Option<&'a str>,
}

const SELECT: &str = "SELECT id, kind, label, job_id, owner_pid, owner_start, pid, pid_start, \
     cmdline, group_leader, started_at, token FROM children";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ChildRecord> {
    let kind: String = r.get(1)?;
    let kind = ChildKind::parse(&kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown child kind `{kind}`").into(),
        )
    })?;
    let pid: Option<u32> = r.get(6)?;
    let pid_start: Option<i64> = r.get(7)?;
    let cmdline: String = r.get(8)?;
    Ok(ChildRecord {
        id: r.get(0)?,
        kind,
        label: r.get(2)?,
        job: r.get(3)?,
        owner: ProcId {
            pid: r.get(4)?,
            start: r.get::<_, i64>(5)? as u64,
        },
        process: pid.zip(pid_start).map(|(pid, start)| ProcId {
            pid,
            start: start as u64,
        }),
        pid,
        // A command line that does not parse matches no process: the row is only forgotten.
        cmdline: serde_json::from_str(&cmdline).unwrap_or_default(),
        group_leader: r.get(9)?,
        started_at: r.get(10)?,
        token: r.get(11)?,
    })
}

impl Catalog {
    /// Records a child this process starts; returns its row id.
    pub fn record_child(&mut self, child: &NewChild<'_>) -> Result<i64> {
        let me = ProcId::current();
        let cmdline = serde_json::to_string(child.cmdline)
            .map_err(|e| Error::internal(format!("command line: {e}")))?;
        let now = crate::time::now_rfc3339();
        // Unsynced, as every change to these rows: a power loss ends the processes they are
        // about.
        self.write_unsynced(|tx| {
            tx.execute(
                "INSERT INTO children (kind, label, job_id, owner_pid, owner_start, pid, \
                 pid_start, cmdline, group_leader, started_at, token) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                (
                    child.kind.as_str(),
                    child.label,
                    child.job,
                    me.pid,
                    me.start as i64,
                    child.process.map(|p| p.pid),
                    child.process.map(|p| p.start as i64),
                    &cmdline,
                    child.group_leader,
                    &now,
                    child.token,
                ),
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Records the process of a child that was recorded before it ran.
    pub fn set_child_process(&mut self, id: i64, process: ProcId) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute(
                "UPDATE children SET pid = ?1, pid_start = ?2 WHERE id = ?3",
                (process.pid, process.start as i64, id),
            )?;
            Ok(())
        })
    }

    /// Forgets a child (it ended, or it was never started).
    pub fn forget_child(&mut self, id: i64) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute("DELETE FROM children WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// One child.
    pub fn child(&self, id: i64) -> Result<Option<ChildRecord>> {
        Ok(self
            .conn()
            .query_row(&format!("{SELECT} WHERE id = ?1"), [id], from_row)
            .optional()?)
    }

    /// Every recorded child, oldest first.
    pub fn children(&self) -> Result<Vec<ChildRecord>> {
        let mut stmt = self.conn().prepare(&format!("{SELECT} ORDER BY id"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
