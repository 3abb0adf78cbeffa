//! `sendense init`.

use crate::cli::GlobalArgs;
use crate::{output, CmdResult};
use std::process::ExitCode;

pub fn run(g: &GlobalArgs) -> CmdResult {
    let (_sd, report) = super::open_options(g).init()?;
    if g.json {
        output::json(&report)?;
    } else {
        let verb = if report.catalog_created {
            "Initialised"
        } else {
            "Already initialised:"
        };
        output::line(&format!(
            "{verb} Sendense state in {}",
            report.state_dir.display()
        ))?;
        output::line(&format!(
            "  catalog  {} (schema {})",
            report.catalog.display(),
            report.schema_version
        ))?;
        let note = if report.config_created {
            ""
        } else {
            " (kept as it was)"
        };
        output::line(&format!("  config   {}{note}", report.config.display()))?;
        output::line(
            "Next: `sendense repo add NAME --path DIR`, then `sendense vm add NAME --disk PATH`.",
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
