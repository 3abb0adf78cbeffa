//! Rendering at the edge: tables, JSON documents, error diagnostics, logging.

pub mod table;

use crate::cli::GlobalArgs;
use sendense_core::{Error, ErrorKind};
use serde::Serialize;
use std::io::{IsTerminal, Write};

/// Writes `value` as one pretty JSON document on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::internal(format!("serializing JSON output: {e}")))?;
    line(&text)
}

/// Writes `value` as one compact JSON document on one line of stdout (NDJSON).
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    let text = serde_json::to_string(value)
        .map_err(|e| Error::internal(format!("serializing JSON output: {e}")))?;
    line(&text)
}

/// Writes one line on stdout. A closed pipe (`sendense vm list | head -1`) is reported as an
/// error the caller turns into success.
pub fn line(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|_| out.flush())
        .map_err(|e| Error::new(ErrorKind::Io, format!("writing to stdout: {e}")).with_source(e))
}

/// True when the error is a write to a closed stdout pipe.
pub fn is_broken_pipe(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Sets up tracing on stderr according to -v / -q.
pub fn init_logging(args: &GlobalArgs) {
    let level = match (args.quiet, args.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SENDENSE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false)
        .try_init();
}

pub use sendense_term::{bytes, opt_bytes, print_error};
