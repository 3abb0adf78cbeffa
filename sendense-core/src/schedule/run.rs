//! `schedule run`: everything due now, once. Groups whose policy's schedule has an instant
//! since they last ran are due ([`super::Schedule::due`]); they run higher priority first, each
//! backing up its VMs at most `max_parallel` at once (each backup a job of its own, through the
//! [`crate::runner::Runner`]); a VM whose backup is already running is skipped and reported;
//! then each VM's newest backup is copied into the policy's copy repositories (only the chain
//! links missing there move), the policy's keep rules prune each VM in the policy's
//! repository and each copy rule's in its own; last, the groups whose policy's verify
//! schedule is due have every backup of their VMs verified. One run at a time
//! per state directory ([`crate::lock::ScheduleLock`]): a second finds it taken and starts
//! nothing, so cron may start it every minute.

use super::Schedule;
use crate::backup::plan::Requested;
use crate::catalog::{GroupRecord, PolicyRecord};
use crate::error::{exit, Error, ErrorKind, Result};
use crate::retention::PruneRequest;
use crate::runner::{JobHandle, Runner};
use crate::sendense::Sendense;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What one `schedule run` did (or, with `dry_run`, would do). Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleRunReport {
    /// Nothing was run.
    pub dry_run: bool,
    /// Another run held the schedule lock: nothing was started.
    pub already_running: bool,
    /// The instant the run looked at (RFC 3339).
    pub now: String,
    /// It was interrupted (Ctrl-C, SIGTERM): what had not ended is reported `cancelled`, and
    /// the groups it interrupted are not recorded as run (the next run does them).
    pub cancelled: bool,
    /// The groups that were due, in the order they ran.
    pub groups: Vec<GroupRun>,
    /// The verifies that were due (policies' verify schedules), after the backups.
    pub verifies: Vec<VerifyRun>,
}

/// The verify of one VM's backups, due by its group's policy's verify schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyRun {
    /// Group name.
    pub group: String,
    /// The scheduled instant it ran for (RFC 3339).
    pub due_at: String,
    /// VM name.
    pub vm: String,
    /// `completed` (everything intact), `failed` (damage found, or the verify failed),
    /// `cancelled`, or `due` (dry run).
    pub result: String,
    /// Images checked (every backup of the VM in every repository, each image once).
    pub images: usize,
    /// Bytes read and compared with their digests.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// What was found wrong (the first problems), or why it failed.
    pub error: Option<String>,
}

/// One due group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRun {
    /// Group name.
    pub group: String,
    /// Its policy.
    pub policy: String,
    /// The scheduled instant it ran for (RFC 3339).
    pub due_at: String,
    /// Its VMs.
    pub vms: Vec<VmRun>,
    /// The copies of the VMs' newest backups into the policy's copy repositories.
    pub copies: Vec<CopyRun>,
    /// What prune did afterwards, per VM and repository, or why it did not run.
    pub prune: Vec<String>,
}

/// One copy of a VM's newest backup into a copy repository.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyRun {
    /// VM name.
    pub vm: String,
    /// The copy repository.
    pub to: String,
    /// `completed` (copied, or there already), `failed`, `skipped` (the VM was busy: the next
    /// run copies) or `cancelled`.
    pub result: String,
    /// The backup copied.
    pub backup: Option<String>,
    /// Its copy in the destination.
    pub copy: Option<String>,
    /// Links copied (0: the destination held it already).
    pub links: usize,
    /// Bytes written into the destination.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// One VM of a due group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRun {
    /// VM name.
    pub vm: String,
    /// `completed`, `failed`, `skipped` (its backup was already running), `cancelled`, or `due`
    /// (dry run).
    pub result: String,
    /// The backup taken.
    pub backup: Option<String>,
    /// `full` or `incremental`: what was asked of the backup.
    pub requested: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Bytes read from the source.
    pub bytes: u64,
    /// Why it failed, was skipped or cancelled.
    pub error: Option<String>,
    /// Attempts made (more than one when a failure that may pass was retried).
    pub attempts: u32,
}

