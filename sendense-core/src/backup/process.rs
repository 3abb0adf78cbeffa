//! The hub side of the node's process boundary: `sendense-sna transfer` spawned locally, the
//! same protocol a remote node speaks over SSH (see [`super::node`]).

use super::node::{TransferPlan, TransferResult};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::sendense::Sendense;
use crate::supervise::Supervised;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long `sendense-sna` has to end after SIGINT (a cancellation) or after it closed its
/// output, before it is killed.
const NODE_GRACE: Duration = Duration::from_secs(5);

/// Runs `plan` through a `sendense-sna transfer` process: the plan as JSON on its stdin, its
/// NDJSON events forwarded to the sink, the summary from its last line, a cancellation
/// forwarded as SIGINT (SIGKILL when it has not ended after [`NODE_GRACE`]). The process is [`Supervised`]: it dies with this process, and on every
/// path out of here — an error writing the plan or reading its output included — it is
/// stopped and reaped.
pub(super) fn run_node_process(
    sd: &mut Sendense,
    plan: &TransferPlan,
    cancel: &CancellationToken,
) -> Result<Vec<TransferResult>> {
    use std::io::{BufRead, BufReader, Write};
    let program = sna_binary(sd.config().sna_path.as_deref());
    let mut cmd = std::process::Command::new(&program);
    cmd.args(["--json", "transfer"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut node =
        Supervised::spawn(cmd, &program.display().to_string(), NODE_GRACE).map_err(|e| {
            e.with_help("Install sendense-sna next to sendense, or set `sna_path` in the config.")
        })?;
    let (stdin, stdout, stderr) = match node.child() {
        Some(c) => (c.stdin.take(), c.stdout.take(), c.stderr.take()),
        None => (None, None, None),
    };
    let (Some(mut stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(Error::internal("sendense-sna started without its pipes"));
    };
    let plan_json =
        serde_json::to_vec(plan).map_err(|e| Error::internal(format!("transfer plan: {e}")))?;
    // Closing stdin ends the plan.
    stdin.write_all(&plan_json).map_err(|e| {
        Error::new(
            ErrorKind::External,
            format!("sending the plan to sendense-sna: {e}"),
        )
    })?;
    drop(stdin);
    crate::crash::point("node.plan-sent");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let node_id = node.id().and_then(crate::proc::ProcId::of);
    let stop = cancel.clone();
    // Dropping `done` wakes the forwarder at once when the node has ended.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let forwarder = std::thread::spawn(move || {
        // Forward a cancellation as SIGINT: the node cancels its copies and exits 130.
        while !stop.is_cancelled() {
            match finished.recv_timeout(Duration::from_millis(100)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        }
        let Some(id) = node_id else { return };
        let _ = crate::proc::signal(id, nix::sys::signal::Signal::SIGINT);
        // One that does not end in time is killed, so the output below reaches its end.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = finished.recv_timeout(NODE_GRACE) {
            let _ = crate::proc::signal(id, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let mut results = None;
    let mut read_error = None;
    for line in BufReader::new(stdout).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if let Ok(ev) = serde_json::from_str::<Event>(&line) {
            sd.sink().emit(&ev);
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            if let Some(s) = v.get("summary") {
                results = serde_json::from_value::<Vec<TransferResult>>(s.clone()).ok();
            }
        }
    }
    // Its output ended: it exits now (or, after a cancellation, within the grace period). One
    // that does not — or whose output could not be read — is stopped.
    let limit = if read_error.is_some() {
        Duration::ZERO
    } else {
        NODE_GRACE
    };
    let status = if node.exited_within(limit) {
        node.wait().ok()
    } else {
        node.stop()
    };
    let err_text = err_reader.join().unwrap_or_default();
    drop(done);
    let _ = forwarder.join();
    if let Some(e) = read_error {
        return Err(Error::new(
            ErrorKind::External,
            format!("reading the output of sendense-sna: {e}"),
        ));
    }
    match (status.and_then(|s| s.code()), results) {
        (Some(0), Some(r)) => Ok(r),
        (Some(130), _) => Err(Error::new(ErrorKind::Cancelled, "transfer cancelled")),
        (code, _) => Err(Error::new(
            ErrorKind::External,
            format!(
                "sendense-sna transfer failed ({}): {}",
                code.map_or("killed by a signal".to_string(), |c| format!(
                    "exit status {c}"
                )),
                err_text.trim()
            ),
        )),
    }
}

/// Where `sendense-sna` is: configured, next to this executable (or its parent directory, as
/// for test binaries), or `$PATH`.
fn sna_binary(configured: Option<&std::path::Path>) -> std::path::PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let candidate = dir.join("sendense-sna");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    std::path::PathBuf::from("sendense-sna")
}
