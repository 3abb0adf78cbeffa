//! `sendense policy ...`, `sendense group ...`, `sendense schedule list`.

use crate::cli::{
    CopyKeepArgs, GlobalArgs, GroupCommand, KeepArgs, PolicyCommand, ScheduleCommand,
};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::catalog::PolicyRecord;
use sendense_core::retention::KeepRules;
use sendense_core::{GroupStatus, PolicyEdit, PolicySpec};
use std::process::ExitCode;

/// The keep rules the flags give.
pub fn keep_rules(k: &KeepArgs) -> KeepRules {
    KeepRules {
        last: k.keep_last,
        hourly: k.keep_hourly,
        daily: k.keep_daily,
        weekly: k.keep_weekly,
        monthly: k.keep_monthly,
        yearly: k.keep_yearly,
    }
}

fn copy_rules(k: &CopyKeepArgs) -> KeepRules {
    KeepRules {
        last: k.copy_keep_last,
        hourly: k.copy_keep_hourly,
        daily: k.copy_keep_daily,
        weekly: k.copy_keep_weekly,
        monthly: k.copy_keep_monthly,
        yearly: k.copy_keep_yearly,
    }
}

/// `none` clears an optional setting.
fn clearable(v: Option<String>) -> Option<Option<String>> {
    v.map(|s| (!s.eq_ignore_ascii_case("none")).then_some(s))
}

