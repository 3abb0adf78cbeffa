//! `sendense-sna copy`.

use crate::cli::CopyArgs;
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
    req.bitmap = args.bitmap;
    req.destination_is_zero = args.destination_is_zero;
    req.connections = args.connections as usize;
    req.requests = args.requests as usize;
    req.request_size = args.request_size as usize;

    let sink = sendense_term::progress::sink_for(json, quiet);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("starting the runtime: {e}")))?;
    let report = rt.block_on(async {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        transfer::copy(&req, &sink, &cancel).await
    })?;
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
