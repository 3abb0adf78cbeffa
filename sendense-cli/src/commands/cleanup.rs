//! `sendense cleanup`.

use crate::cli::GlobalArgs;
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::{Error, ErrorKind};
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, dry_run: bool) -> CmdResult {
    let mut sd = super::open_options(g).without_reconcile().open()?;
    let report = sd.cleanup(dry_run)?;
    if g.json {
        output::json(&report)?;
    } else if report.actions.is_empty() && report.strays.is_empty() {
        output::line("Nothing to clean up.")?;
    } else if report.actions.is_empty() {
        output::line("Nothing of this hub to clean up.")?;
    } else {
        let mut t = table::new(&["Action", "Target", "Reason"]);
        for a in &report.actions {
            t.add_row([a.action.clone(), a.target.clone(), a.reason.clone()]);
        }
        output::line(&t.to_string())?;
        if dry_run {
            output::line("Dry run: nothing was changed.")?;
        }
    }
    if !g.json && !report.strays.is_empty() {
        output::line(
            "Left alone — they look unfinished, but no job of this hub wrote them (another hub's \
             running backup, or an older Sendense); remove them by hand once you know:",
        )?;
        for f in &report.strays {
            output::line(&format!("  {f}"))?;
        }
    }
    if !report.errors.is_empty() {
        if g.json {
            // The report, errors included, is the one document on stdout; the status says it.
            return Ok(ExitCode::from(crate::exit_code(ErrorKind::PartiallyFailed)));
        }
        return Err(Error::new(
            ErrorKind::PartiallyFailed,
            format!("cleanup could not finish: {}", report.errors.join("; ")),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
