//! Terminal rendering shared by the `sendense` and `sendense-sna` frontends: error diagnostics,
//! the documented exit codes, human sizes, and the progress sinks that turn core events into
//! indicatif bars, plain log lines or NDJSON.

pub mod progress;

use sendense_core::{Error, ErrorKind};
use std::io::{IsTerminal, Write};

/// The documented exit code for an error kind (EXIT STATUS in `man sendense`); the core
/// owns the table ([`ErrorKind::exit_code`]).
pub fn exit_code(kind: ErrorKind) -> u8 {
    kind.exit_code()
}

/// A core error as a miette diagnostic: the message, the stable code and the help.
#[derive(Debug)]
struct Diagnostic<'a>(&'a Error);

impl std::fmt::Display for Diagnostic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.message())
    }
}

impl std::error::Error for Diagnostic<'_> {}

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

/// The JSON document for an error: `{"error": {"kind", "code", "message", "help"}}`.
pub fn error_json(err: &Error) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "kind": err.kind(),
            "code": err.code(),
            "message": err.message(),
            "help": err.help(),
        }
    })
}

/// Prints an error: a diagnostic on stderr, and with `json_too` also an error document on
/// stdout. On a terminal the diagnostic is miette's; elsewhere (logs, cron mail) plain lines.
pub fn print_error(err: &Error, json_too: bool) {
    if json_too {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", error_json(err));
        let _ = out.flush();
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
    use super::*;

    #[test]
    fn human_bytes() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(10 * 1024 * 1024 * 1024), "10.0 GiB");
    }

    #[test]
    fn exit_codes_are_the_documented_ones() {
        assert_eq!(exit_code(ErrorKind::NotFound), 4);
        assert_eq!(exit_code(ErrorKind::Refused), 5);
        assert_eq!(exit_code(ErrorKind::Busy), 5);
        assert_eq!(exit_code(ErrorKind::AlreadyExists), 5);
        assert_eq!(exit_code(ErrorKind::InvalidInput), 2);
        assert_eq!(exit_code(ErrorKind::PartiallyFailed), 3);
        assert_eq!(exit_code(ErrorKind::Cancelled), 130);
        assert_eq!(exit_code(ErrorKind::Protocol), 1);
    }
}
