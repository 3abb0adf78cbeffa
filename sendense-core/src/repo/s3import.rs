//! `repo import --s3`: registers an S3 repository and rebuilds the catalog from the bucket
//! alone — its `sendense-repo.yaml` object and the manifests, each a committed restore point.
//! Everything read from the bucket is untrusted: manifests are validated as a directory's are,
//! and a backup is registered only when its image and packed digest objects are there with the
//! recorded lengths and its parents are registered. Each object's lock is read back, so deletes
//! and prune know what they must wait for.

use super::manifest::Manifest;
use crate::catalog::S3RepoRecord;
use crate::error::{Error, Result};
use crate::hub::AddS3Repo;
use crate::repo::s3::chain::digests_rel;
use crate::repo::s3::S3Client;
use crate::sendense::Sendense;
use serde::Serialize;

/// The largest manifest read.
const MANIFEST_LIMIT: u64 = 4 << 20;

/// What `repo import --s3` did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct S3ImportReport {
    /// The registered repository.
    pub repo: S3RepoRecord,
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
}

impl Sendense {
    /// Registers the S3 repository at `req.url` (under `req.name`, or when that is empty the
    /// name it was created with) and adds every backup its manifests describe. Importing a
    /// repository registered here already, at the same place and name, registers what the
    /// catalog lacks.
    ///
    /// The repository has one owner, the hub that writes into it: one another hub owns is
    /// refused unless `take_over`, which makes this hub the owner (the other's copies and
    /// deletes there are refused from then on).
    pub fn import_s3_repo(&mut self, req: &AddS3Repo, take_over: bool) -> Result<S3ImportReport> {
        let (location, settings) = crate::hub::s3_settings(req)?;
        let probe_record = S3RepoRecord {
            id: 0,
            name: req.name.clone(),
            url: location.to_string(),
            repo_id: String::new(),
            settings: settings.clone(),
            created_at: String::new(),
            backups: 0,
        };
        let client = self.s3_client(&probe_record)?;
        let meta = crate::rt::block_on(client.read_meta())??.ok_or_else(|| {
            Error::not_found(format!(
                "{location} holds no Sendense repository (no sendense-repo.yaml)"
            ))
            .with_help("Create one with `sendense repo add NAME --s3 URL`.")
        })?;
        let lock_bucket = crate::rt::block_on(client.object_lock_enabled())??;
        if settings.lock_days.is_some() && !lock_bucket {
            return Err(Error::refused(format!(
                "--object-lock: the bucket of {location} does not have Object Lock enabled"
            )));
        }
        let hub = self.catalog().hub_id()?;
        let taken_from = match &meta.owner {
            Some(o) if o.hub != hub && !take_over => {
                return Err(Error::refused(format!(
                    "{location} is owned by another hub (hub {} on host {}, since {})",
                    o.hub, o.host, o.since
                ))
                .with_help(
                    "Two hubs writing into one repository destroy each other's backups. Use it from its owner; once that hub no longer uses it, pass --take-over: this hub becomes the owner and the other hub's copies and deletes there are refused from then on.",
                ))
            }
            Some(o) if o.hub != hub => Some(o.clone()),
            _ => None,
        };
        let name = if req.name.is_empty() {
            meta.name.clone()
        } else {
            req.name.clone()
        };
        crate::vm::validate_name("repository", &name)?;
        let existing = self
            .catalog()
            .s3_repos()?
            .into_iter()
            .find(|r| r.repo_id == meta.id || r.url == location.to_string() || r.name == name);
        let repo = match existing {
            Some(r) if r.repo_id == meta.id && r.url == location.to_string() && r.name == name => r,
            Some(r) => {
                return Err(Error::already_exists(format!(
                    "repository {} is already registered as `{}` ({})",
                    meta.id, r.name, r.url
                ))
                .with_help(format!(
                "Import it again as `{}` from the same address to register what the catalog lacks.",
                r.name
            )))
            }
            None => {
                if self.catalog().repo(&name).is_ok() {
                    return Err(Error::already_exists(format!(
                        "a repository named `{name}` is already registered"
                    ))
                    .with_help("Pass --name to register it under another name."));
                }
                self.catalog_mut()
                    .insert_s3_repo(&crate::catalog::NewS3Repo {
                        name: name.clone(),
                        url: location.to_string(),
                        repo_id: meta.id.clone(),
                        settings,
                    })?
            }
        };
        if meta.owner.as_ref().is_none_or(|o| o.hub != hub) {
            let mine = crate::repo::RepoMeta {
                owner: Some(crate::repo::RepoOwner::now(&hub)),
                ..meta.clone()
            };
            crate::rt::block_on(client.replace_meta(&mine))??;
        }
        let mut report = S3ImportReport {
            repo: repo.clone(),
            vms_created: Vec::new(),
            backups_imported: Vec::new(),
            backups_known: Vec::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
        };
        if let Some(o) = taken_from {
            report.warnings.push(format!(
                "taken over from hub {} on host {} (its owner since {}): that hub's copies and deletes in this repository are refused from now on",
                o.hub, o.host, o.since
            ));
        }
        let found = read_manifests(&client, &mut report)?;
        let mut versions: std::collections::HashMap<String, (Option<String>, u64)> = found
            .iter()
            .map(|(rel, _, v, size)| (rel.clone(), (v.clone(), *size)))
            .collect();
        let found: Vec<(String, Manifest)> =
            found.into_iter().map(|(rel, m, _, _)| (rel, m)).collect();
        for (rel, m) in super::import::parents_first(found) {
            let (manifest_version, manifest_size) = versions.remove(&rel).unwrap_or_default();
            if let Err(e) = m.validate(&rel) {
                report.skipped.push(e.message().to_string());
                continue;
            }
            if m.repository != meta.id {
                report.skipped.push(format!(
                    "{}: belongs to repository {}",
                    m.backup, m.repository
                ));
                continue;
            }
            if let Ok(known) = self.catalog().backup(&m.backup) {
                // Known, from this bucket, without its objects recorded (an import cut short):
                // recorded now, so deletes and locks know them.
                let recorded = self.catalog().s3_objects(&m.backup)?;
                let whole =
                    recorded.len() == 2 * m.disks.len() + 1 && recorded.iter().all(|o| o.written);
                if known.repo_id == repo.id && known.completed_at.is_some() && !whole {
                    if let Ok(mut objects) = self.bucket_pieces(&client, &m, repo.id) {
                        objects.push((rel.clone(), manifest_version, manifest_size));
                        self.record_imported_objects(&client, &m.backup, &objects, lock_bucket)?;
                    }
                }
                report.backups_known.push(m.backup.clone());
                continue;
            }
            let objects = match self.bucket_pieces(&client, &m, repo.id) {
                Ok(o) => o,
                Err(why) => {
                    report.skipped.push(format!("{}: {why}", m.backup));
                    continue;
                }
            };
            let mut objects = objects;
            objects.push((rel.clone(), manifest_version, manifest_size));
            match self.register_manifest(
                rel,
                &m,
                repo.id,
                &mut report.vms_created,
                &mut report.warnings,
            )? {
                Ok(()) => {
                    self.record_imported_objects(&client, &m.backup, &objects, lock_bucket)?;
                    report.backups_imported.push(m.backup.clone());
                }
                Err(why) => report.skipped.push(format!("{}: {why}", m.backup)),
            }
        }
        report.repo = self.catalog().s3_repo(&repo.name)?;
        Ok(report)
    }

