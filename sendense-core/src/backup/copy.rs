//! `backup copy`: a backup copied into another repository (3-2-1), as a chain.
//!
//! A copy is a backup of its own in the destination: its own id (the time stamp of the restore
//! point with a new suffix), rows, manifest and retention, recording the first backup of the
//! restore point it copies (`copy_of`). So a destination is a repository like any other —
//! `restore`, `verify`, `prune`, merges and `repo import` work on it unchanged — and losing the
//! primary repository loses no restore point that has a copy.
//!
//! Only the links the destination needs move, parents first: from the top down, the backup
//! asked for and each parent of a link that moves whose restore point the destination does not
//! hold whole (completed, nothing of its chain found damaged); a link older than one the
//! destination holds never moves, even where prune removed it there. What moves is copied link
//! by link: each image file as it is (only its own clusters; the QCOW2 is not rewritten), its
//! backing name pointed at the parent's copy by `qemu-img rebase -u`, its digest file beside
//! it. So copies of a chain stay a chain of the same small increments.
//!
//! Each copied image is checked before it is committed exactly as `backup verify` checks one
//! (`qemu-img check`, its digest file against the recorded digest, every block it holds against
//! its record) and opens with its chain as recorded; then the files are renamed out of
//! `.partial`, the manifest is written last, and the catalog records the copy completed. A copy
//! is written link by link like a backup — rows before files, a `running` row until committed —
//! so a failure removes what it wrote of the link being written (links committed before stay:
//! they are whole) and a killed copy is discarded by the reconciliation.

use crate::catalog::{BackupRecord, DiskOutcome, JobKind, NewBackupDisk, NewCopy, RepoRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::chain::{self, ExpectedLink};
use crate::repo::digests;
use crate::repo::manifest::{Manifest, ManifestDisk, ManifestVm, MANIFEST_FORMAT};
use crate::sendense::Sendense;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// What `backup copy` did. Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// The backup asked for.
    pub backup: String,
    /// Its restore point: the id of the first backup of it.
    pub point: String,
    /// The destination repository.
    pub to: String,
    /// The backup in the destination that holds the restore point now.
    pub copy: String,
    /// Links copied, parents first.
    pub copied: Vec<CopiedLink>,
    /// Links the destination held already: `(backup in the source, backup there)`.
    pub present: Vec<(String, String)>,
    /// Bytes written into the destination (images and digest files).
    pub bytes_written: u64,
}

/// One link copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopiedLink {
    /// The backup copied.
    pub from: String,
    /// Its copy in the destination.
    pub backup: String,
    /// Bytes written for it.
    pub bytes_written: u64,
}

/// What copying a chain's links did: the links copied, those the destination held (`(backup in
/// the source, backup there)`), and each link's backup in the destination.
#[derive(Debug, Default)]
pub(crate) struct CopiedLinks {
    pub copied: Vec<CopiedLink>,
    pub present: Vec<(String, String)>,
    pub mapping: HashMap<String, String>,
}

/// A disk of a copy being written.
struct DiskCopy {
    key: u32,
    source: PathBuf,
    partial: PathBuf,
    digests: PathBuf,
    rel: String,
}

impl DiskCopy {
    fn committed(&self) -> [PathBuf; 2] {
        let strip = |p: &Path| {
            PathBuf::from(
                p.to_string_lossy()
                    .strip_suffix(chain::PARTIAL)
                    .unwrap_or(&p.to_string_lossy()),
            )
        };
        [strip(&self.partial), strip(&self.digests)]
    }
}

