//! `sendense restore` and `sendense export`.

use crate::cli::GlobalArgs;
use crate::output::{self, table};
use crate::CmdResult;
use sendense_core::catalog::Listen;
use sendense_core::restore::{ImageFormat, RestoreRequest, RestoreTo};
use std::path::PathBuf;
use std::process::ExitCode;

pub struct Args {
    pub backup: String,
    pub repo: Option<String>,
    pub disk: Option<u32>,
    pub all: bool,
    pub to: String,
    pub format: String,
    pub force: bool,
    pub no_verify: bool,
}

pub fn restore(g: &GlobalArgs, a: Args) -> CmdResult {
    let sink = sendense_term::progress::sink_for(g.json, g.quiet);
    let mut sd = super::open_options(g).sink(sink).open()?;
    let to = if a.to.starts_with("nbd") {
        RestoreTo::Nbd(a.to.parse()?)
    } else if a.all {
        RestoreTo::Dir(PathBuf::from(&a.to))
    } else {
        RestoreTo::File(PathBuf::from(&a.to))
    };
    let backup = sd.backup_in(&a.backup, a.repo.as_deref())?.id;
    let req = RestoreRequest {
        backup,
        disks: a.disk.map(|k| vec![k]),
        to,
        format: if a.format == "raw" {
            ImageFormat::Raw
        } else {
            ImageFormat::Qcow2
        },
        force: a.force,
        verify: !a.no_verify,
    };
    let report = sd.restore(&req, super::interrupt_token(g)?)?;
    if g.json {
        output::line(&serde_json::to_string(&report).unwrap_or_default())?;
    } else if !g.quiet {
        let mut t = table::new(&["Disk", "To", "Read", "Written", "Seconds", "MiB/s"]);
        for d in &report.disks {
            t.add_row([
                d.key.to_string(),
                d.to.clone(),
                output::bytes(d.bytes_read),
                output::bytes(d.bytes_written),
                format!("{:.1}", d.seconds),
                format!("{:.0}", d.mib_per_sec),
            ]);
        }
        output::line(&format!(
            "Restored backup {} of `{}` (job {}).",
            report.backup, report.vm, report.job
        ))?;
        output::line(&t.to_string())?;
        let unchecked: u64 = report.disks.iter().map(|d| d.bytes_unchecked).sum();
        if !report.verified {
            output::line("Not verified: --no-verify restored what the images hold without checking their digests.")?;
        } else if unchecked > 0 {
            output::line(&format!(
                "Verified against the backups' digests, except {}: backups made before Sendense recorded zero writes leave them undecided.",
                output::bytes(unchecked)
            ))?;
        } else {
            output::line("Verified: every block matches the digests the backups recorded.")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn export(
    g: &GlobalArgs,
    backup: &str,
    repo: Option<&str>,
    disk: u32,
    port: Option<u16>,
    socket: Option<PathBuf>,
    writable: bool,
) -> CmdResult {
    let mut sd = super::open(g)?;
    let backup = &sd.backup_in(backup, repo)?.id;
    let listen = match (port, socket) {
        (Some(p), _) => Listen::Port(p),
        (None, Some(s)) => Listen::Socket(s),
        (None, None) => Listen::PortRange(sd.config().nbd_ports.first, sd.config().nbd_ports.last),
    };
    let stop = super::interrupt_token(g)?;
    let export = sd.export_backup(backup, disk, listen, writable, stop)?;
    let url = export.url().to_string();
    if g.json {
        output::line(
            &serde_json::json!({"backup": backup, "disk": disk, "url": url, "writable": writable, "job": export.job()})
                .to_string(),
        )?;
    } else {
        output::line(&format!(
            "Serving disk {disk} of backup {backup} at {url} ({}; job {}). Press Ctrl-C to stop.",
            if writable {
                "writes go to a temporary overlay"
            } else {
                "read-only"
            },
            export.job()
        ))?;
    }
    // Serve until interrupted, cancelled, or until qemu-nbd ends on its own.
    export.wait();
    sd.end_export(export)?;
    Ok(ExitCode::SUCCESS)
}
