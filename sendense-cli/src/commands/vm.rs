//! `sendense vm ...`.

use crate::cli::{GlobalArgs, VmCommand};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::VmRecord;
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: VmCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    match cmd {
        VmCommand::Add { name, disks } => {
            let vm = sd.add_image_vm(&name, &disks)?;
            if g.json {
                output::json(&vm)?;
            } else {
                output::line(&format!(
                    "Added VM `{}` with {} disk(s)",
                    vm.name,
                    vm.disks.len()
                ))?;
                output::line(&disk_table(&vm).to_string())?;
            }
        }
        VmCommand::List => {
            let vms = sd.vms()?;
            if g.json {
                output::json(&vms)?;
            } else if vms.is_empty() {
                output::line("No VMs. Add one with `sendense vm add NAME --disk PATH`.")?;
            } else {
                let mut t = table::new(&["Name", "Source", "Disks", "Size", "Backups"]);
                for vm in &vms {
                    t.add_row([
                        vm.name.clone(),
                        vm.source.clone(),
                        vm.disks.len().to_string(),
                        output::bytes(vm.disks.iter().map(|d| d.size_bytes).sum()),
                        vm.backups.to_string(),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        VmCommand::Show { name } => {
            let vm = sd.vm(&name)?;
            if g.json {
                output::json(&vm)?;
            } else {
                let rows = [
                    ("Name", vm.name.clone()),
                    ("Source", vm.source.clone()),
                    ("Backups", vm.backups.to_string()),
                    ("Created", vm.created_at.clone()),
                ];
                output::line(&table::fields(&rows).to_string())?;
                output::line(&disk_table(&vm).to_string())?;
            }
        }
        VmCommand::Remove { name } => {
            let vm = sd.remove_vm(&name)?;
            if g.json {
                output::json(&vm)?;
            } else {
                output::line(&format!(
                    "Removed VM `{}` from the catalog; its disks were not touched.",
                    vm.name
                ))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn disk_table(vm: &VmRecord) -> comfy_table::Table {
    let mut t = table::new(&["Key", "Identity", "Format", "Size", "Checkpoint"]);
    for d in &vm.disks {
        let mut identity = d.identity.clone();
        if !d.present {
            identity.push_str(" (vanished)");
        }
        t.add_row([
            d.key.to_string(),
            identity,
            d.format.clone().unwrap_or_else(|| "-".into()),
            output::bytes(d.size_bytes),
            d.checkpoint.clone().unwrap_or_else(|| "none".into()),
        ]);
    }
    t
}
