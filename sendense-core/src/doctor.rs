//! `sendense doctor`: is the catalog whole, and if not, how to rebuild it.
//!
//! The catalog is opened read-only, without migrating or reconciling anything (those would
//! read the damaged pages and fail, or worse, write), and SQLite checks every page, index and
//! foreign key. Whatever it can still read of the registered repositories goes into the
//! advice: the repositories describe every backup themselves, so a fresh state directory and
//! `repo import` of each rebuild the catalog.

use crate::error::{Error, Result};
use crate::sendense::CATALOG_FILE;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `doctor` found. Also the `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DoctorReport {
    /// The catalog file.
    pub catalog: PathBuf,
    /// True when SQLite found nothing wrong.
    pub ok: bool,
    /// What SQLite found (at most [`MAX_LINES`]).
    pub problems: Vec<String>,
    /// The repositories the catalog still names (name, path), for the rebuild.
    pub repositories: Vec<(String, PathBuf)>,
    /// What to do when it is damaged; empty when it is whole.
    pub advice: Vec<String>,
}

/// Lines of SQLite's report kept.
pub const MAX_LINES: usize = 20;

/// Checks the catalog in `state_dir`.
pub fn check(state_dir: &Path) -> Result<DoctorReport> {
    let path = state_dir.join(CATALOG_FILE);
    if !path.is_file() {
        return Err(
            Error::not_found(format!("no catalog at {}", path.display()))
                .with_help("Run `sendense init` first, or pass the right --state-dir."),
        );
    }
    let mut problems = Vec::new();
    let mut repositories = Vec::new();
    match Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Err(e) => problems.push(format!("the catalog cannot be opened: {e}")),
        Ok(conn) => {
            let _ = conn.busy_timeout(std::time::Duration::from_secs(10));
            for pragma in ["integrity_check", "foreign_key_check"] {
                match lines(&conn, pragma) {
                    Ok(found) => problems.extend(found),
                    Err(e) => problems.push(format!("{pragma}: {e}")),
                }
            }
            if let Ok(mut stmt) =
                conn.prepare("SELECT name, path FROM repositories WHERE kind = 'dir' ORDER BY name")
            {
                if let Ok(rows) = stmt.query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        PathBuf::from(r.get::<_, String>(1)?),
                    ))
                }) {
                    repositories.extend(rows.flatten());
                }
            }
        }
    }
    problems.truncate(MAX_LINES);
    let ok = problems.is_empty();
    let advice = if ok {
        Vec::new()
    } else {
        rebuild_advice(state_dir, &repositories)
    };
    Ok(DoctorReport {
        catalog: path,
        ok,
        problems,
        repositories,
        advice,
    })
}

/// The rows of a checking pragma that report a problem (`integrity_check` says `ok` when
/// there is none; `foreign_key_check` returns nothing).
fn lines(conn: &Connection, pragma: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}"))?;
    let columns = stmt.column_count();
    let rows = stmt.query_map([], |r| {
        let cells: Vec<String> = (0..columns)
            .map(|i| match r.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Text(t)) => String::from_utf8_lossy(t).into_owned(),
                Ok(rusqlite::types::ValueRef::Integer(n)) => n.to_string(),
                Ok(rusqlite::types::ValueRef::Null) | Err(_) => String::new(),
                Ok(other) => format!("{other:?}"),
            })
            .collect();
        Ok(cells.join(" "))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let row = row?;
        if row != "ok" {
            out.push(match pragma {
                "foreign_key_check" => format!("a row breaks a reference: {row}"),
                _ => row,
            });
        }
        if out.len() >= MAX_LINES {
            break;
        }
    }
    Ok(out)
}

/// How to rebuild a damaged catalog from the repositories.
fn rebuild_advice(state_dir: &Path, repositories: &[(String, PathBuf)]) -> Vec<String> {
    let dir = state_dir.display();
    let mut steps = vec![
        "The repositories describe every backup themselves; rebuild the catalog from them:"
            .to_string(),
        format!("  mv {dir} {dir}.damaged"),
        format!("  sendense --state-dir {dir} init"),
        format!("  cp {dir}.damaged/config.yaml {dir}/config.yaml   (the settings, if any)"),
    ];
    if repositories.is_empty() {
        steps.push(
            "  sendense repo import PATH --take-over   (for each repository; the catalog no \
             longer tells which they were)"
                .into(),
        );
    }
    for (name, path) in repositories {
        steps.push(format!(
            "  sendense repo import {} --name {name} --take-over",
            path.display()
        ));
    }
    steps.push(
        "--take-over: the new catalog is a new hub, and the repositories belong to the old one. \
         VMs come back from the manifests; their first backups are full; hooks must be added \
         again (`sendense vm add`)."
            .into(),
    );
    steps
}
