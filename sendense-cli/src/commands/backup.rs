//! `sendense backup ...`.

use crate::cli::{BackupCommand, GlobalArgs};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::backup::plan::Requested;
use sendense_core::catalog::{BackupFilter, BackupRecord};
use sendense_core::verify::VerifyTarget;
use sendense_core::{Error, ErrorKind};
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: BackupCommand) -> CmdResult {
    match cmd {
        BackupCommand::Start {
            vm,
            repo,
            full,
            incremental,
            require_quiesce,
        } => {
            let sink = sendense_term::progress::sink_for(g.json, g.quiet);
            let mut sd = super::open_options(g).sink(sink).open()?;
            let mode = match (full, incremental) {
                (true, _) => Requested::Full,
                (_, true) => Requested::Incremental,
                _ => Requested::Auto,
            };
            let cancel = super::interrupt_token(g)?;
            let report = sd
                .backup(&vm)
                .repo(repo.as_deref())
                .mode(mode)
                .require_quiesce(require_quiesce)
                .cancel_token(cancel)
                .run()?;
            if g.json {
                output::line(&serde_json::to_string(&report).unwrap_or_default())?;
            } else if !g.quiet {
                let mut t = table::new(&[
                    "Disk", "Mode", "Reason", "Read", "Written", "Seconds", "MiB/s",
                ]);
                for d in &report.disks {
                    t.add_row([
                        d.key.to_string(),
                        d.mode.as_str().to_string(),
                        d.reason.clone(),
                        output::bytes(d.bytes_read),
                        output::bytes(d.bytes_written),
                        format!("{:.1}", d.seconds),
                        format!("{:.0}", d.mib_per_sec),
                    ]);
                }
                output::line(&format!(
                    "Backup {} of `{}` completed in {:.1}s (job {}, repository `{}`).",
                    report.backup, report.vm, report.seconds, report.job, report.repo
                ))?;
                output::line(&t.to_string())?;
            }
        }
        BackupCommand::List { vm, repo } => {
            let sd = super::open(g)?;
            if let Some(v) = &vm {
                sd.vm(v)?;
            }
            let list = sd.backups(&BackupFilter {
                vm,
                repo,
                status: None,
            })?;
            if g.json {
                output::json(&list)?;
            } else if list.is_empty() {
                output::line("No backups.")?;
            } else {
                let mut t = table::new(&[
                    "Id",
                    "VM",
                    "Repository",
                    "Status",
                    "Created",
                    "Disks",
                    "Written",
                ]);
                for b in &list {
                    t.add_row([
                        b.id.clone(),
                        b.vm.clone(),
                        b.repo.clone(),
                        if b.damaged.is_some() {
                            format!("{} (damaged)", b.status)
                        } else {
                            b.status.clone()
                        },
                        b.created_at.clone(),
                        b.disks
                            .iter()
                            .map(|d| {
                                format!(
                                    "{}:{}",
                                    d.key,
                                    if d.mode.as_str() == "full" { "F" } else { "I" }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                        output::bytes(b.disks.iter().map(|d| d.bytes_written).sum()),
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        BackupCommand::Verify { id, repo, vm, all } => {
            let mut sd = super::open(g)?;
            let target = match (id, vm, all) {
                (Some(id), _, _) => VerifyTarget::Backup(sd.backup_in(&id, repo.as_deref())?.id),
                (_, Some(vm), _) => VerifyTarget::Vm(vm),
                _ => VerifyTarget::All,
            };
            let report = sd.verify(&target, super::interrupt_token(g)?)?;
            if g.json {
                output::json(&report)?;
            } else {
                let mut t = table::new(&["Backup", "Disk", "Verified", "Result"]);
                for i in &report.images {
                    t.add_row([
                        i.backup.clone(),
                        i.disk.to_string(),
                        output::bytes(i.bytes_verified),
                        if i.problems.is_empty() {
                            "ok".to_string()
                        } else {
                            i.problems.join("; ")
                        },
                    ]);
                }
                output::line(&t.to_string())?;
            }
            if !report.ok {
                let bad = report
                    .images
                    .iter()
                    .filter(|i| !i.problems.is_empty())
                    .count();
                if g.json {
                    // The report is the one document on stdout; the exit status says it failed.
                    return Ok(ExitCode::from(sendense_core::exit::FAILED));
                }
                return Err(Error::new(ErrorKind::External, format!("{bad} image(s) failed verification"))
                    .with_help("Restore from another backup or repository; take a --full backup of the VM to start a new chain."));
            }
        }
        BackupCommand::Delete { id, dry_run: true } => {
            let sd = super::open(g)?;
            let plan = sd.delete_plan(&id)?;
            if g.json {
                output::json(&plan)?;
            } else {
                output::line(&delete_plan_text(&plan))?;
            }
        }
        BackupCommand::Delete { id, dry_run: false } => {
            let mut sd = super::open(g)?;
            let b = sd.delete_backup(&id)?;
            if g.json {
                output::json(&b)?;
            } else {
                match &b.delete_after {
                    Some(after) if b.status == "expired" => output::line(&format!(
                        "Backup {} of `{}` is expired, not deleted yet: its objects are locked or other backups depend on it. `sendense cleanup` deletes it once nothing holds it (not before {after}).",
                        b.id, b.vm
                    ))?,
                    _ => output::line(&format!("Deleted backup {} of `{}`.", b.id, b.vm))?,
                }
            }
        }
        BackupCommand::Prune {
            vm,
            repo,
            keep,
            dry_run,
        } => {
            let mut sd = super::open(g)?;
            let rules = super::policy::keep_rules(&keep);
            let report = sd.prune(&sendense_core::retention::PruneRequest {
                vm,
                repo,
                rules,
                dry_run,
            })?;
            if g.json {
                output::json(&report)?;
            } else {
                output::line(&prune_text(&report))?;
            }
            return Ok(ExitCode::from(report.exit_code()));
        }
        BackupCommand::Consolidate { vm, disk, repo } => {
            let mut sd = super::open(g)?;
            let report = sd.consolidate(&vm, repo.as_deref(), disk)?;
            if g.json {
                output::json(&report)?;
            } else if report.disks.is_empty() {
                output::line(&format!(
                    "Backup {} of `{}` is standalone already: nothing to do.",
                    report.backup, report.vm
                ))?;
            } else {
                for d in &report.disks {
                    output::line(&format!(
                        "Backup {} disk {}: a chain of {} backups is now one standalone image of {}.",
                        report.backup,
                        d.key,
                        d.links_before,
                        output::bytes(d.image_bytes)
                    ))?;
                }
            }
        }
        BackupCommand::Show { id } => {
            let sd = super::open(g)?;
            let b = sd.backup_record(&id)?;
            let copies = sd.backup_locations(&id)?;
            if g.json {
                #[derive(serde::Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    backup: &'a BackupRecord,
                    copies: &'a [sendense_core::catalog::CopyLocation],
                }
                output::json(&Shown {
                    backup: &b,
                    copies: &copies,
                })?;
            } else {
                show(&b, &copies)?;
            }
        }
        BackupCommand::Copy { id, to } => {
            let sink = sendense_term::progress::sink_for(g.json, g.quiet);
            let mut sd = super::open_options(g).sink(sink).open()?;
            let report = sd.copy_backup(&id, &to, super::interrupt_token(g)?)?;
            if g.json {
                // After the NDJSON progress events: the summary on one line.
                output::line(&serde_json::to_string(&report).unwrap_or_default())?;
            } else if !g.quiet {
                output::line(&copy_text(&report))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `backup copy` prints.
fn copy_text(r: &sendense_core::backup::CopyReport) -> String {
    let mut lines = Vec::new();
    if r.copied.is_empty() {
        lines.push(format!(
            "Repository `{}` holds backup {} already (as {}): nothing to copy.",
            r.to, r.backup, r.copy
        ));
    } else {
        lines.push(format!(
            "Copied backup {} into `{}` as {}: {} link(s), {} written{}.",
            r.backup,
            r.to,
            r.copy,
            r.copied.len(),
            output::bytes(r.bytes_written),
            match r.present.len() {
                0 => String::new(),
                n => format!("; {n} link(s) were there already"),
            }
        ));
        for c in &r.copied {
            lines.push(format!(
                "  {} -> {} ({})",
                c.from,
                c.backup,
                output::bytes(c.bytes_written)
            ));
        }
    }
    lines.join("\n")
}

fn show(
    b: &BackupRecord,
    copies: &[sendense_core::catalog::CopyLocation],
) -> Result<(), sendense_core::Error> {
    output::line(
        &table::fields(&[
            ("Id", b.id.clone()),
            ("VM", b.vm.clone()),
            ("Repository", b.repo.clone()),
            (
                "Status",
                match &b.delete_after {
                    Some(after) => format!(
                        "{} (kept until nothing holds it, not before {after}; then `sendense cleanup` deletes it)",
                        b.status
                    ),
                    None => b.status.clone(),
                },
            ),
            (
                "Damaged",
                b.damaged
                    .clone()
                    .unwrap_or_else(|| "no (as far as checks found)".into()),
            ),
            ("Created", b.created_at.clone()),
            ("Copy of", b.copy_of.clone().unwrap_or_else(|| "-".into())),
            (
                "Copies",
                match copies.iter().filter(|c| c.backup != b.id).count() {
                    0 => "none".into(),
                    _ => copies
                        .iter()
                        .filter(|c| c.backup != b.id)
                        .map(|c| match c.status.as_str() {
                            "completed" => format!("{} ({})", c.repo, c.backup),
                            s => format!("{} ({}, {s})", c.repo, c.backup),
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            ),
            (
                "Completed",
                b.completed_at.clone().unwrap_or_else(|| "-".into()),
            ),
            (
                "Job",
                b.job.map(|j| j.to_string()).unwrap_or_else(|| "-".into()),
            ),
        ])
        .to_string(),
    )?;
    let mut t = table::new(&["Disk", "Mode", "Reason", "Parent", "Written", "File"]);
    for d in &b.disks {
        t.add_row([
            d.key.to_string(),
            d.mode.as_str().to_string(),
            d.reason.clone(),
            d.parent.clone().unwrap_or_else(|| "-".into()),
            output::bytes(d.bytes_written),
            // In a bucket: the object's path under the repository's address.
            if b.in_s3() {
                format!("{} (S3: {})", d.rel_file, b.repo)
            } else {
                d.file.display().to_string()
            },
        ]);
    }
    output::line(&t.to_string())
}

/// What `backup delete --dry-run` says, one line per disk.
fn delete_plan_text(plan: &sendense_core::backup::DeletePlan) -> String {
    if let Some(why) = &plan.kept {
        return format!(
            "Would mark backup {} of `{}` expired and keep it: {why}. `sendense cleanup` deletes it once nothing holds it.",
            plan.backup, plan.vm
        );
    }
    let mut lines = vec![format!(
        "Would delete backup {} of `{}`:",
        plan.backup, plan.vm
    )];
    for d in &plan.disks {
        lines.push(match (&d.merge_into, &d.new_parent) {
            (Some(into), Some(parent)) => format!(
                "  disk {}: merged into backup {into}, which is then backed by {parent}",
                d.key
            ),
            (Some(into), None) => format!(
                "  disk {}: merged into backup {into}, which becomes a full",
                d.key
            ),
            (None, _) => format!("  disk {}: removed (nothing depends on it)", d.key),
        });
    }
    lines.join("\n")
}

/// What `backup prune` prints: a table per VM and repository, then the counts.
fn prune_text(report: &sendense_core::retention::PruneReport) -> String {
    use sendense_core::retention::Mark;
    let mut out = Vec::new();
    for g in &report.groups {
        out.push(format!("VM `{}` in repository `{}`:", g.vm, g.repo));
        let mut t = table::new(&["Backup", "Created", "Mark", "Result"]);
        for b in &g.backups {
            let mark = match &b.mark {
                Mark::Keep { rule: Some(r) } => format!("kept ({r})"),
                Mark::Keep { rule: None } => "kept".into(),
                Mark::Remove => "removed".into(),
                Mark::Merge { into } => format!("merged into {into}"),
            };
            let result = match (&b.error, b.mark.is_kept(), report.dry_run) {
                (Some(e), _, _) => format!("stays: {e}"),
                (None, false, dry) if b.expired.is_some() => format!(
                    "{} expired, kept: {}",
                    if dry { "would be" } else { "marked" },
                    b.expired.as_deref().unwrap_or_default()
                ),
                (None, true, _) => "-".into(),
                (None, false, true) => "would go".into(),
                (None, false, false) => "gone".into(),
            };
            t.add_row([b.id.clone(), b.created_at.clone(), mark, result]);
        }
        out.push(t.to_string());
    }
    let verb = if report.dry_run {
        "would be removed"
    } else {
        "removed"
    };
    out.push(format!(
        "{} kept, {} {verb}{}{}.",
        report.kept,
        report.removed,
        if report.expired > 0 {
            format!(
                " ({} of them expired and kept until nothing holds them)",
                report.expired
            )
        } else {
            String::new()
        },
        if report.failed > 0 {
            format!(", {} could not be removed", report.failed)
        } else {
            String::new()
        }
    ));
    out.join("\n")
}
