//! The [`Sendense`] handle: one state directory, its configuration, its catalog and the caller's
//! event sink. Every operation of the library starts here.
//!
//! State directory, first match wins: an explicit path (`--state-dir`), `$SENDENSE_HOME`,
//! `/var/lib/sendense` for root, `$XDG_DATA_HOME/sendense`, `~/.local/share/sendense`.
//! It holds `sendense.db` (the catalog, 0600), `config.yaml` and `scratch/`, all private (0700).

use crate::catalog::{BackupRecord, Catalog, JobFilter, JobRecord, NewRepo, RepoRecord, VmRecord};
use crate::config::{Config, DEFAULT_CONFIG_TEXT};
use crate::error::{Error, Result};
use crate::event::{NullSink, SharedSink};
use crate::fsutil::{self, Capacity};
use crate::repo::{self, ProbeReport};
use crate::vm;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the catalog file in the state directory.
pub const CATALOG_FILE: &str = "sendense.db";
/// Name of the configuration file in the state directory.
pub const CONFIG_FILE: &str = "config.yaml";

/// How to open a state directory.
#[derive(Clone, Default)]
pub struct OpenOptions {
    state_dir: Option<PathBuf>,
    config: Option<PathBuf>,
    sink: Option<SharedSink>,
    no_reconcile: bool,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("state_dir", &self.state_dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OpenOptions {
    /// Defaults: state directory and config from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this state directory instead of the environment's.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Reads this config file instead of `<state-dir>/config.yaml` (it must exist).
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.config = Some(path.into());
        self
    }

    /// Skips the reconciliation that opening normally runs (see [`crate::cleanup`]); for
    /// `cleanup --dry-run`, which must change nothing.
    pub fn without_reconcile(mut self) -> Self {
        self.no_reconcile = true;
        self
    }

    /// Delivers events to `sink`.
    pub fn sink(mut self, sink: SharedSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Opens an initialised state directory.
    pub fn open(self) -> Result<Sendense> {
        Sendense::open_with(self, false)
    }

    /// Initialises the state directory (idempotent) and opens it.
    pub fn init(self) -> Result<(Sendense, InitReport)> {
        let dir = resolve_state_dir(self.state_dir.as_deref())?;
        fsutil::create_private_dir(&dir)?;
        let config_path = dir.join(CONFIG_FILE);
        let config_created = !config_path.exists();
        if config_created {
            fsutil::write_atomic(&config_path, DEFAULT_CONFIG_TEXT.as_bytes(), 0o600)?;
        }
        let catalog_created = !dir.join(CATALOG_FILE).exists();
        let sd = Sendense::open_with(self.state_dir(dir.clone()), true)?;
        // An existing catalog is checked whole, not only the pages opening it read.
        if let Some(first) = sd.catalog.quick_check()?.first() {
            return Err(Error::new(
                crate::ErrorKind::Catalog,
                format!(
                    "the catalog {} is damaged: {first}",
                    sd.catalog.path().display()
                ),
            )
            .with_help(
                "`sendense doctor` lists what is wrong and how to rebuild the catalog from the \
                 repositories.",
            ));
        }
        let report = InitReport {
            state_dir: dir,
            catalog: sd.catalog.path().to_path_buf(),
            config: config_path,
            catalog_created,
            config_created,
            schema_version: sd.catalog.schema_version()?,
        };
        Ok((sd, report))
    }
}

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InitReport {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The catalog file.
    pub catalog: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// False when the catalog existed already.
    pub catalog_created: bool,
    /// False when the config existed already (it is never overwritten).
    pub config_created: bool,
    /// Catalog schema version.
    pub schema_version: u32,
}

/// A registered repository with a live capacity reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepoStatus {
    /// What the catalog holds.
    #[serde(flatten)]
    pub record: RepoRecord,
    /// Whether the path is a mount point now.
    pub mount_point: bool,
    /// Problem found with the repository, if any (missing, not mounted, another id).
    pub problem: Option<String>,
}

/// Finds the state directory: `explicit`, `$SENDENSE_HOME`, `/var/lib/sendense` for root,
/// `$XDG_DATA_HOME/sendense`, `$HOME/.local/share/sendense`.
pub fn resolve_state_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    let dir = if let Some(p) = explicit {
        p.to_path_buf()
    } else if let Some(p) = std::env::var_os("SENDENSE_HOME").and_then(non_empty) {
        p
    } else if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/sendense")
    } else if let Some(p) = std::env::var_os("XDG_DATA_HOME").and_then(non_empty) {
        p.join("sendense")
    } else if let Some(home) = std::env::var_os("HOME").and_then(non_empty) {
        home.join(".local/share/sendense")
    } else {
        return Err(
            Error::invalid("cannot find a state directory: HOME is not set")
                .with_help("Pass --state-dir DIR or set SENDENSE_HOME."),
        );
    };
    if dir.is_absolute() {
        Ok(dir)
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .map_err(|e| Error::io("resolving", &dir, e))
    }
}

