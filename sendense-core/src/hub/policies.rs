//! Policies and protection groups as the handle sees them: add, edit, show, remove, members,
//! and when each group runs next.

use crate::catalog::{GroupRecord, NewPolicy, PolicyRecord};
use crate::error::{Error, Result};
use crate::retention::KeepRules;
use crate::schedule::Schedule;
use crate::sendense::Sendense;
use serde::Serialize;

/// A policy's settings (`policy add`), repositories by name.
pub type PolicySpec = crate::catalog::PolicySettings<String>;

/// Changes to a policy (`policy edit`): `None` leaves a setting as it is; `Some(None)` clears
/// an optional one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyEdit {
    /// New repository.
    pub repo: Option<String>,
    /// New backup schedule.
    pub schedule: Option<Option<String>>,
    /// New full cadence.
    pub full_every: Option<Option<u32>>,
    /// New full schedule.
    pub full_schedule: Option<Option<String>>,
    /// New verify schedule.
    pub verify_schedule: Option<Option<String>>,
    /// Keep rules to change, each `Some` replacing that rule.
    pub keep: [Option<u32>; 6],
    /// New copy target (`Some(None)`: no copies any more).
    pub copy_to: Option<Option<String>>,
    /// New keep rules of the copies; `None` keeps those of an unchanged target.
    pub copy_keep: Option<KeepRules>,
}

/// A group with when it runs next. Also the `group show --json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    /// The group.
    #[serde(flatten)]
    pub group: GroupRecord,
    /// Its policy's backup schedule.
    pub schedule: Option<String>,
    /// The next scheduled run (RFC 3339, UTC); `None` without a schedule.
    pub next_run: Option<String>,
    /// Its policy's verify schedule.
    pub verify_schedule: Option<String>,
    /// The next scheduled verify (RFC 3339, UTC); `None` without a verify schedule.
    pub next_verify: Option<String>,
}

/// The copy rules of policy `p` after `edit`: a new target takes the keep rules given (none:
/// all copies kept), the same target keeps its own unless new ones are given, and removing the
/// copies with keep rules given is refused.
fn copies_after(p: &PolicyRecord, edit: &PolicyEdit) -> Result<Vec<(String, KeepRules)>> {
    let current = || p.copies.iter().map(|c| (c.repo.clone(), c.keep));
    match (&edit.copy_to, edit.copy_keep) {
        (Some(None), Some(_)) => Err(Error::invalid(
            "--copy-to none removes the copies; --copy-keep-* has nothing to apply to",
        )),
        (Some(None), None) => Ok(Vec::new()),
        (Some(Some(to)), keep) => {
            let own = current().find(|(r, _)| r == to).map(|(_, k)| k);
            Ok(vec![(to.clone(), keep.or(own).unwrap_or_default())])
        }
        (None, Some(keep)) => Ok(current().map(|(r, _)| (r, keep)).collect()),
        (None, None) => Ok(current().collect()),
    }
}

impl Sendense {
    /// Adds policy `name`.
    pub fn add_policy(&mut self, name: &str, spec: &PolicySpec) -> Result<PolicyRecord> {
        crate::vm::validate_name("policy", name)?;
        let new = self.resolve_policy(name, spec)?;
        self.catalog_mut().insert_policy(name, &new)
    }

    /// Changes policy `name`.
    pub fn edit_policy(&mut self, name: &str, edit: &PolicyEdit) -> Result<PolicyRecord> {
        let p = self.catalog().policy(name)?;
        let k = &p.keep;
        let old = [k.last, k.hourly, k.daily, k.weekly, k.monthly, k.yearly];
        let keep: Vec<u32> = old
            .iter()
            .zip(edit.keep)
            .map(|(o, e)| e.unwrap_or(*o))
            .collect();
        // Fulls are either every Nth backup or on a schedule: setting one clears the other.
        let (full_every, full_schedule) = match (&edit.full_every, &edit.full_schedule) {
            (Some(Some(n)), None) => (Some(*n), None),
            (None, Some(Some(s))) => (None, Some(s.clone())),
            (e, s) => (
                e.unwrap_or(p.full_every),
                s.clone().unwrap_or(p.full_schedule.clone()),
            ),
        };
        let spec = PolicySpec {
            repo: edit.repo.clone().unwrap_or(p.repo.clone()),
            schedule: edit.schedule.clone().unwrap_or(p.schedule.clone()),
            full_every,
            full_schedule,
            verify_schedule: edit
                .verify_schedule
                .clone()
                .unwrap_or(p.verify_schedule.clone()),
            keep: KeepRules {
                last: keep[0],
                hourly: keep[1],
                daily: keep[2],
                weekly: keep[3],
                monthly: keep[4],
                yearly: keep[5],
            },
            copies: copies_after(&p, edit)?,
        };
        let new = self.resolve_policy(name, &spec)?;
        let updated = self.catalog_mut().update_policy(name, &new)?;
        // A new schedule starts now: its groups do not run at once for an instant that
        // passed before it existed.
        let backups = updated.schedule != p.schedule;
        let verifies = updated.verify_schedule != p.verify_schedule;
        if backups || verifies {
            let now = crate::time::now_rfc3339();
            for g in &updated.groups {
                self.catalog_mut()
                    .set_group_start(g, &now, backups, verifies)?;
            }
        }
        Ok(updated)
    }

