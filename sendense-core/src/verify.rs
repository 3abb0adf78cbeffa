//! `backup verify`: proves the repository still holds exactly what was backed up.
//!
//! For a backup, every image of its chain (the backup and its ancestors, per disk) gets:
//! 1. presence — a deleted chain link is named;
//! 2. `qemu-img check`;
//! 3. its digest file against the digest recorded in the catalog/manifest;
//! 4. a full read of the data that backup wrote — the image's own clusters, read without its
//!    backing file — each 64 KiB block compared with its recorded digest, so bit rot or
//!    tampering is named by backup, disk and offset; blocks recorded but gone are named too.
//!
//! Verify is a job (cancellable with `job cancel`) holding shared locks on every backup it
//! reads, so none of them is deleted meanwhile. An image's problems are listed up to
//! [`MAX_PROBLEMS`], then counted: a badly damaged image still gives a short report.

use crate::catalog::{BackupFilter, BackupRecord, JobKind, Listen};
use crate::error::{Error, ErrorKind, Result};
use crate::export::ExportSpec;
use crate::nbd::{ConnectOptions, NbdClient};
use crate::repo::chain::ExpectedLink;
use crate::repo::digests::{self, Record};
use crate::sendense::Sendense;
use crate::transfer::BLOCK;
use serde::Serialize;
use std::path::Path;
use tokio_util::sync::CancellationToken;

mod bucket;

/// The problems listed per image; more are only counted.
pub const MAX_PROBLEMS: usize = 20;

/// Which backups to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyTarget {
    /// One backup (and its chain).
    Backup(String),
    /// Every completed backup of a VM.
    Vm(String),
    /// Every completed backup.
    All,
}

/// One image checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageCheck {
    /// The backup that wrote the image.
    pub backup: String,
    /// Disk key.
    pub disk: u32,
    /// The image.
    pub file: String,
    /// Bytes of data read and compared.
    pub bytes_verified: u64,
    /// What is wrong; empty when clean.
    pub problems: Vec<String>,
}

/// What verify found. Also the `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// True when nothing is wrong.
    pub ok: bool,
    /// The backups asked for.
    pub backups: Vec<String>,
    /// Every image of their chains.
    pub images: Vec<ImageCheck>,
}

