//! Backs up a registered VM through the library API and prints what each disk moved, with
//! progress events delivered to a closure. Uses only the public API of `sendense-core`.
//!
//! ```text
//! cargo run -p sendense-examples --example backup_vm -- STATE_DIR VM [full|incremental|auto]
//! ```

use sendense_core::backup::plan::Requested;
use sendense_core::{Event, EventKind, OpenOptions};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(state), Some(vm)) = (args.first(), args.get(1)) else {
        eprintln!("usage: backup_vm STATE_DIR VM [full|incremental|auto]");
        std::process::exit(2);
    };
    let mode = match args.get(2).map(String::as_str) {
        Some("full") => Requested::Full,
        Some("incremental") => Requested::Incremental,
        _ => Requested::Auto,
    };
    let sink = Arc::new(|e: &Event| {
        if let EventKind::DiskFinished {
            disk,
            bytes_read,
            seconds,
            ..
        } = &e.kind
        {
            println!("disk {disk}: {bytes_read} bytes in {seconds:.1}s");
        }
    });
    let mut sd = OpenOptions::new().state_dir(state).sink(sink).open()?;
    match sd.backup(vm).mode(mode).run() {
        Ok(report) => {
            for d in &report.disks {
                println!(
                    "{} {} ({}) -> {}",
                    d.key,
                    d.mode.as_str(),
                    d.reason,
                    d.file.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("{e} [{}]", e.code());
            if let Some(help) = e.help() {
                eprintln!("help: {help}");
            }
            std::process::exit(1);
        }
    }
}