/// An open Sendense state directory.
pub struct Sendense {
    state_dir: PathBuf,
    config_path: PathBuf,
    config: Config,
    catalog: Catalog,
    sink: SharedSink,
}

impl std::fmt::Debug for Sendense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sendense")
            .field("state_dir", &self.state_dir)
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Sendense {
    /// Opens the state directory from the environment (see [`resolve_state_dir`]).
    pub fn open_default() -> Result<Sendense> {
        OpenOptions::new().open()
    }

    /// Opens an initialised state directory.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<Sendense> {
        OpenOptions::new().state_dir(state_dir).open()
    }

    fn open_with(opts: OpenOptions, create: bool) -> Result<Sendense> {
        let state_dir = resolve_state_dir(opts.state_dir.as_deref())?;
        if !create && !state_dir.join(CATALOG_FILE).exists() {
            return Err(Error::not_found(format!(
                "{} is not an initialised Sendense state directory",
                state_dir.display()
            ))
            .with_help(format!(
                "Run `sendense init --state-dir {}` first, or point --state-dir / SENDENSE_HOME at the right directory.",
                state_dir.display()
            )));
        }
        let (config_path, optional) = match opts.config {
            Some(p) => (p, false),
            None => (state_dir.join(CONFIG_FILE), true),
        };
        let config = Config::load(&config_path, optional)?;
        let catalog = Catalog::open(&state_dir.join(CATALOG_FILE), create)?;
        let mut sd = Sendense {
            state_dir,
            config_path,
            config,
            catalog,
            sink: opts.sink.unwrap_or_else(|| Arc::new(NullSink)),
        };
        // What a killed sendense left behind is reconciled by the next command.
        if opts.no_reconcile {
            return Ok(sd);
        }
        match sd.reconcile() {
            Ok(report) => {
                for a in &report.actions {
                    tracing::warn!("cleanup: {} {} ({})", a.action, a.target, a.reason);
                }
                for e in &report.errors {
                    tracing::warn!("cleanup: {e}");
                }
            }
            Err(e) => tracing::warn!("cleanup failed: {e}"),
        }
        Ok(sd)
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The file the configuration came from (it may not exist: then all defaults apply).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The catalog, for queries.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The catalog, for changes.
    pub fn catalog_mut(&mut self) -> &mut Catalog {
        &mut self.catalog
    }

    /// Where fleecing overlays and temporary files go.
    pub fn scratch_dir(&self) -> PathBuf {
        self.config
            .scratch_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("scratch"))
    }

    /// Job `job`'s private scratch directory (fleecing overlays, sockets); removed when the job
    /// ends, or by the reconciliation.
    pub fn job_scratch(&self, job: i64) -> PathBuf {
        self.scratch_dir().join(format!("job-{job}"))
    }

    /// Where qemu-nbd pid files and logs go.
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }

    /// Where the processes started for `job` are recorded (see [`crate::supervise`]).
    pub fn ledger(&self, job: Option<i64>) -> crate::supervise::Ledger {
        crate::supervise::Ledger::new(self.catalog().path(), job)
    }

    /// The event sink.
    pub fn sink(&self) -> &SharedSink {
        &self.sink
    }

    // ---- repositories ---------------------------------------------------------------------

    /// Creates and registers a repository at `path`.
    pub fn add_repo(&mut self, req: &AddRepo) -> Result<RepoRecord> {
        vm::validate_name("repository", &req.name)?;
        crate::fsutil::require_utf8("repository path", &req.path)?;
        if self.catalog.repo(&req.name).is_ok() {
            return Err(Error::already_exists(format!(
                "a repository named `{}` is already registered",
                req.name
            ))
            .with_help("Choose another name, or see `sendense repo list`."));
        }
        if let Ok(canonical) = std::fs::canonicalize(&req.path) {
            if let Some(other) = self
                .catalog
                .repos()?
                .into_iter()
                .find(|r| r.path == canonical)
            {
                return Err(Error::already_exists(format!(
                    "{} is already registered as repository `{}`",
                    canonical.display(),
                    other.name
                )));
            }
        }
        self.refuse_overlapping_repo(&req.path)?;
        let hub = self.catalog.hub_id()?;
        let (path, meta) = repo::initialise(&req.path, &req.name, req.require_mount, &hub)?;
        let cap = fsutil::capacity(&path)?;
        let inserted = self.catalog.insert_repo(&NewRepo {
            name: req.name.clone(),
            path: path.clone(),
            repo_id: meta.id,
            require_mount: req.require_mount,
            is_default: req.make_default,
            total_bytes: cap.total_bytes,
            available_bytes: cap.available_bytes,
        });
        if inserted.is_err() {
            // Registration failed: leave the directory as we found it.
            let _ = std::fs::remove_file(path.join(repo::META_FILE));
        }
        inserted
    }

    /// Refuses a repository at `path` that would share files with something else Sendense owns:
    /// `/`, the state directory (or a directory holding it), or another registered repository
    /// (inside it, or holding it) — cleanup and deletes of one would touch the other.
    pub(crate) fn refuse_overlapping_repo(&self, path: &Path) -> Result<()> {
        let real = fsutil::resolve_existing_prefix(path)?;
        fsutil::require_utf8("repository path", &real)?;
        let refuse = |why: String| {
            Err(Error::refused(format!("{} cannot be a repository: {why}", path.display()))
                .with_help("Choose a directory of its own for every repository, outside the state directory."))
        };
        if real.parent().is_none() {
            return refuse("it is the root directory".into());
        }
        let state = fsutil::resolve_existing_prefix(&self.state_dir)?;
        if real.starts_with(&state) || state.starts_with(&real) {
            return refuse(format!(
                "it overlaps the state directory {}",
                state.display()
            ));
        }
        for r in self.catalog.repos()? {
            if real.starts_with(&r.path) || r.path.starts_with(&real) {
                return refuse(format!(
                    "it overlaps repository `{}` at {}",
                    r.name,
                    r.path.display()
                ));
            }
        }
        Ok(())
    }

    /// All repositories.
    pub fn repos(&self) -> Result<Vec<RepoRecord>> {
        self.catalog.repos()
    }

    /// One repository with a live capacity reading (stored in the catalog too).
    pub fn repo_status(&mut self, name: &str) -> Result<RepoStatus> {
        let record = self.catalog.repo(name)?;
        Ok(self.refresh_one(record))
    }

    /// Re-reads capacity and checks every repository; problems are reported, not fatal.
    pub fn refresh_repos(&mut self) -> Result<Vec<RepoStatus>> {
        let repos = self.catalog.repos()?;
        Ok(repos.into_iter().map(|r| self.refresh_one(r)).collect())
    }

    fn refresh_one(&mut self, mut record: RepoRecord) -> RepoStatus {
        let hub = self.catalog.hub_id().unwrap_or_default();
        let check = repo::check_mount(&record.path, record.require_mount)
            .and_then(|_| repo::check_identity(&record.path, &record.repo_id))
            .and_then(|meta| match &meta.owner {
                Some(o) if o.hub != hub => Err(repo::owned_elsewhere(&record.path, o)),
                _ => Ok(()),
            })
            .and_then(|_| fsutil::capacity(&record.path));
        let problem = match check {
            Ok(Capacity {
                total_bytes,
                available_bytes,
                ..
            }) => match self
                .catalog
                .update_repo_capacity(record.id, total_bytes, available_bytes)
            {
                Ok(()) => {
                    record.total_bytes = Some(total_bytes);
                    record.available_bytes = Some(available_bytes);
                    record.refreshed_at = Some(crate::time::now_rfc3339());
                    None
                }
                Err(e) => Some(e.to_string()),
            },
            Err(e) => Some(e.to_string()),
        };
        RepoStatus {
            mount_point: fsutil::is_mount_point(&record.path).unwrap_or(false),
            record,
            problem,
        }
    }

    /// Checks a repository end to end: mount guard, identity, a durable write, capacity.
    pub fn test_repo(&mut self, name: &str) -> Result<ProbeReport> {
        let record = self.catalog.repo(name)?;
        let ctx = format!("repository `{name}`");
        repo::check_mount(&record.path, record.require_mount).map_err(|e| e.context(&ctx))?;
        repo::check_identity(&record.path, &record.repo_id).map_err(|e| e.context(&ctx))?;
        let report = repo::probe(&record.path).map_err(|e| e.context(&ctx))?;
        self.catalog.update_repo_capacity(
            record.id,
            report.capacity.total_bytes,
            report.capacity.available_bytes,
        )?;
        Ok(report)
    }

    /// Unregisters a repository (its files stay); refused while backups reference it.
    pub fn remove_repo(&mut self, name: &str) -> Result<RepoRecord> {
        self.catalog.delete_repo(name)
    }

    // ---- VMs ------------------------------------------------------------------------------

    /// All VMs.
    pub fn vms(&self) -> Result<Vec<VmRecord>> {
        self.catalog.vms()
    }

    /// One VM.
    pub fn vm(&self, name: &str) -> Result<VmRecord> {
        self.catalog.vm(name)
    }

    /// Unregisters a VM; refused while backups of it exist.
    pub fn remove_vm(&mut self, name: &str) -> Result<VmRecord> {
        self.catalog.delete_vm(name)
    }

    // ---- NBD exports ----------------------------------------------------------------------

    /// Starts qemu-nbd for `spec` (recorded in the catalog; see [`crate::export`]).
    pub fn start_export(
        &mut self,
        spec: &crate::export::ExportSpec,
    ) -> Result<crate::export::RunningExport> {
        let run_dir = self.run_dir();
        let cfg = self.config.qemu_nbd.clone();
        crate::export::start(&mut self.catalog, &run_dir, spec, &cfg)
    }

    /// What another thread needs to record backups and start exports beside this handle.
    pub fn worker(&self) -> Worker {
        Worker {
            catalog: self.catalog.path().to_path_buf(),
            run_dir: self.run_dir(),
            cfg: self.config.qemu_nbd.clone(),
        }
    }

    /// Starts several exports at once (see [`crate::export::start_many`]).
    pub fn start_exports(
        &mut self,
        specs: &[crate::export::ExportSpec],
    ) -> Result<Vec<crate::export::RunningExport>> {
        let worker = self.worker();
        worker.start_exports(&mut self.catalog, specs)
    }

    /// Stops several exports this process started, all at once, and frees their ports.
    pub fn stop_exports(&mut self, exports: Vec<crate::export::RunningExport>) -> Result<()> {
        let grace = std::time::Duration::from_secs(self.config.qemu_nbd.stop_timeout_secs);
        crate::export::stop_many(&mut self.catalog, exports, grace)
    }

    /// Stops an export this process started and frees its port.
    pub fn stop_export(&mut self, export: crate::export::RunningExport) -> Result<()> {
        let grace = std::time::Duration::from_secs(self.config.qemu_nbd.stop_timeout_secs);
        crate::export::stop(&mut self.catalog, export, grace)
    }

    /// The exports Sendense has recorded, with whether their process is alive.
    pub fn nbd_exports(&self) -> Result<Vec<ExportStatus>> {
        Ok(self
            .catalog
            .exports()?
            .into_iter()
            .map(|record| ExportStatus {
                alive: record.server().is_some_and(|s| s.is_alive()),
                age_seconds: crate::time::age_seconds(&record.allocated_at),
                url: match (&record.port, &record.socket) {
                    (Some(p), _) => {
                        Some(crate::nbd::NbdUrl::tcp("127.0.0.1", *p, &record.export).to_string())
                    }
                    (None, Some(s)) => {
                        Some(crate::nbd::NbdUrl::unix(s, &record.export).to_string())
                    }
                    _ => None,
                },
                record,
            })
            .collect())
    }

    // ---- jobs -----------------------------------------------------------------------------

    /// Jobs, newest first.
    pub fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        self.catalog.jobs(filter)
    }

    /// One job.
    pub fn job(&self, id: i64) -> Result<JobRecord> {
        self.catalog.job(id)
    }

    /// Job `id`'s log, oldest line first.
    pub fn job_log_lines(&self, id: i64) -> Result<Vec<crate::catalog::JobLogLine>> {
        self.catalog.job_log(id)
    }

    /// Asks the process running job `id` to cancel it (`job cancel`); refused for a job that
    /// has ended or whose kind cannot be cancelled.
    pub fn cancel_job(&mut self, id: i64) -> Result<JobRecord> {
        self.catalog.request_cancel(id)
    }

    // ---- backups --------------------------------------------------------------------------

    /// Backups, newest first.
    pub fn backups(&self, filter: &crate::catalog::BackupFilter) -> Result<Vec<BackupRecord>> {
        if let Some(r) = &filter.repo {
            self.catalog.repo(r)?;
        }
        self.catalog.backups(filter)
    }

    /// One backup.
    pub fn backup_record(&self, id: &str) -> Result<BackupRecord> {
        self.catalog.backup(id)
    }

    /// One repository as registered.
    pub fn repo(&self, name: &str) -> Result<RepoRecord> {
        self.catalog.repo(name)
    }
}