impl ScheduleRunReport {
    /// A run at `now` that has done nothing yet.
    fn empty(dry_run: bool, now: Timestamp) -> ScheduleRunReport {
        ScheduleRunReport {
            dry_run,
            already_running: false,
            now: now.to_string(),
            cancelled: false,
            groups: Vec::new(),
            verifies: Vec::new(),
        }
    }

    /// The exit code of `schedule run`: 0 when everything due succeeded (or nothing was due),
    /// 3 when some failed, 1 when something was due and nothing could run, 130 when it was
    /// interrupted.
    pub fn exit_code(&self) -> u8 {
        let all: Vec<&str> = self
            .groups
            .iter()
            .flat_map(|g| {
                g.vms
                    .iter()
                    .map(|v| v.result.as_str())
                    .chain(g.copies.iter().map(|c| c.result.as_str()))
            })
            .chain(self.verifies.iter().map(|v| v.result.as_str()))
            .collect();
        if self.cancelled || all.contains(&"cancelled") {
            return exit::INTERRUPTED;
        }
        let failed = all.iter().filter(|r| **r == "failed").count();
        let ok = all.iter().filter(|r| **r == "completed").count();
        match (failed, ok) {
            (0, _) => exit::SUCCESS,
            (_, 0) => exit::FAILED,
            _ => exit::PARTIAL,
        }
    }
}

impl Sendense {
    /// Runs, once, everything due now (see the module docs). `cancel` stops it: running
    /// backups are cancelled (each cleans up as a cancelled job does), nothing new starts.
    pub fn schedule_run(
        &mut self,
        dry_run: bool,
        cancel: &CancellationToken,
    ) -> Result<ScheduleRunReport> {
        let mut report = self.backup_pass(dry_run, cancel)?;
        if !report.cancelled && !report.already_running {
            report.verifies = self.verify_pass(dry_run, cancel)?.verifies;
        }
        Ok(report)
    }

    /// The verifies due now, once (see the module docs). They hold a lock of their own, so a
    /// run that starts meanwhile does the backups that come due and leaves the verifies to
    /// this one.
    pub fn verify_pass(
        &mut self,
        dry_run: bool,
        cancel: &CancellationToken,
    ) -> Result<ScheduleRunReport> {
        let now = now()?;
        let mut report = ScheduleRunReport::empty(dry_run, now);
        match crate::lock::ScheduleLock::try_acquire_verify(self.state_dir())? {
            Some(_verifying) => {
                self.verify_due(now, &TimeZone::system(), dry_run, cancel, &mut report)
            }
            None => report.already_running = true,
        }
        Ok(report)
    }

