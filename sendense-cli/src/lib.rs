//! The `sendense` command line: a thin frontend over `sendense-core`.
//!
//! Each `commands/<noun>.rs` turns arguments into a core call and renders the result; the
//! domain logic lives in the core. Errors become miette diagnostics and exit codes in one place
//! ([`exit_code`]).

pub mod cli;
mod commands;
pub mod docs;
mod output;

use clap::Parser;
use sendense_core::Error;
use std::process::ExitCode;

/// Parses the command line, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    output::init_logging(&cli.global);
    let json = cli.global.json;
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            output::print_error(&err, json);
            ExitCode::from(exit_code(err.kind()))
        }
    }
}

pub use sendense_term::exit_code;

/// A command line clap refused: its message on stderr as clap writes it (help and version are
/// printed as asked), and, when `--json` was among the arguments, the error document on stdout
/// too, so a script reading JSON is never left with nothing. Exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion)
        || e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand && !json_asked()
    {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() {
            sendense_core::exit::USAGE
        } else {
            sendense_core::exit::SUCCESS
        });
    }
    if json_asked() {
        let rendered = e.render().to_string();
        let lines: Vec<&str> = rendered
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let usage = lines
            .iter()
            .position(|l| l.starts_with("Usage:"))
            .unwrap_or(lines.len());
        let message = lines[..usage]
            .join(" ")
            .trim_start_matches("error: ")
            .to_string();
        let err = Error::invalid(message).with_help(lines[usage..].join(" "));
        let _ = output::line(&sendense_term::error_json(&err).to_string());
    }
    let _ = e.print();
    ExitCode::from(exit_code(sendense_core::ErrorKind::InvalidInput))
}

/// Whether `--json` is among the arguments (before a `--`).
fn json_asked() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// Result of a command: an exit code on success paths that still report problems.
pub(crate) type CmdResult = Result<ExitCode, Error>;
