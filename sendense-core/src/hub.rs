//! The handle's operations, one file per noun. The [`crate::Sendense`] handle itself
//! (`sendense.rs`) only opens a state directory and holds its configuration, catalog and event
//! sink; what a frontend does with it lives here:
//!
//! | file | the handle's operations on |
//! |---|---|
//! | `hub/repos.rs` | repositories: add, show, test, refresh, remove |
//! | `hub/vms.rs` | VMs: add, discover, disks by identity, checkpoints, remove |
//! | `hub/backups.rs` | backups: list, show |
//! | `hub/jobs.rs` | jobs: list, show, log, cancel |
//! | `hub/exports.rs` | the hub's NBD exports: start, stop, list |
//! | `hub/policies.rs` | policies and protection groups: add, edit, members, next runs |
//! | `hub/nodes.rs` | remote nodes: add (host key pinned, version checked), test, remove |
//! | `hub/vcenters.rs` | vCenters: add (certificate pinned, login checked), test, remove |
//!
//! Long operations are orchestrated where their steps are: [`crate::backup`] (backup, delete),
//! [`crate::restore`], [`crate::verify`], [`crate::export`] (serving a restore point),
//! [`crate::repo`] (import, salvage), [`crate::cleanup`] (reconciliation), and run as jobs
//! ([`crate::jobs`], several at once: [`crate::runner`]).

mod backups;
mod exports;
mod jobs;
mod nodes;
mod policies;
mod repos;
mod s3repos;
mod vcenters;
mod vms;

pub use exports::{ExportStatus, Worker};
pub use nodes::{AddNode, NodeCheck, Throughput, INSTALL_PATH, MAX_TEST_MIB};
pub use policies::{GroupStatus, PolicyEdit, PolicySpec};
pub use repos::{AddRepo, RepoStatus};
pub(crate) use s3repos::s3_settings;
pub use s3repos::{AddS3Repo, S3RepoShown, S3RepoStatus};
pub use vcenters::{AddVcenter, VcenterCheck};
pub use vms::DiskStatus;
