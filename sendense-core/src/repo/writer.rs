//! Writing one VM-level backup into a repository: begin (targets as `.partial` images and a
//! `running` catalog row), then commit (check, rename, manifest last, catalog completed in one
//! transaction) or abort (images and rows gone; earlier backups untouched).

use super::chain;
use super::manifest::{Manifest, ManifestDisk, ManifestVm, MANIFEST_FORMAT};
use crate::catalog::{
    BackupMode, BackupRecord, Catalog, ChainTop, DiskOutcome, NewBackupDisk, RepoRecord, VmRecord,
};
use crate::error::{Error, Result};
use crate::sendense::Sendense;
use std::path::PathBuf;

/// The plan for one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPlan {
    /// Disk key.
    pub key: u32,
    /// Full or incremental.
    pub mode: BackupMode,
    /// Why.
    pub reason: String,
    /// The previous image of this disk (required for an incremental, forbidden for a full).
    pub parent: Option<ChainTop>,
    /// Virtual size of the disk now.
    pub size_bytes: u64,
    /// The checkpoint this backup will end at.
    pub checkpoint: Option<String>,
}

/// A target image being written.
#[derive(Debug, Clone)]
pub struct Target {
    /// The plan it follows.
    pub plan: DiskPlan,
    /// Identity of the source disk.
    pub identity: String,
    /// Final path, relative to the repository.
    pub rel_file: String,
    /// The `.partial` image to write into.
    pub partial: PathBuf,
    /// The `.partial` digest file for the blocks written.
    pub digests: PathBuf,
}

/// A backup between begin and commit.
#[derive(Debug)]
pub struct PendingBackup {
    /// Backup id.
    pub id: String,
    /// The repository.
    pub repo: RepoRecord,
    /// The VM.
    pub vm: VmRecord,
    /// One target per disk.
    pub targets: Vec<Target>,
}

/// Where each disk's `.partial` image and digest file of backup `id` go; nothing is created.
/// Checks the repository (mount, identity, room) and that every plan is a full without parent
/// or an incremental with one.
pub fn plan_targets(
    repo: &RepoRecord,
    vm: &VmRecord,
    id: &str,
    plans: &[DiskPlan],
) -> Result<Vec<Target>> {
    super::check_mount(&repo.path, repo.require_mount)?;
    super::check_identity(&repo.path, &repo.repo_id)?;
    let room = crate::fsutil::capacity(&repo.path)?.available_bytes;
    if room < 4 << 20 {
        return Err(Error::new(
            crate::ErrorKind::Io,
            format!("repository `{}` has only {room} bytes free", repo.name),
        )
        .with_help("Free space in the repository or use another one (--repo)."));
    }
    plans
        .iter()
        .map(|plan| {
            // A requested full is a full; a delta is never written without its parent.
            match (plan.mode, &plan.parent) {
                (BackupMode::Full, Some(_)) => {
                    return Err(Error::internal(format!(
                        "disk {}: a full backup has no parent",
                        plan.key
                    )))
                }
                (BackupMode::Incremental, None) => {
                    return Err(Error::internal(format!(
                        "disk {}: an incremental needs its parent",
                        plan.key
                    )))
                }
                _ => {}
            }
            let disk = vm.disks.iter().find(|d| d.key == plan.key).ok_or_else(|| {
                Error::internal(format!("VM {} has no disk {}", vm.name, plan.key))
            })?;
            let rel = chain::image_rel(&vm.name, plan.key, id);
            let partial = chain::partial_of(&repo.path.join(&rel));
            chain::check_inside(&repo.path, &partial)?;
            Ok(Target {
                plan: plan.clone(),
                identity: disk.identity.clone(),
                digests: super::digests::digests_of(&partial),
                rel_file: rel,
                partial,
            })
        })
        .collect()
}

/// Records backup `id` with its planned `targets` as running, before any of their files
/// exists: whatever happens next, the reconciliation knows every file this backup may create.
pub fn record_targets(
    catalog: &mut Catalog,
    id: &str,
    vm: &VmRecord,
    repo: &RepoRecord,
    job: Option<i64>,
    targets: Vec<Target>,
) -> Result<PendingBackup> {
    let pending = PendingBackup {
        id: id.to_string(),
        repo: repo.clone(),
        vm: vm.clone(),
        targets,
    };
    let disks: Vec<NewBackupDisk> = pending
        .targets
        .iter()
        .map(|t| NewBackupDisk {
            key: t.plan.key,
            vm_disk_id: vm.disks.iter().find(|d| d.key == t.plan.key).map(|d| d.id),
            mode: t.plan.mode,
            reason: t.plan.reason.clone(),
            rel_file: t.rel_file.clone(),
            parent: t.plan.parent.as_ref().map(|p| p.backup.clone()),
            since_full: None,
            size_bytes: t.plan.size_bytes,
            checkpoint: t.plan.checkpoint.clone(),
        })
        .collect();
    catalog.insert_backup(id, vm.id, repo.id, job, &disks)?;
    crate::crash::point("backup.recorded");
    Ok(pending)
}