impl Sendense {
    /// Verifies backups and their chains; `cancel` (or `job cancel`) stops it. Damage found is
    /// in the report (`ok: false`), and the job ends failed.
    pub fn verify(
        &mut self,
        target: &VerifyTarget,
        cancel: CancellationToken,
    ) -> Result<VerifyReport> {
        let (backups, vm): (Vec<BackupRecord>, Option<String>) = match target {
            VerifyTarget::Backup(id) => {
                let b = self.catalog().backup(id)?;
                let vm = b.vm.clone();
                (vec![b], Some(vm))
            }
            VerifyTarget::Vm(vm) => {
                self.vm(vm)?;
                let list = self.catalog().backups(&BackupFilter {
                    vm: Some(vm.clone()),
                    ..Default::default()
                })?;
                (readable(list), Some(vm.clone()))
            }
            VerifyTarget::All => (
                readable(self.catalog().backups(&BackupFilter::default())?),
                None,
            ),
        };
        // Every image of every chain, once: (disk key, link). A chain the catalog cannot walk
        // (a parent row gone) is a problem of its top.
        let mut chains: Vec<(String, u32, Vec<ExpectedLink>)> = Vec::new();
        let mut unwalkable: Vec<(String, u32, String)> = Vec::new();
        for b in &backups {
            for d in &b.disks {
                match self.catalog().disk_chain(&b.id, d.key) {
                    Ok(links) => chains.push((b.id.clone(), d.key, links)),
                    Err(e) => unwalkable.push((b.id.clone(), d.key, e.message().to_string())),
                }
            }
        }
        // Chains in buckets are checked as a whole, restore point by restore point.
        let (bucket_chains, chains): (Vec<_>, Vec<_>) = chains
            .into_iter()
            .partition(|(_, _, links)| links.iter().any(|l| l.in_bucket()));
        let mut todo: Vec<(u32, ExpectedLink)> = Vec::new();
        for (_, key, links) in &chains {
            for link in links {
                if !todo
                    .iter()
                    .any(|(k, l)| k == key && l.backup == link.backup)
                {
                    todo.push((*key, link.clone()));
                }
            }
        }
        let mut ids: Vec<String> = todo
            .iter()
            .map(|(_, l)| l.backup.clone())
            .chain(
                bucket_chains
                    .iter()
                    .flat_map(|(_, _, links)| links.iter().map(|l| l.backup.clone())),
            )
            .collect();
        ids.sort();
        ids.dedup();
        let _locks = crate::lock::BackupReadLocks::acquire(self.state_dir(), &ids)?;
        // Locked now: a backup deleted meanwhile is not verified (nor reported as damaged).
        let gone: Vec<String> = ids
            .iter()
            .filter(|id| {
                self.catalog()
                    .backup(id)
                    .map_or(true, |b| b.status == "deleting")
            })
            .cloned()
            .collect();
        if let VerifyTarget::Backup(id) = target {
            if gone.contains(id) {
                return Err(Error::busy(format!("backup {id} was deleted meanwhile")));
            }
        }
        todo.retain(|(_, l)| !gone.contains(&l.backup));
        // A repository that is not there (an unmounted share, another directory at its path)
        // is reported as not checked: its backups are not damaged, only out of reach.
        let mut away: Vec<(std::path::PathBuf, String)> = Vec::new();
        let repos = self.catalog().repos()?;
        for (_, link) in &todo {
            if away.iter().any(|(p, _)| *p == link.repo) {
                continue;
            }
            let Some(r) = repos.iter().find(|r| r.path == link.repo) else {
                continue;
            };
            if let Err(e) = crate::repo::check_mount(&r.path, r.require_mount)
                .and_then(|()| crate::repo::check_identity(&r.path, &r.repo_id))
            {
                away.push((
                    r.path.clone(),
                    format!(
                        "repository `{}` is not available, nothing in it was checked: {}",
                        r.name,
                        e.message()
                    ),
                ));
            }
        }
        let out_of_reach: Vec<(u32, ExpectedLink, String)> = todo
            .iter()
            .filter_map(|(k, l)| {
                let why = away.iter().find(|(p, _)| *p == l.repo)?;
                Some((*k, l.clone(), why.1.clone()))
            })
            .collect();
        todo.retain(|(_, l)| !away.iter().any(|(p, _)| *p == l.repo));
        let job = self.begin_job(JobKind::Verify, vm.as_deref(), None, cancel)?;
        let scratch = self.job_scratch(job.id);
        let mut images = Vec::new();
        let mut result = Ok(());
        for (key, link) in &todo {
            if job.cancel.is_cancelled() {
                result = Err(Error::new(ErrorKind::Cancelled, "verify cancelled"));
                break;
            }
            crate::crash::point("verify.image");
            match self.check_image(*key, link, &scratch, &job.cancel) {
                Ok(check) => images.push(check),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // In a bucket, each link of each chain is checked as the restore point it is (its
        // own data as its restore reads it): damage lands on the backup whose point it breaks.
        let mut bucket_links: Vec<(String, u32)> = Vec::new();
        for (_, key, links) in &bucket_chains {
            for l in links {
                if !gone.contains(&l.backup) && !bucket_links.contains(&(l.backup.clone(), *key)) {
                    bucket_links.push((l.backup.clone(), *key));
                }
            }
        }
        // Buckets out of reach: nothing in them was checked, nothing is marked damaged.
        let mut bucket_away: Vec<String> = Vec::new();
        for (id, key) in &bucket_links {
            if result.is_err() {
                break;
            }
            let checked = self
                .catalog()
                .backup(id)
                .and_then(|b| self.check_bucket_disk(&b, *key, &job.cancel));
            match checked {
                Ok((check, reached)) => {
                    if !reached {
                        bucket_away.push(id.clone());
                    }
                    images.push(check)
                }
                Err(e) => result = Err(e),
            }
        }
        let _ = std::fs::remove_dir_all(&scratch);
        for (key, link, why) in &out_of_reach {
            images.push(ImageCheck {
                backup: link.backup.clone(),
                disk: *key,
                file: link.file.display().to_string(),
                bytes_verified: 0,
                problems: vec![why.clone()],
            });
        }
        let unreachable = |id: &str| {
            out_of_reach.iter().any(|(_, l, _)| l.backup == id)
                || bucket_away.iter().any(|b| b == id)
        };
        // What a restore depends on beyond each image's own data: the chain as QEMU opens it
        // (for every backup asked for) and the manifest (for every backup read).
        let chains: Vec<_> = chains
            .into_iter()
            .filter(|(_, _, links)| !links.iter().any(|l| unreachable(&l.backup)))
            .collect();
        for (id, key, links) in &chains {
            add_problems(
                &mut images,
                id,
                Some(*key),
                crate::repo::chain::chain_problems(links),
            );
        }
        for (id, key, problem) in unwalkable {
            add_problems(&mut images, &id, Some(key), vec![problem]);
        }
        for id in ids.iter().filter(|id| !unreachable(id)) {
            match self.catalog().backup(id) {
                Ok(b) if b.in_s3() => {
                    let problems = self.bucket_manifest_problems(&b);
                    add_problems(&mut images, id, None, problems);
                }
                Ok(b) => add_problems(&mut images, id, None, manifest_problems(&b)),
                Err(_) => {}
            }
        }
        images.sort_by(|a, b| (&a.backup, a.disk).cmp(&(&b.backup, b.disk)));
        let report = VerifyReport {
            ok: images.iter().all(|i| i.problems.is_empty()),
            backups: backups.iter().map(|b| b.id.clone()).collect(),
            images,
        };
        let bad = report
            .images
            .iter()
            .filter(|i| !i.problems.is_empty())
            .count();
        // What a finished verify found is recorded: nothing builds on a damaged backup, and a
        // backup found whole again (repaired from a copy) is trusted again.
        if result.is_ok() {
            for id in ids.iter().filter(|id| !unreachable(id)) {
                let first = report
                    .images
                    .iter()
                    .filter(|i| &i.backup == id)
                    .flat_map(|i| i.problems.first())
                    .next();
                // Cleared only by a check of every disk of the backup.
                let checked = report.images.iter().filter(|i| &i.backup == id).count();
                let disks = self.catalog().backup(id).map_or(0, |b| b.disks.len());
                if checked == 0 || (first.is_none() && checked < disks) {
                    continue;
                }
                let why = first.map(|p| format!("verify found: {p}"));
                if let Err(e) = self.catalog_mut().set_damaged(id, why.as_deref()) {
                    tracing::warn!("backup {id}: {e}");
                }
            }
        }
        let job_result = result.and_then(|()| {
            if bad == 0 {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::External,
                    format!("{bad} image(s) failed verification"),
                ))
            }
        });
        match self.end_job(job, job_result) {
            Err(e) if e.kind() == ErrorKind::Cancelled => Err(e),
            _ => Ok(report),
        }
    }

