//! `sendense vcenter ...`.

use crate::cli::{GlobalArgs, VcenterCommand};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::catalog::VcenterRecord;
use sendense_core::hub::{AddVcenter, VcenterCheck};
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: VcenterCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    match cmd {
        VcenterCommand::Add {
            name,
            url,
            user,
            password_file,
            thumbprint,
            accept_certificate,
        } => {
            let c = sd.add_vcenter(&AddVcenter {
                name,
                url,
                user,
                password_file,
                thumbprint,
                accept_certificate,
            })?;
            if g.json {
                output::json(&c)?;
            } else {
                output::line(&format!(
                    "Added vCenter `{}` ({}), certificate {} pinned, logged in as {}: {}.",
                    c.vcenter.name,
                    c.vcenter.url,
                    c.vcenter.thumbprint,
                    c.vcenter.user,
                    about(&c)
                ))?;
            }
        }
        VcenterCommand::List => {
            let list = sd.vcenters()?;
            if g.json {
                output::json(&list)?;
            } else if list.is_empty() {
                output::line(
                    "No vCenters. Add one with `sendense vcenter add NAME --url https://HOST/sdk --user USER --password-file FILE`.",
                )?;
            } else {
                let mut t = table::new(&["Name", "URL", "User", "Version", "Last reached"]);
                for v in &list {
                    t.add_row([
                        v.name.clone(),
                        v.url.clone(),
                        v.user.clone(),
                        v.api_version.clone().unwrap_or_else(|| "-".into()),
                        v.checked_at.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        VcenterCommand::Show { name } => {
            let v = sd.vcenter(&name)?;
            if g.json {
                output::json(&v)?;
            } else {
                output::line(&show(&v))?;
            }
        }
        VcenterCommand::Test { name } => {
            let c = sd.test_vcenter(&name)?;
            if g.json {
                output::json(&c)?;
            } else {
                output::line(&format!(
                    "vCenter `{}` answered with its pinned certificate and accepted the login of {}: {}.",
                    c.vcenter.name,
                    c.vcenter.user,
                    about(&c)
                ))?;
            }
        }
        VcenterCommand::Remove { name } => {
            let v = sd.remove_vcenter(&name)?;
            if g.json {
                output::json(&v)?;
            } else {
                output::line(&format!("Removed vCenter `{}`.", v.name))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn about(c: &VcenterCheck) -> String {
    format!("{} (API {})", c.about.full_name, c.about.api_version)
}

fn show(v: &VcenterRecord) -> String {
    table::fields(&[
        ("Name", v.name.clone()),
        ("URL", v.url.clone()),
        ("User", v.user.clone()),
        ("Certificate", v.thumbprint.clone()),
        ("Server", v.full_name.clone().unwrap_or_else(|| "-".into())),
        (
            "API version",
            v.api_version.clone().unwrap_or_else(|| "-".into()),
        ),
        (
            "Last reached",
            v.checked_at.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Added", v.created_at.clone()),
    ])
    .to_string()
}
