//! `sendense-sna`: the Sendense node data mover. It runs next to the hypervisor, reads source
//! disks and writes them into the hub's NBD targets.

use clap::Parser;

/// Sendense node data mover.
#[derive(Debug, Parser)]
#[command(name = "sendense-sna", version, about = "Sendense node data mover")]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
