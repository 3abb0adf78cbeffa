//! `sendense mount`, `umount`, `mount list`, `files ls`, `files get`.

use crate::cli::{FilesCommand, GlobalArgs};
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::mount::{detach, files, MountInfo, MountRequest};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// What `sendense mount BACKUP --disk KEY DIR` is given.
pub struct Args {
    pub backup: String,
    pub disk: u32,
    pub dir: PathBuf,
    pub repo: Option<String>,
    pub foreground: bool,
    pub idle: Option<u64>,
    pub verify: bool,
}

pub fn mount(g: &GlobalArgs, a: Args) -> CmdResult {
    if !a.foreground {
        return in_background(g);
    }
    detach::claim();
    let mut sd = super::open(g)?;
    let backup = sd.backup_in(&a.backup, a.repo.as_deref())?.id;
    let req = MountRequest {
        backup,
        disk: a.disk,
        dir: Some(a.dir),
        idle: a.idle.map(Duration::from_secs),
        verify: a.verify,
    };
    let mut m = sd.mount_backup(&req, super::interrupt_token(g)?)?;
    let shown = show(g, m.info(), !detach::claimed());
    // The command waiting for this background process is told only once the output is out;
    // a command gone meanwhile (interrupted) leaves nobody who knows of the mount: it ends.
    if shown.is_err() || !detach::ready() {
        sd.end_mount(m, sendense_core::mount::MountEnd::Stopped)?;
        return shown.and(Err(sendense_core::Error::new(
            sendense_core::ErrorKind::Cancelled,
            "the command that started the mount is gone; unmounted",
        )));
    }
    let end = m.wait();
    sd.end_mount(m, end)?;
    Ok(ExitCode::SUCCESS)
}

/// Starts this command again with `--foreground` in the background, and passes on what it
/// printed once its mount is ready (or how it failed).
fn in_background(g: &GlobalArgs) -> CmdResult {
    let exe = std::env::current_exe().map_err(|e| {
        sendense_core::Error::new(
            sendense_core::ErrorKind::Io,
            format!("finding this program: {e}"),
        )
    })?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).arg("--foreground");
    let _ = g;
    match detach::run(cmd)? {
        detach::Detached::Ready { stdout, stderr } => {
            std::io::stderr().write_all(&stderr).ok();
            std::io::stdout().write_all(&stdout).ok();
            Ok(ExitCode::SUCCESS)
        }
        detach::Detached::Failed {
            code,
            stdout,
            stderr,
        } => {
            std::io::stdout().write_all(&stdout).ok();
            std::io::stderr().write_all(&stderr).ok();
            Ok(ExitCode::from(
                code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
            ))
        }
    }
}

