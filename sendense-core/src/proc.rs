//! Process identity and signals. Sendense only ever signals processes it started, identified by
//! pid *and* start time (so a reused pid is never mistaken for ours) and, for qemu-nbd, by the
//! exact command line it was started with — never by process name.

use crate::error::{Error, ErrorKind, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// A process: its pid and its start time in clock ticks since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    /// Process id.
    pub pid: u32,
    /// Start time (field 22 of /proc/PID/stat).
    pub start: u64,
}

/// Fields of /proc/PID/stat after the command name: state and start time.
fn stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 22 overall is index 19 after "pid (comm)".
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl ProcId {
    /// This process.
    pub fn current() -> ProcId {
        let pid = std::process::id();
        ProcId {
            pid,
            start: stat(pid).map(|(_, s)| s).unwrap_or(0),
        }
    }

    /// The process with this pid now, if there is one.
    pub fn of(pid: u32) -> Option<ProcId> {
        stat(pid).map(|(_, start)| ProcId { pid, start })
    }

    /// True while this very process runs (not a newer process with the same pid). A process
    /// counts as ended only once all its threads have: a leader thread shows as a zombie while
    /// the others still exit, and until the last one has, its files — listening sockets, image
    /// locks — are still open.
    pub fn is_alive(&self) -> bool {
        match stat(self.pid) {
            Some((state, start)) if start == self.start => {
                !matches!(state, 'Z' | 'X') || other_threads(self.pid)
            }
            _ => false,
        }
    }
}

/// Whether threads other than the leader of process `pid` still exist.
fn other_threads(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .any(|t| t.file_name().to_str() != Some(&pid.to_string()))
        })
        .unwrap_or(false)
}

/// The command line of a process, as its arguments.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The processes whose command line is exactly `cmdline` (zombies excluded).
pub fn with_cmdline(cmdline: &[String]) -> Vec<ProcId> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| cmdline_is(*pid, cmdline))
        .filter_map(ProcId::of)
        .filter(ProcId::is_alive)
        .collect()
}

/// Whether process `pid` was started with `var=value` in its environment.
pub fn has_env(pid: u32, var: &str, value: &str) -> bool {
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let want = format!("{var}={value}");
    raw.split(|b| *b == 0).any(|e| e == want.as_bytes())
}

/// The processes started with `var=value` in their environment (zombies excluded).
pub fn with_env(var: &str, value: &str) -> Vec<ProcId> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| has_env(*pid, var, value))
        .filter_map(ProcId::of)
        .filter(ProcId::is_alive)
        .collect()
}

fn cmdline_is(pid: u32, want: &[String]) -> bool {
    cmdline(pid).is_some_and(|c| c == want)
}

/// Sends `signal` to `id` if it is still that process.
pub fn signal(id: ProcId, sig: Signal) -> Result<()> {
    if !id.is_alive() {
        return Ok(());
    }
    let Ok(pid) = i32::try_from(id.pid) else {
        return Err(Error::internal(format!("pid {} out of range", id.pid)));
    };
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::new(
            ErrorKind::External,
            format!("cannot signal process {}: {e}", id.pid),
        )),
    }
}

/// Stops `id`: SIGTERM, then SIGKILL after `grace`, then waits until it is gone (a child must be
/// reaped by the caller; this only waits for a non-child to disappear or become a zombie).
pub fn terminate(id: ProcId, grace: Duration) -> Result<()> {
    signal(id, Signal::SIGTERM)?;
    if wait_gone(id, grace) {
        return Ok(());
    }
    signal(id, Signal::SIGKILL)?;
    if wait_gone(id, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::External,
            format!("process {} did not exit after SIGKILL", id.pid),
        ))
    }
}

/// [`terminate`] for several processes at once: all get SIGTERM before any is waited for.
pub fn terminate_all(ids: &[ProcId], grace: Duration) -> Result<()> {
    let mut first_err = None;
    for id in ids {
        if let Err(e) = signal(*id, Signal::SIGTERM) {
            first_err.get_or_insert(e);
        }
    }
    let deadline = Instant::now() + grace;
    for id in ids {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_gone(*id, left) {
            if let Err(e) = terminate(*id, Duration::ZERO) {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Waits up to `limit` for `id` to end; true when it did.
pub fn wait_gone(id: ProcId, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while id.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        // Not a child, so no waitpid: look often, most processes end within milliseconds.
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_only_with_the_process() {
        let me = ProcId::current();
        assert!(me.is_alive());
        assert_eq!(ProcId::of(me.pid), Some(me));
        let reused = ProcId {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(
            !reused.is_alive(),
            "a different start time is another process"
        );
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = ProcId::of(child.id()).unwrap();
        // Right after spawn the new image may not have its arguments yet.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while cmdline(id.pid).unwrap_or_default().is_empty() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cmdline(id.pid).unwrap(), ["sleep", "30"]);
        terminate(id, Duration::from_secs(5)).unwrap();
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
