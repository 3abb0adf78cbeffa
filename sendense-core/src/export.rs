//! NBD exports on the hub: qemu-nbd supervision, the port allocator, export naming.
//!
//! Every qemu-nbd Sendense starts is recorded in the catalog (`nbd_exports`) *before* it runs —
//! port, export name, job, owning sendense process — and its pid, start time and exact command
//! line are added as soon as it runs. Stopping is SIGTERM, then SIGKILL after the configured
//! grace (5 s), then waiting for the exit, so the QCOW2 write lock is gone when `stop` returns.
//! A sendense process killed with SIGKILL leaves rows whose owner is dead: the reconciliation in
//! [`crate::cleanup`] stops exactly those qemu-nbd processes (matched by pid, start time and
//! command line, never by name) and frees their ports. Exports bind 127.0.0.1 or a Unix socket,
//! never a public address.

mod command;
pub mod naming;
mod serve;

use crate::catalog::{Catalog, ExportRecord, Listen};
use crate::config::QemuNbdConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::NbdUrl;
use crate::proc::{self, ProcId};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub use naming::export_name;
pub use serve::ServedExport;

/// Debian package providing qemu-nbd.
const QEMU_NBD: crate::tools::Tool = crate::tools::Tool {
    program: "qemu-nbd",
    package: "qemu-utils",
};

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// The image.
    pub file: PathBuf,
    /// Its format (`qcow2`, `raw`).
    pub format: String,
    /// NBD export name.
    pub name: String,
    /// Where to listen.
    pub listen: Listen,
    /// Clients allowed at once (qemu-nbd `--shared`): at least the copy's connections + 1.
    pub shared: u32,
    /// Serve read-only.
    pub read_only: bool,
    /// Expose this persistent dirty bitmap as `qemu:dirty-bitmap:NAME`.
    pub bitmap: Option<String>,
    /// Writes go to a temporary overlay that is discarded at exit (qemu-nbd `--snapshot`).
    pub discard_writes: bool,
    /// qemu-nbd skips every flush (`cache.no-flush`), the ones QCOW2 issues to order its own
    /// metadata updates included; a client's FLUSH still hands all data and metadata to the
    /// kernel. Only for an image that is thrown away unless its export ends cleanly, and that
    /// the caller makes durable (fsync) after the export stopped.
    pub skip_flushes: bool,
    /// Open the image without its backing chain (only with `skip_flushes`). For a target that
    /// is only ever written in whole clusters (the copy engine writes and zeroes whole
    /// [`crate::transfer::BLOCK`]s, the cluster size of the images the repository creates): no
    /// write then reads the backing file, which stays recorded in the image. Opening a long
    /// chain costs time that grows with every backup.
    pub alone: bool,
    /// The job it belongs to.
    pub job: Option<i64>,
}

impl ExportSpec {
    /// A writable qcow2 target on a free port of `range`.
    pub fn target(
        file: PathBuf,
        name: String,
        range: (u16, u16),
        shared: u32,
        job: Option<i64>,
    ) -> Self {
        ExportSpec {
            file,
            format: "qcow2".into(),
            name,
            listen: Listen::PortRange(range.0, range.1),
            shared,
            read_only: false,
            bitmap: None,
            discard_writes: false,
            skip_flushes: false,
            alone: false,
            job,
        }
    }
}

/// A running qemu-nbd started by this process. It owns the server: stop it with [`stop`] or
/// [`stop_many`] (which report errors); dropped without that — an early return, a panic — it
/// stops the server itself and forgets its catalog row, so nothing a long-lived process (a
/// library user, a scheduler) started outlives the work it was started for.
#[derive(Debug)]
pub struct RunningExport {
    /// Catalog row.
    pub record: ExportRecord,
    /// Where clients connect.
    pub url: NbdUrl,
    /// The qemu-nbd process.
    pub server: ProcId,
    files: Vec<PathBuf>,
    /// The catalog holding the row, for a stop on drop.
    catalog: PathBuf,
    /// SIGTERM → SIGKILL grace of that stop.
    grace: Duration,
    /// Stopped (or deliberately left for cleanup): nothing to do on drop.
    released: bool,
}