    /// The objects of the backup `m` describes (path, committed version, length), when every
    /// one is there as recorded and its parents are registered; else why not.
    fn bucket_pieces(
        &self,
        client: &S3Client,
        m: &Manifest,
        repo_id: i64,
    ) -> std::result::Result<Vec<Piece>, String> {
        let mut out = Vec::new();
        for d in &m.disks {
            if let Some(parent) = &d.parent {
                if self
                    .catalog()
                    .backup(parent)
                    .map_or(true, |p| p.repo_id != repo_id)
                {
                    return Err(format!(
                        "disk {}: parent backup {parent} is not in the repository",
                        d.key
                    ));
                }
            }
            // Its blocks are checked against packed records: only the records form has them.
            if !crate::repo::digests::is_records_form(d.digest.as_deref()) {
                return Err(format!(
                    "disk {}: no digest of its blocks that the bucket can be checked against",
                    d.key
                ));
            }
            for rel in [d.file.clone(), digests_rel(&d.file)] {
                let key = client.location().key(&rel);
                let (version, size) = crate::rt::block_on(async {
                    let Some(version) = client.committed_version(&key).await? else {
                        return Ok(None);
                    };
                    let size = client.size_of_version(&key, version.as_deref()).await?;
                    Ok::<_, Error>(size.map(|s| (version, s)))
                })
                .and_then(|r| r)
                .map_err(|e| format!("{key}: {}", e.message()))?
                .ok_or_else(|| format!("object {rel} is missing"))?;
                if rel == d.file && d.image_bytes.is_some_and(|want| want != size) {
                    return Err(format!(
                        "image {rel} is {size} bytes long; the manifest records {:?}",
                        d.image_bytes
                    ));
                }
                out.push((rel, version, size));
            }
        }
        Ok(out)
    }

