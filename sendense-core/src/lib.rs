//! # sendense-core
//!
//! Agentless, VM-level, incremental backup for hypervisor virtual machines. This crate does all
//! the work; the `sendense` CLI and the `sendense-sna` node are thin frontends over it, and
//! integrators embed it the same way.
//!
//! Everything starts from a [`Sendense`] handle opened on a state directory (catalog, config):
//!
//! ```no_run
//! use sendense_core::{AddRepo, OpenOptions};
//!
//! # fn main() -> sendense_core::Result<()> {
//! let (mut sd, _report) = OpenOptions::new().state_dir("/var/lib/sendense").init()?;
//! sd.add_repo(&AddRepo::new("local", "/srv/backup"))?;
//! let vm = sd.add_image_vm("pgtest1", &["/srv/vms/pgtest1-os.qcow2".into()])?;
//! for disk in &vm.disks {
//!     println!("{} {} {} bytes", disk.key, disk.identity, disk.size_bytes);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Errors are one [`Error`] type with an [`ErrorKind`], a stable code and a help text. Long
//! operations report [`Event`]s to the [`EventSink`] given in [`OpenOptions::sink`].

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs)]

pub mod backup;
pub mod catalog;
pub mod cleanup;
pub mod config;
pub mod crash;
pub mod doctor;
mod error;
mod event;
pub mod export;
pub mod fsutil;
pub mod hub;
pub mod jobs;
pub mod lock;
pub mod mount;
pub mod nbd;
pub mod node;
mod par;
pub mod proc;
mod recent;
pub mod repo;
pub mod restore;
pub mod retention;
pub(crate) mod rt;
pub mod runner;
pub mod schedule;
mod sendense;
pub mod source;
pub mod supervise;
pub mod time;
pub mod tools;
pub mod transfer;
pub mod verify;
pub mod vm;
pub mod vsphere;

pub use catalog::{DiskRecord, JobFilter, JobKind, JobRecord, JobStatus, RepoRecord, VmRecord};
pub use config::{Config, TransferMode};
pub use error::{exit, Error, ErrorKind, Result};
pub use event::{CopyMode, Event, EventKind, EventSink, NullSink, SharedSink};
pub use hub::{
    AddRepo, AddS3Repo, DiskStatus, ExportStatus, GroupStatus, PolicyEdit, PolicySpec, RepoStatus,
    S3RepoShown, S3RepoStatus, Worker,
};
pub use sendense::{
    resolve_state_dir, InitReport, OpenOptions, Sendense, CATALOG_FILE, CONFIG_FILE,
};
