//! `backup consolidate`: the chain top as a standalone full (a synthetic full), without
//! reading the source. The older backups of the chain stay restore points of their own; nothing
//! depends on them any more, so retention can remove them without a merge.
//!
//! Per disk K of backup T (the newest of its VM in its repository):
//!
//! ```text
//! a. qemu-img convert T's chain → T.qcow2.consolidating, synced and checked;
//!    the records of every link, oldest first, newest winning → T.digests.consolidating, synced
//!                                                     T.qcow2 still backed → redo from here
//! b. rename T.qcow2.consolidating → T.qcow2 (directory synced)   ← T is standalone now
//! c. rename T.digests.consolidating → T.digests    T.digests.consolidating exists → redo from here
//! ```
//!
//! then T's manifest (mode full, no parent, digest, length) and its catalog row, then the
//! journal `<vm>/merges/<T>.full.yaml`, written before step a, goes. A kill at any instant
//! leaves T restorable to its data (its image is only ever replaced whole, by one that reads the
//! same), and the next command — which finds the journal — or `repo import` finishes it; every
//! step finds itself done.

use super::merge::remove_durably;
use crate::error::{Error, Result};
use crate::repo::chain::{image_rel, is_backup_id, qcow2_header};
use crate::repo::digests::{self, Scheme};
use crate::sendense::Sendense;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The reason a disk made standalone records.
pub const CONSOLIDATED_REASON: &str =
    "consolidated: a standalone copy of its chain (synthetic full)";

const JOURNAL_FORMAT: u32 = 1;
const SUFFIX: &str = ".consolidating";

/// A consolidation in progress, kept in the repository: `<vm>/merges/<backup>.full.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsolidateJournal {
    /// Format version.
    pub format: u32,
    /// The backup made standalone.
    pub backup: String,
    /// Its VM.
    pub vm: String,
    /// The disks made standalone.
    pub disks: Vec<u32>,
}

/// The journal path of a consolidation of `backup` of `vm`, relative to the repository.
pub fn journal_rel(vm: &str, backup: &str) -> String {
    format!("{vm}/merges/{backup}.full.yaml")
}

/// What a consolidation did. Also the `backup consolidate --json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsolidateReport {
    /// The backup made standalone.
    pub backup: String,
    /// Its VM.
    pub vm: String,
    /// The disks made standalone, with the length of their chain before.
    pub disks: Vec<ConsolidatedDisk>,
}

/// One disk made standalone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsolidatedDisk {
    /// Disk key.
    pub key: u32,
    /// Links of its chain before (this backup included).
    pub links_before: usize,
    /// Length of the standalone image.
    pub image_bytes: u64,
}

impl ConsolidateJournal {
    fn write(&self, repo: &Path) -> Result<()> {
        super::merge::write_journal(repo, &journal_rel(&self.vm, &self.backup), self)
    }

    /// Reads the journal at `rel` in `repo` — untrusted input, checked like a manifest.
    pub fn read(repo: &Path, rel: &str) -> Result<ConsolidateJournal> {
        let path = repo.join(rel);
        crate::repo::chain::check_inside(repo, &path)?;
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
        let j: ConsolidateJournal = serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::invalid(format!("journal {rel}: {e}")))?;
        crate::vm::validate_name("VM", &j.vm).map_err(|e| e.context(format!("journal {rel}")))?;
        if j.format != JOURNAL_FORMAT
            || !is_backup_id(&j.backup)
            || rel != journal_rel(&j.vm, &j.backup)
            || j.disks.iter().any(|k| *k < 2000)
        {
            return Err(Error::invalid(format!(
                "journal {rel} does not describe a consolidation of the backup its name says"
            )));
        }
        Ok(j)
    }

    fn remove(&self, repo: &Path) -> Result<()> {
        remove_durably(&repo.join(journal_rel(&self.vm, &self.backup)))
    }
}

