//! Every process Sendense starts has an owner that stops it on every path.
//!
//! Two kinds of children, two mechanisms, one promise — nothing Sendense starts outlives the
//! work it was started for:
//!
//! - **Foreground children** (`sendense-sna transfer`, hook commands) run while the caller waits.
//!   [`Supervised`] owns one: it starts the child in a process group of its own, asks the kernel
//!   to kill it should the starting thread die (`PR_SET_PDEATHSIG` with SIGKILL — a `kill -9`
//!   of the hub takes its node process with it at once, however busy or stuck the node is;
//!   nothing is left for it to do with no one to report to), and stops and reaps the whole
//!   group when dropped, so an early return or a panic cannot leave it running or a zombie.
//! - **Servers** (qemu-nbd) daemonise and must outlive the thread that started them, so the
//!   kernel cannot tie them to it. They are recorded in the catalog — pid, start time and exact
//!   command line — before anything depends on them, owned by a
//!   [`crate::export::RunningExport`] that stops them when dropped, and stopped by the
//!   reconciliation ([`crate::cleanup`]) when their owning process died.
//!
//! Processes are only ever signalled by pid *and* start time (and, for recorded servers, command
//! line), never by name: a reused pid or a process Sendense did not start is never touched.

use crate::error::{Error, ErrorKind, Result};
use nix::sys::signal::Signal;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A foreground child process, stopped and reaped with its process group when dropped.
#[derive(Debug)]
pub struct Supervised {
    child: Option<Child>,
    name: String,
    grace: Duration,
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
    /// Starts `cmd` as `name` (used in messages), in its own process group, dying with the
    /// calling thread. `grace` is how long [`Supervised::stop`] waits after SIGTERM.
    pub fn spawn(mut cmd: Command, name: &str, grace: Duration) -> Result<Supervised> {
        die_with_parent(&mut cmd);
        // Its own group: a Ctrl-C in the terminal reaches Sendense, which then stops the child
        // in order, and stopping the group also ends what the child started.
        cmd.process_group(0);
        let child = cmd.spawn().map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::MissingTool
            } else {
                ErrorKind::External
            };
            Error::new(kind, format!("cannot start {name}: {e}"))
        })?;
        Ok(Supervised {
            child: Some(child),
            name: name.to_string(),
            grace,
        })
    }

    /// The child, for its pipes (`None` once it was stopped or reaped).
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Its process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `sig` to the child's process group. The child is reaped only in [`Self::reap`],
    /// after its group was killed, so until then the group id cannot belong to anyone else.
    pub fn signal(&mut self, sig: Signal) {
        if let Some(pgid) = self.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), sig);
        }
    }

    /// Whether the child has exited, without reaping it (its group id stays reserved).
    fn exited(&self, block: bool) -> bool {
        use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
        let Some(pid) = self.id().and_then(|p| i32::try_from(p).ok()) else {
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

    /// Waits for the child to exit on its own, then reaps it (whatever it left running in its
    /// group is killed first).
    pub fn wait(mut self) -> Result<ExitStatus> {
        self.exited(true);
        self.reap().ok_or_else(|| {
            Error::new(
                ErrorKind::External,
                format!("waiting for {}: it could not be reaped", self.name),
            )
        })
    }

    /// Stops the child: SIGTERM to its group, SIGKILL after the grace period, then reaps it.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        if !self.exited_within(self.grace) {
            self.signal(Signal::SIGKILL);
        }
        self.reap()
    }

    /// Kills what is left of the child's group, then reaps the child.
    fn reap(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGKILL);
        self.child.take().and_then(|mut c| c.wait().ok())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.child.is_some() {
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
        let guard = Supervised::spawn(cmd, "sh", Duration::from_secs(1)).unwrap();
        let child = ProcId::of(guard.id().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&pidfile).map_or(true, |s| !s.ends_with('\n')) {
            assert!(Instant::now() < deadline, "the child did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let grandchild = ProcId::of(pid).unwrap();
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

    #[test]
    fn what_a_child_leaves_running_goes_when_it_is_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("left");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("sleep 60 & echo $! > {}", pidfile.display()));
        let guard = Supervised::spawn(cmd, "sh", Duration::from_secs(1)).unwrap();
        assert!(guard.wait().unwrap().success());
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let left = ProcId::of(pid);
        assert!(
            left.is_none_or(|p| crate::proc::wait_gone(p, Duration::from_secs(5))),
            "the background child outlived its exited parent"
        );
    }
}