    /// The backups due now, then their copies and prunes.
    fn backup_pass(
        &mut self,
        dry_run: bool,
        cancel: &CancellationToken,
    ) -> Result<ScheduleRunReport> {
        let now = now()?;
        let mut report = ScheduleRunReport::empty(dry_run, now);
        let Some(_lock) = crate::lock::ScheduleLock::try_acquire(self.state_dir())? else {
            report.already_running = true;
            return Ok(report);
        };
        let tz = TimeZone::system();
        let due: Vec<(GroupRecord, PolicyRecord, Timestamp)> = self
            .catalog()
            .groups()?
            .into_iter()
            .filter_map(|g| {
                let p = self.catalog().policy(&g.policy).ok()?;
                let schedule = Schedule::parse(p.schedule.as_deref()?).ok()?;
                let mut since = g
                    .last_run_at
                    .as_deref()
                    .unwrap_or(&g.created_at)
                    .parse::<Timestamp>()
                    .ok()?;
                if since > now {
                    // Recorded while the clock was ahead: a group must not wait for it.
                    tracing::warn!(
                        "group `{}` last ran for {since}, which is after now ({now}): the clock \
                         was wrong; it runs for the latest instant up to now",
                        g.name
                    );
                    since = Timestamp::MIN;
                }
                let at = schedule.due(since, now, &tz)?;
                Some((g, p, at))
            })
            .collect();
        let runner = if dry_run {
            None
        } else {
            Some(Runner::new(self.open_options_again())?)
        };
        // (VM, repository) pairs backed up in this run: a VM in two due groups whose policies
        // use one repository is backed up once.
        let mut done: Vec<(String, String)> = Vec::new();
        for (group, policy, at) in due {
            if cancel.is_cancelled() {
                report.cancelled = true;
                break;
            }
            let mut run = GroupRun {
                group: group.name.clone(),
                policy: policy.name.clone(),
                due_at: at.to_string(),
                vms: Vec::new(),
                copies: Vec::new(),
                prune: Vec::new(),
            };
            let mut requests: Vec<(String, Requested)> = Vec::new();
            for vm in &group.vms {
                if done.contains(&(vm.clone(), policy.repo.clone())) {
                    let mut r = vm_run(vm, "skipped", Requested::Auto);
                    r.error = Some(format!(
                        "backed up into `{}` already in this run (another group)",
                        policy.repo
                    ));
                    run.vms.push(r);
                    continue;
                }
                match self.requested_mode(vm, &policy, at, &tz) {
                    Ok(mode) => requests.push((vm.clone(), mode)),
                    Err(e) => {
                        let mut r = vm_run(vm, "failed", Requested::Auto);
                        r.error = Some(e.to_string());
                        run.vms.push(r);
                    }
                }
            }
            match &runner {
                None => run
                    .vms
                    .extend(requests.iter().map(|(vm, mode)| vm_run(vm, "due", *mode))),
                Some(runner) => {
                    let ran = backup_all(
                        runner,
                        &requests,
                        &policy.repo,
                        group.max_parallel,
                        self.config().schedule,
                        cancel,
                    );
                    done.extend(
                        ran.iter()
                            .filter(|v| v.result == "completed")
                            .map(|v| (v.vm.clone(), policy.repo.clone())),
                    );
                    run.vms.extend(ran);
                    if cancel.is_cancelled() {
                        // Not recorded as run: the next run does it again.
                        report.cancelled = true;
                        report.groups.push(run);
                        break;
                    }
                    // The backups are done: the group has run for this instant, whatever
                    // happens to its copies (the next run's copies catch up).
                    let record = |sd: &mut Sendense, run: &mut GroupRun| {
                        let summary = summary(run);
                        if let Err(e) =
                            sd.catalog_mut()
                                .set_group_run(&group.name, &at.to_string(), &summary)
                        {
                            tracing::warn!("recording the run of group `{}`: {e}", group.name);
                            run.prune.push(format!("recording this run failed: {e}"));
                        }
                    };
                    record(self, &mut run);
                    run.copies = self.copy_members(&group, &policy, cancel);
                    if cancel.is_cancelled() {
                        report.cancelled = true;
                        report.groups.push(run);
                        break;
                    }
                    run.prune = self.prune_members(&group, &policy);
                    record(self, &mut run);
                }
            }
            report.groups.push(run);
        }
        Ok(report)
    }