/// The backup of `vm` whose consolidation is unfinished in `repo`, if any.
pub fn pending_for(repo: &Path, vm: &str) -> Option<String> {
    let prefix = format!("{vm}/merges/");
    journals(repo).into_iter().find_map(|rel| {
        rel.strip_prefix(&prefix)?
            .strip_suffix(".full.yaml")
            .map(str::to_string)
    })
}

/// The journals of unfinished consolidations in `repo`, relative to it.
pub fn journals(repo: &Path) -> Vec<String> {
    super::merge::all_journals(repo)
        .into_iter()
        .filter(|rel| rel.ends_with(".full.yaml"))
        .collect()
}

/// Does (or finishes) the file work of `journal` in `repo`: steps a–c of every disk and the
/// manifest. Returns each disk's new digest and image length. Idempotent.
pub fn roll_forward(repo: &Path, journal: &ConsolidateJournal) -> Result<Vec<(u32, String, u64)>> {
    let mut done = Vec::new();
    for key in &journal.disks {
        let image = repo.join(image_rel(&journal.vm, *key, &journal.backup));
        crate::repo::chain::check_inside(repo, &image)?;
        if !image.exists() && !with_suffix(&image).exists() {
            // The backup went (deleted) before its consolidation was finished: nothing to do.
            continue;
        }
        consolidate_disk(repo, &image)?;
        let len = std::fs::metadata(&image)
            .map_err(|e| Error::io("reading", &image, e))?
            .len();
        let digest = digests::file_digest(&digests::digests_of(&image), Scheme::CURRENT)?;
        done.push((*key, digest, len));
    }
    rewrite_manifest(repo, journal, &done)?;
    crate::crash::point("consolidate.manifest-rewritten");
    Ok(done)
}

fn with_suffix(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(SUFFIX);
    PathBuf::from(s)
}

/// Steps a–c of one disk.
fn consolidate_disk(repo: &Path, image: &Path) -> Result<()> {
    let tmp_image = with_suffix(image);
    let dfile = digests::digests_of(image);
    let tmp_digests = with_suffix(&dfile);
    let header =
        qcow2_header(image).map_err(|e| Error::invalid(format!("{}: {e}", image.display())))?;
    if header.backing.is_some() {
        let chain = chain_files(repo, image)?;
        remove_durably(&tmp_image)?;
        remove_durably(&tmp_digests)?;
        crate::tools::run(
            crate::tools::QEMU_IMG,
            [
                "convert".as_ref(),
                "-q".as_ref(),
                "-f".as_ref(),
                "qcow2".as_ref(),
                "-O".as_ref(),
                "qcow2".as_ref(),
                "-o".as_ref(),
                format!("cluster_size={}", crate::transfer::BLOCK).as_ref(),
                image.as_os_str(),
                tmp_image.as_os_str(),
            ],
        )
        .map_err(|e| e.context(format!("consolidating {}", image.display())))?;
        std::fs::File::open(&tmp_image)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("syncing", &tmp_image, e))?;
        crate::repo::chain::check_image_alone(&tmp_image)?;
        crate::crash::point("consolidate.converted");
        let sources: Vec<PathBuf> = chain.iter().map(|i| digests::digests_of(i)).collect();
        let sources: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
        digests::overlay(&sources, &tmp_digests)?;
        crate::crash::point("consolidate.digests-written");
        std::fs::rename(&tmp_image, image).map_err(|e| Error::io("renaming", &tmp_image, e))?;
        crate::fsutil::fsync_dir(image.parent().unwrap_or(repo))?;
        crate::crash::point("consolidate.image-renamed");
    }
    if tmp_digests.exists() {
        std::fs::rename(&tmp_digests, &dfile)
            .map_err(|e| Error::io("renaming", &tmp_digests, e))?;
        crate::fsutil::fsync_dir(dfile.parent().unwrap_or(repo))?;
        crate::crash::point("consolidate.digests-renamed");
    }
    // A conversion cut short before it was complete leaves only its image.
    remove_durably(&tmp_image)
}