impl RunningExport {
    /// Removes the files of a server that is gone.
    fn remove_files(&self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        if let Some(sock) = &self.record.socket {
            let _ = std::fs::remove_file(sock);
        }
    }
}

impl Drop for RunningExport {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        tracing::debug!(
            "stopping qemu-nbd {} (export `{}`) on an early exit",
            self.server.pid,
            self.record.export
        );
        if let Err(e) = proc::terminate(self.server, self.grace) {
            // Its row stays: the reconciliation keeps trying.
            tracing::warn!("{e}");
            return;
        }
        self.remove_files();
        match Catalog::open(&self.catalog, false) {
            Ok(mut c) => {
                if let Err(e) = c.release_export(self.record.id) {
                    tracing::warn!("forgetting export {}: {e}", self.record.id);
                }
            }
            Err(e) => tracing::warn!("forgetting export {}: {e}", self.record.id),
        }
    }
}

fn port_bindable(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Starts qemu-nbd for `spec`, waits until it accepts connections and records it.
pub fn start(
    catalog: &mut Catalog,
    run_dir: &Path,
    spec: &ExportSpec,
    cfg: &QemuNbdConfig,
) -> Result<RunningExport> {
    crate::fsutil::create_private_dir(run_dir)?;
    let mut last_err = None;
    // A foreign process can grab a port between the bind test and qemu-nbd's bind: retry.
    for _ in 0..5 {
        let record = catalog.allocate_export(
            &spec.listen,
            &spec.name,
            spec.job,
            Some(&spec.file),
            port_bindable,
        )?;
        match launch(catalog, run_dir, spec, cfg, &record).and_then(|s| s.finish(catalog)) {
            Ok(export) => return Ok(export),
            Err(e) => {
                catalog.release_export(record.id)?;
                if !port_taken(spec, &e) {
                    return Err(e);
                }
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::internal("qemu-nbd did not start")))
}

/// Starts one qemu-nbd per spec, all at once (their start-ups overlap), waits until all accept
/// connections and records them. On any failure the ones that started are stopped again.
pub fn start_many(
    catalog: &mut Catalog,
    run_dir: &Path,
    specs: &[ExportSpec],
    cfg: &QemuNbdConfig,
    grace: Duration,
) -> Result<Vec<RunningExport>> {
    if let [spec] = specs {
        return start(catalog, run_dir, spec, cfg).map(|e| vec![e]);
    }
    crate::fsutil::create_private_dir(run_dir)?;
    let mut records = Vec::new();
    for spec in specs {
        match catalog.allocate_export(
            &spec.listen,
            &spec.name,
            spec.job,
            Some(&spec.file),
            port_bindable,
        ) {
            Ok(r) => records.push(r),
            Err(e) => {
                for r in &records {
                    let _ = catalog.release_export(r.id);
                }
                return Err(e);
            }
        }
    }
    let launched: Vec<Result<Starting>> = specs
        .iter()
        .zip(&records)
        .map(|(spec, record)| launch(catalog, run_dir, spec, cfg, record))
        .collect();
    let mut started = Vec::new();
    let mut failure = None;
    for ((spec, record), starting) in specs.iter().zip(&records).zip(launched) {
        let e = match starting.and_then(|s| s.finish(catalog)) {
            Ok(export) => {
                started.push(export);
                continue;
            }
            Err(e) => e,
        };
        let _ = catalog.release_export(record.id);
        if failure.is_some() {
            continue;
        }
        // Lost a port race: this one goes again on its own, with retries.
        if port_taken(spec, &e) {
            match start(catalog, run_dir, spec, cfg) {
                Ok(export) => started.push(export),
                Err(e) => failure = Some(e),
            }
        } else {
            failure = Some(e);
        }
    }
    match failure {
        None => Ok(started),
        Some(e) => {
            let _ = stop_many(catalog, started, grace);
            Err(e)
        }
    }
}

/// Whether `err`, starting `spec`, means another process took the port first.
fn port_taken(spec: &ExportSpec, err: &Error) -> bool {
    err.message().contains("Address already in use") && matches!(spec.listen, Listen::PortRange(..))
}

/// glibc malloc settings for qemu-nbd: request buffers (up to 32 MiB) come from the heap and
/// the heap is not trimmed while the export runs.
const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824";

/// A qemu-nbd starting: its `--fork` starter runs until the server listens.
struct Starting {
    starter: std::process::Child,
    record_id: i64,
    url: NbdUrl,
    file: PathBuf,
    cmdline: Vec<String>,
    pid_file: PathBuf,
    log_file: PathBuf,
    grace: Duration,
}

/// Spawns qemu-nbd for `spec` on the address of `record`; [`Starting::finish`] waits for it.
fn launch(
    catalog: &mut Catalog,
    run_dir: &Path,
    spec: &ExportSpec,
    cfg: &QemuNbdConfig,
    record: &ExportRecord,
) -> Result<Starting> {
    let [pid_file, log_file] = run_files(run_dir, record.id);
    let listen = match (&record.port, &record.socket) {
        (Some(port), _) => command::Listening::Port(*port),
        (None, Some(sock)) => {
            let _ = std::fs::remove_file(sock);
            command::Listening::Socket(sock.clone())
        }
        (None, None) => return Err(Error::internal("export without port or socket")),
    };
    let (mut args, url) = command::qemu_nbd_args(spec, cfg, &pid_file, &listen)?;

    // `--fork`: qemu-nbd's first process exits only once the server listens (0) or failed
    // (non-zero), so readiness is exact even when another server answers on the same port.
    args.insert(0, "--fork".into());
    let log = std::fs::File::create(&log_file).map_err(|e| Error::io("creating", &log_file, e))?;
    let mut cmd = QEMU_NBD.command();
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // qemu-nbd allocates a buffer for every request. With glibc's defaults, freed buffers of a
    // MiB go back to the kernel and the next request faults fresh pages in again (a third of
    // qemu-nbd's time in an incremental backup); keep them for the life of the export. What
    // it holds stays bounded by the requests in flight.
    let tunables = match std::env::var("GLIBC_TUNABLES") {
        Ok(user) if !user.is_empty() => format!("{MALLOC_TUNABLES}:{user}"),
        _ => MALLOC_TUNABLES.to_string(),
    };
    cmd.env("GLIBC_TUNABLES", tunables);
    // Its own process group: a Ctrl-C in the terminal reaches sendense, which then stops the
    // export in order, instead of killing qemu-nbd under a running copy.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // The starter dies with this thread until it has handed over to the server; the server
    // it forks is found by its command line should this process die before it recorded the
    // server's pid (see `stop_orphan`), so the command line is recorded first.
    crate::supervise::die_with_parent(&mut cmd);
    let mut full_cmdline = vec![QEMU_NBD.program.to_string()];
    full_cmdline.extend(args.iter().cloned());
    catalog.set_export_command(record.id, &full_cmdline)?;
    crate::crash::point("export.command-recorded");
    let starter = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            QEMU_NBD.missing()
        } else {
            Error::new(ErrorKind::External, format!("cannot start qemu-nbd: {e}"))
        }
    })?;
    Ok(Starting {
        starter,
        record_id: record.id,
        url,
        file: spec.file.clone(),
        cmdline: full_cmdline,
        pid_file,
        log_file,
        grace: Duration::from_secs(cfg.stop_timeout_secs),
    })
}