    /// Checks one image; an error only when the check itself was cancelled.
    pub(crate) fn check_image(
        &mut self,
        key: u32,
        link: &ExpectedLink,
        scratch: &Path,
        cancel: &CancellationToken,
    ) -> Result<ImageCheck> {
        let backup = link.backup.as_str();
        let mut check = ImageCheck {
            backup: backup.to_string(),
            disk: key,
            file: link.file.display().to_string(),
            bytes_verified: 0,
            problems: Vec::new(),
        };
        if let Err(e) = crate::repo::chain::check_inside(&link.repo, &link.file) {
            check.problems.push(e.message().to_string());
            return Ok(check);
        }
        if !link.file.is_file() {
            check.problems.push(format!(
                "the image is missing: chain link {backup} of disk {} was deleted or moved",
                key
            ));
            return Ok(check);
        }
        // The image alone: its backing chain is checked link by link (headers, names, sizes),
        // so a check costs the same however long the chain is.
        if let Err(e) = crate::repo::chain::check_image_alone(&link.file) {
            check
                .problems
                .push(format!("qemu-img check: {}", e.message()));
        }
        let dfile = digests::digests_of(&link.file);
        let Some(want) = &link.digest else {
            check
                .problems
                .push("no digest was recorded for this image".into());
            return Ok(check);
        };
        let scheme = match digests::check_path(&dfile, want) {
            Ok(digests::Checked::Intact(scheme)) => scheme,
            Ok(digests::Checked::Changed) => {
                check.problems.push(format!(
                    "the digest file {} was changed since the backup",
                    dfile.display()
                ));
                return Ok(check);
            }
            Ok(digests::Checked::UnknownScheme) => {
                check.problems.push(format!(
                    "the recorded digest `{want}` names a digest scheme this Sendense does not know"
                ));
                return Ok(check);
            }
            Err(e) => {
                check.problems.push(format!("digest file: {}", e.message()));
                return Ok(check);
            }
        };
        if !check.problems.is_empty() {
            return Ok(check);
        }
        match self.verify_data(&link.file, &dfile, scheme, link.size, scratch, cancel) {
            Ok((bytes, problems)) => {
                check.bytes_verified = bytes;
                check.problems.extend(
                    problems
                        .into_list()
                        .into_iter()
                        .map(|p| format!("backup {backup}, disk {}: {p}", key)),
                );
            }
            Err(e) if e.kind() == ErrorKind::Cancelled => return Err(e),
            Err(e) => check
                .problems
                .push(format!("reading the image: {}", e.message())),
        }
        Ok(check)
    }

