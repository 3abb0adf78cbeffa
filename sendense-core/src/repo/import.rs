//! `repo import`: register an existing repository and rebuild the catalog from its manifests.

use super::manifest::Manifest;
use super::RepoMeta;
use crate::catalog::{DiskOutcome, ImportedBackup, NewBackupDisk, NewDisk, NewRepo, RepoRecord};
use crate::error::{Error, Result};
use crate::sendense::Sendense;
use serde::Serialize;
use std::path::Path;

/// How `repo import` registers a repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Register it under this name (default: the name it was created with).
    pub name: Option<String>,
    /// Refuse the path unless it is a mount point.
    pub require_mount: bool,
    /// Make it the default repository.
    pub make_default: bool,
    /// Take the repository over from the hub that owns it (which then stops writing to it).
    pub take_over: bool,
    /// Also register backups whose manifest is lost when their images, digest files and
    /// backing links prove them (see [`super::salvage`]).
    pub salvage: bool,
}

/// What `repo import` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    /// The registered repository.
    pub repo: RepoRecord,
    /// VMs created in the catalog because they were not known.
    pub vms_created: Vec<String>,
    /// Backups added to the catalog.
    pub backups_imported: Vec<String>,
    /// Backups already in the catalog.
    pub backups_known: Vec<String>,
    /// Backups or manifests left out, with the reason.
    pub skipped: Vec<String>,
    /// What was registered differently from what the repository says, and why.
    pub warnings: Vec<String>,
    /// Backups registered from their images because their manifest was lost (`--salvage`);
    /// each got a new manifest.
    pub backups_salvaged: Vec<String>,
}

