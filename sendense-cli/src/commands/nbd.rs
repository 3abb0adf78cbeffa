//! `sendense nbd ...`.

use crate::cli::{GlobalArgs, NbdCommand};
use crate::output::{self, table};
use crate::CmdResult;
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: NbdCommand) -> CmdResult {
    let sd = super::open(g)?;
    match cmd {
        NbdCommand::List => {
            let exports = sd.nbd_exports()?;
            if g.json {
                output::json(&exports)?;
            } else if exports.is_empty() {
                output::line("No NBD exports.")?;
            } else {
                let mut t = table::new(&["Port", "Export", "Pid", "Job", "File", "Age", "State"]);
                for e in &exports {
                    let r = &e.record;
                    t.add_row([
                        r.port
                            .map(|p| p.to_string())
                            .or_else(|| r.socket.as_ref().map(|s| s.display().to_string()))
                            .unwrap_or_default(),
                        r.export.clone(),
                        r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        r.job.map(|j| j.to_string()).unwrap_or_else(|| "-".into()),
                        r.file
                            .as_ref()
                            .map(|f| f.display().to_string())
                            .unwrap_or_default(),
                        format!("{}s", e.age_seconds),
                        if e.alive { "serving" } else { "not running" }.into(),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
