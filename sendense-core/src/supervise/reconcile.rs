//! The one reconciliation of recorded children (see [`crate::supervise`]).

use crate::catalog::{Catalog, ChildRecord};
use crate::error::Result;
use crate::proc::{self, ProcId};
use nix::sys::signal::Signal;
use std::time::Duration;

/// A recorded child whose starting sendense process is gone.
#[derive(Debug, Clone)]
pub struct Orphan {
    /// Its record.
    pub record: ChildRecord,
    /// The processes that still run as recorded (none when it ended with its starter).
    pub running: Vec<ProcId>,
    /// Why stopping it failed (the record then stays for the next reconciliation).
    pub error: Option<String>,
}

/// Whether `id` still is the process recorded with `cmdline`.
fn runs_as_recorded(id: ProcId, cmdline: &[String]) -> bool {
    id.is_alive() && proc::cmdline(id.pid).as_deref() == Some(cmdline)
}

/// Whether `id` still is one of the processes `record` describes.
fn still_ours(record: &ChildRecord, id: ProcId) -> bool {
    if record.process == Some(id) {
        return runs_as_recorded(id, &record.cmdline);
    }
    match &record.token {
        Some(token) => id.is_alive() && proc::has_env(id.pid, super::TOKEN_VAR, token),
        None => runs_as_recorded(id, &record.cmdline),
    }
}

/// The processes that still run as `record` describes them: the child itself (same pid, start
/// time and command line) and, for a child with a marker, whatever it started (the marker is
/// in their environment — also after the child died).
pub fn running(record: &ChildRecord) -> Vec<ProcId> {
    if record.cmdline.is_empty() {
        return Vec::new();
    }
    let mut found = match record.process {
        Some(id) if runs_as_recorded(id, &record.cmdline) => vec![id],
        Some(_) => Vec::new(),
        // Recorded before it ran, and its starter died before recording its pid: a child with
        // a marker is found by it (below; a command line alone may be someone else's too), one
        // without runs with exactly the recorded command line, if it came up.
        None if record.token.is_some() => Vec::new(),
        None => proc::with_cmdline(&record.cmdline),
    };
    if let Some(token) = &record.token {
        for id in proc::with_env(super::TOKEN_VAR, token) {
            if !found.contains(&id) {
                found.push(id);
            }
        }
    }
    found
}

/// Every recorded child whose starter is gone, with what of it still runs.
pub fn orphans(catalog: &Catalog) -> Result<Vec<Orphan>> {
    Ok(catalog
        .children()?
        .into_iter()
        .filter(|c| !c.owner.is_alive())
        .map(|record| Orphan {
            running: running(&record),
            record,
            error: None,
        })
        .collect())
}

/// Stops what still runs of `orphan` — its whole process group when it leads one, and what it
/// started — and forgets its record once nothing does.
pub fn stop(catalog: &mut Catalog, orphan: &mut Orphan, grace: Duration) -> Result<()> {
    let record = &orphan.record;
    // Checked again right before the signals: only these very processes.
    let ids: Vec<ProcId> = orphan
        .running
        .iter()
        .copied()
        .filter(|id| still_ours(record, *id))
        .collect();
    if record.group_leader {
        if let Some(leader) = record.process.filter(|l| ids.contains(l)) {
            stop_group(leader, grace);
        }
    }
    if let Err(e) = proc::terminate_all(&ids, grace) {
        orphan.error = Some(e.message().to_string());
        return Err(e);
    }
    catalog.forget_child(record.id)
}

/// SIGTERM to the group `leader` leads, SIGKILL to what is left after `grace`.
fn stop_group(leader: ProcId, grace: Duration) {
    let Ok(pgid) = i32::try_from(leader.pid) else {
        return;
    };
    let pgid = nix::unistd::Pid::from_raw(pgid);
    // Only while it still leads its group: a group id stays reserved while any member lives.
    if nix::unistd::getpgid(Some(pgid)) != Ok(pgid) {
        return;
    }
    let _ = nix::sys::signal::killpg(pgid, Signal::SIGTERM);
    if !proc::wait_gone(leader, grace) {
        let _ = nix::sys::signal::killpg(pgid, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::NewChild;
    use crate::supervise::ChildKind;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("sendense.db"), true).unwrap();
        (dir, cat)
    }

    /// A process that started and ended: its identity is the owner of an orphan.
    fn dead_process() -> ProcId {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcId::of(child.id()).unwrap();
        child.wait().unwrap();
        id
    }

    fn sleeper(tag: &str) -> (std::process::Child, ProcId, Vec<String>) {
        let cmdline = vec!["sleep".to_string(), format!("60.{tag}")];
        let child = std::process::Command::new(&cmdline[0])
            .arg(&cmdline[1])
            .spawn()
            .unwrap();
        let id = ProcId::of(child.id()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while proc::cmdline(id.pid).as_ref() != Some(&cmdline) {
            assert!(std::time::Instant::now() < deadline, "sleep did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        (child, id, cmdline)
    }

    fn record(
        cat: &mut Catalog,
        process: Option<ProcId>,
        cmdline: &[String],
        owner: ProcId,
    ) -> i64 {
        let id = cat
            .record_child(&NewChild {
                kind: ChildKind::Hook,
                label: "test",
                job: None,
                process,
                cmdline,
                group_leader: false,
                token: None,
            })
            .unwrap();
        cat.conn()
            .execute(
                "UPDATE children SET owner_pid = ?1, owner_start = ?2 WHERE id = ?3",
                (owner.pid, owner.start as i64, id),
            )
            .unwrap();
        id
    }

    #[test]
    fn only_children_of_dead_starters_that_still_run_as_recorded_are_stopped() {
        let (_dir, mut cat) = catalog();
        let dead = dead_process();
        let me = ProcId::current();
        // Orphan, still running as recorded: stopped.
        let (mut a, a_id, a_cmd) = sleeper("1");
        record(&mut cat, Some(a_id), &a_cmd, dead);
        // Orphan recorded before its pid was known: found by its command line, stopped.
        let (mut b, b_id, b_cmd) = sleeper("2");
        record(&mut cat, None, &b_cmd, dead);
        // Orphan whose pid now runs something else (a reused pid): left alone, record dropped.
        let (c, c_id, _) = sleeper("3");
        record(&mut cat, Some(c_id), &["qemu-nbd".to_string()], dead);
        // A child of a live starter: not an orphan at all.
        let (d, d_id, d_cmd) = sleeper("4");
        let kept = record(&mut cat, Some(d_id), &d_cmd, me);

        let orphans = crate::supervise::reconcile(&mut cat, true, Duration::from_secs(5)).unwrap();
        assert_eq!(orphans.len(), 3, "the dry run lists the three orphans");
        let running: Vec<_> = orphans.iter().map(|o| o.running.clone()).collect();
        assert_eq!(running, [vec![a_id], vec![b_id], vec![]]);
        assert!(
            a_id.is_alive() && b_id.is_alive(),
            "a dry run stops nothing"
        );
        assert_eq!(cat.children().unwrap().len(), 4);

        crate::supervise::reconcile(&mut cat, false, Duration::from_secs(5)).unwrap();
        a.wait().unwrap();
        b.wait().unwrap();
        assert!(
            c_id.is_alive(),
            "a process that is not the recorded one is never touched"
        );
        assert!(
            d_id.is_alive(),
            "a live starter's child is its own business"
        );
        let left: Vec<i64> = cat.children().unwrap().iter().map(|c| c.id).collect();
        assert_eq!(left, [kept]);
        for mut p in [c, d] {
            p.kill().unwrap();
            p.wait().unwrap();
        }
    }
}
