//! Policy, copy-rule, group and membership rows.

use super::Catalog;
use crate::error::{Error, Result};
use crate::retention::KeepRules;
use rusqlite::Row;
use serde::Serialize;

/// A policy as recorded. Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRecord {
    /// Row id.
    #[serde(skip)]
    pub id: i64,
    /// Name.
    pub name: String,
    /// The repository its backups go to.
    pub repo: String,
    /// When backups run (cron, local time); `None`: by hand only.
    pub schedule: Option<String>,
    /// Every Nth backup of a disk is a full.
    pub full_every: Option<u32>,
    /// When backups are fulls (cron).
    pub full_schedule: Option<String>,
    /// When the backups are verified (cron).
    pub verify_schedule: Option<String>,
    /// What prune keeps in the repository.
    pub keep: KeepRules,
    /// Where backups are copied, and what is kept there.
    pub copies: Vec<CopyRule>,
    /// The groups that use it.
    pub groups: Vec<String>,
    /// When it was added.
    pub created_at: String,
}

/// A copy rule of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CopyRule {
    /// The repository copies go to.
    pub repo: String,
    /// What prune keeps there.
    pub keep: KeepRules,
}

/// A policy's settings; `R` names a repository (its name for callers, its row id for the
/// catalog).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySettings<R> {
    /// Repository its backups go to.
    pub repo: R,
    /// When backups run (cron, local time); `None`: by hand only.
    pub schedule: Option<String>,
    /// Every Nth backup of a disk is a full.
    pub full_every: Option<u32>,
    /// When backups are fulls (cron).
    pub full_schedule: Option<String>,
    /// When its backups are verified (cron).
    pub verify_schedule: Option<String>,
    /// What prune keeps.
    pub keep: KeepRules,
    /// Copies: (repository, what prune keeps there).
    pub copies: Vec<(R, KeepRules)>,
}

/// A new or edited policy, with names resolved by the caller.
pub type NewPolicy = PolicySettings<i64>;

/// A protection group. Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupRecord {
    /// Row id.
    #[serde(skip)]
    pub id: i64,
    /// Name.
    pub name: String,
    /// Its policy.
    pub policy: String,
    /// At most this many of its VMs are backed up at once.
    pub max_parallel: u32,
    /// Higher runs first.
    pub priority: i64,
    /// Its VMs, by name.
    pub vms: Vec<String>,
    /// The scheduled instant it last ran for.
    pub last_run_at: Option<String>,
    /// What its last run did.
    pub last_result: Option<String>,
    /// The scheduled instant its backups were last verified for.
    pub last_verify_at: Option<String>,
    /// What that verify found.
    pub last_verify_result: Option<String>,
    /// When it was added.
    pub created_at: String,
}

const POLICY_SELECT: &str =
    "SELECT p.id, p.name, r.name, p.schedule, p.full_every, p.full_schedule, \
     p.verify_schedule, p.keep_last, p.keep_hourly, p.keep_daily, p.keep_weekly, p.keep_monthly, \
     p.keep_yearly, p.created_at FROM policies p JOIN repositories r ON r.id = p.repo_id";

fn keep_at(r: &Row<'_>, first: usize) -> rusqlite::Result<KeepRules> {
    Ok(KeepRules {
        last: r.get(first)?,
        hourly: r.get(first + 1)?,
        daily: r.get(first + 2)?,
        weekly: r.get(first + 3)?,
        monthly: r.get(first + 4)?,
        yearly: r.get(first + 5)?,
    })
}

fn policy_row(r: &Row<'_>) -> rusqlite::Result<PolicyRecord> {
    Ok(PolicyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        repo: r.get(2)?,
        schedule: r.get(3)?,
        full_every: r.get(4)?,
        full_schedule: r.get(5)?,
        verify_schedule: r.get(6)?,
        keep: keep_at(r, 7)?,
        copies: Vec::new(),
        groups: Vec::new(),
        created_at: r.get(13)?,
    })
}

