//! The transfer of a VM on a remote node: `sendense-sna transfer` runs on the node, over an SSH
//! connection of its own (the source session keeps the snapshot on another), and writes into
//! the hub's targets through Unix-socket forwards in the job's scratch directory on the node.
//!
//! The node's output is the protocol of [`super::process`]. A lost connection is tried again
//! over a new one, a bounded number of times: the snapshot is still held by the source
//! session, and the writes are idempotent (the same frozen data at the same offsets, the same
//! digest records).

use super::node::{TransferPlan, TransferResult};
use super::process::NodeOutput;
use crate::catalog::NodeRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::{Endpoint, NbdUrl};
use crate::node::ssh::{LocalTarget, SshSession};
use crate::sendense::Sendense;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many times a transfer runs before a lost connection fails the backup.
const ATTEMPTS: u32 = 3;

/// The pause before each new attempt.
const PAUSES: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(5)];

/// Why an attempt failed.
enum Failure {
    /// The connection to the node was lost (or could not be made): another attempt may work.
    Lost(Error),
    /// Anything else (the node's transfer failed, a refused line, a cancellation).
    Final(Error),
}

/// Runs `plan` on `node`; the digest lines go into `digests`.
pub(super) fn run_remote_transfer(
    sd: &mut Sendense,
    node: &NodeRecord,
    plan: &TransferPlan,
    digests: &[(u32, std::sync::Arc<crate::repo::digests::DigestFile>)],
    cancel: &CancellationToken,
) -> Result<Vec<TransferResult>> {
    let mut attempt = 1;
    loop {
        let e = match attempt_transfer(sd, node, plan, digests, cancel, attempt) {
            Ok(results) => return Ok(results),
            Err(Failure::Final(e)) => return Err(e),
            Err(Failure::Lost(e)) => e,
        };
        if attempt >= ATTEMPTS || cancel.is_cancelled() {
            return Err(e.context(format!("after {attempt} attempt(s)")));
        }
        let pause = PAUSES[(attempt as usize - 1).min(PAUSES.len() - 1)];
        if let Some(job) = plan.job {
            let msg = format!(
                "the transfer lost its connection to node `{}` ({e}); trying again in {} s \
                 (attempt {} of {ATTEMPTS})",
                node.name,
                pause.as_secs(),
                attempt + 1
            );
            sd.job_log(job, &msg);
            super::emit(sd, job, crate::event::EventKind::Warning { message: msg });
        }
        let deadline = std::time::Instant::now() + pause;
        while std::time::Instant::now() < deadline && !cancel.is_cancelled() {
            std::thread::sleep(Duration::from_millis(50));
        }
        attempt += 1;
    }
}

/// One attempt: a new connection, the forwards, the node's transfer to its end.
fn attempt_transfer(
    sd: &Sendense,
    node: &NodeRecord,
    plan: &TransferPlan,
    digests: &[(u32, std::sync::Arc<crate::repo::digests::DigestFile>)],
    cancel: &CancellationToken,
    attempt: u32,
) -> std::result::Result<Vec<TransferResult>, Failure> {
    let session = sd.connect_node(node).map_err(|e| match e.kind() {
        // A node whose host key changed is not tried again.
        ErrorKind::Refused => Failure::Final(e),
        _ => Failure::Lost(e),
    })?;
    let mut remote_plan = plan.clone();
    for disk in &mut remote_plan.disks {
        let (socket, target) = forward_target(&session, disk, attempt).map_err(|e| {
            if session.is_closed() {
                Failure::Lost(e)
            } else {
                Failure::Final(e)
            }
        })?;
        disk.target = NbdUrl::unix(socket, target.export).to_string();
    }
    let text = serde_json::to_string(&remote_plan)
        .map_err(|e| Failure::Final(Error::internal(format!("transfer plan: {e}"))))?;
    crate::node::check_sna_path(&node.sna_path).map_err(Failure::Final)?;
    let command = format!(
        "{} --json transfer",
        crate::node::shell_word(&node.sna_path)
    );
    let (mut process, lines) = session.spawn(&command).map_err(Failure::Lost)?;
    let sent = process.send_line(&text);
    process.close_input();
    crate::crash::point("node.plan-sent");
    let mut output = NodeOutput::new(plan, digests);
    let ended = loop {
        if cancel.is_cancelled() {
            process.kill();
            return Err(Failure::Final(Error::new(
                ErrorKind::Cancelled,
                "transfer cancelled",
            )));
        }
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(line)) => {
                if let Err(e) = output.take(sd.sink(), &line) {
                    process.kill();
                    return Err(Failure::Final(e));
                }
            }
            Ok(Err(e)) => break Some(e),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            // It ended with exit status 0.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    let what = format!("sendense-sna transfer on node `{}`", node.name);
    match (ended, output.results) {
        (None, Some(results)) => Ok(results),
        (None, None) => Err(Failure::Final(Error::new(
            ErrorKind::Protocol,
            format!("{what} ended without its summary"),
        ))),
        (Some(e), _) => {
            let lost = e.kind() == std::io::ErrorKind::ConnectionAborted
                || session.is_closed()
                || sent.is_err();
            let err = Error::new(ErrorKind::External, format!("{what}: {e}"));
            Err(if lost {
                Failure::Lost(err)
            } else {
                Failure::Final(err)
            })
        }
    }
}

/// Forwards a Unix socket in the job's scratch directory on the node (beside the snapshot's
/// socket) to the hub's target of `disk`; returns the node's socket and the target's URL.
fn forward_target(
    session: &SshSession,
    disk: &super::node::TransferDisk,
    attempt: u32,
) -> Result<(String, NbdUrl)> {
    let source: NbdUrl = disk.source.parse()?;
    let target: NbdUrl = disk.target.parse()?;
    let dir = match &source.endpoint {
        Endpoint::Unix(path) => path.parent().and_then(|p| p.to_str()),
        Endpoint::Tcp { .. } => None,
    }
    .ok_or_else(|| {
        Error::new(
            ErrorKind::Protocol,
            format!(
                "disk {}: the node serves its snapshot at {source}, not in its scratch directory",
                disk.key
            ),
        )
    })?;
    let local = match &target.endpoint {
        Endpoint::Unix(path) => LocalTarget::Unix(path.clone()),
        Endpoint::Tcp { host, port } => {
            let ip: std::net::IpAddr = host.parse().map_err(|_| {
                Error::internal(format!("the target {target} is not on an address"))
            })?;
            LocalTarget::Tcp(std::net::SocketAddr::new(ip, *port))
        }
    };
    // A name of its own per attempt: a socket a lost connection left is never in the way.
    let socket = format!("{dir}/target-{}-{attempt}.sock", disk.key);
    session.forward_socket(&socket, local)?;
    Ok((socket, target))
}
