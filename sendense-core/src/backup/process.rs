//! The hub side of the node's process boundary: `sendense-sna transfer` spawned locally, the
//! same protocol a remote node speaks over SSH (see [`super::node`]).

use super::node::{TransferPlan, TransferResult};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::sendense::Sendense;
use tokio_util::sync::CancellationToken;

/// Runs `plan` through a `sendense-sna transfer` process: the plan as JSON on its stdin, its
/// NDJSON events forwarded to the sink, the summary from its last line, a cancellation
/// forwarded as SIGINT.
pub(super) fn run_node_process(
    sd: &mut Sendense,
    plan: &TransferPlan,
    cancel: &CancellationToken,
) -> Result<Vec<TransferResult>> {
    use std::io::{BufRead, BufReader, Write};
    let program = sna_binary(sd.config().sna_path.as_deref());
    let mut child = std::process::Command::new(&program)
        .args(["--json", "transfer"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::new(
                ErrorKind::MissingTool,
                format!("cannot start {}: {e}", program.display()),
            )
            .with_help("Install sendense-sna next to sendense, or set `sna_path` in the config.")
        })?;
    let plan_json =
        serde_json::to_vec(plan).map_err(|e| Error::internal(format!("transfer plan: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&plan_json).map_err(|e| {
            Error::new(
                ErrorKind::External,
                format!("sending the plan to sendense-sna: {e}"),
            )
        })?;
    }
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let pid = child.id();
    let stop = cancel.clone();
    // Dropping `done` wakes the forwarder at once when the node has ended.
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let forwarder = std::thread::spawn(move || {
        // Forward a cancellation as SIGINT: the node cancels its copies and exits 130.
        while !stop.is_cancelled() {
            match finished.recv_timeout(std::time::Duration::from_millis(100)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => return,
            }
        }
        if let Some(p) = crate::proc::ProcId::of(pid) {
            let _ = crate::proc::signal(p, nix::sys::signal::Signal::SIGINT);
        }
    });
    let mut results = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(ev) = serde_json::from_str::<Event>(&line) {
                sd.sink().emit(&ev);
            } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(s) = v.get("summary") {
                    results = serde_json::from_value::<Vec<TransferResult>>(s.clone()).ok();
                }
            }
        }
    }
    let status = child.wait().map_err(|e| {
        Error::new(
            ErrorKind::External,
            format!("waiting for sendense-sna: {e}"),
        )
    })?;
    let err_text = err_reader.join().unwrap_or_default();
    drop(done);
    let _ = forwarder.join();
    match (status.code(), results) {
        (Some(0), Some(r)) => Ok(r),
        (Some(130), _) => Err(Error::new(ErrorKind::Cancelled, "transfer cancelled")),
        _ => Err(Error::new(
            ErrorKind::External,
            format!(
                "sendense-sna transfer failed ({status}): {}",
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