    /// Reads the image's own data clusters (without its backing file) and compares every block
    /// with its digest record. The image's cluster map comes from its own tables and the data
    /// straight from the file ([`crate::repo::qcow2_map`]: no process, whatever the length of
    /// the chain); a layout that reader leaves to QEMU is read through `qemu-img map` and a
    /// qemu-nbd of the image alone.
    fn verify_data(
        &mut self,
        image: &Path,
        dfile: &Path,
        scheme: digests::Scheme,
        size: u64,
        scratch: &Path,
        cancel: &CancellationToken,
    ) -> Result<(u64, Problems)> {
        let has_parent = crate::repo::chain::qcow2_header(image)
            .map(|h| h.backing.is_some())
            .unwrap_or(true);
        let records = std::fs::File::open(dfile).map_err(|e| Error::io("reading", dfile, e))?;
        let check = BlockCheck {
            records: &records,
            scheme,
            size,
            has_parent,
        };
        match crate::repo::qcow2_map::own_map(image) {
            Ok(Some(map)) => {
                let file =
                    std::fs::File::open(image).map_err(|e| Error::io("reading", image, e))?;
                let data: Vec<(u64, u64)> = map.data.iter().map(|(g, l, _)| (*g, *l)).collect();
                let mut problems = Problems::default();
                let bytes = check.blocks(&data, &mut problems, cancel, |off, buf| {
                    map.read(&file, off, buf)
                        .map_err(|e| Error::io("reading", image, e))
                })?;
                check.records(&data, &map.own, &mut problems)?;
                Ok((bytes, problems))
            }
            Ok(None) => self.verify_data_through_qemu(image, &check, scratch, cancel),
            Err(why) => {
                let mut problems = Problems::default();
                problems.push(format!("its cluster tables are damaged: {why}"));
                Ok((0, problems))
            }
        }
    }

    /// [`Self::verify_data`] through QEMU: `qemu-img map` and a qemu-nbd of the image alone.
    fn verify_data_through_qemu(
        &mut self,
        image: &Path,
        check: &BlockCheck<'_>,
        scratch: &Path,
        cancel: &CancellationToken,
    ) -> Result<(u64, Problems)> {
        let map = own_map(image)?;
        let alone = crate::repo::chain::without_backing(image)?;
        crate::fsutil::create_private_dir(scratch)?;
        let spec = ExportSpec {
            file: std::path::PathBuf::from(alone),
            format: String::new(),
            name: "verify".into(),
            listen: Listen::Socket(scratch.join("image.sock")),
            shared: 2,
            read_only: true,
            bitmap: None,
            discard_writes: false,
            skip_flushes: false,
            alone: false,
            job: None,
        };
        let export = self.start_export(&spec)?;
        let url = export.url.clone();
        let result = crate::rt::block_on(async {
            let client = NbdClient::connect(&url, &ConnectOptions::default()).await?;
            let mut problems = Problems::default();
            check.beyond_end(&map.data, &mut problems);
            let mut bytes = 0u64;
            for (off, n) in check.offsets(&map.data) {
                if cancel.is_cancelled() {
                    return Err(Error::new(ErrorKind::Cancelled, "verify cancelled"));
                }
                let data = client.read(off, vec![0; n]).await?;
                bytes += n as u64;
                check.block(off, &data, &mut problems)?;
            }
            check.records(&map.data, &map.own, &mut problems)?;
            client.disconnect().await;
            Ok::<_, Error>((bytes, problems))
        });
        let stopped = self.stop_export(export);
        let out = result??;
        stopped?;
        Ok(out)
    }
}

/// Checks of one image's blocks against its digest records.
struct BlockCheck<'a> {
    records: &'a std::fs::File,
    scheme: digests::Scheme,
    size: u64,
    has_parent: bool,
}

