//! `sendense job ...`.

use crate::cli::{GlobalArgs, JobCommand};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::{JobFilter, JobRecord};
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: JobCommand) -> CmdResult {
    let sd = super::open(g)?;
    match cmd {
        JobCommand::List {
            vm,
            group,
            policy,
            status,
            limit,
        } => {
            let filter = JobFilter {
                vm,
                group,
                policy,
                status: status.map(|s| s.parse()).transpose()?,
                limit: Some(limit),
            };
            let jobs = sd.jobs(&filter)?;
            if g.json {
                output::json(&jobs)?;
            } else if jobs.is_empty() {
                output::line("No jobs.")?;
            } else {
                let mut t =
                    table::new(&["Id", "Kind", "VM", "Status", "Started", "Ended", "Error"]);
                for j in &jobs {
                    t.add_row([
                        j.id.to_string(),
                        j.kind.to_string(),
                        j.vm.clone().unwrap_or_default(),
                        j.status.to_string(),
                        j.started_at.clone().unwrap_or_default(),
                        j.ended_at.clone().unwrap_or_default(),
                        j.error.clone().unwrap_or_default(),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        JobCommand::Log { id } => {
            let lines = sd.job_log_lines(id)?;
            if g.json {
                output::json(&lines)?;
            } else {
                for l in &lines {
                    output::line(&format!("{} {:5} {}", l.ts, l.level, l.message))?;
                }
            }
        }
        JobCommand::Cancel { id } => {
            let mut sd = sd;
            let job = sd.cancel_job(id)?;
            if g.json {
                output::json(&job)?;
            } else {
                output::line(&format!(
                    "Asked job {id} ({} of {}) to cancel.",
                    job.kind,
                    job.vm.clone().unwrap_or_default()
                ))?;
            }
        }
        JobCommand::Show { id } => {
            let job = sd.job(id)?;
            if g.json {
                output::json(&job)?;
            } else {
                output::line(&details(&job).to_string())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn details(j: &JobRecord) -> comfy_table::Table {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    table::fields(&[
        ("Id", j.id.to_string()),
        ("Kind", j.kind.to_string()),
        ("VM", opt(&j.vm)),
        ("Repository", opt(&j.repo)),
        ("Status", j.status.to_string()),
        (
            "Process",
            match (&j.pid, &j.host) {
                (Some(pid), Some(host)) => format!("{pid} on {host}"),
                (Some(pid), None) => pid.to_string(),
                _ => "-".into(),
            },
        ),
        ("Created", j.created_at.clone()),
        ("Started", opt(&j.started_at)),
        ("Ended", opt(&j.ended_at)),
        (
            "Bytes",
            format!(
                "{} of {}",
                output::bytes(j.bytes_done),
                output::bytes(j.bytes_total)
            ),
        ),
        ("Error", opt(&j.error)),
    ])
}