impl Starting {
    /// Waits until the server listens (or failed) and records its process.
    fn finish(mut self, catalog: &mut Catalog) -> Result<RunningExport> {
        let started = wait_exit(&mut self.starter, Duration::from_secs(30));
        let server = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .and_then(ProcId::of);
        let failure = match (started, server) {
            (Ok(true), Some(server)) => {
                // Recorded at once: from now on a crash leaves a row cleanup can use.
                let recorded = catalog
                    .set_export_server(self.record_id, server, &self.cmdline)
                    .and_then(|()| catalog.export(self.record_id));
                match recorded {
                    Ok(record) => {
                        return Ok(RunningExport {
                            record,
                            url: self.url,
                            server,
                            files: vec![self.pid_file, self.log_file],
                            catalog: catalog.path().to_path_buf(),
                            grace: self.grace,
                            released: false,
                        })
                    }
                    // Not recorded, so nothing could find it later: it goes now.
                    Err(e) => format!("recording it failed: {e}"),
                }
            }
            (Ok(true), None) => "it reported success but left no running server".to_string(),
            (Ok(false), _) => "it exited with an error".to_string(),
            (Err(e), _) => e.message().to_string(),
        };
        if let Some(server) = server {
            let _ = proc::terminate(server, Duration::from_secs(1));
        }
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(&self.log_file);
        Err(Error::new(
            ErrorKind::External,
            format!(
                "qemu-nbd for {} did not start: {failure}: {}",
                self.file.display(),
                text.trim()
            ),
        ))
    }
}