/// The images of `image`'s chain, oldest first, as their headers link them: each backing file
/// is a name in the same directory (anything else is refused, never followed).
fn chain_files(repo: &Path, image: &Path) -> Result<Vec<PathBuf>> {
    let dir = image
        .parent()
        .ok_or_else(|| Error::internal(format!("{} has no directory", image.display())))?;
    let mut chain = vec![image.to_path_buf()];
    loop {
        let top = chain.last().cloned().unwrap_or_default();
        let header =
            qcow2_header(&top).map_err(|e| Error::invalid(format!("{}: {e}", top.display())))?;
        let Some(name) = header.backing else { break };
        let next = dir.join(&name);
        let plain = Path::new(&name).components().count() == 1 && name.ends_with(".qcow2");
        if !plain || chain.contains(&next) || chain.len() > 100_000 {
            return Err(Error::invalid(format!(
                "{} is backed by {name:?}, which is not an image of its own chain",
                top.display()
            )));
        }
        crate::repo::chain::check_inside(repo, &next)?;
        chain.push(next);
    }
    chain.reverse();
    Ok(chain)
}

fn rewrite_manifest(
    repo: &Path,
    journal: &ConsolidateJournal,
    done: &[(u32, String, u64)],
) -> Result<()> {
    use crate::repo::manifest::{manifest_rel, Manifest};
    let rel = manifest_rel(&journal.vm, &journal.backup);
    if done.is_empty() || !repo.join(&rel).exists() {
        return Ok(());
    }
    let mut m = Manifest::read(&repo.join(&rel))?;
    m.validate(&rel)?;
    for (key, digest, len) in done {
        let disk = m
            .disks
            .iter_mut()
            .find(|d| d.key == *key)
            .ok_or_else(|| Error::invalid(format!("manifest {rel} has no disk {key}")))?;
        if disk.parent.is_some() {
            disk.parent = None;
            disk.mode = crate::catalog::BackupMode::Full;
            disk.reason = CONSOLIDATED_REASON.into();
        }
        disk.digest = Some(digest.clone());
        disk.image_bytes = Some(*len);
    }
    m.write(repo)?;
    Ok(())
}

