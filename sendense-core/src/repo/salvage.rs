//! Backups whose manifest is lost: found by `repo import`, and registered with `--salvage` when
//! the repository itself proves them.
//!
//! A backup's images are `<vm>/<key>/<id>.qcow2`, each with its `<id>.digests`. Without the
//! manifest, what the catalog needs is read from them: the disk size and the parent from the
//! image header (its backing name is the parent's image), the digest file's digest computed
//! now. Proof, per disk: the image opens; it is a full, or backed by the same disk's image of a
//! backup already registered; its digest file exists; and every block of data the image holds
//! matches its record (the check `backup verify` makes). A backup with one unproven disk is not
//! registered. A registered backup gets a new manifest, so the repository describes it again.
//! Change-tracking checkpoints cannot be recovered: the next backup of the VM is a full.

use super::chain::{self, ExpectedLink};
use super::digests::{self, Scheme};
use super::import::ImportReport;
use super::manifest::{manifest_rel, Manifest, ManifestDisk, ManifestVm, MANIFEST_FORMAT};
use crate::catalog::{BackupMode, DiskOutcome, ImportedBackup, NewBackupDisk, RepoRecord};
use crate::error::Result;
use crate::sendense::Sendense;
use std::collections::BTreeMap;
use std::path::Path;

/// The images of backups that neither the catalog nor a manifest knows, per backup id (in id
/// order, which is time order), with their disk keys.
fn unknown_images(sd: &Sendense, repo: &Path) -> Result<BTreeMap<String, (String, Vec<u32>)>> {
    let mut found: BTreeMap<String, (String, Vec<u32>)> = BTreeMap::new();
    let Ok(vms) = std::fs::read_dir(repo) else {
        return Ok(found);
    };
    for vm_dir in vms.flatten() {
        let vm = vm_dir.file_name().to_string_lossy().into_owned();
        if crate::vm::validate_name("VM", &vm).is_err() || !vm_dir.path().is_dir() {
            continue;
        }
        let Ok(keys) = std::fs::read_dir(vm_dir.path()) else {
            continue;
        };
        for key_dir in keys.flatten() {
            let Ok(key) = key_dir.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(files) = std::fs::read_dir(key_dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".qcow2") else {
                    continue;
                };
                if !chain::is_backup_id(id)
                    || sd.catalog().backup(id).is_ok()
                    || repo.join(manifest_rel(&vm, id)).exists()
                {
                    continue;
                }
                let entry = found
                    .entry(id.to_string())
                    .or_insert_with(|| (vm.clone(), Vec::new()));
                if entry.0 == vm {
                    entry.1.push(key);
                }
            }
        }
    }
    for (_, keys) in found.values_mut() {
        keys.sort_unstable();
    }
    Ok(found)
}

