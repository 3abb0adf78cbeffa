//! `sendense repo ...`.

use crate::cli::{GlobalArgs, RepoCommand};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::repo::s3::LockMode;
use sendense_core::repo::ImportOptions;
use sendense_core::{
    AddRepo, AddS3Repo, Error, ErrorKind, RepoRecord, RepoStatus, S3RepoStatus, Sendense,
};
use std::path::Path;
use std::process::ExitCode;

pub fn run(g: &GlobalArgs, cmd: RepoCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    match cmd {
        RepoCommand::Add {
            name,
            path: Some(path),
            require_mount,
            default,
            ..
        } => add(g, &mut sd, name, path, require_mount, default),
        RepoCommand::Add {
            name,
            s3: Some(url),
            region,
            path_style,
            credentials_file,
            profile,
            ca_file,
            object_lock,
            lock_mode,
            ..
        } => {
            let req = AddS3Repo {
                region,
                path_style,
                credentials_file,
                profile,
                ca_file,
                lock_days: object_lock,
                lock_mode: LockMode::parse(&lock_mode)?,
                ..AddS3Repo::new(name, url)
            };
            let added = sd.add_s3_repo(&req)?;
            if g.json {
                output::json(&added)?;
            } else {
                output::line(&format!(
                    "Added S3 repository `{}` at {}",
                    added.record.name, added.record.url
                ))?;
                output::line(&s3_details(&added).to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        // clap requires one of the two.
        RepoCommand::Add { .. } => Err(Error::invalid("name --path DIR or --s3 URL")),
        RepoCommand::List => list(g, &mut sd),
        RepoCommand::Show { name } if sd.s3_repo(&name).is_ok() => {
            let shown = sd.show_s3_repo(&name)?;
            if g.json {
                let mut doc = serde_json::to_value(&shown).unwrap_or_default();
                if let Some(o) = doc.as_object_mut() {
                    o.insert("kind".into(), "s3".into());
                }
                output::json(&doc)?;
            } else {
                let mut rows = s3_rows(&shown.record, shown.object_lock);
                if let Some(n) = shown.pending_uploads.filter(|n| *n > 0) {
                    rows.push((
                        "Unfinished uploads",
                        format!("{n} (`sendense cleanup` aborts them)"),
                    ));
                }
                rows.push((
                    "Status",
                    shown.problem.clone().unwrap_or_else(|| "ok".into()),
                ));
                output::line(&table::fields(&rows).to_string())?;
            }
            if let Some(problem) = &shown.problem {
                tracing::warn!("repository `{name}`: {problem}");
            }
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::Test { name } if sd.s3_repo(&name).is_ok() => {
            let status = sd.test_s3_repo(&name)?;
            if g.json {
                let mut doc = serde_json::to_value(&status).unwrap_or_default();
                if let Some(o) = doc.as_object_mut() {
                    o.insert("kind".into(), "s3".into());
                    o.insert("ok".into(), true.into());
                }
                output::json(&doc)?;
            } else {
                output::line(&format!(
                    "S3 repository `{}` at {} is usable: wrote, read back, listed and deleted {} \
                     ({:.1} ms to write, {:.1} ms to read).",
                    status.record.name,
                    status.record.url,
                    output::bytes(status.probe.probe_bytes),
                    status.probe.write_ms,
                    status.probe.read_ms
                ))?;
                output::line(&s3_details(&status).to_string())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::Show { name } => show(g, &mut sd, name),
        RepoCommand::Test { name } => test(g, &mut sd, name),
        RepoCommand::Import {
            s3: Some(url),
            name,
            region,
            path_style,
            credentials_file,
            profile,
            ca_file,
            object_lock,
            lock_mode,
            take_over,
            ..
        } => {
            let req = AddS3Repo {
                region,
                path_style,
                credentials_file,
                profile,
                ca_file,
                lock_days: object_lock,
                lock_mode: LockMode::parse(&lock_mode)?,
                ..AddS3Repo::new(name.unwrap_or_default(), url)
            };
            import_s3(g, &mut sd, &req, take_over)
        }
        RepoCommand::Import {
            path: Some(path),
            name,
            require_mount,
            default,
            take_over,
            salvage,
            ..
        } => {
            let opts = ImportOptions {
                name,
                require_mount,
                make_default: default,
                take_over,
                salvage,
            };
            import(g, &mut sd, &path, &opts)
        }
        // clap requires one of the two.
        RepoCommand::Import { .. } => Err(Error::invalid("name a DIR or --s3 URL")),
        RepoCommand::Refresh => refresh(g, &mut sd),
        RepoCommand::Remove { name } if sd.s3_repo(&name).is_ok() => {
            let repo = sd.remove_s3_repo(&name)?;
            if g.json {
                output::json(&repo)?;
            } else {
                output::line(&format!(
                    "Removed S3 repository `{}` from the catalog; its objects at {} were kept.",
                    repo.name, repo.url
                ))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::Remove { name } => remove(g, &mut sd, name),
    }
}

/// An S3 repository and its probe, as a table.
fn s3_details(s: &S3RepoStatus) -> comfy_table::Table {
    let mut rows = s3_rows(&s.record, Some(s.probe.object_lock));
    if s.probe.pending_uploads > 0 {
        rows.push((
            "Unfinished uploads",
            format!(
                "{} (`sendense cleanup` aborts them)",
                s.probe.pending_uploads
            ),
        ));
    }
    table::fields(&rows)
}

/// The rows of an S3 repository's table; `object_lock`: whether the bucket has it, if known.
fn s3_rows(
    r: &sendense_core::catalog::S3RepoRecord,
    object_lock: Option<bool>,
) -> Vec<(&'static str, String)> {
    vec![
        ("Name", r.name.clone()),
        ("Address", r.url.clone()),
        ("Repository id", r.repo_id.clone()),
        ("Region", r.settings.region.clone()),
        (
            "Addressing",
            if r.settings.path_style {
                "path-style"
            } else {
                "virtual-hosted"
            }
            .to_string(),
        ),
        (
            "Keys",
            r.settings.credentials_file.as_ref().map_or_else(
                || "environment or AWS profile files".to_string(),
                |f| f.display().to_string(),
            ),
        ),
        (
            "Object Lock",
            match (r.settings.lock_days, object_lock) {
                (Some(days), _) => format!("{days} days, {}", r.settings.lock_mode.as_str()),
                (None, Some(true)) => "enabled on the bucket, not used".to_string(),
                (None, Some(false)) => "no".to_string(),
                (None, None) => "unknown".to_string(),
            },
        ),
        ("Backups", r.backups.to_string()),
        ("Created", r.created_at.clone()),
    ]
}

fn add(
    g: &GlobalArgs,
    sd: &mut Sendense,
    name: String,
    path: std::path::PathBuf,
    require_mount: bool,
    default: bool,
) -> CmdResult {
    let req = AddRepo::new(name, path)
        .require_mount(require_mount)
        .make_default(default);
    let repo = sd.add_repo(&req)?;
    if g.json {
        output::json(&repo)?;
    } else {
        output::line(&format!(
            "Added repository `{}` at {}",
            repo.name,
            repo.path.display()
        ))?;
        output::line(&details(&repo, None).to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn list(g: &GlobalArgs, sd: &mut Sendense) -> CmdResult {
    let repos = sd.repos()?;
    let s3 = sd.s3_repos()?;
    if g.json {
        let mut all = Vec::new();
        for (kind, v) in repos
            .iter()
            .map(|r| ("dir", serde_json::to_value(r)))
            .chain(s3.iter().map(|r| ("s3", serde_json::to_value(r))))
        {
            let mut v = v.unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("kind".into(), kind.into());
            }
            all.push(v);
        }
        output::json(&all)?;
    } else if repos.is_empty() && s3.is_empty() {
        output::line("No repositories. Add one with `sendense repo add NAME --path DIR`.")?;
    } else {
        let mut t = table::new(&[
            "Name",
            "Kind",
            "Path or address",
            "Default",
            "Backups",
            "Size",
            "Available",
            "Refreshed",
        ]);
        for r in &repos {
            t.add_row([
                r.name.clone(),
                "dir".into(),
                r.path.display().to_string(),
                if r.is_default {
                    "yes".into()
                } else {
                    String::new()
                },
                r.backups.to_string(),
                output::opt_bytes(r.total_bytes),
                output::opt_bytes(r.available_bytes),
                r.refreshed_at.clone().unwrap_or_default(),
            ]);
        }
        for r in &s3 {
            t.add_row([
                r.name.clone(),
                match r.settings.lock_days {
                    Some(d) => format!("s3, locked {d} d"),
                    None => "s3".into(),
                },
                r.url.clone(),
                String::new(),
                r.backups.to_string(),
                "-".into(),
                "-".into(),
                String::new(),
            ]);
        }
        output::line(&t.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn show(g: &GlobalArgs, sd: &mut Sendense, name: String) -> CmdResult {
    let status = sd.repo_status(&name)?;
    if g.json {
        output::json(&status)?;
    } else {
        output::line(&details(&status.record, Some(&status)).to_string())?;
        if let Some(problem) = &status.problem {
            tracing::warn!("repository `{name}`: {problem}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn test(g: &GlobalArgs, sd: &mut Sendense, name: String) -> CmdResult {
    let report = sd.test_repo(&name)?;
    let repo = sd.repo(&name)?;
    if g.json {
        let mut doc = serde_json::json!({"name": repo.name, "path": repo.path, "ok": true});
        if let (Some(obj), Ok(serde_json::Value::Object(extra))) =
            (doc.as_object_mut(), serde_json::to_value(&report))
        {
            obj.extend(extra);
        }
        output::json(&doc)?;
    } else {
        output::line(&format!(
            "Repository `{}` at {} is usable: wrote, synced, read back and removed {} in {:.1} ms.",
            repo.name,
            repo.path.display(),
            output::bytes(report.probe_bytes),
            report.write_ms
        ))?;
        output::line(&format!(
            "  {} available of {}{}",
            output::bytes(report.capacity.available_bytes),
            output::bytes(report.capacity.total_bytes),
            if report.mount_point {
                " (mount point)"
            } else {
                ""
            }
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn import(g: &GlobalArgs, sd: &mut Sendense, path: &Path, opts: &ImportOptions) -> CmdResult {
    let report = sd.import_repo(path, opts)?;
    if g.json {
        output::json(&report)?;
    } else {
        output::line(&format!(
            "Imported repository `{}` at {}: {} backup(s) added, {} salvaged, {} already known, {} VM(s) created.",
            report.repo.name,
            report.repo.path.display(),
            report.backups_imported.len(),
            report.backups_salvaged.len(),
            report.backups_known.len(),
            report.vms_created.len()
        ))?;
        for w in &report.warnings {
            output::line(&format!("warning: {w}"))?;
        }
        for s in &report.skipped {
            output::line(&format!("not registered: {s}"))?;
        }
    }
    if !report.skipped.is_empty() {
        // Part of the repository could not be registered: say so in the status.
        return Ok(ExitCode::from(crate::exit_code(
            sendense_core::ErrorKind::PartiallyFailed,
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn import_s3(g: &GlobalArgs, sd: &mut Sendense, req: &AddS3Repo, take_over: bool) -> CmdResult {
    let report = sd.import_s3_repo(req, take_over)?;
    if g.json {
        let mut doc = serde_json::to_value(&report).unwrap_or_default();
        if let Some(repo) = doc.get_mut("repo").and_then(|r| r.as_object_mut()) {
            repo.insert("kind".into(), "s3".into());
        }
        output::json(&doc)?;
    } else {
        output::line(&format!(
            "Imported S3 repository `{}` at {}: {} backup(s) added, {} already known, {} VM(s) created.",
            report.repo.name,
            report.repo.url,
            report.backups_imported.len(),
            report.backups_known.len(),
            report.vms_created.len()
        ))?;
        for w in &report.warnings {
            output::line(&format!("warning: {w}"))?;
        }
        for s in &report.skipped {
            output::line(&format!("not registered: {s}"))?;
        }
    }
    if !report.skipped.is_empty() {
        return Ok(ExitCode::from(crate::exit_code(
            sendense_core::ErrorKind::PartiallyFailed,
        )));
    }
    Ok(ExitCode::SUCCESS)
}

fn refresh(g: &GlobalArgs, sd: &mut Sendense) -> CmdResult {
    let statuses = sd.refresh_repos()?;
    if g.json {
        output::json(&statuses)?;
    } else if statuses.is_empty() {
        output::line("No repositories.")?;
    } else {
        let mut t = table::new(&["Name", "Path", "Size", "Available", "Status"]);
        for s in &statuses {
            t.add_row([
                s.record.name.clone(),
                s.record.path.display().to_string(),
                output::opt_bytes(s.record.total_bytes),
                output::opt_bytes(s.record.available_bytes),
                s.problem.clone().unwrap_or_else(|| "ok".into()),
            ]);
        }
        output::line(&t.to_string())?;
    }
    let bad = statuses.iter().filter(|s| s.problem.is_some()).count();
    if bad > 0 {
        let kind = if bad == statuses.len() {
            ErrorKind::Io
        } else {
            ErrorKind::PartiallyFailed
        };
        let names: Vec<_> = statuses
            .iter()
            .filter(|s| s.problem.is_some())
            .map(|s| s.record.name.as_str())
            .collect();
        return Err(Error::new(
            kind,
            format!(
                "{bad} of {} repositories have problems: {}",
                statuses.len(),
                names.join(", ")
            ),
        )
        .with_help("See `sendense repo test NAME` for each of them."));
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(g: &GlobalArgs, sd: &mut Sendense, name: String) -> CmdResult {
    let repo = sd.remove_repo(&name)?;
    if g.json {
        output::json(&repo)?;
    } else {
        output::line(&format!(
            "Removed repository `{}` from the catalog; its files at {} were kept.",
            repo.name,
            repo.path.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn details(r: &RepoRecord, status: Option<&RepoStatus>) -> comfy_table::Table {
    let mut rows = vec![
        ("Name", r.name.clone()),
        ("Path", r.path.display().to_string()),
        ("Repository id", r.repo_id.clone()),
        (
            "Default",
            if r.is_default { "yes" } else { "no" }.to_string(),
        ),
        (
            "Require mount",
            if r.require_mount { "yes" } else { "no" }.to_string(),
        ),
        ("Backups", r.backups.to_string()),
        ("Size", output::opt_bytes(r.total_bytes)),
        ("Available", output::opt_bytes(r.available_bytes)),
        ("Created", r.created_at.clone()),
    ];
    if let Some(s) = status {
        rows.push((
            "Mount point",
            if s.mount_point { "yes" } else { "no" }.to_string(),
        ));
        rows.push(("Status", s.problem.clone().unwrap_or_else(|| "ok".into())));
    }
    table::fields(&rows)
}
