//! NBD export rows: the port allocator's state; each row points at the child record of the
//! qemu-nbd serving it.

use super::Catalog;
use crate::error::{Error, Result};
use crate::proc::ProcId;
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;
use std::path::PathBuf;

/// One export Sendense started (or is starting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportRecord {
    /// Row id.
    pub id: i64,
    /// TCP port on 127.0.0.1, when it is a TCP export.
    pub port: Option<u16>,
    /// Unix socket, when it is a socket export.
    pub socket: Option<PathBuf>,
    /// NBD export name.
    pub export: String,
    /// The job it belongs to.
    pub job: Option<i64>,
    /// The sendense process that allocated it.
    pub owner_pid: u32,
    #[serde(skip)]
    /// Start time of the owner.
    pub owner_start: u64,
    /// The qemu-nbd process serving it, once started.
    pub pid: Option<u32>,
    #[serde(skip)]
    /// Start time of qemu-nbd.
    pub pid_start: Option<u64>,
    /// qemu-nbd's command line, as started.
    #[serde(skip)]
    pub cmdline: Option<Vec<String>>,
    /// The record of the qemu-nbd process ([`crate::catalog::ChildRecord`]), once it was
    /// recorded.
    #[serde(skip)]
    pub child: Option<i64>,
    /// The image served.
    pub file: Option<PathBuf>,
    /// When the port was handed out.
    pub allocated_at: String,
}

impl ExportRecord {
    /// The allocating sendense process.
    pub fn owner(&self) -> ProcId {
        ProcId {
            pid: self.owner_pid,
            start: self.owner_start,
        }
    }

    /// The serving qemu-nbd, when recorded.
    pub fn server(&self) -> Option<ProcId> {
        Some(ProcId {
            pid: self.pid?,
            start: self.pid_start?,
        })
    }
}

// The serving process comes from its child record: one record format for every process.
const SELECT: &str = "SELECT e.id, e.port, e.socket, e.export_name, e.job_id, e.owner_pid, \
     e.owner_start, c.pid, c.pid_start, c.cmdline, e.file, e.allocated_at, e.child_id \
     FROM nbd_exports e LEFT JOIN children c ON c.id = e.child_id";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ExportRecord> {
    let cmdline: Option<String> = r.get(9)?;
    Ok(ExportRecord {
        id: r.get(0)?,
        port: r.get(1)?,
        socket: r.get::<_, Option<String>>(2)?.map(PathBuf::from),
        export: r.get(3)?,
        job: r.get(4)?,
        owner_pid: r.get(5)?,
        owner_start: r.get::<_, i64>(6)? as u64,
        pid: r.get(7)?,
        pid_start: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        cmdline: cmdline.and_then(|c| serde_json::from_str(&c).ok()),
        file: r.get::<_, Option<String>>(10)?.map(PathBuf::from),
        allocated_at: r.get(11)?,
        child: r.get(12)?,
    })
}

/// Where a new export will listen.
#[derive(Debug, Clone)]
pub enum Listen {
    /// A free port from this inclusive range, on 127.0.0.1.
    PortRange(u16, u16),
    /// This exact port on 127.0.0.1.
    Port(u16),
    /// A Unix socket.
    Socket(PathBuf),
}

impl Catalog {
    /// Reserves an export: for TCP the lowest port of the range that no allocation holds and
    /// `bindable` accepts (the bind test). Runs under the catalog's write lock, so concurrent
    /// processes never get the same port. Allocations whose owner and server are both gone are
    /// reclaimed first.
    pub fn allocate_export(
        &mut self,
        listen: &Listen,
        export: &str,
        job: Option<i64>,
        file: Option<&std::path::Path>,
        bindable: impl Fn(u16) -> bool,
    ) -> Result<ExportRecord> {
        let me = ProcId::current();
        let now = crate::time::now_rfc3339();
        // Unsynced, as every change to these rows: a power loss ends the processes they are
        // about, and whatever it takes back cleanup no longer needs.
        let id = self.write_unsynced(|tx| {
            // Reclaim allocations nobody holds any more.
            let rows: Vec<ExportRecord> = {
                let mut stmt = tx.prepare(SELECT)?;
                let rows = stmt.query_map([], from_row)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for r in &rows {
                let server_alive = r.server().is_some_and(|s| s.is_alive());
                // A row with a command line but no server pid may have a server nobody could
                // record: the reconciliation looks for it before the row goes.
                let unknown_server = r.server().is_none() && r.cmdline.is_some();
                if !r.owner().is_alive() && !server_alive && !unknown_server {
                    tx.execute("DELETE FROM nbd_exports WHERE id = ?1", [r.id])?;
                }
            }
            let taken: std::collections::HashSet<u16> = {
                let mut stmt = tx.prepare("SELECT port FROM nbd_exports WHERE port IS NOT NULL")?;
                let rows = stmt.query_map([], |r| r.get::<_, u16>(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let (port, socket) = match listen {
                Listen::PortRange(first, last) => {
                    let port = (*first..=*last)
                        .find(|p| !taken.contains(p) && bindable(*p))
                        .ok_or_else(|| {
                            Error::busy(format!(
                                "no free NBD port in {first}-{last}: all {} are in use",
                                u32::from(*last) - u32::from(*first) + 1
                            ))
                            .with_help("Wait for running jobs to finish, run `sendense cleanup`, or widen `nbd_ports` in the config.")
                        })?;
                    (Some(port), None)
                }
                Listen::Port(p) => {
                    if taken.contains(p) || !bindable(*p) {
                        return Err(Error::busy(format!("port {p} on 127.0.0.1 is in use"))
                            .with_help("Choose another port, or leave it out to get a free one."));
                    }
                    (Some(*p), None)
                }
                Listen::Socket(path) => (None, Some(path.to_string_lossy().into_owned())),
            };
            tx.execute(
                "INSERT INTO nbd_exports (port, socket, export_name, job_id, owner_pid, owner_start, file, allocated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                (
                    port,
                    socket,
                    export,
                    job,
                    me.pid,
                    me.start as i64,
                    file.map(|f| f.to_string_lossy().into_owned()),
                    &now,
                ),
            )
            .map_err(|e| {
                super::unique_violation(e, || Error::busy(format!("socket for export `{export}` is in use")))
            })?;
            Ok(tx.last_insert_rowid())
        })?;
        self.export(id)
    }

    /// Links an export to the record of the qemu-nbd serving it.
    pub fn set_export_child(&mut self, id: i64, child: i64) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute(
                "UPDATE nbd_exports SET child_id = ?1 WHERE id = ?2",
                (child, id),
            )?;
            Ok(())
        })
    }

    /// Forgets an export (its process is gone).
    pub fn release_export(&mut self, id: i64) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute("DELETE FROM nbd_exports WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// One export.
    pub fn export(&self, id: i64) -> Result<ExportRecord> {
        self.conn()
            .query_row(&format!("{SELECT} WHERE e.id = ?1"), [id], from_row)
            .optional()?
            .ok_or_else(|| Error::not_found(format!("no NBD export with id {id}")))
    }

    /// Every recorded export.
    pub fn exports(&self) -> Result<Vec<ExportRecord>> {
        let mut stmt = self
            .conn()
            .prepare(&format!("{SELECT} ORDER BY e.port, e.socket"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