pub fn run(g: &GlobalArgs, cmd: PolicyCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    let shown = match cmd {
        PolicyCommand::Add {
            name,
            repo,
            schedule,
            full_every,
            full_schedule,
            verify,
            keep,
            copy_to,
            copy_keep,
        } => sd.add_policy(
            &name,
            &PolicySpec {
                repo,
                schedule,
                full_every,
                full_schedule,
                verify_schedule: verify,
                keep: keep_rules(&keep),
                copies: copy_to
                    .map(|r| vec![(r, copy_rules(&copy_keep))])
                    .unwrap_or_default(),
            },
        )?,
        PolicyCommand::Edit {
            name,
            repo,
            schedule,
            full_every,
            full_schedule,
            verify,
            keep_last,
            keep_hourly,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
            copy_to,
            copy_keep,
        } => sd.edit_policy(
            &name,
            &PolicyEdit {
                repo,
                schedule: clearable(schedule),
                full_every: full_every.map(|n| (n > 0).then_some(n)),
                full_schedule: clearable(full_schedule),
                verify_schedule: clearable(verify),
                keep: [
                    keep_last,
                    keep_hourly,
                    keep_daily,
                    keep_weekly,
                    keep_monthly,
                    keep_yearly,
                ],
                copy_to: clearable(copy_to),
                copy_keep: Some(copy_rules(&copy_keep)).filter(|k| !k.is_empty()),
            },
        )?,
        PolicyCommand::List => {
            let list = sd.policies()?;
            if g.json {
                output::json(&list)?;
            } else if list.is_empty() {
                output::line("No policies.")?;
            } else {
                let mut t = table::new(&[
                    "Policy",
                    "Repository",
                    "Schedule",
                    "Keep",
                    "Copies",
                    "Groups",
                ]);
                for p in &list {
                    t.add_row([
                        p.name.clone(),
                        p.repo.clone(),
                        p.schedule.clone().unwrap_or_else(|| "by hand".into()),
                        keep_text(&p.keep),
                        p.copies
                            .iter()
                            .map(|c| c.repo.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                        p.groups.join(", "),
                    ]);
                }
                output::line(&t.to_string())?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        PolicyCommand::Show { name } => sd.policy(&name)?,
        PolicyCommand::Remove { name } => {
            let p = sd.remove_policy(&name)?;
            if g.json {
                output::json(&p)?;
            } else {
                output::line(&format!("Removed policy `{}`.", p.name))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    show_policy(g, &shown)?;
    Ok(ExitCode::SUCCESS)
}

fn show_policy(g: &GlobalArgs, p: &PolicyRecord) -> Result<(), sendense_core::Error> {
    if g.json {
        return output::json(p);
    }
    let fulls = match (&p.full_every, &p.full_schedule) {
        (Some(n), _) => format!("every {n} backups"),
        (None, Some(s)) => format!("on `{s}`"),
        _ => "when needed (first backup, lost checkpoint, resized disk)".into(),
    };
    let mut fields = vec![
        ("Policy", p.name.clone()),
        ("Repository", p.repo.clone()),
        (
            "Schedule",
            p.schedule.clone().unwrap_or_else(|| "by hand".into()),
        ),
        ("Fulls", fulls),
        (
            "Verify",
            p.verify_schedule.clone().unwrap_or_else(|| "-".into()),
        ),
        ("Keep", keep_text(&p.keep)),
    ];
    for c in &p.copies {
        fields.push((
            "Copy to",
            format!("{} (keep {})", c.repo, keep_text(&c.keep)),
        ));
    }
    fields.push((
        "Groups",
        if p.groups.is_empty() {
            "-".into()
        } else {
            p.groups.join(", ")
        },
    ));
    output::line(&table::fields(&fields).to_string())
}

fn keep_text(k: &KeepRules) -> String {
    if k.is_empty() {
        return "everything".into();
    }
    k.rules()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn group(g: &GlobalArgs, cmd: GroupCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    let name = match cmd {
        GroupCommand::Add {
            name,
            policy,
            max_parallel,
            priority,
        } => sd.add_group(&name, &policy, max_parallel, priority)?.name,
        GroupCommand::Edit {
            name,
            policy,
            max_parallel,
            priority,
        } => {
            sd.edit_group(&name, policy.as_deref(), max_parallel, priority)?
                .name
        }
        GroupCommand::AddVm { group, vm } => sd.group_add_vm(&group, &vm)?.name,
        GroupCommand::RemoveVm { group, vm } => sd.group_remove_vm(&group, &vm)?.name,
        GroupCommand::Show { name } => name,
        GroupCommand::List => {
            groups_table(g, &sd.groups()?)?;
            return Ok(ExitCode::SUCCESS);
        }
        GroupCommand::Remove { name } => {
            let gr = sd.remove_group(&name)?;
            if g.json {
                output::json(&gr)?;
            } else {
                output::line(&format!(
                    "Removed group `{}`; its VMs and backups stay.",
                    gr.name
                ))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    let status = sd.group(&name)?;
    if g.json {
        output::json(&status)?;
    } else {
        let gr = &status.group;
        output::line(
            &table::fields(&[
                ("Group", gr.name.clone()),
                ("Policy", gr.policy.clone()),
                ("Max parallel", gr.max_parallel.to_string()),
                ("Priority", gr.priority.to_string()),
                (
                    "VMs",
                    if gr.vms.is_empty() {
                        "-".into()
                    } else {
                        gr.vms.join(", ")
                    },
                ),
                (
                    "Schedule",
                    status.schedule.clone().unwrap_or_else(|| "by hand".into()),
                ),
                (
                    "Next run",
                    status.next_run.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "Last run",
                    gr.last_run_at.clone().unwrap_or_else(|| "-".into()),
                ),
            ])
            .to_string(),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn groups_table(g: &GlobalArgs, list: &[GroupStatus]) -> Result<(), sendense_core::Error> {
    if g.json {
        return output::json(&list);
    }
    if list.is_empty() {
        return output::line("No groups.");
    }
    let mut t = table::new(&[
        "Group",
        "Policy",
        "Priority",
        "VMs",
        "Schedule",
        "Next run",
        "Last result",
        "Next verify",
        "Last verify",
    ]);
    for s in list {
        t.add_row([
            s.group.name.clone(),
            s.group.policy.clone(),
            s.group.priority.to_string(),
            s.group.vms.len().to_string(),
            s.schedule.clone().unwrap_or_else(|| "by hand".into()),
            s.next_run.clone().unwrap_or_else(|| "-".into()),
            s.group.last_result.clone().unwrap_or_else(|| "-".into()),
            s.next_verify.clone().unwrap_or_else(|| "-".into()),
            s.group
                .last_verify_result
                .clone()
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    output::line(&t.to_string())
}

pub fn schedule(g: &GlobalArgs, cmd: ScheduleCommand) -> CmdResult {
    match cmd {
        ScheduleCommand::List => {
            let sd = super::open(g)?;
            groups_table(g, &sd.groups()?)?;
        }
        ScheduleCommand::Run { dry_run } => {
            let mut sd = super::open(g)?;
            let cancel = super::interrupt_token(g)?;
            let report = sd.schedule_run(dry_run, &cancel)?;
            if g.json {
                output::json(&report)?;
            } else {
                run_text(&report)?;
            }
            return Ok(ExitCode::from(report.exit_code()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn daemon(g: &GlobalArgs) -> CmdResult {
    let mut sd = super::open(g)?;
    let cancel = super::interrupt_token(g)?;
    let mut failed = None;
    sd.daemon(&cancel, |report| {
        let shown = if g.json {
            output::json_line(report)
        } else {
            run_text(report)
        };
        if let Err(e) = shown {
            failed.get_or_insert(e);
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

fn run_text(r: &sendense_core::schedule::ScheduleRunReport) -> Result<(), sendense_core::Error> {
    if r.already_running {
        return output::line("Another `schedule run` is running: nothing started.");
    }
    if r.groups.is_empty() && r.verifies.is_empty() {
        return output::line(&format!("Nothing is due at {}.", r.now));
    }
    for gr in &r.groups {
        output::line(&format!(
            "Group `{}` (policy `{}`), due at {}:",
            gr.group, gr.policy, gr.due_at
        ))?;
        let mut t = table::new(&["VM", "Requested", "Result", "Backup", "Seconds", "Read"]);
        for v in &gr.vms {
            t.add_row([
                v.vm.clone(),
                v.requested.clone(),
                match &v.error {
                    Some(e) => format!("{}: {e}", v.result),
                    None => v.result.clone(),
                },
                v.backup.clone().unwrap_or_else(|| "-".into()),
                format!("{:.1}", v.seconds),
                output::bytes(v.bytes),
            ]);
        }
        output::line(&t.to_string())?;
        for c in &gr.copies {
            output::line(&format!(
                "  copy {} {} to `{}`: {}",
                c.vm,
                c.backup.as_deref().unwrap_or("-"),
                c.to,
                match (&c.error, c.links) {
                    (Some(e), _) => format!("{}: {e}", c.result),
                    (None, 0) => format!(
                        "{} (there already as {})",
                        c.result,
                        c.copy.as_deref().unwrap_or("-")
                    ),
                    (None, n) => format!(
                        "{} as {} ({n} link(s), {} in {:.1}s)",
                        c.result,
                        c.copy.as_deref().unwrap_or("-"),
                        output::bytes(c.bytes),
                        c.seconds
                    ),
                }
            ))?;
        }
        for p in &gr.prune {
            output::line(&format!("  prune {p}"))?;
        }
    }
    if !r.verifies.is_empty() {
        let mut t = table::new(&["Group", "VM", "Due at", "Result", "Images", "Verified"]);
        for v in &r.verifies {
            t.add_row([
                v.group.clone(),
                v.vm.clone(),
                v.due_at.clone(),
                match &v.error {
                    Some(e) => format!("{}: {e}", v.result),
                    None => v.result.clone(),
                },
                v.images.to_string(),
                output::bytes(v.bytes),
            ]);
        }
        output::line("Verify:")?;
        output::line(&t.to_string())?;
    }
    Ok(())
}
