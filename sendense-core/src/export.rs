//! NBD exports on the hub: qemu-nbd supervision, the port allocator, export naming.
//!
//! Every export is recorded in the catalog (`nbd_exports`) *before* its qemu-nbd runs — port,
//! export name, job, owning sendense process — and the qemu-nbd is a supervised child
//! ([`crate::supervise`]): its record (exact command line first, pid and start time as soon as
//! it runs) is the one every child process has, and a [`Supervised`] guard owns it. Stopping is
//! SIGTERM, then SIGKILL after the configured grace (5 s), then waiting for the exit, so the
//! QCOW2 write lock is gone when `stop` returns. A sendense process killed with SIGKILL leaves
//! records whose owner is dead: the reconciliation stops exactly those qemu-nbd processes
//! (matched by pid, start time and command line, never by name), then [`crate::cleanup`] frees
//! their ports and files. Exports bind 127.0.0.1 or a Unix socket, never a public address.

mod command;
pub mod naming;
mod serve;

use crate::catalog::{Catalog, ExportRecord, Listen};
use crate::config::QemuNbdConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::NbdUrl;
use crate::proc::{self, ProcId};
use crate::supervise::{ChildKind, Ledger, Supervised};
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

/// A running qemu-nbd started by this process. Its [`Supervised`] guard owns the server: stop
/// it with [`stop`] or [`stop_many`] (which report errors); dropped without that — an early
/// return, a panic — the guard stops the server and the export forgets its row, so nothing a
/// long-lived process (a library user, a scheduler) started outlives the work it was started
/// for.
#[derive(Debug)]
pub struct RunningExport {
    /// Catalog row.
    pub record: ExportRecord,
    /// Where clients connect.
    pub url: NbdUrl,
    /// The qemu-nbd process.
    pub server: ProcId,
    /// Owns the server; `None` once stopped (or deliberately left for cleanup).
    guard: Option<Supervised>,
    files: Vec<PathBuf>,
    /// The catalog holding the row, for a stop on drop; `None` for an export recorded nowhere
    /// ([`start_unrecorded`]).
    catalog: Option<PathBuf>,
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
        let Some(guard) = self.guard.take() else {
            return;
        };
        tracing::debug!(
            "stopping qemu-nbd {} (export `{}`) on an early exit",
            self.server.pid,
            self.record.export
        );
        if let Err(e) = guard.stop_checked() {
            // Its rows stay: the reconciliation keeps trying.
            tracing::warn!("{e}");
            return;
        }
        self.remove_files();
        let Some(catalog) = &self.catalog else {
            return;
        };
        match Catalog::open(catalog, false) {
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

/// [`MALLOC_TUNABLES`] in front of the user's own.
fn glibc_tunables() -> String {
    match std::env::var("GLIBC_TUNABLES") {
        Ok(user) if !user.is_empty() => format!("{MALLOC_TUNABLES}:{user}"),
        _ => MALLOC_TUNABLES.to_string(),
    }
}

/// Starts qemu-nbd for `spec`, which listens on a Unix socket, as a child of this process that
/// is recorded nowhere and dies with it: for `sendense-sna` on a node, which keeps no catalog
/// (what a killed node command leaves is in its scratch directory, which the next repair
/// removes). Stop it with [`stop_unrecorded`]. Its pid and log files lie beside the socket.
pub fn start_unrecorded(spec: &ExportSpec, cfg: &QemuNbdConfig) -> Result<RunningExport> {
    let Listen::Socket(sock) = &spec.listen else {
        return Err(Error::internal(
            "an export recorded nowhere listens on a Unix socket",
        ));
    };
    let _ = std::fs::remove_file(sock);
    let pid_file = sock.with_extension("pid");
    let log_file = sock.with_extension("log");
    let (args, url) = command::qemu_nbd_args(
        spec,
        cfg,
        &pid_file,
        &command::Listening::Socket(sock.clone()),
    )?;
    let log = std::fs::File::create(&log_file).map_err(|e| Error::io("creating", &log_file, e))?;
    let mut cmd = QEMU_NBD.command();
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .env("GLIBC_TUNABLES", glibc_tunables());
    let grace = Duration::from_secs(cfg.stop_timeout_secs);
    let mut guard = Supervised::spawn(
        cmd,
        ChildKind::QemuNbd,
        &format!("export {}", spec.name),
        grace,
        None,
    )?;
    let failed = |why: String| {
        let text = std::fs::read_to_string(&log_file).unwrap_or_default();
        let _ = std::fs::remove_file(&log_file);
        let _ = std::fs::remove_file(&pid_file);
        Error::new(
            ErrorKind::External,
            format!(
                "qemu-nbd for {} did not start: {why}: {}",
                spec.file.display(),
                text.trim()
            ),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        if guard.exited_within(Duration::from_millis(2)) {
            return Err(failed("it exited".into()));
        }
        if Instant::now() > deadline {
            let _ = guard.stop();
            return Err(failed("not listening after 30 s".into()));
        }
    }
    let Some(server) = guard.id().and_then(ProcId::of) else {
        let _ = guard.stop();
        return Err(failed("it is gone".into()));
    };
    Ok(RunningExport {
        record: ExportRecord {
            id: 0,
            port: None,
            socket: Some(sock.clone()),
            export: spec.name.clone(),
            job: spec.job,
            owner_pid: std::process::id(),
            owner_start: 0,
            pid: Some(server.pid),
            pid_start: None,
            cmdline: None,
            child: None,
            file: Some(spec.file.clone()),
            allocated_at: String::new(),
        },
        url,
        server,
        guard: Some(guard),
        files: vec![pid_file, log_file],
        catalog: None,
    })
}

/// Stops an export [`start_unrecorded`] started: SIGTERM, SIGKILL after its grace, and its
/// files.
pub fn stop_unrecorded(mut export: RunningExport) -> Result<()> {
    if let Some(guard) = export.guard.take() {
        guard.stop_checked()?;
    }
    export.remove_files();
    Ok(())
}

/// A qemu-nbd starting: its `--fork` starter runs until the server listens.
struct Starting {
    starter: std::process::Child,
    record_id: i64,
    /// The qemu-nbd's child record.
    child: i64,
    url: NbdUrl,
    file: PathBuf,
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
    cmd.env("GLIBC_TUNABLES", glibc_tunables());
    // Its own process group: a Ctrl-C in the terminal reaches sendense, which then stops the
    // export in order, instead of killing qemu-nbd under a running copy.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // The starter dies with this thread until it has handed over to the server; the server
    // it forks is found by its command line should this process die before it recorded the
    // server's pid (see `stop_orphan`), so the command line is recorded first.
    crate::supervise::die_with_parent(&mut cmd);
    let full_cmdline = crate::supervise::command_line(&cmd);
    let child = catalog.record_child(&crate::catalog::NewChild {
        kind: ChildKind::QemuNbd,
        label: &format!("export {}", spec.name),
        job: spec.job,
        process: None,
        cmdline: &full_cmdline,
        group_leader: false,
        token: None,
    })?;
    if let Err(e) = catalog.set_export_child(record.id, child) {
        let _ = catalog.forget_child(child);
        return Err(e);
    }
    crate::crash::point("export.command-recorded");
    let starter = cmd.spawn().map_err(|e| {
        let _ = catalog.forget_child(child);
        if e.kind() == std::io::ErrorKind::NotFound {
            QEMU_NBD.missing()
        } else {
            Error::new(ErrorKind::External, format!("cannot start qemu-nbd: {e}"))
        }
    })?;
    Ok(Starting {
        starter,
        record_id: record.id,
        child,
        url,
        file: spec.file.clone(),
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
                    .set_child_process(self.child, server)
                    .and_then(|()| catalog.export(self.record_id));
                match recorded {
                    Ok(record) => {
                        let ledger = Ledger::new(catalog.path(), record.job);
                        let guard = Supervised::server(
                            server,
                            &format!("qemu-nbd (export {})", record.export),
                            self.grace,
                            Some((ledger, self.child)),
                        );
                        return Ok(RunningExport {
                            record,
                            url: self.url,
                            server,
                            guard: Some(guard),
                            files: vec![self.pid_file, self.log_file],
                            catalog: Some(catalog.path().to_path_buf()),
                        });
                    }
                    // Not recorded, so nothing could find it later: it goes now.
                    Err(e) => format!("recording it failed: {e}"),
                }
            }
            (Ok(true), None) => "it reported success but left no running server".to_string(),
            (Ok(false), _) => "it exited with an error".to_string(),
            (Err(e), _) => e.message().to_string(),
        };
        let gone = match server {
            Some(server) => proc::terminate(server, Duration::from_secs(1)).is_ok(),
            None => proc::with_cmdline(&self.cmdline_of(catalog)).is_empty(),
        };
        if gone {
            let _ = catalog.forget_child(self.child);
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

impl Starting {
    /// The recorded command line (empty when the record is unreadable: then nothing matches).
    fn cmdline_of(&self, catalog: &Catalog) -> Vec<String> {
        catalog
            .child(self.child)
            .ok()
            .flatten()
            .map(|c| c.cmdline)
            .unwrap_or_default()
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
        let Some(guard) = export.guard.take() else {
            continue;
        };
        // One that survived SIGKILL keeps its rows, so the reconciliation keeps trying.
        let gone = guard.settle(catalog);
        if !matches!(gone, Ok(true)) {
            if let Err(e) = gone {
                result = result.and(Err(e));
            }
            continue;
        }
        export.remove_files();
        if let Err(e) = catalog.release_export(export.record.id) {
            result = result.and(Err(e));
        }
    }
    result
}

/// The pid file and log file of export row `id` in `run_dir`.
fn run_files(run_dir: &Path, id: i64) -> [PathBuf; 2] {
    ["pid", "log"].map(|ext| run_dir.join(format!("export-{id}.{ext}")))
}

/// Forgets a recorded export whose starter is gone, once the reconciliation of children
/// ([`crate::supervise::reconcile`]) stopped its qemu-nbd: frees its port or socket and removes
/// its files. Returns false (and keeps everything) while its qemu-nbd still runs as recorded.
pub fn release_orphan(
    catalog: &mut Catalog,
    record: &ExportRecord,
    run_dir: &Path,
) -> Result<bool> {
    let child = match record.child {
        Some(id) => catalog.child(id)?,
        None => None,
    };
    if child.is_some_and(|c| !crate::supervise::reconcile::running(&c).is_empty()) {
        return Ok(false);
    }
    if let Some(sock) = &record.socket {
        let _ = std::fs::remove_file(sock);
    }
    for f in run_files(run_dir, record.id) {
        let _ = std::fs::remove_file(f);
    }
    catalog.release_export(record.id)?;
    Ok(true)
}