    /// Checks `spec` and resolves its names.
    fn resolve_policy(&self, name: &str, spec: &PolicySpec) -> Result<NewPolicy> {
        let repo = self.catalog().repo(&spec.repo)?;
        for (what, s) in [
            ("--schedule", &spec.schedule),
            ("--full-schedule", &spec.full_schedule),
            ("--verify", &spec.verify_schedule),
        ] {
            if let Some(s) = s {
                Schedule::parse(s).map_err(|e| e.context(what))?;
            }
        }
        if spec.full_every.is_some() && spec.full_schedule.is_some() {
            return Err(Error::invalid(format!(
                "policy `{name}`: --full-every and --full-schedule exclude each other"
            ))
            .with_help("Either every Nth backup is a full, or fulls run on their own schedule."));
        }
        if spec.full_every == Some(0) {
            return Err(Error::invalid("--full-every must be at least 1"));
        }
        let mut copies = Vec::new();
        for (dest, keep) in &spec.copies {
            // A copy repository is a directory or a bucket.
            let id = self.catalog().any_repo_id(dest)?;
            if id == repo.id {
                return Err(Error::invalid(format!(
                    "policy `{name}` copies into `{dest}`, the repository its backups go to"
                ))
                .with_help("A copy goes to another repository (another disk, share or site)."));
            }
            if copies.iter().any(|(c, _)| *c == id) {
                return Err(Error::invalid(format!(
                    "policy `{name}` names `{dest}` twice as a copy target"
                )));
            }
            copies.push((id, *keep));
        }
        Ok(NewPolicy {
            repo: repo.id,
            schedule: spec.schedule.clone(),
            full_every: spec.full_every,
            full_schedule: spec.full_schedule.clone(),
            verify_schedule: spec.verify_schedule.clone(),
            keep: spec.keep,
            copies,
        })
    }

    /// Every policy.
    pub fn policies(&self) -> Result<Vec<PolicyRecord>> {
        self.catalog().policies()
    }

    /// One policy.
    pub fn policy(&self, name: &str) -> Result<PolicyRecord> {
        self.catalog().policy(name)
    }

    /// Removes policy `name`; refused while a group uses it.
    pub fn remove_policy(&mut self, name: &str) -> Result<PolicyRecord> {
        self.catalog_mut().delete_policy(name)
    }

    /// Adds group `name` with `policy`.
    pub fn add_group(
        &mut self,
        name: &str,
        policy: &str,
        max_parallel: u32,
        priority: i64,
    ) -> Result<GroupRecord> {
        crate::vm::validate_name("group", name)?;
        if max_parallel == 0 {
            return Err(Error::invalid("--max-parallel must be at least 1"));
        }
        let p = self.catalog().policy(policy)?;
        self.catalog_mut()
            .insert_group(name, p.id, max_parallel, priority)
    }

    /// Changes group `name` (`None`: unchanged).
    pub fn edit_group(
        &mut self,
        name: &str,
        policy: Option<&str>,
        max_parallel: Option<u32>,
        priority: Option<i64>,
    ) -> Result<GroupRecord> {
        if max_parallel == Some(0) {
            return Err(Error::invalid("--max-parallel must be at least 1"));
        }
        let before = self.catalog().group(name)?.policy;
        let policy_id = match policy {
            Some(p) => Some(self.catalog().policy(p)?.id),
            None => None,
        };
        let g = self
            .catalog_mut()
            .update_group(name, policy_id, max_parallel, priority)?;
        // Another policy's schedule starts now for this group.
        if g.policy != before {
            self.catalog_mut()
                .set_group_start(name, &crate::time::now_rfc3339(), true, true)?;
            return self.catalog().group(name);
        }
        Ok(g)
    }

    /// Puts VM `vm` into group `group`.
    pub fn group_add_vm(&mut self, group: &str, vm: &str) -> Result<GroupRecord> {
        let v = self.catalog().vm(vm)?;
        self.catalog_mut().add_group_member(group, v.id)
    }

    /// Takes VM `vm` out of group `group`.
    pub fn group_remove_vm(&mut self, group: &str, vm: &str) -> Result<GroupRecord> {
        let v = self.catalog().vm(vm)?;
        self.catalog_mut().remove_group_member(group, v.id, vm)
    }

    /// Removes group `name` (its VMs and backups stay).
    pub fn remove_group(&mut self, name: &str) -> Result<GroupRecord> {
        self.catalog_mut().delete_group(name)
    }

    /// Every group with its next run, higher priority first.
    pub fn groups(&self) -> Result<Vec<GroupStatus>> {
        self.catalog()
            .groups()?
            .into_iter()
            .map(|g| self.group_status(g))
            .collect()
    }

    /// One group with its next run.
    pub fn group(&self, name: &str) -> Result<GroupStatus> {
        let g = self.catalog().group(name)?;
        self.group_status(g)
    }

    /// The groups VM `vm` is in, with their next runs.
    pub fn groups_of_vm(&self, vm: &str) -> Result<Vec<GroupStatus>> {
        let v = self.catalog().vm(vm)?;
        self.catalog()
            .groups_of_vm(v.id)?
            .iter()
            .map(|g| self.group(g))
            .collect()
    }

    fn group_status(&self, group: GroupRecord) -> Result<GroupStatus> {
        let p = self.catalog().policy(&group.policy)?;
        let now = crate::time::now_timestamp()?;
        let next = |s: &Option<String>| -> Result<Option<String>> {
            Ok(match s {
                Some(s) => Schedule::parse(s)?
                    .next_after(now, &jiff::tz::TimeZone::system())
                    .map(|t| t.to_string()),
                None => None,
            })
        };
        Ok(GroupStatus {
            group,
            next_run: next(&p.schedule)?,
            next_verify: next(&p.verify_schedule)?,
            schedule: p.schedule,
            verify_schedule: p.verify_schedule,
        })
    }
}
