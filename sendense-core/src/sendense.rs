//! The [`Sendense`] handle: one state directory, its configuration, its catalog and the caller's
//! event sink. Every operation of the library starts here; this file only opens the handle and
//! hands out what it holds — the operations are in [`crate::hub`], one file per noun.
//!
//! State directory, first match wins: an explicit path (`--state-dir`), `$SENDENSE_HOME`,
//! `/var/lib/sendense` for root, `$XDG_DATA_HOME/sendense`, `~/.local/share/sendense`.
//! It holds `sendense.db` (the catalog, 0600), `config.yaml` and `scratch/`, all private (0700).

use crate::catalog::Catalog;
use crate::config::{Config, DEFAULT_CONFIG_TEXT};
use crate::error::{Error, Result};
use crate::event::{NullSink, SharedSink};
use crate::fsutil;
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

    /// The scratch directory a backup job of `vm` asks its source for: the hub's own
    /// ([`Sendense::job_scratch`]), or — for a VM on a remote node — a plain name the node
    /// places in its own state directory (`<hub>-job-<job>`: two hubs sharing a node never
    /// meet).
    pub fn snapshot_scratch(&self, vm: &crate::catalog::VmRecord, job: i64) -> Result<PathBuf> {
        if vm.node.is_none() {
            return Ok(self.job_scratch(job));
        }
        let hub: String = self
            .catalog()
            .hub_id()?
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        Ok(PathBuf::from(format!("{hub}-job-{job}")))
    }

    /// Where qemu-nbd pid files and logs go.
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }

    /// Options that open this state directory again, with the same configuration file and
    /// event sink (for jobs on threads of their own).
    pub fn open_options_again(&self) -> OpenOptions {
        let opts = OpenOptions::new()
            .state_dir(&self.state_dir)
            .sink(self.sink.clone());
        // A configuration file that does not exist means the defaults, as it did here.
        match self.config_path.exists() {
            true => opts.config(&self.config_path),
            false => opts,
        }
    }

    /// Where the processes started for `job` are recorded (see [`crate::supervise`]).
    pub fn ledger(&self, job: Option<i64>) -> crate::supervise::Ledger {
        crate::supervise::Ledger::new(self.catalog().path(), job)
    }

    /// The event sink.
    pub fn sink(&self) -> &SharedSink {
        &self.sink
    }
}