impl Sendense {
    /// Registers the repository at `path` (under `name`, else the name it was created with)
    /// and adds every backup its manifests describe.
    pub fn import_repo(&mut self, path: &Path, opts: &ImportOptions) -> Result<ImportReport> {
        let ImportOptions {
            name,
            require_mount,
            make_default,
            take_over,
            salvage,
        } = opts.clone();
        let name = name.as_deref();
        crate::fsutil::require_utf8("repository path", path)?;
        let canonical = std::fs::canonicalize(path).map_err(|e| {
            Error::io("repository", path, e)
                .with_help("Pass the directory that holds sendense-repo.yaml.")
        })?;
        crate::fsutil::require_utf8("repository path", &canonical)?;
        super::check_mount(&canonical, require_mount)?;
        let meta = RepoMeta::read(&canonical)?.ok_or_else(|| {
            Error::not_found(format!(
                "{} is not a Sendense repository (no {})",
                canonical.display(),
                super::META_FILE
            ))
            .with_help("Create a new repository with `sendense repo add NAME --path DIR` instead.")
        })?;
        let existing = self
            .catalog()
            .repos()?
            .into_iter()
            .find(|r| r.repo_id == meta.id || r.path == canonical);
        // The same repository, registered here already, at the same path and under the same
        // name: scanned again for what the catalog lacks (with --salvage, say).
        let again = existing.as_ref().is_some_and(|r| {
            r.repo_id == meta.id && r.path == canonical && name.is_none_or(|n| n == r.name)
        });
        if let (Some(existing), false) = (&existing, again) {
            return Err(Error::already_exists(format!(
                "repository {} is already registered as `{}`",
                canonical.display(),
                existing.name
            ))
            .with_help(format!(
                "Import it again as `{}` at the same path to register what the catalog lacks; \
                 `sendense repo refresh` re-reads its capacity.",
                existing.name
            )));
        }
        let name = name.unwrap_or(&meta.name).to_string();
        crate::vm::validate_name("repository", &name)?;
        if !again {
            self.refuse_overlapping_repo(&canonical)?;
        }
        // One hub writes into a repository: another hub's is taken over only when asked, and
        // never while it writes there. Who owns it is read again under the lock.
        let hub = self.catalog().hub_id()?;
        let _taking = match &meta.owner {
            Some(o) if o.hub == hub => None,
            Some(_) if !take_over => None,
            _ => Some(crate::lock::RepoWriteLock::take_over(&canonical)?),
        };
        let meta = match _taking {
            Some(_) => RepoMeta::read(&canonical)?.ok_or_else(|| {
                Error::not_found(format!(
                    "{} is no longer a Sendense repository (its {} went)",
                    canonical.display(),
                    super::META_FILE
                ))
            })?,
            None => meta,
        };
        let taken_from = match &meta.owner {
            Some(o) if o.hub != hub && !take_over => {
                return Err(super::owned_elsewhere(&canonical, o).with_help(
                    "Two hubs writing into one repository destroy each other's backups. Use it \
                     from its owner; once that hub no longer uses it, pass --take-over: this \
                     hub becomes the owner and the other hub's backups and deletes there are \
                     refused from then on.",
                ))
            }
            Some(o) if o.hub != hub => Some(o.clone()),
            _ => None,
        };
        let repo = match existing.filter(|_| again) {
            Some(repo) => repo,
            None => {
                let cap = crate::fsutil::capacity(&canonical)?;
                self.catalog_mut().insert_repo(&NewRepo {
                    name,
                    path: canonical.clone(),
                    repo_id: meta.id.clone(),
                    require_mount,
                    is_default: make_default,
                    total_bytes: cap.total_bytes,
                    available_bytes: cap.available_bytes,
                })?
            }
        };
        if meta.owner.as_ref().is_none_or(|o| o.hub != hub) {
            if let Err(e) = meta.clone().take(&canonical, &hub) {
                if !again {
                    let _ = self.catalog_mut().delete_repo(&repo.name);
                }
                return Err(e);
            }
        }
        let mut report = ImportReport {
            repo: repo.clone(),
            vms_created: Vec::new(),
            backups_imported: Vec::new(),
            backups_known: Vec::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
            backups_salvaged: Vec::new(),
        };
        if let Some(o) = taken_from {
            report.warnings.push(format!(
                "taken over from hub {} on host {} (its owner since {}): that hub's backups and \
                 deletes in this repository are refused from now on",
                o.hub, o.host, o.since
            ));
        }
        // A delete that was merging a backup into the ones depending on it is finished first,
        // from its journal: the manifests then describe the backups as they are.
        self.finish_journaled_merges(&canonical, _taking.is_none(), &mut report)?;
        // Manifests first; then backups whose manifest is lost (registered when they prove
        // themselves with --salvage, else named); again while salvaged parents let more in.
        loop {
            let registered = report.backups_imported.len() + report.backups_salvaged.len();
            report.skipped.clear();
            self.import_manifests(&canonical, &meta.id, &repo, &mut report)?;
            super::salvage::lost_manifests(self, &repo, &meta.id, salvage, &mut report)?;
            if report.backups_imported.len() + report.backups_salvaged.len() == registered {
                break;
            }
        }
        report.repo = self.catalog().repo(&repo.name)?;
        Ok(report)
    }
    /// Finishes every merge whose journal is in the repository at `canonical` (see
    /// [`crate::backup::merge`]): through the catalog when it knows the backup being removed,
    /// else from the repository alone. `lock`: take the repository's writer lock for it (not
    /// needed while this import holds it for a take-over).
    fn finish_journaled_merges(
        &mut self,
        canonical: &Path,
        lock: bool,
        report: &mut ImportReport,
    ) -> Result<()> {
        use crate::backup::consolidate::{self, ConsolidateJournal};
        use crate::backup::merge::{journals, roll_forward, Journal};
        let found = journals(canonical);
        let consolidations = consolidate::journals(canonical);
        if found.is_empty() && consolidations.is_empty() {
            return Ok(());
        }
        let _writing = match lock {
            true => Some(crate::lock::RepoWriteLock::writer(canonical)?),
            false => None,
        };
        for rel in found {
            let journal = match Journal::read(canonical, &rel) {
                Ok(j) => j,
                Err(e) => {
                    report.skipped.push(e.message().to_string());
                    continue;
                }
            };
            let _vm = crate::lock::VmLock::acquire(self.state_dir(), &journal.vm)?;
            // Through the catalog only for its own record of this very backup, being removed
            // from this repository; else from the repository alone.
            let known = self
                .catalog()
                .backup(&journal.backup)
                .ok()
                .filter(|b| b.repo_path == canonical && b.status == "deleting");
            let done = match known {
                Some(b) => self.finish_interrupted_merge(&b).map(|_| ()),
                None => roll_forward(canonical, &journal).and_then(|_| journal.remove(canonical)),
            };
            match done {
                Ok(()) => report.warnings.push(format!(
                    "finished removing backup {} of `{}`: an interrupted delete had begun \
                     merging it into the backups that depend on it",
                    journal.backup, journal.vm
                )),
                Err(e) => report
                    .skipped
                    .push(format!("the interrupted merge {rel}: {}", e.message())),
            }
        }
        for rel in consolidations {
            let done = ConsolidateJournal::read(canonical, &rel).and_then(|j| {
                let _vm = crate::lock::VmLock::acquire(self.state_dir(), &j.vm)?;
                self.finish_consolidation(canonical, &j).map(|_| j)
            });
            match done {
                Ok(j) => report.warnings.push(format!(
                    "finished making backup {} of `{}` a standalone full: it had been interrupted",
                    j.backup, j.vm
                )),
                Err(e) => report.skipped.push(format!(
                    "the interrupted consolidation {rel}: {}",
                    e.message()
                )),
            }
        }
        Ok(())
    }

