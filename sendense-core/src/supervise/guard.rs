//! The one guard type: [`Supervised`] owns a child process and stops it on every path.

use super::{ChildKind, Ledger};
use crate::catalog::{Catalog, NewChild};
use crate::error::{Error, ErrorKind, Result};
use crate::proc::ProcId;
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child process Sendense started, and its record: stopped (its whole process group, for a
/// foreground child), reaped and forgotten when dropped. See [`crate::supervise`].
#[derive(Debug)]
pub struct Supervised {
    held: Held,
    name: String,
    grace: Duration,
    /// Its record, when one was kept.
    record: Option<(Ledger, i64)>,
    /// The marker in a foreground child's environment, inherited by what it starts.
    token: Option<String>,
}

/// What the guard holds.
#[derive(Debug)]
enum Held {
    /// A foreground child of this process, leading its own process group.
    Child(Child),
    /// A server that forked away from its starter: known by pid and start time.
    Server(ProcId),
    /// Stopped, reaped or handed over: nothing left to do.
    Ended,
}

/// Makes `cmd` die with the calling thread: SIGKILL when it ends, however it ends.
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2) and
    // getppid(2), both async-signal-safe; it touches no memory shared with the parent.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died before the prctl took effect: then nobody would ever
            // send the signal, so give up instead of running as an orphan.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("the starting process is gone"));
            }
            Ok(())
        });
    }
}

