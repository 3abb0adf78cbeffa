//! `backup prune`: the marks of [`super::prune_marks`] applied, VM by VM and repository by
//! repository, through [`Sendense::delete_backup`]. Backups nothing kept depends on go first,
//! newest first, so none of them is merged into another that goes too; then the backups that
//! kept ones depend on, oldest first, each merged into its child — each merge moves only what
//! the child holds — so every kept backup restores exactly as before. A VM with a running
//! backup is left alone (its backups are reported as not removed, `Busy`).

use super::{prune_marks, Candidate, KeepRules, Mark};
use crate::catalog::{BackupFilter, BackupRecord};
use crate::error::{Error, ErrorKind, Result};
use crate::sendense::Sendense;
use jiff::tz::TimeZone;
use serde::Serialize;

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneRequest {
    /// Only this VM.
    pub vm: Option<String>,
    /// Only this repository.
    pub repo: Option<String>,
    /// The keep rules (at least one).
    pub rules: KeepRules,
    /// Only compute the marks.
    pub dry_run: bool,
}

/// One backup with its mark, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrunedBackup {
    /// Backup id.
    pub id: String,
    /// When it was taken.
    pub created_at: String,
    /// Kept (by which rule), removed, or merged into which backup.
    #[serde(flatten)]
    pub mark: Mark,
    /// Why it could not be removed (it stays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of that error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// In an S3 repository: why it is (or would be) marked expired and kept for now instead
    /// of deleted (its objects' locks and their date, backups depending on it); `cleanup`
    /// deletes it once nothing holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<String>,
}

/// The backups of one VM in one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneGroup {
    /// VM name.
    pub vm: String,
    /// Repository name.
    pub repo: String,
    /// Its completed backups, newest first.
    pub backups: Vec<PrunedBackup>,
}

/// What `backup prune` did (or would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The rules applied.
    pub rules: KeepRules,
    /// Per VM and repository.
    pub groups: Vec<PruneGroup>,
    /// Backups kept, removed (merged ones included), and not removable now.
    pub kept: usize,
    /// Backups removed (in an S3 repository: deleted, or marked expired — see `expired`).
    pub removed: usize,
    /// Of those, backups in S3 repositories marked expired and kept until nothing holds them.
    pub expired: usize,
    /// Backups that should have gone but stay (see their `error`).
    pub failed: usize,
}

impl PruneReport {
    /// The exit code of `backup prune`: 0 when everything marked went; 3 when some did and
    /// others stay; 5 when none could go because they were busy or refused; else 1.
    pub fn exit_code(&self) -> u8 {
        use crate::error::exit;
        let failures = self
            .groups
            .iter()
            .flat_map(|g| &g.backups)
            .filter_map(|b| b.error_kind);
        let mut any = false;
        let mut all_refused = true;
        for k in failures {
            any = true;
            all_refused &= k.exit_code() == exit::REFUSED;
        }
        match (any, self.removed) {
            (false, _) => exit::SUCCESS,
            (true, 0) if all_refused => exit::REFUSED,
            (true, 0) => exit::FAILED,
            (true, _) => exit::PARTIAL,
        }
    }
}

impl Sendense {
    /// Applies `req.rules` to every VM (or `req.vm`) in every repository (or `req.repo`), in
    /// the local time zone.
    pub fn prune(&mut self, req: &PruneRequest) -> Result<PruneReport> {
        self.prune_in(req, &TimeZone::system())
    }

