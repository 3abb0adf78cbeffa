//! One module per noun; each turns arguments into a core call and renders the result.

mod backup;
mod cleanup;
mod doctor;
mod init;
mod job;
mod mount;
mod nbd;
mod node;
mod policy;
mod repo;
mod restore;
mod vcenter;
mod vm;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::CmdResult;
use sendense_core::{OpenOptions, Sendense};

/// Runs the parsed command.
pub fn run(cli: Cli) -> CmdResult {
    let g = &cli.global;
    match cli.command {
        Command::Init => init::run(g),
        Command::Repo(cmd) => repo::run(g, cmd),
        Command::Node(cmd) => node::run(g, cmd),
        Command::Vcenter(cmd) => vcenter::run(g, cmd),
        Command::Vm(cmd) => vm::run(g, cmd),
        Command::Policy(cmd) => policy::run(g, cmd),
        Command::Group(cmd) => policy::group(g, cmd),
        Command::Schedule(cmd) => policy::schedule(g, cmd),
        Command::Daemon => policy::daemon(g),
        Command::Backup(cmd) => backup::run(g, cmd),
        Command::Job(cmd) => job::run(g, cmd),
        Command::Nbd(cmd) => nbd::run(g, cmd),
        Command::Restore {
            backup,
            repo,
            disk,
            all,
            to,
            format,
            force,
            no_verify,
        } => restore::restore(
            g,
            restore::Args {
                backup,
                repo,
                disk,
                all,
                to,
                format,
                force,
                no_verify,
            },
        ),
        Command::Export {
            backup,
            repo,
            disk,
            port,
            socket,
            writable,
        } => restore::export(g, &backup, repo.as_deref(), disk, port, socket, writable),
        Command::Mount {
            list: Some(crate::cli::MountCommand::List),
            ..
        } => mount::list(g),
        Command::Mount {
            list: None,
            backup,
            disk,
            dir,
            repo,
            foreground,
            idle,
            no_verify,
        } => mount::mount(
            g,
            mount::Args {
                // clap requires all three without a subcommand.
                backup: backup.unwrap_or_default(),
                disk: disk.unwrap_or_default(),
                dir: dir.unwrap_or_default(),
                repo,
                foreground,
                idle,
                verify: !no_verify,
            },
        ),
        Command::Umount { dir } => mount::umount(g, &dir),
        Command::Files(cmd) => mount::files(g, cmd),
        Command::Cleanup { dry_run } => cleanup::run(g, dry_run),
        Command::Doctor => doctor::run(g),
    }
}

/// Options for opening the state directory from the global flags.
pub fn open_options(g: &GlobalArgs) -> OpenOptions {
    let mut opts = OpenOptions::new();
    if let Some(dir) = &g.state_dir {
        opts = opts.state_dir(dir);
    }
    if let Some(config) = &g.config {
        opts = opts.config(config);
    }
    opts
}

/// A token that SIGINT, SIGTERM or SIGHUP cancel; a second signal ends the process at once
/// (see [`sendense_core::jobs::signals`]).
pub fn interrupt_token(
    g: &GlobalArgs,
) -> Result<tokio_util::sync::CancellationToken, sendense_core::Error> {
    let quiet = g.quiet;
    sendense_core::jobs::signals::cancel_on_signals(move || {
        if !quiet {
            eprintln!(
                "sendense: stopping and cleaning up; press Ctrl-C again to quit at once (the next sendense command then finishes the cleanup)"
            );
        }
    })
}

/// Opens the state directory named by the global flags.
pub fn open(g: &GlobalArgs) -> Result<Sendense, sendense_core::Error> {
    open_options(g).open()
}
