//! Registers a repository and an image VM through the library API, then lists what the catalog
//! holds. Uses only the public API of `sendense-core`.
//!
//! ```text
//! cargo run -p sendense-examples --example catalog_tour -- STATE_DIR REPO_DIR DISK...
//! ```

use sendense_core::{AddRepo, OpenOptions};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(state), Some(repo)) = (args.next(), args.next()) else {
        eprintln!("usage: catalog_tour STATE_DIR REPO_DIR DISK...");
        std::process::exit(2);
    };
    let disks: Vec<PathBuf> = args.collect();

    let (mut sd, report) = OpenOptions::new().state_dir(state).init()?;
    println!("state in {}", report.state_dir.display());

    if sd.repos()?.is_empty() {
        let repo = sd.add_repo(&AddRepo::new("local", repo))?;
        println!("repository {} at {}", repo.name, repo.path.display());
    }
    if !disks.is_empty() {
        match sd.add_image_vm("example-vm", &disks) {
            Ok(vm) => println!("added {} with {} disks", vm.name, vm.disks.len()),
            Err(e) => println!("not added: {e} ({})", e.code()),
        }
    }
    for vm in sd.vms()? {
        for disk in &vm.disks {
            println!(
                "{} disk {} {} ({} bytes)",
                vm.name, disk.key, disk.identity, disk.size_bytes
            );
        }
    }
    Ok(())
}