/// Creates the recorded backup's `.partial` images (an incremental backed by its parent) and
/// empty digest files, all disks side by side. On a failure the files created are removed
/// again; the catalog row is the caller's to discard.
pub fn create_targets(pending: &PendingBackup) -> Result<()> {
    let repo = &pending.repo;
    let created = crate::par::map(&pending.targets, |t| {
        chain::create_image(
            &repo.path,
            &t.rel_file,
            t.plan.size_bytes,
            t.plan.parent.as_ref().map(|p| p.rel_file.as_str()),
        )?;
        super::digests::DigestFile::create(&t.digests, t.plan.size_bytes).map(drop)
    });
    if let Some(e) = created.into_iter().find_map(|c| c.err()) {
        remove_targets(repo, &pending.targets);
        return Err(e);
    }
    crate::crash::point("backup.targets-created");
    Ok(())
}

impl Sendense {
    /// Records the backup `id` (see [`chain::new_backup_id`]) as running and creates its
    /// `.partial` target images.
    pub fn begin_backup(
        &mut self,
        id: &str,
        vm: &VmRecord,
        repo: &RepoRecord,
        job: Option<i64>,
        plans: &[DiskPlan],
    ) -> Result<PendingBackup> {
        let targets = plan_targets(repo, vm, id, plans)?;
        let pending = record_targets(self.catalog_mut(), id, vm, repo, job, targets)?;
        if let Err(e) = create_targets(&pending) {
            self.abort_backup(pending);
            return Err(e);
        }
        Ok(pending)
    }

    /// Commits a backup whose target exports are stopped: `qemu-img check` of every image,
    /// rename out of `.partial`, manifest written last, catalog completed in one transaction.
    pub fn commit_backup(
        &mut self,
        pending: PendingBackup,
        outcomes: &[DiskOutcome],
    ) -> Result<BackupRecord> {
        let result = self.commit_inner(&pending, outcomes);
        if result.is_err() {
            self.abort_backup(pending);
        }
        result
    }

