//! `sendense doctor`.

use crate::cli::GlobalArgs;
use crate::output;
use crate::CmdResult;
use std::process::ExitCode;

pub fn run(g: &GlobalArgs) -> CmdResult {
    let dir = sendense_core::resolve_state_dir(g.state_dir.as_deref())?;
    let report = sendense_core::doctor::check(&dir)?;
    if g.json {
        output::json(&report)?;
    } else if report.ok {
        output::line(&format!(
            "The catalog {} is whole: SQLite found nothing wrong.",
            report.catalog.display()
        ))?;
    } else {
        output::line(&format!(
            "The catalog {} is damaged:",
            report.catalog.display()
        ))?;
        for p in &report.problems {
            output::line(&format!("  {p}"))?;
        }
        output::line("")?;
        for a in &report.advice {
            output::line(a)?;
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit_code(sendense_core::ErrorKind::Catalog))
    })
}
