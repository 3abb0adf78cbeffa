//! `sendense vm ...`.

use crate::cli::{GlobalArgs, VmCommand};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::VmRecord;
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: VmCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    match cmd {
        VmCommand::Add {
            name,
            disks,
            qmp,
            nbd,
            pre_hook,
            post_hook,
            node,
            vcenter,
            path,
            uuid,
            groups,
        } => {
            if nbd.is_empty() && (pre_hook.is_some() || post_hook.is_some()) {
                return Err(sendense_core::Error::invalid("--pre-hook and --post-hook apply to VMs added with --nbd")
                    .with_help("QEMU and image VMs are snapshotted by Sendense itself; hooks are for external exports."));
            }
            // Every group named must exist before the VM is added.
            for group in &groups {
                sd.group(group)?;
            }
            let vm = if let Some(vcenter) = &vcenter {
                sd.add_vmware_vm(
                    &name,
                    vcenter,
                    path.as_deref(),
                    uuid.as_deref(),
                    node.as_deref(),
                )?
            } else if let (Some(node), Some(socket)) = (&node, &qmp) {
                sd.add_node_qemu_vm(&name, node, &socket.to_string_lossy())?
            } else if let Some(node) = &node {
                let files: Vec<String> = disks
                    .iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .collect();
                sd.add_node_image_vm(&name, node, &files)?
            } else if let Some(socket) = qmp {
                sd.add_qemu_vm(&name, &socket)?
            } else if !nbd.is_empty() {
                sd.add_nbd_vm(&name, &nbd, pre_hook.as_deref(), post_hook.as_deref())?
            } else {
                sd.add_image_vm(&name, &disks)?
            };
            for group in &groups {
                sd.group_add_vm(group, &vm.name).map_err(|e| {
                    e.context(format!(
                        "VM `{}` was added, but not to group `{group}`",
                        vm.name
                    ))
                })?;
            }
            if g.json {
                output::json(&vm)?;
            } else {
                output::line(&format!(
                    "Added VM `{}` with {} disk(s){}",
                    vm.name,
                    vm.disks.len(),
                    match groups.is_empty() {
                        true => String::new(),
                        false => format!(", in group(s) {}", groups.join(", ")),
                    }
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
                        source_text(vm),
                        vm.disks.len().to_string(),
                        output::bytes(vm.disks.iter().map(|d| d.size_bytes).sum()),
                        vm.backups.to_string(),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        VmCommand::Discover {
            vcenter: Some(vcenter),
            filter,
            ..
        } => {
            let vms = sd.discover_vmware(&vcenter, filter.as_deref())?;
            if g.json {
                output::json(&vms)?;
            } else if vms.is_empty() {
                output::line(&format!("vCenter `{vcenter}` has no VMs that match."))?;
            } else {
                let mut t = table::new(&[
                    "Name",
                    "Ref",
                    "UUID",
                    "Power",
                    "CBT",
                    "Disks (key slot size)",
                ]);
                for vm in &vms {
                    t.add_row([
                        vm.name.clone(),
                        vm.moref.clone(),
                        vm.uuid.clone(),
                        vm.power_state.clone(),
                        if vm.change_tracking { "on" } else { "off" }.to_string(),
                        vm.disks
                            .iter()
                            .map(|d| {
                                format!("{} {} {}", d.key, d.slot, output::bytes(d.capacity_bytes))
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        VmCommand::Discover { qmp, node, .. } => {
            let qmp = qmp.ok_or_else(|| {
                sendense_core::Error::invalid("name the VM with --qmp or --vcenter")
            })?;
            let disks = match &node {
                Some(node) => sd.discover_node_qemu(node, &qmp.to_string_lossy())?,
                None => sd.discover_qemu(&qmp)?,
            };
            if g.json {
                output::json(&disks)?;
            } else {
                let mut t = table::new(&["Key", "Identity", "Format", "Size", "Detail"]);
                for (i, d) in disks.iter().enumerate() {
                    t.add_row([
                        (2000 + i).to_string(),
                        d.identity.clone(),
                        d.format.clone().unwrap_or_default(),
                        output::bytes(d.size_bytes),
                        d.detail.clone(),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        VmCommand::Show { name } => {
            let vm = sd.vm(&name)?;
            let status = sd.disk_status(&vm);
            if let Err(e) = &status {
                tracing::warn!("cannot read checkpoints from the source: {e}");
            }
            let states: Vec<Option<sendense_core::source::CheckpointState>> = match &status {
                Ok(list) => list
                    .iter()
                    .map(|d| Some(d.checkpoint_state.clone()))
                    .collect(),
                Err(_) => vec![None; vm.disks.len()],
            };
            let groups = sd.groups_of_vm(&name)?;
            if g.json {
                let mut doc = serde_json::to_value(&vm).unwrap_or_default();
                if let Some(disks) = doc["disks"].as_array_mut() {
                    for (d, st) in disks.iter_mut().zip(&states) {
                        d["checkpoint_state"] = serde_json::to_value(st).unwrap_or_default();
                    }
                }
                doc["groups"] = serde_json::json!(groups
                    .iter()
                    .map(|s| serde_json::json!({
                        "name": s.group.name,
                        "policy": s.group.policy,
                        "next_run": s.next_run,
                    }))
                    .collect::<Vec<_>>());
                output::json(&doc)?;
            } else {
                let in_groups = groups
                    .iter()
                    .map(|s| match &s.next_run {
                        Some(next) => format!("{} (next run {next})", s.group.name),
                        None => s.group.name.clone(),
                    })
                    .collect::<Vec<_>>();
                let rows = [
                    ("Name", vm.name.clone()),
                    ("Source", source_text(&vm)),
                    ("Backups", vm.backups.to_string()),
                    ("Created", vm.created_at.clone()),
                    (
                        "Groups",
                        if in_groups.is_empty() {
                            "-".into()
                        } else {
                            in_groups.join(", ")
                        },
                    ),
                ];
                output::line(&table::fields(&rows).to_string())?;
                let mut t2 =
                    table::new(&["Key", "Identity", "Format", "Size", "Checkpoint", "State"]);
                for (d, st) in vm.disks.iter().zip(&states) {
                    t2.add_row([
                        d.key.to_string(),
                        if d.present {
                            d.identity.clone()
                        } else {
                            format!("{} (vanished)", d.identity)
                        },
                        d.format.clone().unwrap_or_else(|| "-".into()),
                        output::bytes(d.size_bytes),
                        d.checkpoint.clone().unwrap_or_else(|| "none".into()),
                        st.as_ref()
                            .map(state_text)
                            .unwrap_or_else(|| "source unreachable".into()),
                    ]);
                }
                output::line(&t2.to_string())?;
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

fn state_text(s: &sendense_core::source::CheckpointState) -> String {
    use sendense_core::source::CheckpointState as C;
    match s {
        C::Present => "present".into(),
        C::None => "none yet".into(),
        C::Missing => "missing on source".into(),
        C::Inconsistent => "inconsistent".into(),
        C::Unsupported(why) => why.clone(),
    }
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

/// The source kind, and the node it runs on.
fn source_text(vm: &VmRecord) -> String {
    match &vm.node {
        Some(node) => format!("{} on node {node}", vm.source),
        None => vm.source.clone(),
    }
}