impl Supervised {
    /// Starts `cmd` as a foreground child of kind `kind` (`label` says what it does, for
    /// messages and the record), in its own process group, dying with the calling thread, and
    /// records it through `ledger` (a node, which has no catalog, passes `None`). `grace` is
    /// how long [`Supervised::stop`] waits after SIGTERM.
    pub fn spawn(
        mut cmd: Command,
        kind: ChildKind,
        label: &str,
        grace: Duration,
        ledger: Option<&Ledger>,
    ) -> Result<Supervised> {
        let name = format!("{kind} ({label})");
        let cmdline = super::command_line(&cmd);
        // Everything the child starts inherits the marker: what it leaves running after it
        // died is found by it (see `reconcile`).
        let token = uuid::Uuid::new_v4().simple().to_string();
        cmd.env(super::TOKEN_VAR, &token);
        die_with_parent(&mut cmd);
        // Its own group: a Ctrl-C in the terminal reaches Sendense, which then stops the child
        // in order, and stopping the group also ends what the child started.
        cmd.process_group(0);
        // Recorded before it runs, with its marker: killed right after the spawn, Sendense
        // leaves a record by which the next command finds the child and what it started.
        let recorded = ledger
            .map(|ledger| {
                ledger
                    .record(&NewChild {
                        kind,
                        label,
                        job: ledger.job(),
                        process: None,
                        cmdline: &cmdline,
                        group_leader: true,
                        token: Some(&token),
                    })
                    .map(|id| (ledger.clone(), id))
            })
            .transpose()?;
        let child = cmd.spawn().map_err(|e| {
            if let Some((ledger, id)) = &recorded {
                ledger.forget(*id);
            }
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::MissingTool
            } else {
                ErrorKind::External
            };
            Error::new(kind, format!("cannot start {name}: {e}"))
        })?;
        let process = ProcId::of(child.id());
        let mut guard = Supervised {
            held: Held::Child(child),
            name,
            grace,
            record: None,
            token: Some(token.clone()),
        };
        if let Some((ledger, id)) = recorded {
            // Its pid too; without it the guard stops the child at once (it drops), and the
            // record still finds whatever escaped by its marker.
            guard.record = Some((ledger.clone(), id));
            if let Some(process) = process {
                ledger.set_process(id, process)?;
            }
        }
        Ok(guard)
    }

    /// Takes charge of a server that forked away from its starter, recorded as row `record`
    /// of `ledger`'s catalog (see [`crate::catalog::Catalog::record_child`]).
    pub fn server(
        process: ProcId,
        name: &str,
        grace: Duration,
        record: Option<(Ledger, i64)>,
    ) -> Supervised {
        Supervised {
            held: Held::Server(process),
            name: name.to_string(),
            grace,
            record,
            token: None,
        }
    }

    /// The child, for its pipes (`None` for a server, or once it was stopped or reaped).
    pub fn child(&mut self) -> Option<&mut Child> {
        match &mut self.held {
            Held::Child(c) => Some(c),
            _ => None,
        }
    }

    /// Its process id.
    pub fn id(&self) -> Option<u32> {
        match &self.held {
            Held::Child(c) => Some(c.id()),
            Held::Server(p) => Some(p.pid),
            Held::Ended => None,
        }
    }

    /// Its process, by pid and start time.
    pub fn process(&self) -> Option<ProcId> {
        match &self.held {
            Held::Child(c) => ProcId::of(c.id()),
            Held::Server(p) => Some(*p),
            Held::Ended => None,
        }
    }

    /// Whether the process still runs.
    pub fn is_alive(&self) -> bool {
        match &self.held {
            Held::Child(_) => !self.exited(false),
            Held::Server(p) => p.is_alive(),
            Held::Ended => false,
        }
    }

    /// Sends `sig` to the child's process group (to a server: to the server). A foreground
    /// child is reaped only in [`Self::reap`], after its group was killed, so until then the
    /// group id cannot belong to anyone else.
    pub fn signal(&mut self, sig: Signal) {
        match &self.held {
            Held::Child(c) => {
                if let Ok(pgid) = i32::try_from(c.id()) {
                    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
                }
            }
            Held::Server(p) => {
                let _ = crate::proc::signal(*p, sig);
            }
            Held::Ended => {}
        }
    }

    /// Whether the child has exited, without reaping it (its group id stays reserved).
    fn exited(&self, block: bool) -> bool {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let pid = match &self.held {
            Held::Child(c) => c.id(),
            Held::Server(p) => return !p.is_alive(),
            Held::Ended => return true,
        };
        let Ok(pid) = i32::try_from(pid) else {
            return true;
        };
        let mut flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        if !block {
            flags |= WaitPidFlag::WNOHANG;
        }
        loop {
            match waitid(Id::Pid(nix::unistd::Pid::from_raw(pid)), flags) {
                Ok(WaitStatus::StillAlive) => return false,
                Err(nix::errno::Errno::EINTR) => continue,
                // Exited, or (an error) nothing left to wait for.
                _ => return true,
            }
        }
    }

    /// Waits up to `limit` for the child to exit; true when it did. It is not reaped yet.
    pub fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut pause = Duration::from_millis(1);
        while !self.exited(false) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        true
    }

    /// Waits for a foreground child to exit on its own, then reaps it (whatever it left
    /// running in its group is killed first) and forgets its record.
    pub fn wait(mut self) -> Result<ExitStatus> {
        if matches!(self.held, Held::Server(_)) {
            return Err(Error::internal(format!(
                "{} is a server: stop it instead of waiting",
                self.name
            )));
        }
        self.exited(true);
        self.reap().ok_or_else(|| {
            Error::new(
                ErrorKind::External,
                format!("waiting for {}: it could not be reaped", self.name),
            )
        })
    }

    /// Stops the child: SIGTERM to its group, SIGKILL after the grace period, then reaps it
    /// and forgets its record. For a server: SIGTERM, SIGKILL after the grace period, then waits
    /// until it is gone (its files and locks with it); `None` always.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.stop_now()
    }

    /// [`Self::stop`], reporting a server that survived SIGKILL (its record then stays, so the
    /// reconciliation keeps trying).
    pub fn stop_checked(mut self) -> Result<()> {
        if let Held::Server(p) = self.held {
            crate::proc::terminate(p, self.grace)?;
            self.ended();
            return Ok(());
        }
        self.stop_now();
        Ok(())
    }

    fn stop_now(&mut self) -> Option<ExitStatus> {
        if let Held::Server(p) = self.held {
            match crate::proc::terminate(p, self.grace) {
                Ok(()) => self.ended(),
                Err(e) => {
                    tracing::warn!("stopping {}: {e}", self.name);
                    self.held = Held::Ended;
                }
            }
            return None;
        }
        self.signal(Signal::SIGTERM);
        if !self.exited_within(self.grace) {
            self.signal(Signal::SIGKILL);
        }
        self.reap()
    }

    /// For a caller that stopped several servers at once ([`crate::proc::terminate_all`]):
    /// forgets the record, through `catalog`, when the process is gone, and returns whether it
    /// is. One still running keeps its record for the reconciliation.
    pub fn settle(mut self, catalog: &mut Catalog) -> Result<bool> {
        if self.is_alive() {
            self.held = Held::Ended;
            self.record = None;
            return Ok(false);
        }
        self.held = Held::Ended;
        match self.record.take() {
            Some((_, id)) => catalog.forget_child(id).map(|()| true),
            None => Ok(true),
        }
    }

    /// The process is gone: forget its record.
    fn ended(&mut self) {
        self.held = Held::Ended;
        if let Some((ledger, id)) = self.record.take() {
            ledger.forget(id);
        }
    }

    /// Kills what is left of the child's group and whatever else it started (found by its
    /// marker, also when it left the group), then reaps the child and forgets its record.
    fn reap(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGKILL);
        if let Some(token) = &self.token {
            for id in crate::proc::with_env(super::TOKEN_VAR, token) {
                let _ = crate::proc::signal(id, Signal::SIGKILL);
            }
        }
        let status = match std::mem::replace(&mut self.held, Held::Ended) {
            Held::Child(mut c) => c.wait().ok(),
            _ => None,
        };
        self.ended();
        status
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if !matches!(self.held, Held::Ended) {
            tracing::debug!("stopping {} on an early exit", self.name);
            self.stop_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::ProcId;

    #[test]
    fn dropping_the_guard_stops_the_child_and_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
        let guard =
            Supervised::spawn(cmd, ChildKind::Hook, "sh", Duration::from_secs(1), None).unwrap();
        let child = ProcId::of(guard.id().unwrap()).unwrap();
        let grandchild = ProcId::of(pid_in(&pidfile)).unwrap();
        drop(guard);
        assert!(!child.is_alive(), "the child was reaped");
        assert!(
            crate::proc::wait_gone(grandchild, Duration::from_secs(5)),
            "the grandchild went with its group"
        );
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        // A thread starts the child and ends without stopping it (as a killed process would):
        // the kernel's parent-death signal ends the child.
        let id = std::thread::spawn(|| {
            let mut cmd = Command::new("sleep");
            cmd.arg("60");
            die_with_parent(&mut cmd);
            let child = cmd.spawn().unwrap();
            let id = ProcId::of(child.id()).unwrap();
            std::mem::forget(child);
            id
        })
        .join()
        .unwrap();
        // Not our child to reap any more in a way `wait_gone` sees: it becomes a zombie.
        assert!(
            crate::proc::wait_gone(id, Duration::from_secs(5)),
            "the child outlived its starting thread"
        );
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(id.pid as i32),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }

    /// The pid a test child wrote into `file`, once it is there.
    fn pid_in(file: &std::path::Path) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(text) = std::fs::read_to_string(file) {
                if text.ends_with('\n') {
                    return text.trim().parse().unwrap();
                }
            }
            assert!(Instant::now() < deadline, "the child did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn what_a_child_leaves_running_goes_when_it_is_reaped() {
        // In its group, and moved to a session of its own (found by the marker).
        for start in ["", "setsid "] {
            let dir = tempfile::tempdir().unwrap();
            let pidfile = dir.path().join("left");
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg(format!("{start}sleep 60 & echo $! > {}", pidfile.display()));
            let guard = Supervised::spawn(cmd, ChildKind::Hook, "sh", Duration::from_secs(1), None)
                .unwrap();
            assert!(guard.wait().unwrap().success());
            let left = ProcId::of(pid_in(&pidfile));
            assert!(
                left.is_none_or(|p| crate::proc::wait_gone(p, Duration::from_secs(5))),
                "`{start}sleep &` outlived its exited parent"
            );
        }
    }

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sendense.db");
        Catalog::open(&path, true).unwrap();
        let ledger = Ledger::new(&path, None);
        (dir, ledger)
    }

    fn recorded(cmd: Command, ledger: &Ledger) -> Supervised {
        let grace = Duration::from_secs(1);
        Supervised::spawn(cmd, ChildKind::Hook, "a test", grace, Some(ledger)).unwrap()
    }

    #[test]
    fn a_child_is_recorded_while_it_runs_and_forgotten_when_it_ends() {
        let (_dir, ledger) = ledger();
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let guard = recorded(cmd, &ledger);
        let children = ledger.open().unwrap().children().unwrap();
        assert_eq!(children.len(), 1);
        let c = &children[0];
        assert_eq!((c.kind, c.label.as_str()), (ChildKind::Hook, "a test"));
        assert_eq!(c.process, guard.process());
        assert_eq!(c.cmdline, ["sleep", "60"]);
        assert!(c.group_leader && c.token.is_some());
        assert_eq!(c.owner, ProcId::current());
        drop(guard);
        assert!(ledger.open().unwrap().children().unwrap().is_empty());
    }

    #[test]
    fn what_a_dead_child_left_running_is_found_by_its_marker_and_stopped() {
        let (dir, ledger) = ledger();
        let pidfile = dir.path().join("left");
        let mut cmd = Command::new("sh");
        // The background sleep leaves the group, as a daemonising hook would.
        cmd.arg("-c").arg(format!(
            "setsid sleep 60 & echo $! > {}; wait",
            pidfile.display()
        ));
        let guard = recorded(cmd, &ledger);
        let left = ProcId::of(pid_in(&pidfile)).unwrap();
        // The starter dies without a word (as a `kill -9` of the hub), the child with it, and
        // only what the child started remains.
        let leader = guard.process().unwrap();
        std::mem::forget(guard);
        let mut cat = ledger.open().unwrap();
        let dead = {
            let mut c = Command::new("true").spawn().unwrap();
            let id = ProcId::of(c.id()).unwrap();
            c.wait().unwrap();
            id
        };
        cat.conn()
            .execute(
                "UPDATE children SET owner_pid = ?1, owner_start = ?2",
                (dead.pid, dead.start as i64),
            )
            .unwrap();
        crate::proc::signal(leader, Signal::SIGKILL).unwrap();
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(leader.pid as i32), None);

        let orphans = crate::supervise::reconcile(&mut cat, false, Duration::from_secs(5)).unwrap();
        assert_eq!(orphans.len(), 1);
        assert_eq!(
            orphans[0].running,
            [left],
            "found by its marker, and nothing else"
        );
        assert!(
            crate::proc::wait_gone(left, Duration::from_secs(5)),
            "what the dead child left running was stopped"
        );
        assert!(cat.children().unwrap().is_empty());
    }
}