impl Sendense {
    /// Copies backup `id` into repository `to`: the links of its chain the destination lacks,
    /// parents first, each checked against the recorded digests before it is committed. A
    /// backup the destination holds already is reported, not copied again. Refused for a
    /// damaged backup and while the VM is busy (a backup, delete or copy of it runs).
    pub fn copy_backup(
        &mut self,
        id: &str,
        to: &str,
        cancel: CancellationToken,
    ) -> Result<CopyReport> {
        let b = self.catalog().backup(id)?;
        b.require_local("copying")?;
        if let Ok(dest) = self.catalog().s3_repo(to) {
            return self.copy_to_s3(&b, &dest, cancel);
        }
        let dest = self.catalog().repo(to)?;
        let point = b.copy_of.clone().unwrap_or_else(|| b.id.clone());
        if b.repo_id == dest.id {
            return Err(
                Error::invalid(format!("backup {id} is in repository `{to}` already"))
                    .with_help("Copy it to another repository (`sendense repo list`)."),
            );
        }
        let hub = self.catalog().hub_id()?;
        crate::repo::check_mount(&dest.path, dest.require_mount)
            .and_then(|()| crate::repo::check_identity(&dest.path, &dest.repo_id))
            .and_then(|_| crate::repo::check_owner(&dest.path, &hub))
            .map_err(|e| e.context(format!("copying into repository `{to}`")))?;
        let source = self.catalog().repo(&b.repo)?;
        crate::repo::check_mount(&source.path, source.require_mount)
            .and_then(|()| crate::repo::check_identity(&source.path, &source.repo_id))
            .map_err(|e| {
                e.context(format!("reading backup {id} in repository `{}`", b.repo))
                    .with_help(format!(
                        "Copy it from another repository that holds it: `sendense backup show {id}` lists them."
                    ))
            })?;
        let _vm = crate::lock::VmLock::acquire(self.state_dir(), &b.vm)?;
        let (links, _reading) = self.chain_to_copy(id)?;
        crate::repo::claim_if_unowned(&dest.path, &hub)?;
        let _writing = crate::lock::RepoWriteLock::writer(&dest.path)?;
        crate::repo::check_owner(&dest.path, &hub)?;
        let job = self.begin_job(JobKind::Copy, Some(&b.vm), Some(&dest.name), cancel)?;
        self.job_log(
            job.id,
            &format!("copying backup {id} ({} link(s)) into `{to}`", links.len()),
        );
        let scratch = self.job_scratch(job.id);
        let result = self.copy_links(id, &links, &dest, &scratch, job.id, &job.cancel);
        let _ = std::fs::remove_dir_all(&scratch);
        let result =
            result.map(|links| self.copy_report(job.id, id, point, dest.name.clone(), links));
        self.end_job(job, result)
    }

    /// What a copy of backup `id` (restore point `point`) into repository `to` did, from the
    /// links it copied, found there, and mapped (`links`); each copied link logged in job `job`.
    pub(crate) fn copy_report(
        &mut self,
        job: i64,
        id: &str,
        point: String,
        to: String,
        links: CopiedLinks,
    ) -> CopyReport {
        let CopiedLinks {
            copied,
            present,
            mapping,
        } = links;
        for c in &copied {
            self.job_log(
                job,
                &format!(
                    "copied backup {} as {} ({} bytes)",
                    c.from, c.backup, c.bytes_written
                ),
            );
        }
        CopyReport {
            backup: id.to_string(),
            point,
            to,
            copy: mapping.get(id).cloned().unwrap_or_default(),
            bytes_written: copied.iter().map(|c| c.bytes_written).sum(),
            copied,
            present,
        }
    }

    /// The chain of backup `id`, parents first, read under shared locks (returned) so no link
    /// goes while it is copied: every link completed and not found damaged.
    pub(crate) fn chain_to_copy(
        &self,
        id: &str,
    ) -> Result<(Vec<BackupRecord>, crate::lock::BackupReadLocks)> {
        let ids = self.catalog().chain_ids(id)?;
        let reading = crate::lock::BackupReadLocks::acquire(self.state_dir(), &ids)?;
        // Read again under the locks: every link must be there, completed and whole.
        let mut links = Vec::with_capacity(ids.len());
        for link in &ids {
            let r = self.catalog().backup(link)?;
            if r.status != "completed" {
                return Err(Error::busy(format!(
                    "backup {link} of the chain of {id} is {}",
                    r.status
                )));
            }
            if let Some(why) = &r.damaged {
                return Err(Error::refused(format!(
                    "backup {link} of the chain of {id} is damaged ({why}); a copy would carry the damage"
                ))
                .with_help("Run `sendense backup verify` on it; copy a backup whose chain is whole."));
            }
            links.push(r);
        }
        Ok((parents_first(links)?, reading))
    }

