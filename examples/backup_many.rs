//! Backs up several registered VMs at once, in one process, through the library's job runner:
//! each backup on its own thread with its own catalog connection, cancellation and job log, all
//! their events into one closure. Uses only the public API of `sendense-core`.
//!
//! ```text
//! cargo run -p sendense-examples --example backup_many -- STATE_DIR VM [VM ...]
//! ```

use sendense_core::backup::plan::Requested;
use sendense_core::runner::Runner;
use sendense_core::{Event, EventKind, OpenOptions};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((state, vms)) = args.split_first().filter(|(_, vms)| !vms.is_empty()) else {
        eprintln!("usage: backup_many STATE_DIR VM [VM ...]");
        std::process::exit(2);
    };
    // Events of all the jobs arrive here, each with its job id.
    let sink = Arc::new(|e: &Event| {
        let job = e.job.map_or_else(|| "-".to_string(), |j| j.to_string());
        match &e.kind {
            EventKind::JobStarted { kind, vm } => {
                println!(
                    "job {job}: {kind} of {} started",
                    vm.as_deref().unwrap_or("-")
                )
            }
            EventKind::JobFinished { status, error } => {
                println!("job {job}: {status} {}", error.as_deref().unwrap_or(""))
            }
            _ => {}
        }
    });
    let runner = Runner::new(OpenOptions::new().state_dir(state).sink(sink))?;
    // Ctrl-C here would stop the process; a scheduler would call `cancel()` on the handles.
    let jobs: Vec<_> = vms
        .iter()
        .map(|vm| (vm, runner.backup(vm, Requested::Auto)))
        .collect();
    let mut failed = 0;
    for (vm, job) in jobs {
        match job.wait() {
            Ok(report) => {
                for d in &report.disks {
                    println!(
                        "{vm}: disk {} {} ({}), {} bytes read",
                        d.key,
                        d.mode.as_str(),
                        d.reason,
                        d.bytes_read
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{vm}: {e} [{}]", e.code());
            }
        }
    }
    if failed > 0 {
        std::process::exit(i32::from(sendense_core::exit::PARTIAL));
    }
    Ok(())
}