    /// [`Sendense::prune`] with periods in time zone `tz`.
    pub fn prune_in(&mut self, req: &PruneRequest, tz: &TimeZone) -> Result<PruneReport> {
        if req.rules.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "no keep rule given: prune needs at least one --keep-* option",
            )
            .with_help("For example --keep-last 7 --keep-daily 14 --keep-monthly 6."));
        }
        if let Some(vm) = &req.vm {
            self.catalog().vm(vm)?;
        }
        let backups = self.backups(&BackupFilter {
            vm: req.vm.clone(),
            repo: req.repo.clone(),
            status: Some("completed".into()),
        })?;
        let mut report = PruneReport {
            dry_run: req.dry_run,
            rules: req.rules,
            groups: Vec::new(),
            kept: 0,
            removed: 0,
            expired: 0,
            failed: 0,
        };
        for (vm, repo) in groups(&backups) {
            let members: Vec<&BackupRecord> = backups
                .iter()
                .filter(|b| b.vm == vm && b.repo == repo)
                .collect();
            let group = self.prune_group(&vm, &repo, &members, req, tz)?;
            for b in &group.backups {
                match (&b.mark, &b.error) {
                    (Mark::Keep { .. }, _) => report.kept += 1,
                    (_, Some(_)) => report.failed += 1,
                    _ => report.removed += 1,
                }
                if b.error.is_none() && b.expired.is_some() {
                    report.expired += 1;
                }
            }
            report.groups.push(group);
        }
        Ok(report)
    }

    fn prune_group(
        &mut self,
        vm: &str,
        repo: &str,
        members: &[&BackupRecord],
        req: &PruneRequest,
        tz: &TimeZone,
    ) -> Result<PruneGroup> {
        let candidates: Vec<Candidate> = members
            .iter()
            .map(|b| candidate(b))
            .collect::<Result<_>>()?;
        let marks = prune_marks(&candidates, &req.rules, tz);
        let mut out: Vec<PrunedBackup> = members
            .iter()
            .zip(marks)
            .map(|(b, mark)| PrunedBackup {
                id: b.id.clone(),
                created_at: b.created_at.clone(),
                mark,
                error: None,
                error_kind: None,
                expired: None,
            })
            .collect();
        // Objects are never rewritten: in a bucket, a backup goes once nothing holds it.
        if members.first().is_some_and(|b| b.in_s3()) {
            let removed: Vec<String> = out
                .iter()
                .filter(|b| b.mark == Mark::Remove)
                .map(|b| b.id.clone())
                .collect();
            for b in out.iter_mut().filter(|b| !b.mark.is_kept()) {
                // A backup marked to go has only dependants that go first (newest first); one
                // marked to merge has kept ones, and stays while they do.
                let mut hold = self.s3_hold(&b.id)?;
                // Dependants that go too (removed first, newest first) do not hold it.
                if b.mark == Mark::Remove {
                    hold.dependants.retain(|d| !removed.contains(d));
                }
                if !hold.is_free() {
                    b.expired = Some(hold.reason());
                }
            }
        }
        // Newest first, as the catalog lists them (ids taken within one second do not sort by
        // time).
        if req.dry_run {
            return Ok(PruneGroup {
                vm: vm.to_string(),
                repo: repo.to_string(),
                backups: out,
            });
        }
        // A running backup of the VM may plan on any of them: leave the VM alone.
        let busy = match crate::lock::VmLock::acquire(self.state_dir(), vm) {
            Ok(lock) => {
                drop(lock);
                None
            }
            Err(e) if e.kind() == ErrorKind::Busy => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        let removed_newest_first = (0..out.len()).filter(|&i| out[i].mark == Mark::Remove);
        let merged_oldest_first = (0..out.len())
            .rev()
            .filter(|&i| matches!(out[i].mark, Mark::Merge { .. }));
        let order: Vec<usize> = removed_newest_first.chain(merged_oldest_first).collect();
        for i in order {
            let result = match &busy {
                Some(why) => Err((why.clone(), ErrorKind::Busy)),
                None => self
                    .delete_backup(&out[i].id)
                    .map(|b| {
                        if b.status != "expired" {
                            out[i].expired = None;
                        } else if out[i].expired.is_none() {
                            out[i].expired = Some("other backups depend on it".into());
                        }
                    })
                    .map_err(|e| (e.to_string(), e.kind())),
            };
            if let Err((why, kind)) = result {
                out[i].error = Some(why);
                out[i].error_kind = Some(kind);
            }
        }
        Ok(PruneGroup {
            vm: vm.to_string(),
            repo: repo.to_string(),
            backups: out,
        })
    }
}

/// The (VM, repository) pairs of `backups`, in order of first appearance.
fn groups(backups: &[BackupRecord]) -> Vec<(String, String)> {
    let mut seen: Vec<(String, String)> = Vec::new();
    for b in backups {
        let key = (b.vm.clone(), b.repo.clone());
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    seen
}

/// A backup as retention sees it: when it was taken, what its disks are backed by.
fn candidate(b: &BackupRecord) -> Result<Candidate> {
    let time: jiff::Timestamp = b.created_at.parse().map_err(|e| {
        Error::internal(format!(
            "backup {} has an unreadable time {:?}: {e}",
            b.id, b.created_at
        ))
    })?;
    let mut parents: Vec<String> = b.disks.iter().filter_map(|d| d.parent.clone()).collect();
    parents.sort();
    parents.dedup();
    Ok(Candidate {
        id: b.id.clone(),
        time,
        parents,
    })
}