/// The mount, as JSON or a table; `foreground` adds how to end it here.
fn show(g: &GlobalArgs, info: &MountInfo, foreground: bool) -> CmdResult {
    if g.json {
        output::line(&serde_json::to_string(info).unwrap_or_default())?;
    } else if !g.quiet {
        output::line(&format!(
            "Mounted disk {} of backup {} (`{}`) read-only at {} (job {}).",
            info.disk,
            info.backup,
            info.vm,
            info.dir.display(),
            info.job
        ))?;
        output::line(&partition_table(&info.partitions).to_string())?;
        output::line(&match (foreground, info.idle_secs) {
            (true, _) => "Press Ctrl-C (or run `sendense umount DIR`) to unmount.".to_string(),
            (false, 0) => format!("Unmount with `sendense umount {}`.", info.dir.display()),
            (false, s) => format!(
                "Unmount with `sendense umount {}`; unmounted by itself after {s} s unused.",
                info.dir.display()
            ),
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

fn partition_table(parts: &[sendense_core::mount::MountedPartition]) -> comfy_table::Table {
    let mut t = table::new(&["Partition", "Filesystem", "Size", "Label", "Mounted at"]);
    for p in parts {
        t.add_row([
            p.partition.name.clone(),
            p.partition.content.as_str().to_string(),
            output::bytes(p.partition.size),
            printable(&p.partition.label.clone().unwrap_or_default()),
            match (&p.path, &p.reason) {
                (Some(at), _) => at.display().to_string(),
                (None, Some(why)) => format!("not mounted: {why}"),
                (None, None) => String::new(),
            },
        ]);
    }
    t
}

pub fn umount(g: &GlobalArgs, dir: &std::path::Path) -> CmdResult {
    let mut sd = super::open(g)?;
    let rec = sd.unmount(dir)?;
    if g.json {
        output::json(&rec)?;
    } else if !g.quiet {
        output::line(&format!(
            "Unmounted disk {} of backup {} from {}.",
            rec.disk,
            rec.backup,
            rec.dir.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list(g: &GlobalArgs) -> CmdResult {
    let sd = super::open(g)?;
    let mounts = sd.mounts()?;
    if g.json {
        output::json(&mounts)?;
    } else if mounts.is_empty() {
        output::line("No mounts. Mount a backup with `sendense mount BACKUP --disk KEY DIR`.")?;
    } else {
        let mut t = table::new(&["Dir", "Backup", "Disk", "Job", "Pid", "Since", "Idle limit"]);
        for m in &mounts {
            t.add_row([
                m.dir.display().to_string(),
                m.backup.clone(),
                m.disk.to_string(),
                m.job.to_string(),
                m.owner_pid.to_string(),
                m.created_at.clone(),
                match m.idle_secs {
                    0 => "none".to_string(),
                    s => format!("{s} s"),
                },
            ]);
        }
        output::line(&t.to_string())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn files(g: &GlobalArgs, cmd: FilesCommand) -> CmdResult {
    let mut sd = super::open(g)?;
    match cmd {
        FilesCommand::Ls {
            backup,
            disk,
            path,
            repo,
            no_verify,
        } => {
            let backup = sd.backup_in(&backup, repo.as_deref())?.id;
            let listing = sd.files_list(
                &files::FilesOf {
                    backup: &backup,
                    disk,
                    verify: !no_verify,
                },
                path.as_deref(),
                super::interrupt_token(g)?,
            )?;
            if g.json {
                output::json(&listing)?;
            } else if path.is_none() {
                output::line(&partition_table(&listing.partitions).to_string())?;
            } else {
                let mut t = table::new(&["Mode", "Owner", "Size", "Modified", "Path"]);
                for e in &listing.entries {
                    t.add_row([
                        mode_text(e),
                        format!("{}:{}", e.uid, e.gid),
                        e.size.to_string(),
                        sendense_core::time::format_unix(e.mtime),
                        match &e.target {
                            Some(to) => printable(&format!("{} -> {to}", e.path)),
                            None => printable(&e.path),
                        },
                    ]);
                }
                output::line(&t.to_string())?;
            }
        }
        FilesCommand::Get {
            backup,
            disk,
            paths,
            to,
            repo,
            no_verify,
        } => {
            let backup = sd.backup_in(&backup, repo.as_deref())?.id;
            let of = files::FilesOf {
                backup: &backup,
                disk,
                verify: !no_verify,
            };
            let cancel = super::interrupt_token(g)?;
            if to == "-" {
                let stdout = std::io::stdout();
                let mut lock = stdout.lock();
                let got = sd.files_get(&of, &paths, files::FilesTo::Tar(&mut lock), cancel)?;
                lock.flush().ok();
                for s in &got.skipped {
                    eprintln!("sendense: skipped {}", printable(s));
                }
            } else {
                let got =
                    sd.files_get(&of, &paths, files::FilesTo::Dir(PathBuf::from(&to)), cancel)?;
                if g.json {
                    output::json(&got)?;
                } else if !g.quiet {
                    output::line(&format!(
                        "Copied {} entries ({}) of disk {} of backup {} to {to}.",
                        got.entries,
                        output::bytes(got.bytes),
                        got.disk,
                        got.backup
                    ))?;
                    for s in &got.skipped {
                        output::line(&printable(&format!("Skipped {s}.")))?;
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` with control characters shown as `?` (names come from a backup: no escape sequence
/// of theirs reaches the terminal).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `drwxr-xr-x` of an entry.
fn mode_text(e: &files::FileEntry) -> String {
    let kind = match e.kind {
        "dir" => 'd',
        "symlink" => 'l',
        "fifo" => 'p',
        "socket" => 's',
        "char" => 'c',
        "block" => 'b',
        _ => '-',
    };
    let mut s = String::from(kind);
    for (shift, special, on, off) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (e.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (e.mode & special != 0, x) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}
