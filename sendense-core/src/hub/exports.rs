//! The hub's NBD exports as the handle sees them: start, stop, list (see [`crate::export`]).

use crate::error::Result;
use crate::sendense::Sendense;
use serde::Serialize;
use std::path::PathBuf;

impl Sendense {
    /// Starts qemu-nbd for `spec` (recorded in the catalog; see [`crate::export`]).
    pub fn start_export(
        &mut self,
        spec: &crate::export::ExportSpec,
    ) -> Result<crate::export::RunningExport> {
        let run_dir = self.run_dir();
        let cfg = self.config().qemu_nbd.clone();
        crate::export::start(self.catalog_mut(), &run_dir, spec, &cfg)
    }

    /// What another thread needs to record backups and start exports beside this handle.
    pub fn worker(&self) -> Worker {
        Worker {
            catalog: self.catalog().path().to_path_buf(),
            run_dir: self.run_dir(),
            cfg: self.config().qemu_nbd.clone(),
        }
    }

    /// Starts several exports at once (see [`crate::export::start_many`]).
    pub fn start_exports(
        &mut self,
        specs: &[crate::export::ExportSpec],
    ) -> Result<Vec<crate::export::RunningExport>> {
        let worker = self.worker();
        worker.start_exports(self.catalog_mut(), specs)
    }

    /// Stops several exports this process started, all at once, and frees their ports.
    pub fn stop_exports(&mut self, exports: Vec<crate::export::RunningExport>) -> Result<()> {
        let grace = std::time::Duration::from_secs(self.config().qemu_nbd.stop_timeout_secs);
        crate::export::stop_many(self.catalog_mut(), exports, grace)
    }

    /// Stops an export this process started and frees its port.
    pub fn stop_export(&mut self, export: crate::export::RunningExport) -> Result<()> {
        let grace = std::time::Duration::from_secs(self.config().qemu_nbd.stop_timeout_secs);
        crate::export::stop(self.catalog_mut(), export, grace)
    }

    /// The exports Sendense has recorded, with whether their process is alive.
    pub fn nbd_exports(&self) -> Result<Vec<ExportStatus>> {
        Ok(self
            .catalog()
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