    fn commit_inner(
        &mut self,
        p: &PendingBackup,
        outcomes: &[DiskOutcome],
    ) -> Result<BackupRecord> {
        // Taken over by another hub meanwhile: this backup is not written into it.
        super::check_owner(&p.repo.path, &self.catalog().hub_id()?)?;
        // Images and digest files are made durable here (their writers may have skipped
        // flushes), then each image is checked.
        let sync = |path: &std::path::Path| {
            std::fs::File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("syncing", path, e))
        };
        // Disk by disk, side by side: sync, check, digest of the digest file.
        let scheme_of = |key: u32| {
            outcomes
                .iter()
                .find(|o| o.key == key)
                .map(|o| o.digest_scheme)
                .unwrap_or_default()
        };
        // Each new image must open with its chain as recorded: backed by its parent, of its
        // size (its parent's chain was checked before the backup built on it).
        let chains = p
            .targets
            .iter()
            .map(|t| {
                let mut links = vec![chain::ExpectedLink {
                    backup: p.id.clone(),
                    file: t.partial.clone(),
                    size: t.plan.size_bytes,
                    digest: None,
                    image_bytes: None,
                    damaged: None,
                    manifest: None,
                    repo: p.repo.path.clone(),
                }];
                if let Some(parent) = &t.plan.parent {
                    links.extend(self.catalog().disk_chain(&parent.backup, t.plan.key)?);
                }
                Ok(links)
            })
            .collect::<Result<Vec<_>>>()?;
        let work: Vec<_> = p.targets.iter().zip(&chains).collect();
        let checked = crate::par::map(&work, |(t, links)| {
            sync(&t.partial)
                .and_then(|_| sync(&t.digests))
                .and_then(|_| chain::check_image_alone(&t.partial).map(|_| ()))
                .and_then(|_| match chain::chain_problems(links).into_iter().next() {
                    None => Ok(()),
                    Some(problem) => Err(Error::new(
                        crate::ErrorKind::External,
                        format!("the new image does not open with its chain: {problem}"),
                    )),
                })
                .and_then(|_| super::digests::file_digest(&t.digests, scheme_of(t.plan.key)))
                .and_then(|digest| {
                    // The image is never written again: its length is part of what it must be.
                    let len = std::fs::metadata(&t.partial)
                        .map_err(|e| Error::io("reading", &t.partial, e))?
                        .len();
                    Ok((digest, len))
                })
                .map_err(|e| e.context(format!("disk {}", t.plan.key)))
        });
        let mut outcomes = outcomes.to_vec();
        for (t, checked) in p.targets.iter().zip(checked) {
            let (digest, len) = checked?;
            match outcomes.iter_mut().find(|o| o.key == t.plan.key) {
                Some(o) => {
                    o.digest = Some(digest);
                    o.image_bytes = Some(len);
                }
                None => outcomes.push(DiskOutcome {
                    key: t.plan.key,
                    digest: Some(digest),
                    image_bytes: Some(len),
                    ..Default::default()
                }),
            }
        }
        let outcomes = outcomes.as_slice();
        crate::crash::point("commit.checked");
        let committed = crate::par::map(&p.targets, |t| {
            let renamed = chain::commit_files(&[t.partial.as_path(), t.digests.as_path()]);
            crate::crash::point("commit.disk-renamed");
            renamed
        });
        committed.into_iter().collect::<Result<Vec<_>>>()?;
        let recorded = self.catalog().backup(&p.id)?;
        let created_at = recorded.created_at.clone();
        let since_full = |key: u32| {
            recorded
                .disks
                .iter()
                .find(|d| d.key == key)
                .and_then(|d| d.since_full)
        };
        let outcome = |key: u32| {
            outcomes
                .iter()
                .find(|o| o.key == key)
                .cloned()
                .unwrap_or(DiskOutcome {
                    key,
                    ..Default::default()
                })
        };
        let manifest = Manifest {
            copy_of: None,
            format: MANIFEST_FORMAT,
            backup: p.id.clone(),
            repository: p.repo.repo_id.clone(),
            vm: ManifestVm {
                name: p.vm.name.clone(),
                source: p.vm.source.clone(),
                source_options: p.vm.source_options.clone(),
            },
            created_at,
            completed_at: crate::time::now_rfc3339(),
            disks: p
                .targets
                .iter()
                .map(|t| {
                    let o = outcome(t.plan.key);
                    ManifestDisk {
                        key: t.plan.key,
                        identity: t.identity.clone(),
                        mode: t.plan.mode,
                        reason: t.plan.reason.clone(),
                        file: t.rel_file.clone(),
                        parent: t.plan.parent.as_ref().map(|x| x.backup.clone()),
                        size_bytes: t.plan.size_bytes,
                        bytes_read: o.bytes_read,
                        bytes_written: o.bytes_written,
                        checkpoint: t.plan.checkpoint.clone(),
                        digest: o.digest,
                        image_bytes: o.image_bytes,
                        since_full: since_full(t.plan.key),
                    }
                })
                .collect(),
        };
        let rel = manifest.write(&p.repo.path)?;
        crate::crash::point("commit.manifest-written");
        // The checkpoint each disk's source now has, recorded with the backup that ends there.
        let checkpoints: Vec<(i64, &str)> = p
            .targets
            .iter()
            .filter_map(|t| {
                let disk = p.vm.disks.iter().find(|d| d.key == t.plan.key)?;
                Some((disk.id, t.plan.checkpoint.as_deref()?))
            })
            .collect();
        if let Err(e) = self
            .catalog_mut()
            .complete_backup(&p.id, &rel, outcomes, &checkpoints)
        {
            let _ = std::fs::remove_file(p.repo.path.join(&rel));
            return Err(e);
        }
        crate::crash::point("commit.recorded");
        self.catalog().backup(&p.id)
    }

    /// Throws a backup away: its images (partial or committed) and its catalog rows.
    pub fn abort_backup(&mut self, pending: PendingBackup) {
        remove_targets(&pending.repo, &pending.targets);
        let _ = std::fs::remove_file(
            pending
                .repo
                .path
                .join(super::manifest::manifest_rel(&pending.vm.name, &pending.id)),
        );
        if let Err(e) = self.catalog_mut().discard_backup(&pending.id) {
            tracing::warn!("discarding backup {}: {e}", pending.id);
        }
    }
}

/// Removes the files of `targets`, whether still `.partial` or already renamed.
pub fn remove_targets(repo: &RepoRecord, targets: &[Target]) {
    for t in targets {
        let image = repo.path.join(&t.rel_file);
        for f in [
            &t.partial,
            &t.digests,
            &image,
            &super::digests::digests_of(&image),
        ] {
            let _ = std::fs::remove_file(f);
        }
    }
}
