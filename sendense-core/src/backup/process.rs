//! The hub side of the node's process boundary: `sendense-sna transfer` spawned locally, the
//! same protocol a remote node speaks over SSH (see [`super::node`]).

use super::node::{check_node_protocol, NodeLine, TransferPlan, TransferResult};
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
    digests: &[(u32, std::sync::Arc<crate::repo::digests::DigestFile>)],
    cancel: &CancellationToken,
) -> Result<Vec<TransferResult>> {
    use std::io::{BufRead, BufReader, Write};
    let program = sna_binary(sd.config().sna_path.as_deref());
    let mut cmd = std::process::Command::new(&program);
    cmd.args(["--json", "transfer"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let ledger = sd.ledger(plan.job);
    let mut node = Supervised::spawn(
        cmd,
        crate::supervise::ChildKind::Sna,
        &format!("transfer of {}", program.display()),
        NODE_GRACE,
        Some(&ledger),
    )
    .map_err(|e| {
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
    let mut output = NodeOutput::new(plan, digests);
    let mut read_error = None;
    // A line the protocol does not allow: the node is stopped, the transfer fails with it.
    let mut refused: Option<Error> = None;
    for line in BufReader::new(stdout).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if let Err(e) = output.take(sd.sink(), &line) {
            refused = Some(e);
            break;
        }
    }
    let results = output.results;
    // Its output ended: it exits now (or, after a cancellation, within the grace period). One
    // that does not — or whose output could not be read — is stopped.
    let limit = if read_error.is_some() || refused.is_some() {
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
    if let Some(e) = refused {
        let said = err_text.trim();
        return Err(if said.is_empty() {
            e
        } else {
            e.context(format!("sendense-sna said: {said}"))
        });
    }
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

/// The output of a node's `sendense-sna transfer`, taken line by line: events go to the sink,
/// digest lines into the digest files, the summary is kept.
pub(super) struct NodeOutput<'a> {
    plan: &'a TransferPlan,
    digests: &'a [(u32, std::sync::Arc<crate::repo::digests::DigestFile>)],
    /// The summary's results, once it came.
    pub(super) results: Option<Vec<TransferResult>>,
}

impl<'a> NodeOutput<'a> {
    pub(super) fn new(
        plan: &'a TransferPlan,
        digests: &'a [(u32, std::sync::Arc<crate::repo::digests::DigestFile>)],
    ) -> Self {
        NodeOutput {
            plan,
            digests,
            results: None,
        }
    }

    /// Takes one line. A record that cannot be taken (of another disk, out of place, garbled,
    /// or not written) is an error that ends the transfer: the backup's digests would not be
    /// whole.
    pub(super) fn take(&mut self, sink: &crate::event::SharedSink, line: &str) -> Result<()> {
        if let Ok(ev) = serde_json::from_str::<Event>(line) {
            sink.emit(&ev);
            return Ok(());
        }
        match node_line(line)? {
            // Nothing may follow the summary.
            Some(_) if self.results.is_some() => Err(Error::new(
                ErrorKind::Protocol,
                "sendense-sna wrote on after its summary",
            )),
            Some(NodeLine::Summary { protocol, results }) => {
                check_node_protocol(protocol)?;
                self.results = Some(results);
                Ok(())
            }
            Some(line) => take_digest_line(self.plan, self.digests, &line),
            None => Ok(()),
        }
    }
}

/// A protocol line of the node's output (`None` for anything else, such as a log line). The
/// summary of a node of protocol 1 (a bare list) is refused as that protocol.
fn node_line(line: &str) -> Result<Option<NodeLine>> {
    if let Ok(parsed) = serde_json::from_str::<NodeLine>(line) {
        return Ok(Some(parsed));
    }
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(v) if v.get("summary").is_some_and(|s| s.is_array()) => {
            check_node_protocol(1).map(|()| None)
        }
        // A protocol line that does not parse as one is never dropped: the digests would not
        // be whole.
        Ok(v)
            if ["digest", "zeroes", "summary"]
                .iter()
                .any(|k| v.get(k).is_some()) =>
        {
            Err(Error::new(
                ErrorKind::Protocol,
                format!("sendense-sna wrote a protocol line that is not valid: {line}"),
            ))
        }
        _ => Ok(None),
    }
}

/// Writes a digest line of the node into the hub's digest file of its disk.
fn take_digest_line(
    plan: &TransferPlan,
    digests: &[(u32, std::sync::Arc<crate::repo::digests::DigestFile>)],
    line: &NodeLine,
) -> Result<()> {
    let (disk, offset, len) = match line {
        // One block (the last one of the disk may be shorter).
        NodeLine::Digest { disk, offset, .. } => (*disk, *offset, None),
        NodeLine::Zeroes { disk, offset, len } => (*disk, *offset, Some(*len)),
        NodeLine::Summary { .. } => return Ok(()),
    };
    let bad = |why: &str| {
        Err(Error::new(
            ErrorKind::Protocol,
            format!("sendense-sna sent a digest line for disk {disk} at offset {offset} {why}"),
        ))
    };
    let (Some(planned), Some((_, file))) = (
        plan.disks
            .iter()
            .find(|d| d.key == disk && d.record_digests),
        digests.iter().find(|(k, _)| *k == disk),
    ) else {
        return bad("of a disk whose digests were not asked for");
    };
    // Whole blocks of the disk as the node reads it (QEMU serves whole 512-byte sectors): a
    // range ends on a block boundary or at the disk's end.
    let held = planned.size_bytes.div_ceil(512) * 512;
    let len = len.unwrap_or_else(|| crate::transfer::BLOCK.min(held.saturating_sub(offset)));
    let whole = offset
        .checked_add(len)
        .is_some_and(|e| e <= held && (e % crate::transfer::BLOCK == 0 || e == held));
    if offset % crate::transfer::BLOCK != 0 || len == 0 || !whole {
        return bad("outside the disk's whole blocks");
    }
    match line {
        NodeLine::Digest { record, .. } => {
            let mut bytes = [0u8; 32];
            let ok = record.len() == 64
                && record.bytes().all(|b| b.is_ascii_hexdigit())
                && (0..32).all(|i| {
                    u8::from_str_radix(&record[2 * i..2 * i + 2], 16)
                        .map(|b| bytes[i] = b)
                        .is_ok()
                });
            if !ok {
                return bad("that is no 32-byte record");
            }
            file.write_record(offset, &bytes)
        }
        _ => {
            use crate::transfer::BlockDigests;
            file.record_zeroes(offset, len)
        }
    }
}

/// Where `sendense-sna` is: configured, next to this executable (or its parent directory, as
/// for test binaries), or `$PATH`.
pub(crate) fn sna_binary(configured: Option<&std::path::Path>) -> std::path::PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_a_node_of_another_protocol_are_refused() {
        // Protocol 1 ended with a bare list.
        let err = node_line(r#"{"summary": [{"key": 2000, "bytes_read": 1, "bytes_written": 1, "bytes_zero": 0, "seconds": 0.1}]}"#)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert!(err.message().contains("node protocol 1"), "{err}");
        // Protocol 2's summary names its version; another is refused when it is checked.
        let line = r#"{"summary": {"protocol": 3, "results": []}}"#;
        let Some(NodeLine::Summary { protocol, .. }) = node_line(line).unwrap() else {
            panic!("not a summary");
        };
        assert!(check_node_protocol(protocol).is_err());
        assert_eq!(node_line("not json").unwrap(), None);
        // A protocol line of the wrong shape is refused, never dropped.
        for bad in [
            r#"{"digest": {"disk": 2000, "offset": -1, "record": "00"}}"#,
            r#"{"zeroes": {"disk": 2000, "offset": 0}}"#,
            r#"{"summary": {"results": []}}"#,
        ] {
            assert_eq!(
                node_line(bad).unwrap_err().kind(),
                ErrorKind::Protocol,
                "{bad}"
            );
        }
        assert_eq!(node_line(r#"{"other": 1}"#).unwrap(), None);
    }

    #[test]
    fn digest_lines_land_only_in_their_disk_s_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.digests");
        let size = 4 * crate::transfer::BLOCK;
        crate::repo::digests::DigestFile::create(&path, size).unwrap();
        let file = std::sync::Arc::new(
            crate::repo::digests::DigestFile::open(&path, crate::repo::digests::Scheme::CURRENT)
                .unwrap(),
        );
        let plan = TransferPlan {
            protocol: super::super::node::PROTOCOL,
            job: None,
            disks: vec![super::super::node::TransferDisk {
                key: 2000,
                mode: crate::catalog::BackupMode::Full,
                reason: String::new(),
                source: "nbd://h/s".into(),
                target: "nbd://h/t".into(),
                bitmap: None,
                extents: None,
                size_bytes: size,
                record_digests: true,
                digest_scheme: None,
            }],
            connections: 1,
            requests: 1,
            request_size: 65536,
        };
        let digests = [(2000, file)];
        let record = "ab".repeat(32);
        let line = |disk: u32, offset: u64, record: &str| NodeLine::Digest {
            disk,
            offset,
            record: record.to_string(),
        };
        take_digest_line(&plan, &digests, &line(2000, 65536, &record)).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(
            crate::repo::digests::read_record(&f, 65536).unwrap(),
            crate::repo::digests::Record::Data([0xab; 32])
        );
        // Ranges of zeroes: whole blocks inside the disk, nothing else.
        let zeroes = |offset: u64, len: u64| NodeLine::Zeroes {
            disk: 2000,
            offset,
            len,
        };
        take_digest_line(&plan, &digests, &zeroes(0, 2 * 65536)).unwrap();
        for (offset, len) in [(0, 1), (0, 0), (65536, 4 * 65536), (100, 65536)] {
            let err = take_digest_line(&plan, &digests, &zeroes(offset, len)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{offset}+{len}");
        }
        for (disk, offset, rec) in [
            (2001, 0, record.as_str()),
            (2000, 100, record.as_str()),
            (2000, size, record.as_str()),
            (2000, 0, "ab"),
            (2000, 0, &"é".repeat(32)),
        ] {
            let err = take_digest_line(&plan, &digests, &line(disk, offset, rec)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{disk} {offset} {rec}");
        }
    }
}
