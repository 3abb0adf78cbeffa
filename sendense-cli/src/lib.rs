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
    let cli = cli::Cli::parse();
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

/// Result of a command: an exit code on success paths that still report problems.
pub(crate) type CmdResult = Result<ExitCode, Error>;