/// Catalog-recorded work on another thread, through a catalog connection of its own: see
/// [`Sendense::worker`].
#[derive(Debug, Clone)]
pub struct Worker {
    catalog: PathBuf,
    run_dir: PathBuf,
    cfg: crate::config::QemuNbdConfig,
}

impl Worker {
    /// A connection to the catalog.
    pub fn catalog(&self) -> Result<crate::catalog::Catalog> {
        crate::catalog::Catalog::open(&self.catalog, false)
    }

    /// Starts one qemu-nbd per spec, all at once (see [`crate::export::start_many`]).
    pub fn start_exports(
        &self,
        catalog: &mut crate::catalog::Catalog,
        specs: &[crate::export::ExportSpec],
    ) -> Result<Vec<crate::export::RunningExport>> {
        let grace = std::time::Duration::from_secs(self.cfg.stop_timeout_secs);
        crate::export::start_many(catalog, &self.run_dir, specs, &self.cfg, grace)
    }
}

/// A recorded export and whether it is serving. Also the `nbd list --json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportStatus {
    /// The catalog record.
    #[serde(flatten)]
    pub record: crate::catalog::ExportRecord,
    /// Where to connect.
    pub url: Option<String>,
    /// The qemu-nbd process is running.
    pub alive: bool,
    /// Seconds since the export was allocated.
    pub age_seconds: u64,
}

/// A request to create and register a repository.
#[derive(Debug, Clone)]
pub struct AddRepo {
    /// Name.
    pub name: String,
    /// Directory (created when missing, unless `require_mount`).
    pub path: PathBuf,
    /// Refuse the path unless it is a mount point, now and at every use.
    pub require_mount: bool,
    /// Make it the default repository (the first one always is).
    pub make_default: bool,
}

impl AddRepo {
    /// A plain repository at `path`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        AddRepo {
            name: name.into(),
            path: path.into(),
            require_mount: false,
            make_default: false,
        }
    }

    /// Sets the mount guard.
    pub fn require_mount(mut self, yes: bool) -> Self {
        self.require_mount = yes;
        self
    }

    /// Makes it the default.
    pub fn make_default(mut self, yes: bool) -> Self {
        self.make_default = yes;
        self
    }
}