    /// Copies the links of `top`'s chain (`links`, parents first) that the destination needs;
    /// returns what was copied, what was there, and each link's backup in the destination.
    fn copy_links(
        &mut self,
        top: &str,
        links: &[BackupRecord],
        dest: &RepoRecord,
        scratch: &Path,
        job: i64,
        cancel: &CancellationToken,
    ) -> Result<CopiedLinks> {
        let (needed, there) = self.links_needed(top, links, dest.id)?;
        let mut mapping: HashMap<String, String> = HashMap::new();
        let mut copied = Vec::new();
        let mut present = Vec::new();
        for link in links.iter().filter(|l| needed.contains(&l.id)) {
            let point = link.copy_of.clone().unwrap_or_else(|| link.id.clone());
            if let Some(t) = there.get(&link.id) {
                present.push((link.id.clone(), t.clone()));
                mapping.insert(link.id.clone(), t.clone());
                continue;
            }
            if cancel.is_cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, "copy cancelled"));
            }
            let (new_id, bytes) =
                self.copy_link(link, &point, &mapping, dest, scratch, job, cancel)?;
            copied.push(CopiedLink {
                from: link.id.clone(),
                backup: new_id.clone(),
                bytes_written: bytes,
            });
            mapping.insert(link.id.clone(), new_id);
        }
        Ok(CopiedLinks {
            copied,
            present,
            mapping,
        })
    }

    /// The links of `top`'s chain (`links`) a copy into repository `dest` (catalog id) needs,
    /// and those it holds already (link → its backup there).
    pub(crate) fn links_needed(
        &self,
        top: &str,
        links: &[BackupRecord],
        dest: i64,
    ) -> Result<(HashSet<String>, HashMap<String, String>)> {
        // What moves, from the top down: the backup asked for, and each parent of a link that
        // moves whose restore point the destination does not hold whole. A link older than
        // one the destination holds never moves, even where prune removed it there.
        let mut there: HashMap<String, String> = HashMap::new();
        let mut needed: HashSet<String> = HashSet::from([top.to_string()]);
        for link in links.iter().rev() {
            if !needed.contains(&link.id) {
                continue;
            }
            let point = link.copy_of.clone().unwrap_or_else(|| link.id.clone());
            if let Some(t) = self.whole_point_in(&point, dest)? {
                there.insert(link.id.clone(), t);
                continue;
            }
            needed.extend(link.disks.iter().filter_map(|d| d.parent.clone()));
        }
        Ok((needed, there))
    }

    /// The backup of restore point `point` in repository `dest` (catalog id) that a copy may
    /// build on: completed, and neither it nor a link of its chain found damaged.
    fn whole_point_in(&self, point: &str, dest: i64) -> Result<Option<String>> {
        let Some(id) = self.catalog().point_in(point, dest, true)? else {
            return Ok(None);
        };
        let b = self.catalog().backup(&id)?;
        for d in &b.disks {
            let chain = self.catalog().disk_chain(&id, d.key)?;
            if chain.iter().any(|l| l.damaged.is_some()) {
                return Ok(None);
            }
        }
        Ok(Some(id))
    }

    /// Writes one link into the destination as a new backup; on failure nothing of it stays.
    #[allow(clippy::too_many_arguments)]
    fn copy_link(
        &mut self,
        link: &BackupRecord,
        point: &str,
        mapping: &HashMap<String, String>,
        dest: &RepoRecord,
        scratch: &Path,
        job: i64,
        cancel: &CancellationToken,
    ) -> Result<(String, u64)> {
        let vm = self.catalog().vm(&link.vm)?;
        let new_id = self.copy_id(link, dest)?;
        let mut disks = Vec::with_capacity(link.disks.len());
        let mut files = Vec::with_capacity(link.disks.len());
        for d in &link.disks {
            chain::check_inside(&link.repo_path, &d.file)?;
            chain::check_inside(&link.repo_path, &digests::digests_of(&d.file))?;
            let parent = match &d.parent {
                None => None,
                Some(p) => Some(mapping.get(p).cloned().ok_or_else(|| {
                    Error::internal(format!(
                        "backup {}: parent {p} of disk {} was not copied first",
                        link.id, d.key
                    ))
                })?),
            };
            let rel = chain::image_rel(&link.vm, d.key, &new_id);
            let target = dest.path.join(&rel);
            chain::check_inside(&dest.path, &target)?;
            let partial = chain::partial_of(&target);
            files.push(DiskCopy {
                key: d.key,
                source: d.file.clone(),
                digests: digests::digests_of(&partial),
                partial,
                rel: rel.clone(),
            });
            disks.push(NewBackupDisk {
                key: d.key,
                vm_disk_id: vm.disks.iter().find(|v| v.key == d.key).map(|v| v.id),
                mode: d.mode,
                reason: d.reason.clone(),
                rel_file: rel,
                parent,
                size_bytes: d.size_bytes,
                checkpoint: d.checkpoint.clone(),
                since_full: d.since_full,
            });
        }
        self.catalog_mut().insert_copy(&NewCopy {
            id: new_id.clone(),
            vm_id: link.vm_id,
            repo_id: dest.id,
            job,
            created_at: link.created_at.clone(),
            copy_of: point.to_string(),
            disks: disks.clone(),
        })?;
        // Every file this copy created, to remove should it fail (and only those).
        let mut created: Vec<PathBuf> = Vec::new();
        let written = self
            .write_copy(
                link,
                &new_id,
                point,
                &disks,
                &files,
                dest,
                scratch,
                cancel,
                &mut created,
            )
            .map_err(|e| e.context(format!("copying backup {}", link.id)));
        if written.is_err() {
            let mut all_gone = true;
            for p in created.iter().rev() {
                match std::fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!("removing {}: {e}", p.display());
                        all_gone = false;
                    }
                    _ => {}
                }
            }
            // A file that would not go keeps the row: the reconciliation tries again.
            if all_gone {
                if let Err(e) = self.catalog_mut().discard_backup(&new_id) {
                    tracing::warn!("discarding copy {new_id}: {e}");
                }
            }
        }
        written.map(|bytes| (new_id, bytes))
    }

    /// A new id for a copy of `link` in `dest`: the same time stamp (the restore point's), a new
    /// suffix; unknown to the catalog, and naming no file there yet.
    fn copy_id(&self, link: &BackupRecord, dest: &RepoRecord) -> Result<String> {
        self.fresh_copy_id(link, |candidate| {
            let manifest = crate::repo::manifest::manifest_rel(&link.vm, candidate);
            Ok(std::iter::once(dest.path.join(manifest))
                .chain(link.disks.iter().flat_map(|d| {
                    let image = dest.path.join(chain::image_rel(&link.vm, d.key, candidate));
                    let digests = digests::digests_of(&image);
                    [
                        chain::partial_of(&image),
                        chain::partial_of(&digests),
                        image,
                        digests,
                    ]
                }))
                .any(|p| p.symlink_metadata().is_ok()))
        })
    }

    /// A new id for a copy of `link`: the restore point's time stamp with a new suffix, a
    /// backup id unknown to the catalog that `taken` says names nothing in the destination.
    pub(crate) fn fresh_copy_id(
        &self,
        link: &BackupRecord,
        taken: impl Fn(&str) -> Result<bool>,
    ) -> Result<String> {
        let stamp = link.id.get(..16).unwrap_or_default();
        for _ in 0..16 {
            let rand = uuid::Uuid::new_v4().simple().to_string();
            let candidate = format!("{stamp}-{}", &rand[..6]);
            if chain::is_backup_id(&candidate)
                && self.catalog().backup(&candidate).is_err()
                && !taken(&candidate)?
            {
                return Ok(candidate);
            }
        }
        Err(Error::internal(format!(
            "no free id for a copy of {}",
            link.id
        )))
    }

    /// Copies, checks and commits the files of one link; returns the bytes written.
    #[allow(clippy::too_many_arguments)]
    fn write_copy(
        &mut self,
        link: &BackupRecord,
        new_id: &str,
        point: &str,
        disks: &[NewBackupDisk],
        files: &[DiskCopy],
        dest: &RepoRecord,
        scratch: &Path,
        cancel: &CancellationToken,
        created: &mut Vec<PathBuf>,
    ) -> Result<u64> {
        let mut bytes = 0;
        let mut outcomes = Vec::with_capacity(files.len());
        for (f, (d, src)) in files.iter().zip(disks.iter().zip(&link.disks)) {
            if let Some(dir) = f.partial.parent() {
                crate::fsutil::create_private_dir(dir)?;
            }
            bytes += crate::fsutil::copy_sparse(&f.source, &f.partial, cancel)?;
            created.push(f.partial.clone());
            bytes +=
                crate::fsutil::copy_sparse(&digests::digests_of(&f.source), &f.digests, cancel)?;
            created.push(f.digests.clone());
            if let Some(parent) = &d.parent {
                let name = format!("{parent}.qcow2");
                crate::tools::run(
                    crate::tools::QEMU_IMG,
                    [
                        "rebase",
                        "-u",
                        "-f",
                        "qcow2",
                        "-b",
                        &name,
                        "-F",
                        "qcow2",
                        &f.partial.to_string_lossy(),
                    ],
                )
                .map_err(|e| {
                    e.context(format!("pointing {} at its parent", f.partial.display()))
                })?;
            }
            crate::crash::point("copy.disk-written");
            for p in [&f.partial, &f.digests] {
                std::fs::File::open(p)
                    .and_then(|h| h.sync_all())
                    .map_err(|e| Error::io("syncing", p, e))?;
            }
            // Checked as `backup verify` checks an image: what was written is what the backup
            // recorded, whatever happened to the source's files since.
            let expected = ExpectedLink {
                backup: new_id.to_string(),
                file: f.partial.clone(),
                size: d.size_bytes,
                digest: src.digest.clone(),
                image_bytes: None,
                damaged: None,
                manifest: None,
                repo: dest.path.clone(),
            };
            let check = self.check_image(f.key, &expected, scratch, cancel)?;
            if let Some(problem) = check.problems.first() {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "disk {}: the copy does not match what the backup recorded: {problem}",
                        f.key
                    ),
                )
                .with_help(format!(
                    "Verify the backup (`sendense backup verify {}`): its images in repository `{}` may be damaged.",
                    link.id, link.repo
                )));
            }
            let mut chain_links = vec![expected];
            if let Some(parent) = &d.parent {
                chain_links.extend(self.catalog().disk_chain(parent, f.key)?);
            }
            if let Some(problem) = chain::chain_problems(&chain_links).into_iter().next() {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "disk {}: the copy does not open with its chain: {problem}",
                        f.key
                    ),
                ));
            }
            let len = std::fs::metadata(&f.partial)
                .map_err(|e| Error::io("reading", &f.partial, e))?
                .len();
            outcomes.push(DiskOutcome {
                key: f.key,
                bytes_read: src.bytes_read,
                bytes_written: src.bytes_written,
                digest: src.digest.clone(),
                image_bytes: Some(len),
                digest_scheme: src
                    .digest
                    .as_deref()
                    .and_then(digests::Scheme::of_digest)
                    .unwrap_or_default(),
            });
        }
        if cancel.is_cancelled() {
            return Err(Error::new(ErrorKind::Cancelled, "copy cancelled"));
        }
        let partials: Vec<&Path> = files
            .iter()
            .flat_map(|f| [f.partial.as_path(), f.digests.as_path()])
            .collect();
        // The final names named no file before this copy (see `copy_id`).
        created.extend(files.iter().flat_map(|f| f.committed()));
        chain::commit_files(&partials)?;
        crate::crash::point("copy.renamed");
        let manifest = self.copy_manifest(
            link,
            new_id,
            point,
            &dest.repo_id,
            disks,
            &outcomes,
            &files.iter().map(|f| f.rel.clone()).collect::<Vec<_>>(),
        )?;
        created.push(
            dest.path
                .join(crate::repo::manifest::manifest_rel(&link.vm, new_id)),
        );
        let rel = manifest.write(&dest.path)?;
        crate::crash::point("copy.manifest-written");
        self.catalog_mut()
            .complete_backup(new_id, &rel, &outcomes, &[])?;
        Ok(bytes)
    }

    /// The manifest of `new_id`, the copy of `link` (restore point `point`) into the repository
    /// with id `repo_id`: its disks as planned (`disks`, with their images at `rels`) and as
    /// written (`outcomes`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn copy_manifest(
        &self,
        link: &BackupRecord,
        new_id: &str,
        point: &str,
        repo_id: &str,
        disks: &[NewBackupDisk],
        outcomes: &[DiskOutcome],
        rels: &[String],
    ) -> Result<Manifest> {
        let vm = self.catalog().vm(&link.vm)?;
        Ok(Manifest {
            format: MANIFEST_FORMAT,
            backup: new_id.to_string(),
            repository: repo_id.to_string(),
            vm: ManifestVm {
                name: vm.name.clone(),
                source: vm.source.clone(),
                source_options: vm.source_options.clone(),
            },
            created_at: link.created_at.clone(),
            completed_at: crate::time::now_rfc3339(),
            copy_of: Some(point.to_string()),
            disks: disks
                .iter()
                .zip(outcomes)
                .zip(rels)
                .map(|((d, o), rel)| ManifestDisk {
                    key: d.key,
                    identity: vm
                        .disks
                        .iter()
                        .find(|v| v.key == d.key)
                        .map(|v| v.identity.clone())
                        .unwrap_or_default(),
                    mode: d.mode,
                    reason: d.reason.clone(),
                    file: rel.clone(),
                    parent: d.parent.clone(),
                    size_bytes: d.size_bytes,
                    bytes_read: o.bytes_read,
                    bytes_written: o.bytes_written,
                    checkpoint: d.checkpoint.clone(),
                    digest: o.digest.clone(),
                    image_bytes: o.image_bytes,
                    since_full: d.since_full,
                })
                .collect(),
        })
    }
}

/// Orders the links of a chain so every backup comes after the backups its disks are backed
/// by.
pub(crate) fn parents_first(mut rest: Vec<BackupRecord>) -> Result<Vec<BackupRecord>> {
    let mut out: Vec<BackupRecord> = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        let ready = rest.iter().position(|b| {
            b.disks.iter().all(|d| match &d.parent {
                None => true,
                Some(p) => out.iter().any(|o| &o.id == p),
            })
        });
        match ready {
            Some(i) => out.push(rest.remove(i)),
            None => {
                return Err(Error::internal(format!(
                    "the chain of backup {} names a parent outside it",
                    rest[0].id
                )))
            }
        }
    }
    Ok(out)
}
