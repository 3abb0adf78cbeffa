//! `backup copy --to S3REPO`: a backup copied into an S3 repository, as a chain of objects.
//!
//! As into a directory ([`super::copy`]): only the links the bucket lacks move, parents first,
//! each a backup of its own there (a new id, `copy_of` the restore point). Each link's image is
//! checked against the recorded digests before it is uploaded — a full as it is, an
//! incremental from a staged copy whose backing name `qemu-img rebase -u` pointed at its
//! parent's copy — then uploaded (multipart, parallel, every part with its checksums), its
//! packed digest file beside it, and the manifest last, written once ([`S3Client::commit_once`])
//! to commit the restore point. Each object is recorded in the catalog before its upload: a
//! copy that fails removes what it wrote, and one killed is found and removed by `cleanup`.
//!
//! With Object Lock every object is written locked until the repository's days from now, and
//! adding a link extends its ancestors' locks to the same date before its manifest is written:
//! a chain is kept as one generation.

use super::copy::{CopiedLink, CopiedLinks, CopyReport};
use crate::catalog::{BackupRecord, DiskOutcome, JobKind, NewBackupDisk, NewCopy, S3RepoRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::chain::{self, ExpectedLink};
use crate::repo::digests;
use crate::repo::s3::chain::digests_rel;
use crate::repo::s3::{Committed, Lock, S3Client};
use crate::sendense::Sendense;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

impl Sendense {
    /// [`Sendense::copy_backup`] into S3 repository `dest`.
    pub(crate) fn copy_to_s3(
        &mut self,
        b: &BackupRecord,
        dest: &S3RepoRecord,
        cancel: CancellationToken,
    ) -> Result<CopyReport> {
        let id = b.id.as_str();
        let point = b.copy_of.clone().unwrap_or_else(|| b.id.clone());
        let client = self.s3_client(dest)?;
        self.check_s3_owner(dest, &client)
            .map_err(|e| e.context(format!("copying into repository `{}`", dest.name)))?;
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
        let job = self.begin_job(JobKind::Copy, Some(&b.vm), Some(&dest.name), cancel)?;
        self.job_log(
            job.id,
            &format!(
                "copying backup {id} ({} link(s)) into `{}` ({})",
                links.len(),
                dest.name,
                dest.url
            ),
        );
        let scratch = self.job_scratch(job.id);
        let result = crate::fsutil::create_private_dir(&scratch).and_then(|()| {
            self.s3_copy_links(id, &links, dest, &client, &scratch, job.id, &job.cancel)
        });
        let _ = std::fs::remove_dir_all(&scratch);
        let result =
            result.map(|links| self.copy_report(job.id, id, point, dest.name.clone(), links));
        self.end_job(job, result)
    }

    /// Refuses a bucket place whose `sendense-repo.yaml` is gone or names another repository.
    pub(crate) fn check_s3_identity(&self, rec: &S3RepoRecord, client: &S3Client) -> Result<()> {
        self.s3_meta(rec, client).map(drop)
    }

    /// Refuses to change anything in S3 repository `rec` unless this hub owns it: two hubs
    /// writing (or deleting) in one repository destroy each other's backups.
    pub(crate) fn check_s3_owner(&self, rec: &S3RepoRecord, client: &S3Client) -> Result<()> {
        let meta = self.s3_meta(rec, client)?;
        let hub = self.catalog().hub_id()?;
        match meta.owner {
            Some(o) if o.hub != hub => Err(Error::refused(format!(
                "S3 repository `{}` ({}) is owned by another hub (hub {} on host {}, since {}); this hub does not write or delete there",
                rec.name, rec.url, o.hub, o.host, o.since
            ))
            .with_help(
                "Two hubs writing into one repository destroy each other's backups. Keep using it from its owner; or, once that hub no longer uses it, take it over: `sendense repo remove` it here, then `sendense repo import --s3 URL --take-over`.",
            )),
            _ => Ok(()),
        }
    }

    /// The repository object of `rec`'s place, when it names `rec`.
    fn s3_meta(&self, rec: &S3RepoRecord, client: &S3Client) -> Result<crate::repo::RepoMeta> {
        match crate::rt::block_on(client.read_meta())?? {
            Some(meta) if meta.id == rec.repo_id => Ok(meta),
            Some(meta) => Err(Error::refused(format!(
                "{} holds repository {}, not `{}` ({})",
                rec.url, meta.id, rec.name, rec.repo_id
            ))
            .with_help("Check the address; `sendense repo show` reports what is there.")),
            None => Err(Error::not_found(format!(
                "{} holds no repository (its sendense-repo.yaml is gone)",
                rec.url
            ))
            .with_help(
                "Check the address and the bucket; `sendense repo show` reports what is there.",
            )),
        }
    }

    /// The lock objects written now get in `dest`, if it locks.
    pub(crate) fn s3_lock(dest: &S3RepoRecord) -> Option<Lock> {
        dest.settings.lock_days.map(|days| Lock {
            mode: dest.settings.lock_mode,
            until: crate::repo::s3::wall_clock() + i64::from(days) * 86_400,
        })
    }

    /// Copies the links of `top`'s chain (`links`, parents first) that the bucket lacks;
    /// returns what was copied, what was there, and each link's backup in the bucket.
    #[allow(clippy::too_many_arguments)]
    fn s3_copy_links(
        &mut self,
        top: &str,
        links: &[BackupRecord],
        dest: &S3RepoRecord,
        client: &S3Client,
        scratch: &Path,
        job: i64,
        cancel: &CancellationToken,
    ) -> Result<CopiedLinks> {
        let (needed, there) = self.links_needed(top, links, dest.id)?;
        // Ids first: each incremental is staged — copied, pointed at its parent's copy — while
        // the link before it goes up (one link ahead: scratch holds at most two).
        let mut ids: HashMap<String, String> = HashMap::new();
        for link in links
            .iter()
            .filter(|l| needed.contains(&l.id) && !there.contains_key(&l.id))
        {
            let id = self.s3_copy_id(link, client, &ids)?;
            ids.insert(link.id.clone(), id);
        }
        let mut ahead = StageAhead {
            order: links
                .iter()
                .filter(|l| ids.contains_key(&l.id))
                .cloned()
                .collect(),
            ids: ids.clone(),
            there: there.clone(),
            scratch: scratch.to_path_buf(),
            cancel: cancel.child_token(),
            started: 0,
            handles: HashMap::new(),
        };
        let result = self.s3_copy_each(
            links, &needed, &there, &mut ahead, dest, client, scratch, job, cancel,
        );
        // Nothing of a failed copy goes on writing into its scratch directory.
        ahead.cancel.cancel();
        for (_, handle) in ahead.handles.drain() {
            let _ = handle.join();
        }
        result
    }

    /// [`Sendense::s3_copy_links`]'s links, parents first: each built on where the bucket holds
    /// it, else uploaded under its id.
    #[allow(clippy::too_many_arguments)]
    fn s3_copy_each(
        &mut self,
        links: &[BackupRecord],
        needed: &std::collections::HashSet<String>,
        there: &HashMap<String, String>,
        ahead: &mut StageAhead,
        dest: &S3RepoRecord,
        client: &S3Client,
        scratch: &Path,
        job: i64,
        cancel: &CancellationToken,
    ) -> Result<CopiedLinks> {
        let mut mapping: HashMap<String, String> = HashMap::new();
        let mut copied = Vec::new();
        let mut present = Vec::new();
        for link in links.iter().filter(|l| needed.contains(&l.id)) {
            if let Some(t) = there.get(&link.id) {
                // Built on only while its objects, and its chain's below it, are all there as
                // written.
                for below in self.catalog().chain_ids(t)? {
                    if let Some(gone) = self.s3_missing_object(&below, client)? {
                        let why = format!("its object {gone} is gone from the bucket");
                        self.catalog_mut().set_damaged(&below, Some(&why))?;
                        return Err(Error::new(
                            ErrorKind::External,
                            format!("backup {below} in `{}`: {why}", dest.name),
                        )
                        .with_help(
                            "It is marked damaged now: copy again, and the links it held are uploaded anew.",
                        ));
                    }
                }
                present.push((link.id.clone(), t.clone()));
                mapping.insert(link.id.clone(), t.clone());
                continue;
            }
            if cancel.is_cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, "copy cancelled"));
            }
            // This link staged (or staging), and the next one.
            let k = ahead
                .order
                .iter()
                .position(|l| l.id == link.id)
                .unwrap_or(0);
            ahead.upto(k + 2)?;
            let new_id = ahead
                .ids
                .get(&link.id)
                .cloned()
                .ok_or_else(|| Error::internal(format!("no id for the copy of {}", link.id)))?;
            let bytes = self.s3_copy_link(
                link,
                &new_id,
                &mapping,
                &mut ahead.handles,
                dest,
                client,
                scratch,
                job,
                cancel,
            )?;
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

    /// The first object of backup `id` (in a bucket) that is not there at the version written,
    /// if one is not.
    fn s3_missing_object(&self, id: &str, client: &S3Client) -> Result<Option<String>> {
        for o in self.catalog().s3_objects(id)? {
            let key = client.location().key(&o.rel);
            let size = crate::rt::block_on(client.size_of_version(&key, o.version.as_deref()))??;
            if size.is_none() || (o.size.is_some() && size != o.size) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// Writes one link into the bucket as a new backup; on failure what it wrote goes again
    /// (what a lock keeps stays recorded, for `cleanup` once the lock ends).
    #[allow(clippy::too_many_arguments)]
    fn s3_copy_link(
        &mut self,
        link: &BackupRecord,
        new_id: &str,
        mapping: &HashMap<String, String>,
        staging: &mut Staging,
        dest: &S3RepoRecord,
        client: &S3Client,
        scratch: &Path,
        job: i64,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let point = link.copy_of.clone().unwrap_or_else(|| link.id.clone());
        let vm = self.catalog().vm(&link.vm)?;
        for d in &link.disks {
            if !digests::is_records_form(d.digest.as_deref()) {
                return Err(Error::refused(format!(
                    "backup {}: the digests of disk {} were recorded by an older Sendense and cannot be checked in a bucket",
                    link.id, d.key
                ))
                .with_help("Take a full backup (`sendense backup start VM --full`) and copy that chain."));
            }
        }
        let new_id = new_id.to_string();
        let mut disks = Vec::with_capacity(link.disks.len());
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
            disks.push(NewBackupDisk {
                key: d.key,
                vm_disk_id: vm.disks.iter().find(|v| v.key == d.key).map(|v| v.id),
                mode: d.mode,
                reason: d.reason.clone(),
                rel_file: chain::image_rel(&link.vm, d.key, &new_id),
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
            copy_of: point.clone(),
            disks: disks.clone(),
        })?;
        let written = self
            .s3_write_copy(
                link, &new_id, &point, &disks, staging, dest, client, scratch, cancel,
            )
            .map_err(|e| e.context(format!("copying backup {}", link.id)));
        if written.is_err() {
            if let Err(e) = self.discard_s3_backup(&new_id, client) {
                tracing::warn!("removing what copy {new_id} wrote: {e}");
            }
        }
        written
    }

    /// A new id for a copy of `link` in the bucket: the restore point's time stamp, a new
    /// suffix; unknown to the catalog, and no manifest of it in the bucket.
    fn s3_copy_id(
        &self,
        link: &BackupRecord,
        client: &S3Client,
        taken: &HashMap<String, String>,
    ) -> Result<String> {
        self.fresh_copy_id(link, |candidate| {
            if taken.values().any(|t| t == candidate) {
                return Ok(true);
            }
            let manifest = client
                .location()
                .key(&crate::repo::manifest::manifest_rel(&link.vm, candidate));
            Ok(crate::rt::block_on(client.size_of(&manifest))??.is_some())
        })
    }

    /// Checks, uploads and commits the objects of one link; returns the bytes uploaded.
    #[allow(clippy::too_many_arguments)]
    fn s3_write_copy(
        &mut self,
        link: &BackupRecord,
        new_id: &str,
        point: &str,
        disks: &[NewBackupDisk],
        staging: &mut Staging,
        dest: &S3RepoRecord,
        client: &S3Client,
        scratch: &Path,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let lock = Self::s3_lock(dest);
        let mut bytes = 0;
        let mut outcomes = Vec::with_capacity(disks.len());
        for (d, src) in disks.iter().zip(&link.disks) {
            let staged = staging.remove(&(link.id.clone(), d.key));
            let (image, checked_in) = self.s3_stage_image(link, d, src, staged, scratch, cancel)?;
            let packed = scratch.join(format!("{new_id}-{}.digests.packed", d.key));
            let sparse = digests::digests_of(&src.file);
            let f = std::fs::File::open(&sparse).map_err(|e| Error::io("reading", &sparse, e))?;
            digests::packed::pack(&f, &sparse, &packed)?;
            let recorded = src.digest.as_deref().unwrap_or_default();
            let opened = std::fs::File::open(&packed)
                .map_err(|e| Error::io("reading", &packed, e))
                .and_then(|f| {
                    digests::packed::PackedDigests::open(Box::new(f), &packed.display().to_string())
                })?;
            if !matches!(opened.check(recorded)?, digests::Checked::Intact(_)) {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "disk {}: the digest file of backup {} does not match what it recorded",
                        d.key, link.id
                    ),
                )
                .with_help(format!(
                    "Verify the backup (`sendense backup verify {}`).",
                    link.id
                )));
            }
            if cancel.is_cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, "copy cancelled"));
            }
            // The image goes up while it is checked: nothing is committed before the check
            // passed (the manifest comes last), and a failed check removes what went up.
            self.catalog_mut()
                .plan_s3_object(new_id, &d.rel_file, lock.map(|l| l.until))?;
            // Stopped when the check fails or the copy is cancelled: nothing more goes up.
            let stop = cancel.child_token();
            let uploading = {
                let (client, image, key, stop) = (
                    client.clone(),
                    image.clone(),
                    client.location().key(&d.rel_file),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    crate::rt::block_on(client.upload_file_until(&image, &key, lock, &stop))
                        .and_then(|r| r)
                })
            };
            let checked = self.s3_check_image(link, d, src, &image, checked_in, scratch, cancel);
            if checked.is_err() {
                stop.cancel();
            }
            let uploaded = uploading
                .join()
                .map_err(|_| Error::internal("the upload thread panicked"))
                .and_then(|r| r);
            let size = match uploaded {
                Ok(w) => {
                    self.catalog_mut().s3_object_written(
                        new_id,
                        &d.rel_file,
                        w.version.as_deref(),
                        w.size,
                        lock.map(|l| l.until),
                    )?;
                    w.size
                }
                Err(e) => {
                    checked?;
                    return Err(e);
                }
            };
            checked?;
            crate::crash::point("s3copy.image-uploaded");
            bytes += size;
            bytes += self.s3_upload(new_id, &digests_rel(&d.rel_file), &packed, client, lock)?;
            let _ = std::fs::remove_file(&packed);
            if image.starts_with(scratch) {
                let _ = std::fs::remove_file(&image);
            }
            outcomes.push(DiskOutcome {
                key: d.key,
                bytes_read: src.bytes_read,
                bytes_written: src.bytes_written,
                digest: src.digest.clone(),
                image_bytes: Some(size),
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
        // The chain is one generation: every ancestor stays as long as this link.
        if let Some(lock) = lock {
            self.extend_s3_chain_locks(new_id, client, lock)?;
        }
        let rels: Vec<String> = disks.iter().map(|d| d.rel_file.clone()).collect();
        let manifest =
            self.copy_manifest(link, new_id, point, &dest.repo_id, disks, &outcomes, &rels)?;
        let rel = crate::repo::manifest::manifest_rel(&link.vm, new_id);
        let key = client.location().key(&rel);
        self.catalog_mut()
            .plan_s3_object(new_id, &rel, lock.map(|l| l.until))?;
        let text = manifest.to_yaml()?.into_bytes();
        let size = text.len() as u64;
        crate::crash::point("s3copy.before-manifest");
        let committed = match crate::rt::block_on(client.commit_once(&key, text.clone(), lock))?? {
            // A retry of this very write (its answer lost) finds the first attempt committed:
            // that is this copy's manifest when it holds these bytes.
            Committed::Lost => crate::rt::block_on(async {
                let Some(version) = client.committed_version(&key).await? else {
                    return Ok(Committed::Lost);
                };
                let there = client
                    .get_of(&key, version.as_deref(), size.saturating_add(1))
                    .await?;
                Ok::<_, Error>(if there == text {
                    Committed::Written { version }
                } else {
                    Committed::Lost
                })
            })??,
            written => written,
        };
        match committed {
            Committed::Written { version } => {
                self.catalog_mut().s3_object_written(
                    new_id,
                    &rel,
                    version.as_deref(),
                    size,
                    lock.map(|l| l.until),
                )?;
            }
            Committed::Lost => {
                // Not this copy's manifest: never removed as if it were.
                self.catalog_mut().forget_s3_object(new_id, &rel)?;
                return Err(Error::busy(format!("another writer committed {key} first")));
            }
        }
        crate::crash::point("s3copy.manifest-written");
        self.catalog_mut()
            .complete_backup(new_id, &rel, &outcomes, &[])?;
        Ok(bytes)
    }

    /// The image file to upload for disk `d` of the copy of `link` (`src` its disk there), and
    /// the repository it is checked in: a full's own image; an incremental's staged in
    /// `scratch` (by `staged`, started ahead, or now), its backing name pointed at its parent's
    /// copy, its digest file beside it.
    fn s3_stage_image(
        &mut self,
        link: &BackupRecord,
        d: &NewBackupDisk,
        src: &crate::catalog::BackupDiskRecord,
        staged: Option<std::thread::JoinHandle<Result<PathBuf>>>,
        scratch: &Path,
        cancel: &CancellationToken,
    ) -> Result<(PathBuf, PathBuf)> {
        let Some(parent) = &d.parent else {
            return Ok((src.file.clone(), link.repo_path.clone()));
        };
        let file = match staged {
            Some(handle) => handle
                .join()
                .map_err(|_| Error::internal("a staging thread panicked"))??,
            None => {
                let file = scratch.join(format!("{}-{}.qcow2", link.id, d.key));
                stage_incremental(&src.file, &file, parent, src.size_bytes, cancel)?;
                file
            }
        };
        // Checked with the source's digest file beside it.
        crate::fsutil::copy_sparse(
            &digests::digests_of(&src.file),
            &digests::digests_of(&file),
            cancel,
        )?;
        Ok((file, scratch.to_path_buf()))
    }

    /// Checks the image `file` (in `repo`) to upload for disk `d` of the copy of `link` against
    /// the digests the backup recorded, as `backup verify` does.
    #[allow(clippy::too_many_arguments)]
    fn s3_check_image(
        &mut self,
        link: &BackupRecord,
        d: &NewBackupDisk,
        src: &crate::catalog::BackupDiskRecord,
        file: &Path,
        repo: PathBuf,
        scratch: &Path,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let expected = ExpectedLink {
            backup: link.id.clone(),
            file: file.to_path_buf(),
            size: src.size_bytes,
            digest: src.digest.clone(),
            image_bytes: None,
            damaged: None,
            manifest: None,
            repo,
        };
        let check = self.check_image(d.key, &expected, scratch, cancel)?;
        if file.starts_with(scratch) {
            let _ = std::fs::remove_file(digests::digests_of(file));
        }
        if let Some(problem) = check.problems.first() {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "disk {}: the image does not match what the backup recorded: {problem}",
                    d.key
                ),
            )
            .with_help(format!(
                "Verify the backup (`sendense backup verify {}`): its images in repository `{}` may be damaged.",
                link.id, link.repo
            )));
        }
        Ok(())
    }

    /// Uploads `file` as object `rel` of backup `backup`, recorded before and after; returns
    /// its size.
    fn s3_upload(
        &mut self,
        backup: &str,
        rel: &str,
        file: &Path,
        client: &S3Client,
        lock: Option<Lock>,
    ) -> Result<u64> {
        self.catalog_mut()
            .plan_s3_object(backup, rel, lock.map(|l| l.until))?;
        let key = client.location().key(rel);
        let w = crate::rt::block_on(client.upload_file(file, &key, lock))??;
        self.catalog_mut().s3_object_written(
            backup,
            rel,
            w.version.as_deref(),
            w.size,
            lock.map(|l| l.until),
        )?;
        Ok(w.size)
    }

    /// Extends the lock of every object of the backups below `id` in its chain to `lock`.
    pub(crate) fn extend_s3_chain_locks(
        &mut self,
        id: &str,
        client: &S3Client,
        lock: Lock,
    ) -> Result<()> {
        for ancestor in self.catalog().chain_ids(id)? {
            if ancestor == id {
                continue;
            }
            for o in self.catalog().s3_objects(&ancestor)? {
                if !o.written || o.retain_until.is_some_and(|u| u >= lock.until) {
                    continue;
                }
                let key = client.location().key(&o.rel);
                crate::rt::block_on(client.extend_retention(&key, o.version.as_deref(), lock))?
                    .map_err(|e| e.context(format!("extending the lock of backup {ancestor}")))?;
                self.catalog_mut()
                    .s3_object_locked(&ancestor, &o.rel, lock.until)?;
            }
        }
        Ok(())
    }

    /// Removes from the bucket every object backup `id` wrote (or may have written), then its
    /// rows. An object a lock keeps stays, and so do its rows: `cleanup` tries again once the
    /// lock ends. Returns the instant (Unix seconds) the last such lock ends, if one keeps any.
    pub(crate) fn discard_s3_backup(&mut self, id: &str, client: &S3Client) -> Result<Option<i64>> {
        let mut kept: Option<i64> = None;
        let mut failed: Option<Error> = None;
        // The manifest first: the restore point is no longer committed before its images go.
        let mut objects = self.catalog().s3_objects(id)?;
        objects.sort_by_key(|o| !o.rel.contains("/manifests/"));
        for o in objects {
            let key = client.location().key(&o.rel);
            let manifest = o.rel.contains("/manifests/");
            if let Some(until) = o
                .retain_until
                .filter(|u| *u > crate::repo::s3::wall_clock())
            {
                kept = Some(kept.map_or(until, |k| k.max(until)));
                // A manifest kept keeps the restore point committed: its images stay too.
                if manifest {
                    return Ok(kept);
                }
                continue;
            }
            match crate::rt::block_on(remove_object(client, &key, o.version.as_deref(), o.written))?
            {
                Ok(()) => self.catalog_mut().forget_s3_object(id, &o.rel)?,
                // Nothing more goes while the restore point may still be committed.
                Err(e) if manifest => return Err(e.context(format!("removing {key}"))),
                Err(e) => failed = Some(e.context(format!("removing {key}"))),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if kept.is_none() {
            self.catalog_mut().delete_backup(id)?;
        }
        Ok(kept)
    }
}

/// Incrementals being staged, by (backup, disk key): each gives its staged image.
type Staging = HashMap<(String, u32), std::thread::JoinHandle<Result<PathBuf>>>;

/// The links a copy uploads, in order, staged a link ahead of the upload.
struct StageAhead {
    order: Vec<BackupRecord>,
    ids: HashMap<String, String>,
    there: HashMap<String, String>,
    scratch: PathBuf,
    /// Stops the staging when the copy fails or is cancelled.
    cancel: CancellationToken,
    /// Links of `order` whose staging started.
    started: usize,
    handles: Staging,
}

impl StageAhead {
    /// Starts staging the incrementals of the first `n` links of the order.
    fn upto(&mut self, n: usize) -> Result<()> {
        while self.started < n.min(self.order.len()) {
            let link = &self.order[self.started];
            self.started += 1;
            for d in &link.disks {
                let Some(parent) = &d.parent else {
                    continue;
                };
                let Some(parent) = self.ids.get(parent).or_else(|| self.there.get(parent)) else {
                    continue;
                };
                chain::check_inside(&link.repo_path, &d.file)?;
                chain::check_inside(&link.repo_path, &digests::digests_of(&d.file))?;
                let (src, staged) = (
                    d.file.clone(),
                    self.scratch.join(format!("{}-{}.qcow2", link.id, d.key)),
                );
                let (parent, size, cancel) = (parent.clone(), d.size_bytes, self.cancel.clone());
                let handle = std::thread::spawn(move || {
                    stage_incremental(&src, &staged, &parent, size, &cancel).map(|()| staged)
                });
                self.handles.insert((link.id.clone(), d.key), handle);
            }
        }
        Ok(())
    }
}

/// Stages an incremental's image for its copy: `src` copied to `staged` (holes stay holes), its
/// backing name pointed at `parent`'s copy by `qemu-img rebase -u` (the data untouched), and
/// checked to say so.
fn stage_incremental(
    src: &Path,
    staged: &Path,
    parent: &str,
    size: u64,
    cancel: &CancellationToken,
) -> Result<()> {
    crate::fsutil::copy_sparse(src, staged, cancel)?;
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
            &staged.to_string_lossy(),
        ],
    )
    .map_err(|e| e.context(format!("pointing {} at its parent", staged.display())))?;
    let header = chain::qcow2_header(staged)
        .map_err(|e| Error::new(ErrorKind::External, format!("{}: {e}", staged.display())))?;
    if header.backing.as_deref() != Some(name.as_str()) || header.size != size.div_ceil(512) * 512 {
        return Err(Error::internal(format!(
            "the staged image {} is not backed by {name}",
            staged.display()
        )));
    }
    Ok(())
}

/// Removes object `key`: the version recorded, or — no version known (an upload not known to
/// have finished, an unversioned bucket) — every version of exactly that key: only this backup
/// ever wrote it, its id is in the name. Never a delete without a version on a versioned
/// bucket, which would only hide the data behind a delete marker.
async fn remove_object(
    client: &S3Client,
    key: &str,
    version: Option<&str>,
    written: bool,
) -> Result<()> {
    if let (true, Some(v)) = (written, version) {
        return client.delete(key, Some(v)).await;
    }
    for v in client.versions(key).await? {
        if v.key == key {
            // Version `null` (an unversioned bucket's object, or one written before versioning
            // was enabled) is deleted by that id: a delete without one would only add a marker.
            client.delete(key, Some(v.version.as_str())).await?;
        }
    }
    Ok(())
}