    /// The verifies due now: for each group whose policy's verify schedule has an instant since
    /// it was last verified, every backup of each of its VMs (in every repository, copies
    /// included) is verified.
    fn verify_due(
        &mut self,
        now: Timestamp,
        tz: &TimeZone,
        dry_run: bool,
        cancel: &CancellationToken,
        report: &mut ScheduleRunReport,
    ) {
        let groups = self.catalog().groups().unwrap_or_default();
        for g in groups {
            let Ok(p) = self.catalog().policy(&g.policy) else {
                continue;
            };
            let Some(schedule) = p
                .verify_schedule
                .as_deref()
                .and_then(|s| Schedule::parse(s).ok())
            else {
                continue;
            };
            let since = g
                .last_verify_at
                .as_deref()
                .unwrap_or(&g.created_at)
                .parse::<Timestamp>()
                .map(|t| if t > now { Timestamp::MIN } else { t })
                .unwrap_or(Timestamp::MIN);
            let Some(at) = schedule.due(since, now, tz) else {
                continue;
            };
            let mut runs = Vec::new();
            for vm in &g.vms {
                let mut run = VerifyRun {
                    group: g.name.clone(),
                    due_at: at.to_string(),
                    vm: vm.clone(),
                    result: "due".into(),
                    images: 0,
                    bytes: 0,
                    seconds: 0.0,
                    error: None,
                };
                if !dry_run {
                    let started = Instant::now();
                    let target = crate::verify::VerifyTarget::Vm(vm.clone());
                    match self.verify(&target, cancel.child_token()) {
                        Ok(r) => {
                            run.images = r.images.len();
                            run.bytes = r.images.iter().map(|i| i.bytes_verified).sum();
                            run.result = if r.ok { "completed" } else { "failed" }.into();
                            let problems: Vec<&str> = r
                                .images
                                .iter()
                                .flat_map(|i| i.problems.iter().map(String::as_str))
                                .take(3)
                                .collect();
                            if !problems.is_empty() {
                                run.error = Some(problems.join("; "));
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Cancelled => {
                            run.result = "cancelled".into();
                            run.error = Some(e.to_string());
                        }
                        Err(e) => {
                            run.result = "failed".into();
                            run.error = Some(e.to_string());
                        }
                    }
                    run.seconds = started.elapsed().as_secs_f64();
                }
                runs.push(run);
                if cancel.is_cancelled() {
                    break;
                }
            }
            if cancel.is_cancelled() {
                report.cancelled = true;
                report.verifies.extend(runs);
                return;
            }
            if !dry_run {
                let failed = runs.iter().filter(|r| r.result == "failed").count();
                let result = format!("{} intact, {failed} failed", runs.len() - failed);
                if let Err(e) =
                    self.catalog_mut()
                        .set_group_verify(&g.name, &at.to_string(), &result)
                {
                    tracing::warn!("recording the verify of group `{}`: {e}", g.name);
                }
            }
            report.verifies.extend(runs);
        }
    }

    /// Full or auto for `vm` under `policy` at instant `at`: a full when the policy's full
    /// schedule has an instant since the full its newest backup's chain starts with (in the
    /// policy's repository), or when `full_every` backups were taken since the last full from
    /// the source (counted by each backup, so merges by prune do not reset the count).
    fn requested_mode(
        &self,
        vm: &str,
        policy: &PolicyRecord,
        at: Timestamp,
        tz: &TimeZone,
    ) -> Result<Requested> {
        let newest = self
            .backups(&crate::catalog::BackupFilter {
                vm: Some(vm.to_string()),
                repo: Some(policy.repo.clone()),
                status: Some("completed".into()),
            })?
            .into_iter()
            .next();
        let Some(newest) = newest else {
            return Ok(Requested::Auto);
        };
        if let Some(n) = policy.full_every {
            // Backups taken since the last full from the source, however short prune has
            // merged the chain; the chain's length where that count is not recorded.
            let longest = newest
                .disks
                .iter()
                .map(|d| match d.since_full {
                    Some(k) => Ok(k as usize + 1),
                    None => self
                        .catalog()
                        .disk_chain(&newest.id, d.key)
                        .map(|c| c.len()),
                })
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .max()
                .unwrap_or(0);
            if longest >= n as usize {
                return Ok(Requested::Full);
            }
        }
        if let Some(full) = &policy.full_schedule {
            // Measured from the fulls the chains start with (the oldest of the disks), not from
            // the newest backup, which may be a manual or another group's incremental.
            let mut since: Option<Timestamp> = None;
            for d in &newest.disks {
                let chain = self.catalog().disk_chain(&newest.id, d.key)?;
                if let Some(base) = chain.last() {
                    let b = self.catalog().backup(&base.backup)?;
                    let t: Timestamp = b
                        .created_at
                        .parse()
                        .map_err(|e| Error::internal(format!("backup {}: {e}", b.id)))?;
                    since = Some(since.map_or(t, |s| s.min(t)));
                }
            }
            let since = since.unwrap_or(Timestamp::MIN);
            if Schedule::parse(full)?.due(since, at, tz).is_some() {
                return Ok(Requested::Full);
            }
        }
        Ok(Requested::Auto)
    }

    /// The newest backup of each of the group's VMs in the policy's repository copied into
    /// each of the policy's copy repositories (only the links missing there move).
    fn copy_members(
        &mut self,
        group: &GroupRecord,
        policy: &PolicyRecord,
        cancel: &CancellationToken,
    ) -> Vec<CopyRun> {
        let mut out = Vec::new();
        for rule in &policy.copies {
            for vm in &group.vms {
                let mut run = CopyRun {
                    vm: vm.clone(),
                    to: rule.repo.clone(),
                    result: "failed".into(),
                    backup: None,
                    copy: None,
                    links: 0,
                    bytes: 0,
                    seconds: 0.0,
                    error: None,
                };
                if cancel.is_cancelled() {
                    run.result = "cancelled".into();
                    out.push(run);
                    continue;
                }
                let newest = self
                    .backups(&crate::catalog::BackupFilter {
                        vm: Some(vm.clone()),
                        repo: Some(policy.repo.clone()),
                        status: Some("completed".into()),
                    })
                    .map(|list| list.into_iter().find(|b| b.damaged.is_none()));
                let newest = match newest {
                    Ok(Some(b)) => b,
                    Ok(None) => continue,
                    Err(e) => {
                        run.error = Some(e.to_string());
                        out.push(run);
                        continue;
                    }
                };
                run.backup = Some(newest.id.clone());
                let started = Instant::now();
                match self.copy_backup(&newest.id, &rule.repo, cancel.child_token()) {
                    Ok(r) => {
                        run.result = "completed".into();
                        run.copy = Some(r.copy);
                        run.links = r.copied.len();
                        run.bytes = r.bytes_written;
                    }
                    Err(e) if e.kind() == ErrorKind::Cancelled => {
                        run.result = "cancelled".into();
                        run.error = Some(e.to_string());
                    }
                    // Another process backs the VM up, or deletes or copies one of its
                    // backups: the next run copies.
                    Err(e) if e.kind() == ErrorKind::Busy => {
                        run.result = "skipped".into();
                        run.error = Some(e.to_string());
                    }
                    Err(e) => run.error = Some(e.to_string()),
                }
                run.seconds = started.elapsed().as_secs_f64();
                out.push(run);
            }
        }
        out
    }

    /// The policy's keep rules applied to each of the group's VMs in the policy's repository,
    /// and each copy rule's in its repository.
    fn prune_members(&mut self, group: &GroupRecord, policy: &PolicyRecord) -> Vec<String> {
        let mut places = vec![(policy.repo.clone(), policy.keep)];
        places.extend(policy.copies.iter().map(|c| (c.repo.clone(), c.keep)));
        let mut out = Vec::new();
        for (repo, rules) in places {
            if rules.is_empty() {
                continue;
            }
            for vm in &group.vms {
                let req = PruneRequest {
                    vm: Some(vm.clone()),
                    repo: Some(repo.clone()),
                    rules,
                    dry_run: false,
                };
                out.push(match self.prune(&req) {
                    Ok(r) => format!(
                        "{vm} in `{repo}`: {} kept, {} removed, {} stay",
                        r.kept, r.removed, r.failed
                    ),
                    Err(e) => format!("{vm} in `{repo}`: prune failed: {e}"),
                });
            }
        }
        out
    }
}

impl Sendense {
    /// `sendense daemon`: [`Sendense::schedule_run`] whenever something is due, sleeping in
    /// between (at most a minute, so groups and policies added meanwhile are seen), until
    /// `cancel`. `each` receives every run that did something.
    pub fn daemon(
        &mut self,
        cancel: &CancellationToken,
        mut each: impl FnMut(&ScheduleRunReport),
    ) -> Result<()> {
        // Verifies run in a thread of their own, with a handle of their own: a long verify
        // does not hold up the backups that come due meanwhile.
        let (sent, reports) = std::sync::mpsc::channel::<ScheduleRunReport>();
        let mut verifier: Option<std::thread::JoinHandle<()>> = None;
        while !cancel.is_cancelled() {
            match self.backup_pass(false, cancel) {
                Ok(report) if !report.groups.is_empty() => each(&report),
                Ok(_) => {}
                // Logged, and tried again at the next wake-up: the daemon keeps running.
                Err(e) => tracing::error!("schedule run: {e}"),
            }
            let verifies = self
                .catalog()
                .policies()
                .map(|ps| ps.iter().any(|p| p.verify_schedule.is_some()))
                .unwrap_or(false);
            if verifies && verifier.as_ref().is_none_or(|v| v.is_finished()) {
                let opts = self.open_options_again();
                let (sent, cancel) = (sent.clone(), cancel.clone());
                verifier = Some(std::thread::spawn(move || {
                    match opts
                        .open()
                        .and_then(|mut sd| sd.verify_pass(false, &cancel))
                    {
                        Ok(r) if !r.verifies.is_empty() => {
                            let _ = sent.send(r);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!("scheduled verify: {e}"),
                    }
                }));
            }
            while let Ok(r) = reports.try_recv() {
                each(&r);
            }
            let wait = self
                .until_next_due()
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            let deadline = Instant::now() + wait;
            while !cancel.is_cancelled() && Instant::now() < deadline {
                if let Ok(r) = reports.try_recv() {
                    each(&r);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if let Some(v) = verifier {
            let _ = v.join();
        }
        while let Ok(r) = reports.try_recv() {
            each(&r);
        }
        Ok(())
    }

    /// How long until the next group is due (a minute when none has a schedule).
    fn until_next_due(&self) -> Result<Duration> {
        let tz = TimeZone::system();
        let now = now()?;
        let mut next: Option<Timestamp> = None;
        for g in self.catalog().groups()? {
            let p = self.catalog().policy(&g.policy)?;
            for s in [&p.schedule, &p.verify_schedule].into_iter().flatten() {
                if let Some(t) = Schedule::parse(s)?.next_after(now, &tz) {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        Ok(next
            .map(|t| Duration::from_secs((t.as_second() - now.as_second()).max(1) as u64))
            .unwrap_or(Duration::from_secs(60)))
    }
}

use crate::time::now_timestamp as now;

fn vm_run(vm: &str, result: &str, mode: Requested) -> VmRun {
    VmRun {
        vm: vm.to_string(),
        result: result.to_string(),
        backup: None,
        requested: match mode {
            Requested::Full => "full",
            _ => "auto",
        }
        .to_string(),
        seconds: 0.0,
        bytes: 0,
        error: None,
        attempts: 0,
    }
}

/// Whether a backup that failed with `kind` may pass when tried again.
fn retryable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::External | ErrorKind::Io | ErrorKind::Protocol | ErrorKind::Catalog
    )
}

/// Backs up every VM of `requests` into `repo`, at most `max_parallel` at once, in order; a
/// failure that may pass is tried again as `retry` says.
fn backup_all(
    runner: &Runner,
    requests: &[(String, Requested)],
    repo: &str,
    max_parallel: u32,
    retry: crate::config::ScheduleConfig,
    cancel: &CancellationToken,
) -> Vec<VmRun> {
    let mut out: Vec<Option<VmRun>> = vec![None; requests.len()];
    let mut attempts = vec![0u32; requests.len()];
    let mut running: Vec<(usize, Instant, JobHandle<crate::backup::BackupReport>)> = Vec::new();
    // Failed backups waiting for their retry: (index, when).
    let mut waiting: Vec<(usize, Instant)> = Vec::new();
    let mut next = 0;
    loop {
        while !cancel.is_cancelled() && running.len() < max_parallel.max(1) as usize {
            let ready = waiting.iter().position(|(_, at)| *at <= Instant::now());
            let i = match ready {
                Some(w) => waiting.remove(w).0,
                None if next < requests.len() => {
                    next += 1;
                    next - 1
                }
                None => break,
            };
            let (vm, mode) = &requests[i];
            attempts[i] += 1;
            running.push((i, Instant::now(), runner.backup_into(vm, Some(repo), *mode)));
        }
        if cancel.is_cancelled() {
            // What waits for a retry, and what never started, ends here as cancelled.
            for (i, _) in waiting.drain(..) {
                let mut r = vm_run(&requests[i].0, "cancelled", requests[i].1);
                r.attempts = attempts[i];
                out[i] = Some(r);
            }
            for (i, (vm, mode)) in requests.iter().enumerate().skip(next) {
                out[i] = Some(vm_run(vm, "cancelled", *mode));
            }
            next = requests.len();
        }
        if running.is_empty() {
            if waiting.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        // Wait for the first of the running ones to end — or for a retry that may start.
        let done = loop {
            if cancel.is_cancelled() {
                for (_, _, h) in &running {
                    h.cancel();
                }
            }
            if let Some(i) = running.iter().position(|(_, _, h)| h.is_finished()) {
                break Some(i);
            }
            let slot = running.len() < max_parallel.max(1) as usize;
            if slot && !cancel.is_cancelled() && waiting.iter().any(|(_, at)| *at <= Instant::now())
            {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let Some(done) = done else {
            continue;
        };
        let (i, started, handle) = running.remove(done);
        let (vm, mode) = &requests[i];
        let mut r = vm_run(vm, "completed", *mode);
        r.seconds = started.elapsed().as_secs_f64();
        r.attempts = attempts[i];
        match handle.wait() {
            Ok(b) => {
                r.bytes = b.disks.iter().map(|d| d.bytes_read).sum();
                r.backup = Some(b.backup);
            }
            Err(e)
                if retryable(e.kind())
                    && attempts[i] <= retry.retries
                    && !cancel.is_cancelled() =>
            {
                let delay = retry
                    .retry_delay_secs
                    .saturating_mul(1u64 << (attempts[i] - 1).min(16));
                tracing::warn!(
                    "backup of `{vm}` failed (attempt {}): {e}; trying again in {delay} s",
                    attempts[i]
                );
                let when = Instant::now()
                    .checked_add(Duration::from_secs(delay))
                    .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
                waiting.push((i, when));
                continue;
            }
            Err(e) => {
                r.result = match e.kind() {
                    ErrorKind::Busy => "skipped",
                    // A cancelled backup may end with the error its torn-down connection gave.
                    _ if cancel.is_cancelled() => "cancelled",
                    ErrorKind::Cancelled => "cancelled",
                    _ => "failed",
                }
                .into();
                r.error = Some(e.to_string());
            }
        }
        out[i] = Some(r);
    }
    out.into_iter().flatten().collect()
}

fn summary(run: &GroupRun) -> String {
    let count = |what: &str| run.vms.iter().filter(|v| v.result == what).count();
    let copies_failed = run.copies.iter().filter(|c| c.result == "failed").count();
    format!(
        "{} completed, {} failed, {} skipped{}",
        count("completed"),
        count("failed"),
        count("skipped"),
        match copies_failed {
            0 => String::new(),
            n => format!("; {n} copy(ies) failed"),
        }
    )
}