impl BlockCheck<'_> {
    /// QEMU keeps disks in whole 512-byte sectors: an image of a disk of an odd size holds the
    /// rest of its last sector (zeroes, and hashed with the block when the source was served the
    /// same way).
    fn held(&self) -> u64 {
        self.size.div_ceil(512) * 512
    }

    /// Reports data of `extents` where the disk has no bytes (a tampered image).
    fn beyond_end(&self, extents: &[(u64, u64)], problems: &mut Problems) {
        let (size, held) = (self.size, self.held());
        for (start, len) in extents {
            let end = start.saturating_add(*len);
            if end > held {
                problems.push(format!(
                    "the image holds data beyond the end of the disk ({size} bytes): {} bytes at offset {}",
                    end - held.max(*start),
                    held.max(*start)
                ));
            }
        }
    }

    /// The blocks (offset, length) holding the data `extents`, in order, each once.
    fn offsets<'e>(&self, extents: &'e [(u64, u64)]) -> impl Iterator<Item = (u64, usize)> + 'e {
        let held = self.held();
        let mut last = None;
        extents
            .iter()
            .flat_map(move |(start, len)| {
                let end = start.saturating_add(*len).min(held);
                (start / BLOCK..end.div_ceil(BLOCK)).map(move |b| {
                    let off = b * BLOCK;
                    (off, BLOCK.min(held - off) as usize)
                })
            })
            // Adjacent extents may share a block (clusters smaller than a block).
            .filter(move |(off, _)| {
                let new = last != Some(*off);
                last = Some(*off);
                new
            })
    }

    /// Reads (through `read`) and checks every block of the data `extents`; returns the bytes
    /// read.
    fn blocks(
        &self,
        extents: &[(u64, u64)],
        problems: &mut Problems,
        cancel: &CancellationToken,
        mut read: impl FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<u64> {
        self.beyond_end(extents, problems);
        let mut bytes = 0u64;
        let mut buf = vec![0u8; BLOCK as usize];
        for (off, n) in self.offsets(extents) {
            if cancel.is_cancelled() {
                return Err(Error::new(ErrorKind::Cancelled, "verify cancelled"));
            }
            read(off, &mut buf[..n])?;
            bytes += n as u64;
            self.block(off, &buf[..n], problems)?;
        }
        Ok(bytes)
    }

    /// Checks the block at `off` against its record.
    fn block(&self, off: u64, data: &[u8], problems: &mut Problems) -> Result<()> {
        let zero = data.iter().all(|b| *b == 0);
        match digests::read_record(self.records, off)? {
            Record::Data(want) if self.scheme.matches(off, data, &want, self.size) => {}
            Record::Data(_) => {
                problems.push(format!("data differs from the backup at offset {off}"))
            }
            Record::Zero | Record::None if zero => {}
            Record::Zero => problems.push(format!(
                "data at offset {off}, where the backup wrote zeroes"
            )),
            Record::None => problems.push(format!("unexpected data at offset {off}")),
        }
        Ok(())
    }

    /// Blocks the backup wrote must still be there: streams the records in order.
    fn records(
        &self,
        data: &[(u64, u64)],
        own: &[(u64, u64)],
        problems: &mut Problems,
    ) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        let mut reader = self.records;
        loop {
            let n = std::io::Read::read(&mut reader, &mut buf)
                .map_err(|e| Error::new(crate::ErrorKind::Io, format!("reading digests: {e}")))?;
            if n == 0 {
                break;
            }
            for rec in buf[..n].chunks(digests::RECORD as usize) {
                let off = pos / digests::RECORD * BLOCK;
                pos += rec.len() as u64;
                if rec.len() < digests::RECORD as usize {
                    problems.push("the digest file ends inside a record".into());
                    continue;
                }
                match Record::of(rec, off) {
                    Record::Data(_) if !covered(data, off) => problems.push(format!(
                        "data written by the backup is missing at offset {off}"
                    )),
                    // Zeroes the image no longer holds itself: its parent's data shows
                    // through in every restore.
                    Record::Zero if self.has_parent && !covered(own, off) => {
                        problems.push(format!(
                            "zeroes written by the backup are missing at offset {off}: \
                             what the backing file holds there shows through"
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Adds `problems` to the checks of backup `id` (its disk `key`, or every disk).
fn add_problems(images: &mut [ImageCheck], id: &str, key: Option<u32>, problems: Vec<String>) {
    if problems.is_empty() {
        return;
    }
    for check in images
        .iter_mut()
        .filter(|c| c.backup == id && key.is_none_or(|k| c.disk == k))
    {
        for p in &problems {
            if !check.problems.contains(p) {
                check.problems.push(p.clone());
            }
        }
    }
}

/// The backups a restore may read: completed, or expired (kept until they may go).
fn readable(list: Vec<BackupRecord>) -> Vec<BackupRecord> {
    list.into_iter()
        .filter(|b| b.status == "completed" || b.status == "expired")
        .collect()
}

/// What is wrong with backup `b`'s manifest: missing (a new hub's `repo import` would not
/// find the backup), unreadable, invalid, or disagreeing with the catalog.
fn manifest_problems(b: &BackupRecord) -> Vec<String> {
    use crate::repo::manifest::{manifest_rel, Manifest};
    let rel = manifest_rel(&b.vm, &b.id);
    let path = b.repo_path.join(&rel);
    if let Err(e) = crate::repo::chain::check_inside(&b.repo_path, &path) {
        return vec![e.message().to_string()];
    }
    if !path.is_file() {
        return vec![format!(
            "its manifest {rel} is missing: the repository alone no longer describes this backup"
        )];
    }
    match Manifest::read(&path).and_then(|m| m.validate(&rel).map(|()| m)) {
        Ok(m) => manifest_agreement(b, &m),
        Err(e) => vec![format!("its manifest: {}", e.message())],
    }
}

/// Where backup `b`'s manifest `m` disagrees with the catalog.
fn manifest_agreement(b: &BackupRecord, m: &crate::repo::manifest::Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    if m.disks.len() != b.disks.len() {
        problems.push(format!(
            "its manifest lists {} disk(s), the catalog {}",
            m.disks.len(),
            b.disks.len()
        ));
    }
    for d in &b.disks {
        let Some(md) = m.disks.iter().find(|x| x.key == d.key) else {
            problems.push(format!("its manifest has no disk {}", d.key));
            continue;
        };
        let agree = md.file == d.rel_file
            && md.parent == d.parent
            && md.mode == d.mode
            && md.size_bytes == d.size_bytes
            && md.digest == d.digest
            && md.image_bytes == d.image_bytes;
        if !agree {
            problems.push(format!(
                "its manifest disagrees with the catalog about disk {}",
                d.key
            ));
        }
    }
    problems
}

/// An image's problems: the first [`MAX_PROBLEMS`] in full, the rest counted.
#[derive(Debug, Default)]
struct Problems {
    list: Vec<String>,
    more: u64,
}

impl Problems {
    fn push(&mut self, problem: String) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(problem);
        } else {
            self.more += 1;
        }
    }

    fn into_list(mut self) -> Vec<String> {
        if self.more > 0 {
            self.list
                .push(format!("and {} more problem(s) like these", self.more));
        }
        self.list
    }
}

/// True when `off` lies in one of the sorted, disjoint `extents`.
fn covered(extents: &[(u64, u64)], off: u64) -> bool {
    let i = extents.partition_point(|(s, _)| *s <= off);
    i > 0 && off < extents[i - 1].0 + extents[i - 1].1
}

/// What an image holds itself, per `qemu-img map` of the image opened without its backing
/// chain (so the cost does not grow with the chain).
#[derive(Debug, Default)]
struct OwnMap {
    /// Ranges of data.
    data: Vec<(u64, u64)>,
    /// Ranges the image decides (data or zeroes), where the backing file does not show through.
    own: Vec<(u64, u64)>,
}

fn own_map(image: &Path) -> Result<OwnMap> {
    let alone = crate::repo::chain::without_backing(image)?;
    let out = crate::tools::run(
        crate::tools::QEMU_IMG,
        ["map", "--output=json", "-U", &alone],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::new(crate::ErrorKind::External, format!("qemu-img map: {e}")))?;
    let mut map = OwnMap::default();
    for e in v.as_array().into_iter().flatten() {
        if e["depth"] != 0 || e["present"] == false {
            continue;
        }
        let range = (
            e["start"].as_u64().unwrap_or(0),
            e["length"].as_u64().unwrap_or(0),
        );
        if e["data"] == true {
            map.data.push(range);
        }
        map.own.push(range);
    }
    Ok(map)
}
