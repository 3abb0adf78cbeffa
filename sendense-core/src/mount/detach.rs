//! `sendense mount` goes on in the background: the command starts itself again in a session of
//! its own (no terminal hangs it up), waits until that process says the mount is ready — or
//! ends, failing — and passes on what it printed. The background process then leaves the
//! terminal's pipes ([`ready`]).

use crate::error::{Error, ErrorKind, Result};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};

/// The environment variable naming the descriptor the background process reports readiness on.
pub const READY_FD_VAR: &str = "SENDENSE_READY_FD";

/// The descriptor it gets.
const READY_FD: i32 = 3;

/// How the background process fared.
#[derive(Debug)]
pub enum Detached {
    /// It is ready, and runs on; what it printed.
    Ready {
        /// Its standard output.
        stdout: Vec<u8>,
        /// Its standard error.
        stderr: Vec<u8>,
    },
    /// It ended before being ready.
    Failed {
        /// Its exit code.
        code: Option<i32>,
        /// Its standard output.
        stdout: Vec<u8>,
        /// Its standard error.
        stderr: Vec<u8>,
    },
}

/// Starts `cmd` in a new session with a readiness pipe, and waits until it reports ready or
/// ends.
pub fn run(mut cmd: Command) -> Result<Detached> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::new(ErrorKind::Io, format!("a pipe: {e}")))?;
    let write_fd = write.as_raw_fd();
    cmd.env(READY_FD_VAR, READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and calls only setsid(2) and
    // dup2(2), both async-signal-safe; it touches no memory shared with the parent.
    #[allow(unsafe_code)]
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            nix::unistd::setsid()?;
            // dup2 clears close-on-exec on the copy: the child keeps exactly this one.
            if nix::libc::dup2(write_fd, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Error::new(
            ErrorKind::External,
            format!("starting the background process: {e}"),
        )
    })?;
    drop(write);
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    // One line, or the end: the background process's children never hold the pipe (see
    // `claim`), but a line is all it takes.
    let mut said = Vec::new();
    let mut pipe = std::fs::File::from(read);
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => said.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            _ => break,
        }
    }
    if said == b"ready" {
        return Ok(Detached::Ready {
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        });
    }
    let status = child.wait().map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("waiting for the background process: {e}"),
        )
    })?;
    Ok(Detached::Failed {
        code: status.code(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// The readiness pipe, once [`claim`] took it.
static READY: std::sync::Mutex<Option<OwnedFd>> = std::sync::Mutex::new(None);

/// In the background process (started by [`run`]), before it starts anything: takes the
/// readiness pipe, which the processes it starts do not inherit, and takes its variable out of
/// the environment. Does nothing in a process not started so.
pub fn claim() {
    let started_so = std::env::var(READY_FD_VAR)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        == Some(READY_FD);
    std::env::remove_var(READY_FD_VAR);
    if !started_so {
        return;
    }
    // SAFETY: the descriptor was handed to this process by `run` for exactly this use and is
    // taken once (the variable is gone); from here it is owned, and closed when dropped.
    #[allow(unsafe_code)]
    let pipe: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(READY_FD) };
    let _ = nix::fcntl::fcntl(
        &pipe,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    *READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pipe);
}

/// Whether this process runs in the background for a command waiting on it.
pub fn claimed() -> bool {
    READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_some()
}

/// In the background process: tells the starting command that it is ready, after its output
/// was written and flushed, and leaves the terminal's pipes (standard output and error go to
/// /dev/null from now on; the job log keeps what follows). False when the command is gone (it
/// was interrupted): then nobody knows of the mount, and the caller ends it. True in a process
/// not started by [`run`].
pub fn ready() -> bool {
    let Some(pipe) = READY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return true;
    };
    let told = nix::unistd::write(&pipe, b"ready\n").is_ok_and(|n| n == 6);
    drop(pipe);
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    told
}
