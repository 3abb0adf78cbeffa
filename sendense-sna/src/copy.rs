//! `sendense-sna copy`.

use crate::cli::CopyArgs;
use sendense_core::transfer::BlockDigests;
use sendense_core::transfer::{self, CopyRequest};
use sendense_core::{Error, ErrorKind, Result};
use std::io::Write;
use tokio_util::sync::CancellationToken;

pub fn run(args: CopyArgs, json: bool, quiet: bool) -> Result<()> {
    if !args.request_size.is_power_of_two()
        || args.request_size < 4096
        || args.request_size > 32 << 20
    {
        return Err(Error::invalid(format!(
            "--request-size {} must be a power of two between 4096 and 33554432",
            args.request_size
        )));
    }
    let mut req = CopyRequest::new(args.src.parse()?, args.dst.parse()?);
    req.changes = args.bitmap.map(sendense_core::transfer::Changes::Bitmap);
    req.destination_is_zero = args.destination_is_zero;
    req.connections = args.connections as usize;
    req.requests = args.requests as usize;
    req.request_size = args.request_size as usize;

    let sink = sendense_term::progress::sink_for(json, quiet);
    let cancel = cancel_on_signals()?;
    let report = runtime()?.block_on(transfer::copy(&req, &sink, &cancel))?;
    let mut out = std::io::stdout().lock();
    let written = if json {
        let mut doc = serde_json::to_value(&report).unwrap_or_default();
        doc["mib_per_sec"] = serde_json::json!(report.mib_per_sec());
        writeln!(out, "{doc}")
    } else if quiet {
        Ok(())
    } else {
        writeln!(
            out,
            "copied {} in {:.2}s ({:.0} MiB/s): read {}, wrote {}, zero {}",
            sendense_term::bytes(report.bytes_planned),
            report.seconds,
            report.mib_per_sec(),
            sendense_term::bytes(report.bytes_read),
            sendense_term::bytes(report.bytes_written),
            sendense_term::bytes(report.bytes_zero),
        )
    };
    written.map_err(|e| Error::new(ErrorKind::Io, format!("writing to stdout: {e}")))
}

/// `sendense-sna transfer`: the node side of a backup.
pub fn transfer() -> Result<()> {
    use std::io::Read;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| Error::new(ErrorKind::Io, format!("reading the plan from stdin: {e}")))?;
    use sendense_core::backup::node::{self, NodeLine};
    let plan = node::parse_plan(&input).map_err(|e| e.context("reading the plan on stdin"))?;
    let sink = sendense_term::progress::sink_for(true, false);
    let cancel = cancel_on_signals()?;
    let digests_for = |disk: u32, scheme| {
        Ok(Some(
            std::sync::Arc::new(LineDigests { disk, scheme }) as std::sync::Arc<dyn BlockDigests>
        ))
    };
    let results = runtime()?.block_on(node::run_transfer(&plan, &sink, &cancel, &digests_for))?;
    print_line(&NodeLine::Summary {
        protocol: node::PROTOCOL,
        results,
    })
}

/// Sends the digests of one disk's blocks to the hub, a line each, on stdout (lines are
/// written whole under stdout's lock, so they never interleave with events).
#[derive(Debug)]
struct LineDigests {
    disk: u32,
    scheme: sendense_core::repo::digests::Scheme,
}

impl BlockDigests for LineDigests {
    fn record(&self, offset: u64, block: &[u8]) -> Result<()> {
        // Eight blocks have moved: the tests cut connections here.
        static RECORDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if RECORDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 8 {
            sendense_core::crash::point("sna.transfer-midway");
        }
        let record: String = self
            .scheme
            .block_digest(offset, block)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        print_line(&sendense_core::backup::node::NodeLine::Digest {
            disk: self.disk,
            offset,
            record,
        })
    }

    fn record_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        if !self.scheme.records_zeroes() {
            return Ok(());
        }
        print_line(&sendense_core::backup::node::NodeLine::Zeroes {
            disk: self.disk,
            offset,
            len,
        })
    }
}

/// One protocol line on stdout.
fn print_line(line: &sendense_core::backup::node::NodeLine) -> Result<()> {
    let text = serde_json::to_string(line)
        .map_err(|e| Error::internal(format!("encoding a protocol line: {e}")))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::new(ErrorKind::Io, format!("writing to stdout: {e}")))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("starting the runtime: {e}")))
}

/// A token cancelled by SIGINT (Ctrl-C, or the hub cancelling), SIGTERM or SIGHUP; a second
/// signal exits at once. (Should the hub die, the kernel kills this process outright.)
fn cancel_on_signals() -> Result<CancellationToken> {
    sendense_core::jobs::signals::cancel_on_signals(|| {})
}