    /// Registers the backups the manifests of the repository at `canonical` describe that the
    /// catalog does not hold yet.
    fn import_manifests(
        &mut self,
        canonical: &Path,
        repo_id: &str,
        repo: &RepoRecord,
        report: &mut ImportReport,
    ) -> Result<()> {
        let scan = Manifest::read_all(canonical)?;
        report
            .skipped
            .extend(scan.errors.iter().map(|e| e.to_string()));
        for (rel, m) in parents_first(scan.found) {
            if let Err(e) = m.validate(&rel) {
                report.skipped.push(e.message().to_string());
                continue;
            }
            if m.repository != repo_id {
                report.skipped.push(format!(
                    "{}: belongs to repository {}",
                    m.backup, m.repository
                ));
                continue;
            }
            if self.catalog().backup(&m.backup).is_ok() {
                // Known before this import (not registered by an earlier pass of it).
                let counted = report.backups_imported.contains(&m.backup)
                    || report.backups_salvaged.contains(&m.backup)
                    || report.backups_known.contains(&m.backup);
                if !counted {
                    report.backups_known.push(m.backup.clone());
                }
                continue;
            }
            if let Some(problem) = missing_piece(self, canonical, &m) {
                report.skipped.push(format!("{}: {problem}", m.backup));
                continue;
            }
            match self.register_manifest(
                rel,
                &m,
                repo.id,
                &mut report.vms_created,
                &mut report.warnings,
            )? {
                Ok(()) => report.backups_imported.push(m.backup.clone()),
                Err(why) => report.skipped.push(format!("{}: {why}", m.backup)),
            }
        }
        Ok(())
    }

    /// Registers the backup manifest `m` (at `rel`, validated, its pieces present) describes
    /// in repository `repo_id` (catalog id), creating its VM when unknown; `Ok(Err(why))` when
    /// the catalog refuses it.
    pub(crate) fn register_manifest(
        &mut self,
        rel: String,
        m: &Manifest,
        repo_id: i64,
        vms_created: &mut Vec<String>,
        warnings: &mut Vec<String>,
    ) -> Result<std::result::Result<(), String>> {
        let vm = match self.catalog().vm(&m.vm.name) {
            Ok(vm) => vm,
            Err(_) => {
                let disks: Vec<NewDisk> = m
                    .disks
                    .iter()
                    .map(|d| NewDisk {
                        key: Some(d.key),
                        identity: d.identity.clone(),
                        format: None,
                        size_bytes: d.size_bytes,
                    })
                    .collect();
                // Commands are never taken from a repository: a hook would run as this
                // hub's user on the next backup.
                let mut options = m.vm.source_options.clone();
                if let Some(map) = options.as_object_mut() {
                    for hook in ["pre_hook", "post_hook"] {
                        if map.remove(hook).is_some() {
                            warnings.push(format!(
                            "VM `{}`: its {} from the repository was not registered; add it again with `sendense vm add`",
                            m.vm.name,
                            hook.replace('_', "-")
                        ));
                        }
                    }
                }
                let vm =
                    self.catalog_mut()
                        .insert_vm(&m.vm.name, &m.vm.source, &options, &disks)?;
                vms_created.push(vm.name.clone());
                vm
            }
        };
        let disks: Vec<(NewBackupDisk, DiskOutcome)> = m
            .disks
            .iter()
            .map(|d| {
                (
                    NewBackupDisk {
                        key: d.key,
                        vm_disk_id: vm.disks.iter().find(|v| v.key == d.key).map(|v| v.id),
                        mode: d.mode,
                        reason: d.reason.clone(),
                        rel_file: d.file.clone(),
                        parent: d.parent.clone(),
                        size_bytes: d.size_bytes,
                        checkpoint: d.checkpoint.clone(),
                        since_full: d.since_full,
                    },
                    d.outcome(),
                )
            })
            .collect();
        let imported = ImportedBackup {
            id: m.backup.clone(),
            vm_id: vm.id,
            repo_id,
            created_at: m.created_at.clone(),
            completed_at: m.completed_at.clone(),
            manifest: rel,
            copy_of: m.copy_of.clone(),
            disks,
        };
        Ok(self
            .catalog_mut()
            .import_backup(&imported)
            .map_err(|e| e.to_string()))
    }
}

/// Orders manifests so every backup comes after the backups its disks are backed by (ties keep
/// the time order). Manifests whose parents never appear keep their place at the end, to be
/// reported as skipped.
pub(crate) fn parents_first(mut rest: Vec<(String, Manifest)>) -> Vec<(String, Manifest)> {
    let mut out: Vec<(String, Manifest)> = Vec::with_capacity(rest.len());
    loop {
        let ready = rest.iter().position(|(_, m)| {
            m.disks.iter().all(|d| match &d.parent {
                None => true,
                Some(p) => out.iter().any(|(_, o)| &o.backup == p),
            })
        });
        match ready {
            Some(i) => out.push(rest.remove(i)),
            None => {
                out.append(&mut rest);
                return out;
            }
        }
    }
}

/// Why a manifest's backup cannot be used, if it cannot: an image or a parent is missing.
fn missing_piece(sd: &Sendense, repo: &Path, m: &Manifest) -> Option<String> {
    for d in &m.disks {
        if !repo.join(&d.file).is_file() {
            return Some(format!("image {} is missing", d.file));
        }
        if let Some(parent) = &d.parent {
            if sd.catalog().backup(parent).is_err() {
                return Some(format!(
                    "disk {}: parent backup {parent} is not in the repository",
                    d.key
                ));
            }
        }
    }
    None
}
