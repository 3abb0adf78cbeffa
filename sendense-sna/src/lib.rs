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
        cli::Command::SendTest { port, bytes } => send_test(port, bytes),
        cli::Command::Hello => {
            let hello = sendense_core::node::Hello::this();
            println!("{}", serde_json::to_string(&hello).unwrap_or_default());
            Ok(())
        }
        cli::Command::SshCommand => ssh_command(),
        cli::Command::Source => sendense_core::source::node::serve(
            std::io::BufReader::new(std::io::stdin()),
            std::io::stdout().lock(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            sendense_term::print_error(&err, json);
            ExitCode::from(sendense_term::exit_code(err.kind()))
        }
    }
}

/// `sendense-sna ssh-command`: becomes the node command the hub asked for, or refuses it.
fn ssh_command() -> sendense_core::Result<()> {
    use std::os::unix::process::CommandExt;
    let asked = std::env::var("SSH_ORIGINAL_COMMAND").unwrap_or_default();
    let args = sendense_core::node::node_command(&asked)?;
    // This very executable, also while an upgrade replaces its file.
    let me = std::path::Path::new("/proc/self/exe");
    // Only returns when it could not run.
    let e = std::process::Command::new(me)
        .args(&args)
        .env(sendense_core::source::node::RESTRICTED_ENV, "1")
        .exec();
    Err(sendense_core::Error::internal(format!(
        "running {}: {e}",
        me.display()
    )))
}

/// `sendense-sna send-test`: BYTES to 127.0.0.1:PORT.
fn send_test(port: u16, bytes: u64) -> sendense_core::Result<()> {
    use std::io::Write;
    let failed = |e: std::io::Error| {
        sendense_core::Error::new(
            sendense_core::ErrorKind::External,
            format!("sending to 127.0.0.1:{port}: {e}"),
        )
    };
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(failed)?;
    let _ = s.set_nodelay(true);
    let block = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        s.write_all(&block[..n]).map_err(failed)?;
        left -= n as u64;
    }
    s.shutdown(std::net::Shutdown::Write).map_err(failed)?;
    println!(
        "{}",
        serde_json::json!({"bytes": bytes, "seconds": started.elapsed().as_secs_f64()})
    );
    Ok(())
}