/// Waits for the `--fork` starter to exit; true when it reported success.
fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status.success()),
            // qemu-nbd is ready within milliseconds: look often.
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(ErrorKind::External, "not listening after 30 s"));
            }
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::External,
                    format!("waiting for qemu-nbd: {e}"),
                ))
            }
        }
    }
}

/// Stops an export this process started: SIGTERM, SIGKILL after `grace`, waits until it is
/// gone (its QCOW2 lock with it), forgets it.
pub fn stop(catalog: &mut Catalog, export: RunningExport, grace: Duration) -> Result<()> {
    stop_many(catalog, vec![export], grace)
}

/// Stops several exports this process started, all at once: SIGTERM to every server first,
/// then the waits (SIGKILL after `grace`). The row of every server that ended is released (one
/// that survives stays recorded for cleanup); the first error is returned.
pub fn stop_many(
    catalog: &mut Catalog,
    exports: Vec<RunningExport>,
    grace: Duration,
) -> Result<()> {
    let servers: Vec<ProcId> = exports.iter().map(|e| e.server).collect();
    let mut result = proc::terminate_all(&servers, grace);
    for mut export in exports {
        export.released = true;
        if export.server.is_alive() {
            // It survived SIGKILL: its row stays, so cleanup keeps trying.
            continue;
        }
        export.remove_files();
        if let Err(e) = catalog.release_export(export.record.id) {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

/// The pid file and log file of export row `id` in `run_dir`.
fn run_files(run_dir: &Path, id: i64) -> [PathBuf; 2] {
    ["pid", "log"].map(|ext| run_dir.join(format!("export-{id}.{ext}")))
}

/// Stops a recorded export whose starter is gone: only when the process still is the one
/// recorded (pid, start time and command line); then forgets the row. Returns whether a process
/// was stopped.
pub fn stop_orphan(
    catalog: &mut Catalog,
    record: &ExportRecord,
    run_dir: &Path,
    grace: Duration,
) -> Result<bool> {
    let mut stopped = false;
    let servers = match (record.server(), record.cmdline.as_deref()) {
        (Some(server), Some(c)) => {
            let same = server.is_alive() && proc::cmdline(server.pid).as_deref() == Some(c);
            if same {
                vec![server]
            } else {
                Vec::new()
            }
        }
        // Its starter was killed before the server's pid was recorded: the server, if it
        // came up, runs with exactly the recorded command line (unique: it names this row's
        // pid file in the state directory).
        (None, Some(c)) => proc::with_cmdline(c),
        _ => Vec::new(),
    };
    for server in servers {
        proc::terminate(server, grace)?;
        stopped = true;
    }
    if let Some(sock) = &record.socket {
        let _ = std::fs::remove_file(sock);
    }
    for f in run_files(run_dir, record.id) {
        let _ = std::fs::remove_file(f);
    }
    catalog.release_export(record.id)?;
    Ok(stopped)
}