const GROUP_SELECT: &str =
    "SELECT g.id, g.name, p.name, g.max_parallel, g.priority, g.last_run_at, \
     g.last_result, g.created_at, g.last_verify_at, g.last_verify_result \
     FROM protection_groups g JOIN policies p ON p.id = g.policy_id";

fn group_row(r: &Row<'_>) -> rusqlite::Result<GroupRecord> {
    Ok(GroupRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        policy: r.get(2)?,
        max_parallel: r.get(3)?,
        priority: r.get(4)?,
        vms: Vec::new(),
        last_run_at: r.get(5)?,
        last_result: r.get(6)?,
        created_at: r.get(7)?,
        last_verify_at: r.get(8)?,
        last_verify_result: r.get(9)?,
    })
}

fn keep_params(k: &KeepRules) -> [u32; 6] {
    [k.last, k.hourly, k.daily, k.weekly, k.monthly, k.yearly]
}

impl Catalog {
    /// Records policy `name` with its copy rules.
    pub fn insert_policy(&mut self, name: &str, p: &NewPolicy) -> Result<PolicyRecord> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            let k = keep_params(&p.keep);
            tx.execute(
                "INSERT INTO policies (name, repo_id, schedule, full_every, full_schedule, \
                 verify_schedule, keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, \
                 keep_yearly, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                rusqlite::params![
                    name,
                    p.repo,
                    p.schedule,
                    p.full_every,
                    p.full_schedule,
                    p.verify_schedule,
                    k[0],
                    k[1],
                    k[2],
                    k[3],
                    k[4],
                    k[5],
                    now
                ],
            )
            .map_err(|e| {
                super::unique_violation(e, || {
                    Error::already_exists(format!("a policy named `{name}` exists already"))
                })
            })?;
            let id = tx.last_insert_rowid();
            insert_copy_rules(tx, id, &p.copies, &now)?;
            Ok(())
        })?;
        self.policy(name)
    }

    /// Replaces policy `name`'s settings (its name stays) and copy rules.
    pub fn update_policy(&mut self, name: &str, p: &NewPolicy) -> Result<PolicyRecord> {
        let id = self.policy(name)?.id;
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            let k = keep_params(&p.keep);
            tx.execute(
                "UPDATE policies SET repo_id = ?1, schedule = ?2, full_every = ?3, \
                 full_schedule = ?4, verify_schedule = ?5, keep_last = ?6, keep_hourly = ?7, \
                 keep_daily = ?8, keep_weekly = ?9, keep_monthly = ?10, keep_yearly = ?11 \
                 WHERE id = ?12",
                rusqlite::params![
                    p.repo,
                    p.schedule,
                    p.full_every,
                    p.full_schedule,
                    p.verify_schedule,
                    k[0],
                    k[1],
                    k[2],
                    k[3],
                    k[4],
                    k[5],
                    id
                ],
            )?;
            tx.execute("DELETE FROM copy_rules WHERE policy_id = ?1", [id])?;
            insert_copy_rules(tx, id, &p.copies, &now)?;
            Ok(())
        })?;
        self.policy(name)
    }

    /// The rows `sql` selects (with `params`), each read by `row` and completed by `fill`.
    fn select_filled<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        row: fn(&Row<'_>) -> rusqlite::Result<T>,
        fill: fn(&Self, &mut T) -> Result<()>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn().prepare(sql)?;
        let mut list: Vec<T> = stmt
            .query_map(params, row)?
            .collect::<rusqlite::Result<_>>()?;
        for item in &mut list {
            fill(self, item)?;
        }
        Ok(list)
    }

    /// One policy, with its copy rules and the groups that use it.
    pub fn policy(&self, name: &str) -> Result<PolicyRecord> {
        let sql = format!("{POLICY_SELECT} WHERE p.name = ?1");
        self.select_filled(&sql, [name], policy_row, Self::fill_policy)?
            .pop()
            .ok_or_else(|| {
                Error::not_found(format!("no policy named `{name}`"))
                    .with_help("See `sendense policy list`.")
            })
    }

    /// Every policy, by name.
    pub fn policies(&self) -> Result<Vec<PolicyRecord>> {
        let sql = format!("{POLICY_SELECT} ORDER BY p.name");
        self.select_filled(&sql, [], policy_row, Self::fill_policy)
    }

    fn fill_policy(&self, p: &mut PolicyRecord) -> Result<()> {
        let mut stmt = self.conn().prepare(
            "SELECT r.name, c.keep_last, c.keep_hourly, c.keep_daily, c.keep_weekly, \
             c.keep_monthly, c.keep_yearly FROM copy_rules c JOIN repositories r \
             ON r.id = c.dest_repo_id WHERE c.policy_id = ?1 ORDER BY r.name",
        )?;
        p.copies = stmt
            .query_map([p.id], |r| {
                Ok(CopyRule {
                    repo: r.get(0)?,
                    keep: keep_at(r, 1)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut stmt = self
            .conn()
            .prepare("SELECT name FROM protection_groups WHERE policy_id = ?1 ORDER BY name")?;
        p.groups = stmt
            .query_map([p.id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(())
    }

    /// Removes policy `name`; refused while a group uses it.
    pub fn delete_policy(&mut self, name: &str) -> Result<PolicyRecord> {
        let p = self.policy(name)?;
        if !p.groups.is_empty() {
            return Err(Error::refused(format!(
                "policy `{name}` is used by group(s) {}",
                p.groups.join(", ")
            ))
            .with_help(
                "Give those groups another policy (`sendense group edit`) or remove them first.",
            ));
        }
        self.write(|tx| {
            tx.execute("DELETE FROM policies WHERE id = ?1", [p.id])?;
            Ok(())
        })?;
        Ok(p)
    }

    /// Records a group.
    pub fn insert_group(
        &mut self,
        name: &str,
        policy_id: i64,
        max_parallel: u32,
        priority: i64,
    ) -> Result<GroupRecord> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO protection_groups (name, policy_id, max_parallel, priority, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                (name, policy_id, max_parallel, priority, &now),
            )
            .map_err(|e| {
                super::unique_violation(e, || {
                    Error::already_exists(format!("a group named `{name}` exists already"))
                })
            })?;
            Ok(())
        })?;
        self.group(name)
    }

    /// Changes group `name`'s policy, parallelism or priority (`None`: unchanged).
    pub fn update_group(
        &mut self,
        name: &str,
        policy_id: Option<i64>,
        max_parallel: Option<u32>,
        priority: Option<i64>,
    ) -> Result<GroupRecord> {
        let g = self.group(name)?;
        self.write(|tx| {
            tx.execute(
                "UPDATE protection_groups SET policy_id = coalesce(?1, policy_id), \
                 max_parallel = coalesce(?2, max_parallel), priority = coalesce(?3, priority) \
                 WHERE id = ?4",
                (policy_id, max_parallel, priority, g.id),
            )?;
            Ok(())
        })?;
        self.group(name)
    }

    /// One group with its VMs.
    pub fn group(&self, name: &str) -> Result<GroupRecord> {
        let sql = format!("{GROUP_SELECT} WHERE g.name = ?1");
        self.select_filled(&sql, [name], group_row, Self::fill_group)?
            .pop()
            .ok_or_else(|| {
                Error::not_found(format!("no group named `{name}`"))
                    .with_help("See `sendense group list`.")
            })
    }

    /// Every group, higher priority first, then by name.
    pub fn groups(&self) -> Result<Vec<GroupRecord>> {
        let sql = format!("{GROUP_SELECT} ORDER BY g.priority DESC, g.name");
        self.select_filled(&sql, [], group_row, Self::fill_group)
    }

    /// The groups VM `vm_id` is in.
    pub fn groups_of_vm(&self, vm_id: i64) -> Result<Vec<String>> {
        let mut stmt = self.conn().prepare(
            "SELECT g.name FROM protection_groups g JOIN group_members m ON m.group_id = g.id \
             WHERE m.vm_id = ?1 ORDER BY g.name",
        )?;
        let rows = stmt.query_map([vm_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn fill_group(&self, g: &mut GroupRecord) -> Result<()> {
        let mut stmt = self.conn().prepare(
            "SELECT v.name FROM vms v JOIN group_members m ON m.vm_id = v.id \
             WHERE m.group_id = ?1 ORDER BY v.name",
        )?;
        g.vms = stmt
            .query_map([g.id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(())
    }

    /// Puts VM `vm_id` into group `name` (already in it: nothing changes).
    pub fn add_group_member(&mut self, name: &str, vm_id: i64) -> Result<GroupRecord> {
        let g = self.group(name)?;
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "INSERT OR IGNORE INTO group_members (group_id, vm_id, added_at) VALUES (?1, ?2, ?3)",
                (g.id, vm_id, &now),
            )?;
            Ok(())
        })?;
        self.group(name)
    }

    /// Takes VM `vm_id` out of group `name`; `NotFound` when it is not in it.
    pub fn remove_group_member(&mut self, name: &str, vm_id: i64, vm: &str) -> Result<GroupRecord> {
        let g = self.group(name)?;
        let removed = self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM group_members WHERE group_id = ?1 AND vm_id = ?2",
                (g.id, vm_id),
            )?)
        })?;
        if removed == 0 {
            return Err(Error::not_found(format!(
                "VM `{vm}` is not in group `{name}`"
            )));
        }
        self.group(name)
    }

    /// Records that group `name` ran for the scheduled instant `at`, with `result`.
    pub fn set_group_run(&mut self, name: &str, at: &str, result: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE protection_groups SET last_run_at = ?1, last_result = ?2 WHERE name = ?3",
                (at, result, name),
            )?;
            Ok(())
        })
    }

    /// Records that group `name`'s backups were verified for the scheduled instant `at`.
    pub fn set_group_verify(&mut self, name: &str, at: &str, result: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE protection_groups SET last_verify_at = ?1, last_verify_result = ?2 WHERE name = ?3",
                (at, result, name),
            )?;
            Ok(())
        })
    }

    /// Starts group `name`'s backup schedule (`backups`) and verify schedule (`verifies`)
    /// afresh at `at`: their instants before it are not due.
    pub fn set_group_start(
        &mut self,
        name: &str,
        at: &str,
        backups: bool,
        verifies: bool,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE protection_groups SET \
                 last_run_at = CASE WHEN ?3 THEN ?1 ELSE last_run_at END, \
                 last_verify_at = CASE WHEN ?4 THEN ?1 ELSE last_verify_at END WHERE name = ?2",
                (at, name, backups, verifies),
            )?;
            Ok(())
        })
    }

    /// Removes group `name` (its VMs and their backups stay).
    pub fn delete_group(&mut self, name: &str) -> Result<GroupRecord> {
        let g = self.group(name)?;
        self.write(|tx| {
            tx.execute("DELETE FROM protection_groups WHERE id = ?1", [g.id])?;
            Ok(())
        })?;
        Ok(g)
    }
}

fn insert_copy_rules(
    tx: &rusqlite::Transaction<'_>,
    policy: i64,
    copies: &[(i64, KeepRules)],
    now: &str,
) -> Result<()> {
    for (repo, keep) in copies {
        let k = keep_params(keep);
        tx.execute(
            "INSERT INTO copy_rules (policy_id, dest_repo_id, keep_last, keep_hourly, keep_daily, \
             keep_weekly, keep_monthly, keep_yearly, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            rusqlite::params![policy, repo, k[0], k[1], k[2], k[3], k[4], k[5], now],
        )?;
    }
    Ok(())
}
