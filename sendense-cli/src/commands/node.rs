//! `sendense node ...`.

use crate::cli::{GlobalArgs, NodeCommand};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::catalog::NodeRecord;
use sendense_core::hub::AddNode;
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: NodeCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    match cmd {
        NodeCommand::Add {
            name,
            ssh,
            identity,
            host_key,
            accept_host_key,
            sna_path,
            install,
        } => {
            let n = sd.add_node(&AddNode {
                name,
                ssh,
                identity,
                host_key,
                accept_host_key,
                sna_path,
                install,
            })?;
            if g.json {
                output::json(&n)?;
            } else {
                output::line(&format!(
                    "Added node `{}` ({}@{}:{}), host key {} pinned, sendense-sna {}.",
                    n.name,
                    n.user,
                    n.host,
                    n.port,
                    n.host_key,
                    n.sna_version.as_deref().unwrap_or("-")
                ))?;
            }
        }
        NodeCommand::List => {
            let list = sd.nodes()?;
            if g.json {
                output::json(&list)?;
            } else if list.is_empty() {
                output::line("No nodes. Add one with `sendense node add NAME --ssh USER@HOST`.")?;
            } else {
                let mut t = table::new(&["Name", "SSH", "Host key", "sendense-sna", "VMs"]);
                for n in &list {
                    t.add_row([
                        n.name.clone(),
                        format!("{}@{}:{}", n.user, n.host, n.port),
                        n.host_key.clone(),
                        n.sna_version.clone().unwrap_or_else(|| "-".into()),
                        n.vms.join(", "),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        NodeCommand::Show { name } => {
            let n = sd.node(&name)?;
            if g.json {
                output::json(&n)?;
            } else {
                output::line(&show(&n))?;
            }
        }
        NodeCommand::Install { name, to } => {
            let c = sd.install_node(&name, to.as_deref())?;
            if g.json {
                output::json(&c)?;
            } else {
                let n = sd.node(&name)?;
                output::line(&format!(
                    "Installed sendense-sna {} on node `{}` as {} in {} ms.",
                    c.hello.version, c.node, n.sna_path, c.millis
                ))?;
            }
        }
        NodeCommand::Test { name, throughput } => {
            let c = sd.test_node(&name, throughput)?;
            if g.json {
                output::json(&c)?;
            } else {
                output::line(&format!(
                    "Node `{}` answered in {} ms: host key {} as pinned, sendense-sna {} (node protocol {}, source protocol {}).",
                    c.node,
                    c.millis,
                    c.host_key,
                    c.hello.version,
                    c.hello.node_protocol,
                    c.hello.source_protocol
                ))?;
                if let Some(t) = &c.throughput {
                    output::line(&format!(
                        "Node to hub through the SSH connection: {} in {:.2} s, {:.1} MiB/s.",
                        output::bytes(t.bytes),
                        t.seconds,
                        t.mib_per_sec
                    ))?;
                }
            }
        }
        NodeCommand::Remove { name } => {
            let n = sd.remove_node(&name)?;
            if g.json {
                output::json(&n)?;
            } else {
                output::line(&format!("Removed node `{}`.", n.name))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show(n: &NodeRecord) -> String {
    table::fields(&[
        ("Name", n.name.clone()),
        ("SSH", format!("{}@{}:{}", n.user, n.host, n.port)),
        ("Host key", n.host_key.clone()),
        (
            "Signs in with",
            n.identity
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "ssh-agent".into()),
        ),
        ("sendense-sna", n.sna_path.clone()),
        (
            "Version",
            n.sna_version.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "Last reached",
            n.checked_at.clone().unwrap_or_else(|| "-".into()),
        ),
        ("VMs", n.vms.join(", ")),
        ("Added", n.created_at.clone()),
    ])
    .to_string()
}