impl Sendense {
    /// Makes the newest completed backup of `vm` (in `repo`, else the VM's newest anywhere) a
    /// standalone full on disk `key` (else every disk that has a parent), without reading the
    /// source. Refused while a backup of the VM runs or the backup is read (`Busy`), for a
    /// damaged chain, and for digests of an older Sendense (`Refused`).
    pub fn consolidate(
        &mut self,
        vm: &str,
        repo: Option<&str>,
        key: Option<u32>,
    ) -> Result<ConsolidateReport> {
        self.catalog().vm(vm)?;
        let newest = self
            .backups(&crate::catalog::BackupFilter {
                vm: Some(vm.to_string()),
                repo: repo.map(str::to_string),
                status: Some("completed".into()),
            })?
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::not_found(format!("VM `{vm}` has no completed backup to consolidate"))
            })?;
        self.consolidate_backup(&newest.id, key)
    }

    /// [`Sendense::consolidate`] of backup `id`, which must be the newest of its chain.
    pub(crate) fn consolidate_backup(
        &mut self,
        id: &str,
        key: Option<u32>,
    ) -> Result<ConsolidateReport> {
        let b = self.catalog().backup(id)?;
        b.require_local("consolidating")?;
        if let Some(k) = key {
            if !b.disks.iter().any(|d| d.key == k) {
                return Err(Error::not_found(format!("backup {id} has no disk {k}")));
            }
        }
        let repo = self.catalog().repo(&b.repo)?;
        let hub = self.catalog().hub_id()?;
        crate::repo::check_mount(&repo.path, repo.require_mount)
            .and_then(|()| crate::repo::check_identity(&repo.path, &repo.repo_id))
            .and_then(|_| crate::repo::check_owner(&repo.path, &hub))?;
        let _vm = crate::lock::VmLock::acquire(self.state_dir(), &b.vm)?;
        let _writing = crate::lock::RepoWriteLock::writer(&repo.path)?;
        crate::repo::check_owner(&repo.path, &hub)?;
        self.consolidate_locked(id, key, &repo.path)
    }

    /// [`Sendense::consolidate_backup`] for a caller that holds the VM's lock and writes into
    /// the repository at `repo` (a backup that just made the chain too long).
    pub(crate) fn consolidate_locked(
        &mut self,
        id: &str,
        key: Option<u32>,
        repo: &Path,
    ) -> Result<ConsolidateReport> {
        let _backup = crate::lock::BackupDeleteLock::acquire(self.state_dir(), id)?;
        let b = self.catalog().backup(id)?;
        if crate::backup::merge::journals(repo)
            .iter()
            .any(|rel| rel.starts_with(&format!("{}/merges/", b.vm)))
        {
            return Err(Error::busy(format!(
                "a backup of `{}` is being merged into the backups depending on it",
                b.vm
            ))
            .with_help("Run `sendense cleanup` to finish it, then try again."));
        }
        if b.status != "completed" {
            return Err(Error::busy(format!("backup {id} is {}", b.status)));
        }
        if !self.catalog().dependents(id)?.is_empty() {
            return Err(Error::refused(format!(
                "backup {id} is not the newest of its chain: consolidate the newest"
            )));
        }
        let mut report = ConsolidateReport {
            backup: b.id.clone(),
            vm: b.vm.clone(),
            disks: Vec::new(),
        };
        let mut journal = ConsolidateJournal {
            format: JOURNAL_FORMAT,
            backup: b.id.clone(),
            vm: b.vm.clone(),
            disks: Vec::new(),
        };
        let mut lengths = Vec::new();
        for d in b.disks.iter().filter(|d| key.is_none_or(|k| k == d.key)) {
            if d.parent.is_none() {
                continue;
            }
            let chain = self.catalog().disk_chain(id, d.key)?;
            // The chain as recorded — headers, names, sizes — and every link's digests as
            // written: what is copied into the new full must be what was backed up.
            let problems = crate::repo::chain::chain_problems(&chain);
            if !problems.is_empty() {
                return Err(Error::refused(format!(
                    "the chain of disk {} of backup {id} is not as recorded: {}",
                    d.key,
                    problems.join("; ")
                ))
                .with_help("Run `sendense backup verify` on it; take a --full backup instead."));
            }
            for link in &chain {
                let status = self.catalog().backup(&link.backup)?.status;
                if status != "completed" {
                    return Err(Error::busy(format!(
                        "backup {} in the chain of disk {} is {status}",
                        link.backup, d.key
                    ))
                    .with_help("Run `sendense cleanup` to finish its removal, then try again."));
                }
                let dfile = digests::digests_of(&link.file);
                let intact = matches!(
                    digests::check_path(&dfile, link.digest.as_deref().unwrap_or_default()),
                    Ok(digests::Checked::Intact(_))
                );
                if !intact {
                    return Err(Error::refused(format!(
                        "the digest file {} of backup {} was changed since the backup",
                        dfile.display(),
                        link.backup
                    ))
                    .with_help("Run `sendense backup verify` on the chain."));
                }
                if let Some(why) = &link.damaged {
                    return Err(Error::refused(format!(
                        "backup {} in the chain of disk {} is damaged ({why}); its data is not \
                         copied into a new full",
                        link.backup, d.key
                    ))
                    .with_help("Take a full backup (`sendense backup start VM --full`) instead."));
                }
                let scheme = link.digest.as_deref().and_then(Scheme::of_digest);
                if scheme != Some(Scheme::CURRENT) {
                    return Err(Error::refused(format!(
                        "backup {} has digests of an older Sendense on disk {}, which cannot \
                         follow its data into a new full",
                        link.backup, d.key
                    ))
                    .with_help("Take a full backup (`sendense backup start VM --full`) instead."));
                }
            }
            journal.disks.push(d.key);
            lengths.push(chain.len());
        }
        if journal.disks.is_empty() {
            return Ok(report);
        }
        journal.write(repo)?;
        crate::crash::point("consolidate.journal-written");
        let done = self.finish_consolidation(repo, &journal)?;
        report.disks = done
            .into_iter()
            .zip(lengths)
            .map(|((key, _, image_bytes), links_before)| ConsolidatedDisk {
                key,
                links_before,
                image_bytes,
            })
            .collect();
        Ok(report)
    }

    /// The file work, the catalog, then the journal goes. Runs again after a crash.
    pub(crate) fn finish_consolidation(
        &mut self,
        repo: &Path,
        journal: &ConsolidateJournal,
    ) -> Result<Vec<(u32, String, u64)>> {
        let done = roll_forward(repo, journal)?;
        let here = self
            .catalog()
            .backup(&journal.backup)
            .is_ok_and(|b| b.repo_path == repo);
        if here {
            for (key, digest, len) in &done {
                self.catalog_mut().set_disk_standalone(
                    &journal.backup,
                    *key,
                    digest,
                    *len,
                    CONSOLIDATED_REASON,
                )?;
            }
        }
        crate::crash::point("consolidate.catalog-done");
        journal.remove(repo)?;
        Ok(done)
    }

    /// Finishes what journals in registered repositories describe and no process is doing:
    /// consolidations, and merges whose catalog step is done (their journal was not removed
    /// yet; merges the catalog still marks `deleting` are finished with the deletes). Holds
    /// what the live commands hold — the VM, the backup (no reader), the repository as a
    /// writer — and only in a repository this hub owns. Returns (action, backup, outcome).
    pub(crate) fn finish_journals(
        &mut self,
        dry_run: bool,
    ) -> Result<Vec<(&'static str, String, Result<()>)>> {
        use crate::backup::merge::{self, Journal};
        let mut out = Vec::new();
        let hub = self.catalog().hub_id()?;
        for repo in self.catalog().repos()? {
            if !repo.path.is_dir()
                || crate::repo::check_identity(&repo.path, &repo.repo_id).is_err()
                || crate::repo::check_owner(&repo.path, &hub).is_err()
            {
                continue;
            }
            let merges: Vec<String> = merge::journals(&repo.path)
                .into_iter()
                .filter(|rel| {
                    // A backup still being removed is the deletes' to finish.
                    Journal::read(&repo.path, rel).is_ok_and(|j| {
                        self.catalog()
                            .backup(&j.backup)
                            .map_or(true, |b| b.repo_path != repo.path)
                    })
                })
                .collect();
            let found = journals(&repo.path)
                .into_iter()
                .map(|rel| ("finish_consolidation", rel))
                .chain(merges.into_iter().map(|rel| ("finish_merge", rel)));
            for (action, rel) in found {
                let (vm, backup) = match action {
                    "finish_merge" => match Journal::read(&repo.path, &rel) {
                        Ok(j) => (j.vm, j.backup),
                        Err(e) => {
                            out.push((action, rel, Err(e)));
                            continue;
                        }
                    },
                    _ => match ConsolidateJournal::read(&repo.path, &rel) {
                        Ok(j) => (j.vm, j.backup),
                        Err(e) => {
                            out.push((action, rel, Err(e)));
                            continue;
                        }
                    },
                };
                let Ok(_vm) = crate::lock::VmLock::acquire(self.state_dir(), &vm) else {
                    continue;
                };
                let Ok(_backup) = crate::lock::BackupDeleteLock::acquire(self.state_dir(), &backup)
                else {
                    continue;
                };
                if dry_run {
                    out.push((action, backup, Ok(())));
                    continue;
                }
                let done = crate::lock::RepoWriteLock::writer(&repo.path).and_then(|_w| {
                    if action == "finish_merge" {
                        let j = Journal::read(&repo.path, &rel)?;
                        merge::roll_forward(&repo.path, &j)?;
                        j.remove(&repo.path)
                    } else {
                        let j = ConsolidateJournal::read(&repo.path, &rel)?;
                        self.finish_consolidation(&repo.path, &j).map(|_| ())
                    }
                });
                out.push((action, backup, done));
            }
        }
        Ok(out)
    }
}
