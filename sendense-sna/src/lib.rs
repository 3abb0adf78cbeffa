//! The `sendense-sna` command line: a thin frontend over `sendense-core`.

pub mod cli;
mod copy;

use clap::Parser;
use std::process::ExitCode;

/// Parses the command line, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let json = cli.json;
    let result = match cli.command {
        cli::Command::Copy(args) => copy::run(args, json, cli.quiet),
        cli::Command::Transfer => copy::transfer(),
        cli::Command::Hello => {
            let hello = sendense_core::node::Hello::this();
            println!("{}", serde_json::to_string(&hello).unwrap_or_default());
            Ok(())
        }
        cli::Command::Source => {
            sendense_core::source::node::serve(std::io::stdin().lock(), std::io::stdout().lock())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            sendense_term::print_error(&err, json);
            ExitCode::from(sendense_term::exit_code(err.kind()))
        }
    }
}
