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

/// A core error as a miette diagnostic: the message, the stable code and the help.
#[derive(Debug)]
struct Diagnostic<'a>(&'a Error);

impl std::fmt::Display for Diagnostic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for Diagnostic<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The cause is usually already in the message; miette would print it twice.
        None
    }
}

impl miette::Diagnostic for Diagnostic<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        Some(Box::new(self.0.code()))
    }

    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.0
            .help()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

/// Prints an error: a diagnostic on stderr, and with `--json` also an error document on stdout.
pub fn print_error(err: &Error, json_too: bool) {
    if json_too {
        let doc = serde_json::json!({
            "error": {
                "kind": err.kind(),
                "code": err.code(),
                "message": err.message(),
                "help": err.help(),
            }
        });
        let _ = line(&doc.to_string());
    }
    let mut stderr = std::io::stderr().lock();
    if stderr.is_terminal() {
        let theme = if std::env::var_os("NO_COLOR").is_none() {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme);
        let mut rendered = String::new();
        if handler
            .render_report(&mut rendered, &Diagnostic(err))
            .is_ok()
        {
            let _ = writeln!(stderr, "{}", rendered.trim_end());
            return;
        }
    }
    // Logs and cron mail: plain lines that grep well.
    let _ = writeln!(stderr, "error[{}]: {}", err.code(), err.message());
    if let Some(help) = err.help() {
        let _ = writeln!(stderr, "  help: {help}");
    }
}

/// Human size with binary units: `10.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `bytes` for an optional value, `-` when unknown.
pub fn opt_bytes(n: Option<u64>) -> String {
    n.map(bytes).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes() {
        assert_eq!(super::bytes(0), "0 B");
        assert_eq!(super::bytes(1023), "1023 B");
        assert_eq!(super::bytes(1024), "1.0 KiB");
        assert_eq!(super::bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }
}
