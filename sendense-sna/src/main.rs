//! `sendense-sna`: the Sendense node data mover. It runs next to the hypervisor, reads source
//! disks and writes them into the hub's NBD targets.

fn main() -> std::process::ExitCode {
    sendense_sna::main()
}