    /// Records the objects of imported backup `id`, each with its lock as the bucket reports
    /// it (on a bucket with Object Lock).
    fn record_imported_objects(
        &mut self,
        client: &S3Client,
        id: &str,
        objects: &[Piece],
        lock_bucket: bool,
    ) -> Result<()> {
        for (rel, version, size) in objects {
            let key = client.location().key(rel);
            let until = match lock_bucket {
                true => crate::rt::block_on(client.retention(&key, version.as_deref()))??
                    .map(|l| l.until),
                false => None,
            };
            self.catalog_mut().plan_s3_object(id, rel, until)?;
            self.catalog_mut()
                .s3_object_written(id, rel, version.as_deref(), *size, until)?;
        }
        Ok(())
    }
}

/// An object of a backup: its path, committed version and length.
type Piece = (String, Option<String>, u64);

/// A manifest found in the bucket: its path, what it says, its committed version and length.
type FoundManifest = (String, Manifest, Option<String>, u64);

/// Every manifest object under the repository (`<vm>/manifests/<id>.yaml`), read at its
/// committed version (a version written over it later is not what was committed), oldest
/// first, with that version and its length; unreadable ones named in the report.
fn read_manifests(client: &S3Client, report: &mut S3ImportReport) -> Result<Vec<FoundManifest>> {
    let prefix = client.location().list_prefix();
    let listed = crate::rt::block_on(client.list(&prefix))??;
    let mut found = Vec::new();
    for o in listed {
        let Some(rel) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        let parts: Vec<&str> = rel.split('/').collect();
        if parts.len() != 3 || parts[1] != "manifests" || !parts[2].ends_with(".yaml") {
            continue;
        }
        if o.size > MANIFEST_LIMIT {
            report.skipped.push(format!(
                "{}: {} bytes is too large for a manifest",
                o.key, o.size
            ));
            continue;
        }
        let read = crate::rt::block_on(async {
            let Some(version) = client.committed_version(&o.key).await? else {
                return Ok(None);
            };
            let text = client
                .get_of(&o.key, version.as_deref(), MANIFEST_LIMIT)
                .await?;
            Ok::<_, Error>(Some((version, text)))
        })
        .and_then(|r| r);
        match read.and_then(|r| {
            r.map(|(v, text)| {
                let size = text.len() as u64;
                Manifest::parse(&text, &o.key).map(|m| (m, v, size))
            })
            .transpose()
        }) {
            Ok(Some((m, v, size))) => found.push((rel.to_string(), m, v, size)),
            Ok(None) => {}
            Err(e) => report.skipped.push(e.to_string()),
        }
    }
    found.sort_by(|a, b| (&a.1.created_at, &a.1.backup).cmp(&(&b.1.created_at, &b.1.backup)));
    Ok(found)
}