/// Names (or, with `salvage`, registers) the backups in `repo` whose manifest is lost.
pub(super) fn lost_manifests(
    sd: &mut Sendense,
    repo: &RepoRecord,
    repo_id: &str,
    salvage: bool,
    report: &mut ImportReport,
) -> Result<()> {
    let unknown = unknown_images(sd, &repo.path)?;
    if !salvage {
        for (id, (vm, _)) in unknown {
            report.skipped.push(format!(
                "{id}: its manifest {} is missing, its images are in the repository; \
                 `sendense repo import --salvage` registers it if they prove it",
                manifest_rel(&vm, &id)
            ));
        }
        return Ok(());
    }
    // Parents before children: ids sort by time; a child made in the same second as its
    // parent waits for another round.
    let mut pending: Vec<(String, (String, Vec<u32>))> = unknown.into_iter().collect();
    loop {
        let mut progress = false;
        let mut left = Vec::new();
        for (id, (vm, keys)) in pending {
            match prove(sd, repo, &vm, &id, &keys) {
                Ok(Proven::Yes(disks)) => {
                    register(sd, repo, repo_id, &vm, &id, disks)?;
                    report.backups_salvaged.push(id);
                    progress = true;
                }
                Ok(Proven::ParentPending) => left.push((id, (vm, keys))),
                Ok(Proven::No(why)) => report.skipped.push(format!("{id}: not salvaged: {why}")),
                Err(e) => report.skipped.push(format!("{id}: not salvaged: {e}")),
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if !progress {
            for (id, _) in left {
                report.skipped.push(format!(
                    "{id}: not salvaged: its parent is neither registered nor salvageable"
                ));
            }
            return Ok(());
        }
        pending = left;
    }
}

/// One disk as its files show it.
struct FoundDisk {
    key: u32,
    rel_file: String,
    size: u64,
    parent: Option<String>,
    digest: String,
    image_bytes: u64,
}

enum Proven {
    Yes(Vec<FoundDisk>),
    /// Backed by an image of a backup that may be salvaged first.
    ParentPending,
    No(String),
}

fn prove(sd: &mut Sendense, repo: &RepoRecord, vm: &str, id: &str, keys: &[u32]) -> Result<Proven> {
    let Ok(vm_rec) = sd.catalog().vm(vm) else {
        return Ok(Proven::No(format!(
            "no manifest describes VM `{vm}` (its source is unknown)"
        )));
    };
    let mut disks = Vec::new();
    for &key in keys {
        if !vm_rec.disks.iter().any(|d| d.key == key) {
            return Ok(Proven::No(format!("VM `{vm}` has no disk {key}")));
        }
        let rel_file = format!("{vm}/{key}/{id}.qcow2");
        let file = repo.path.join(&rel_file);
        chain::check_inside(&repo.path, &file)?;
        let header = match chain::qcow2_header(&file) {
            Ok(h) => h,
            Err(e) => {
                return Ok(Proven::No(format!(
                    "disk {key}: the image cannot be opened: {e}"
                )))
            }
        };
        let parent = match &header.backing {
            None => None,
            Some(name) => {
                let pid = name.strip_suffix(".qcow2").unwrap_or_default();
                if !chain::is_backup_id(pid) || name.contains('/') {
                    return Ok(Proven::No(format!(
                        "disk {key}: backed by {name}, which is no backup of this repository"
                    )));
                }
                match sd.catalog().backup(pid) {
                    Ok(p) if p.vm == vm && p.disks.iter().any(|d| d.key == key) => {
                        Some(pid.to_string())
                    }
                    Ok(_) => {
                        return Ok(Proven::No(format!(
                            "disk {key}: backed by backup {pid}, of another VM or disk"
                        )))
                    }
                    Err(_) if repo.path.join(format!("{vm}/{key}/{name}")).is_file() => {
                        return Ok(Proven::ParentPending)
                    }
                    Err(_) => {
                        return Ok(Proven::No(format!(
                            "disk {key}: its parent image {name} is missing"
                        )))
                    }
                }
            }
        };
        let dfile = digests::digests_of(&file);
        chain::check_inside(&repo.path, &dfile)?;
        if !dfile.is_file() {
            return Ok(Proven::No(format!(
                "disk {key}: its digest file is missing"
            )));
        }
        // The scheme is written down nowhere but in the lost manifest. Zero markers tell the
        // current one; otherwise each scheme the records could be in is tried, and the one the
        // data proves is taken (an incremental without markers is taken as recording no zero
        // writes, which only leaves its undecided blocks unchecked).
        let schemes: &[Scheme] = if has_zero_marker(&dfile)? {
            &[Scheme::CURRENT]
        } else if parent.is_none() {
            &[Scheme::CURRENT, Scheme::OffsetPrefixed]
        } else {
            &[Scheme::OffsetKeyed, Scheme::OffsetPrefixed]
        };
        let image_bytes = std::fs::metadata(&file)
            .map_err(|e| crate::Error::io("reading", &file, e))?
            .len();
        let mut disk = FoundDisk {
            key,
            rel_file,
            size: header.size,
            parent,
            digest: String::new(),
            image_bytes,
        };
        // Every block of data the image holds must match its record.
        let mut first_problem = None;
        for &scheme in schemes {
            disk.digest = digests::file_digest(&dfile, scheme)?;
            match proven_by_data(sd, repo, id, &disk)? {
                None => {
                    first_problem = None;
                    break;
                }
                Some(problem) => {
                    first_problem.get_or_insert(problem);
                }
            }
        }
        if let Some(problem) = first_problem {
            return Ok(Proven::No(format!("disk {key}: {problem}")));
        }
        disks.push(disk);
    }
    Ok(Proven::Yes(disks))
}

/// The first problem `backup verify` finds with the data of `disk`'s image against its digest
/// file read with `disk.digest`'s scheme; `None` when every block of data matches.
fn proven_by_data(
    sd: &mut Sendense,
    repo: &RepoRecord,
    id: &str,
    disk: &FoundDisk,
) -> Result<Option<String>> {
    let link = ExpectedLink {
        backup: id.to_string(),
        file: repo.path.join(&disk.rel_file),
        size: disk.size,
        digest: Some(disk.digest.clone()),
        image_bytes: Some(disk.image_bytes),
        damaged: None,
        manifest: None,
        repo: repo.path.clone(),
    };
    let scratch = sd.scratch_dir().join(format!("salvage-{id}"));
    let check = sd.check_image(
        disk.key,
        &link,
        &scratch,
        &tokio_util::sync::CancellationToken::new(),
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(check?.problems.into_iter().next())
}

/// Whether a digest file holds a zero marker (only its data regions read, up to the first).
fn has_zero_marker(dfile: &Path) -> Result<bool> {
    let io = |e: std::io::Error| crate::Error::io("reading", dfile, e);
    let f = std::fs::File::open(dfile).map_err(io)?;
    let mut found = false;
    digests::scan_records(&f, 0, u64::MAX, |block, rec| {
        found = digests::Record::of(rec, block * crate::transfer::BLOCK) == digests::Record::Zero;
        !found
    })
    .map_err(io)?;
    Ok(found)
}

/// Registers a proven backup and writes its new manifest.
fn register(
    sd: &mut Sendense,
    repo: &RepoRecord,
    repo_id: &str,
    vm: &str,
    id: &str,
    disks: Vec<FoundDisk>,
) -> Result<()> {
    let vm_rec = sd.catalog().vm(vm)?;
    let reason = "salvaged by repo import (its manifest was lost)".to_string();
    // The id starts with the time it was made: 20261125T211006Z.
    let created_at = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &id[0..4],
        &id[4..6],
        &id[6..8],
        &id[9..11],
        &id[11..13],
        &id[13..15]
    );
    let manifest = Manifest {
        copy_of: None,
        format: MANIFEST_FORMAT,
        backup: id.to_string(),
        repository: repo_id.to_string(),
        vm: ManifestVm {
            name: vm.to_string(),
            source: vm_rec.source.clone(),
            source_options: vm_rec.source_options.clone(),
        },
        created_at: created_at.clone(),
        completed_at: created_at.clone(),
        disks: disks
            .iter()
            .map(|d| ManifestDisk {
                key: d.key,
                identity: vm_rec
                    .disks
                    .iter()
                    .find(|v| v.key == d.key)
                    .map(|v| v.identity.clone())
                    .unwrap_or_default(),
                mode: if d.parent.is_some() {
                    BackupMode::Incremental
                } else {
                    BackupMode::Full
                },
                reason: reason.clone(),
                file: d.rel_file.clone(),
                parent: d.parent.clone(),
                size_bytes: d.size,
                bytes_read: 0,
                bytes_written: 0,
                checkpoint: None,
                digest: Some(d.digest.clone()),
                image_bytes: Some(d.image_bytes),
                since_full: None,
            })
            .collect(),
    };
    let imported = ImportedBackup {
        copy_of: None,
        id: id.to_string(),
        vm_id: vm_rec.id,
        repo_id: repo.id,
        created_at: created_at.clone(),
        completed_at: created_at,
        manifest: manifest_rel(vm, id),
        disks: manifest
            .disks
            .iter()
            .map(|d| {
                (
                    NewBackupDisk {
                        key: d.key,
                        vm_disk_id: vm_rec.disks.iter().find(|v| v.key == d.key).map(|v| v.id),
                        mode: d.mode,
                        reason: d.reason.clone(),
                        rel_file: d.file.clone(),
                        parent: d.parent.clone(),
                        size_bytes: d.size_bytes,
                        checkpoint: None,
                        since_full: d.since_full,
                    },
                    DiskOutcome {
                        key: d.key,
                        digest: d.digest.clone(),
                        image_bytes: d.image_bytes,
                        ..Default::default()
                    },
                )
            })
            .collect(),
    };
    manifest.write(&repo.path)?;
    if let Err(e) = sd.catalog_mut().import_backup(&imported) {
        let _ = std::fs::remove_file(repo.path.join(manifest_rel(vm, id)));
        return Err(e);
    }
    Ok(())
}
