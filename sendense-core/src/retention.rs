//! Retention: which backups keep rules keep, and what happens to the others.
//!
//! The marks are a pure function of the completed backups (their times and which backups their
//! disks' images are backed by) and the rules, computed as Proxmox Backup Server documents its
//! prune:
//!
//! - backups are taken newest first; `keep-last N` keeps the N newest;
//! - then each period rule in turn — hourly, daily, weekly (ISO weeks, Monday first, the ISO
//!   week-year), monthly, yearly, in the local time zone — keeps the newest backup of each of
//!   the N most recent periods that have a backup. A period that already holds a backup kept by
//!   an earlier rule is skipped and not counted: a backup kept by one rule is not counted again;
//! - everything not kept is removed.
//!
//! Removal understands chains ([`prune_marks`]): a removed backup that a kept backup depends on
//! (through the backing chain of any disk) is *merged* — its data goes into its child, so the
//! kept backup restores exactly as before — and the mark names the kept backup it ends in. A
//! removed backup nothing kept depends on is simply removed. Without any rule, everything is
//! kept.

mod prune;

pub use prune::{PruneGroup, PruneReport, PruneRequest, PrunedBackup};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// How many backups each rule keeps; 0 leaves a rule out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepRules {
    /// The newest N backups.
    pub last: u32,
    /// The newest backup of each of the N most recent hours that have one.
    pub hourly: u32,
    /// ... days.
    pub daily: u32,
    /// ... ISO weeks.
    pub weekly: u32,
    /// ... months.
    pub monthly: u32,
    /// ... years.
    pub yearly: u32,
}

impl KeepRules {
    /// No rule at all (which keeps everything).
    pub fn is_empty(&self) -> bool {
        self.rules().iter().all(|(_, n)| *n == 0)
    }

    /// The rules with their counts, in the order they apply.
    pub fn rules(&self) -> [(Rule, u32); 6] {
        [
            (Rule::Last, self.last),
            (Rule::Hourly, self.hourly),
            (Rule::Daily, self.daily),
            (Rule::Weekly, self.weekly),
            (Rule::Monthly, self.monthly),
            (Rule::Yearly, self.yearly),
        ]
    }
}

/// A keep rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// `keep-last`.
    #[serde(rename = "keep-last")]
    Last,
    /// `keep-hourly`.
    #[serde(rename = "keep-hourly")]
    Hourly,
    /// `keep-daily`.
    #[serde(rename = "keep-daily")]
    Daily,
    /// `keep-weekly`.
    #[serde(rename = "keep-weekly")]
    Weekly,
    /// `keep-monthly`.
    #[serde(rename = "keep-monthly")]
    Monthly,
    /// `keep-yearly`.
    #[serde(rename = "keep-yearly")]
    Yearly,
}

impl Rule {
    /// Its option name (`keep-daily`).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Last => "keep-last",
            Rule::Hourly => "keep-hourly",
            Rule::Daily => "keep-daily",
            Rule::Weekly => "keep-weekly",
            Rule::Monthly => "keep-monthly",
            Rule::Yearly => "keep-yearly",
        }
    }

    /// The period `t` falls in, in `tz` (`None` for `keep-last`, which has no periods).
    fn period(self, t: Timestamp, tz: &TimeZone) -> Option<(i16, i16, i16)> {
        let local = t.to_zoned(tz.clone());
        let (y, m, d, h) = (
            local.year(),
            i16::from(local.month()),
            i16::from(local.day()),
            i16::from(local.hour()),
        );
        match self {
            Rule::Last => None,
            Rule::Hourly => Some((y, m * 32 + d, h)),
            Rule::Daily => Some((y, m, d)),
            Rule::Weekly => {
                let week = local.date().iso_week_date();
                Some((week.year(), i16::from(week.week()), 0))
            }
            Rule::Monthly => Some((y, m, 0)),
            Rule::Yearly => Some((y, 0, 0)),
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A completed backup, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Backup id.
    pub id: String,
    /// When it was taken.
    pub time: Timestamp,
    /// The backups its disks' images are backed by (none for a full of every disk).
    pub parents: Vec<String>,
}

/// What happens to a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mark", rename_all = "snake_case")]
pub enum Mark {
    /// Kept by `rule`.
    Keep {
        /// The rule that keeps it.
        rule: Option<Rule>,
    },
    /// Removed; nothing kept depends on it.
    Remove,
    /// Removed, its data merged toward `into`, the nearest kept backup that depends on it.
    Merge {
        /// The kept backup its data ends in.
        into: String,
    },
}

impl Mark {
    /// Whether the backup stays.
    pub fn is_kept(&self) -> bool {
        matches!(self, Mark::Keep { .. })
    }
}

/// Which rule keeps each backup of `backups` (`None`: not kept), in the order given. Only the
/// times matter; ties are broken by id (the newer id first). Without any rule nothing is kept
/// here — [`prune_marks`] keeps everything then.
pub fn keep_marks(
    backups: &[(String, Timestamp)],
    rules: &KeepRules,
    tz: &TimeZone,
) -> Vec<Option<Rule>> {
    let mut order: Vec<usize> = (0..backups.len()).collect();
    order.sort_by(|&a, &b| (backups[b].1, &backups[b].0).cmp(&(backups[a].1, &backups[a].0)));
    let mut kept: Vec<Option<Rule>> = vec![None; backups.len()];
    // Backups a rule passed over because a newer one holds their period: no later rule keeps
    // them (as Proxmox Backup Server marks them removed there and then).
    let mut passed = vec![false; backups.len()];
    for (rule, count) in rules.rules() {
        if count == 0 {
            continue;
        }
        let period = |i: usize| rule.period(backups[i].1, tz);
        // Periods an earlier rule already holds a backup of are neither kept again nor counted.
        let held: HashSet<_> = order
            .iter()
            .filter(|&&i| kept[i].is_some())
            .map(|&i| period(i))
            .collect();
        let mut chosen = HashSet::new();
        let mut taken = 0;
        for &i in &order {
            if kept[i].is_some() || passed[i] {
                continue;
            }
            // keep-last counts backups; the others count periods, the newest backup of each.
            let p = period(i);
            if rule != Rule::Last && held.contains(&p) {
                continue;
            }
            if rule != Rule::Last && chosen.contains(&p) {
                passed[i] = true;
                continue;
            }
            if taken >= count {
                break;
            }
            chosen.insert(p);
            taken += 1;
            kept[i] = Some(rule);
        }
    }
    kept
}

/// The mark of every backup of `backups` (in the order given): kept (by which rule), removed,
/// or merged into the nearest kept backup that depends on it. Without any rule, every backup is
/// kept.
pub fn prune_marks(backups: &[Candidate], rules: &KeepRules, tz: &TimeZone) -> Vec<Mark> {
    if rules.is_empty() {
        return vec![Mark::Keep { rule: None }; backups.len()];
    }
    let times: Vec<(String, Timestamp)> = backups.iter().map(|b| (b.id.clone(), b.time)).collect();
    let kept = keep_marks(&times, rules, tz);
    let kept_ids: HashMap<&str, bool> = backups
        .iter()
        .zip(&kept)
        .map(|(b, k)| (b.id.as_str(), k.is_some()))
        .collect();
    // Children of each backup, oldest first (their data is what depends on it).
    let mut children: HashMap<&str, Vec<&Candidate>> = HashMap::new();
    for b in backups {
        for p in &b.parents {
            children.entry(p.as_str()).or_default().push(b);
        }
    }
    for list in children.values_mut() {
        list.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        list.dedup_by(|a, b| a.id == b.id);
    }
    backups
        .iter()
        .zip(kept)
        .map(|(b, rule)| match rule {
            Some(rule) => Mark::Keep { rule: Some(rule) },
            None => match nearest_kept_dependant(&b.id, &children, &kept_ids) {
                Some(into) => Mark::Merge { into },
                None => Mark::Remove,
            },
        })
        .collect()
}

/// The oldest kept backup that depends on `id`, through removed ones (breadth first).
fn nearest_kept_dependant(
    id: &str,
    children: &HashMap<&str, Vec<&Candidate>>,
    kept: &HashMap<&str, bool>,
) -> Option<String> {
    let mut queue = std::collections::VecDeque::from([id]);
    let mut seen = HashSet::from([id]);
    let mut found: Vec<&Candidate> = Vec::new();
    while let Some(at) = queue.pop_front() {
        for c in children.get(at).into_iter().flatten() {
            if !seen.insert(c.id.as_str()) {
                continue;
            }
            if kept.get(c.id.as_str()).copied().unwrap_or(false) {
                found.push(c);
            } else {
                queue.push_back(c.id.as_str());
            }
        }
    }
    found
        .into_iter()
        .min_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)))
        .map(|c| c.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fifteen backups over two years, b01 oldest (UTC).
    const TIMES: [(&str, &str); 15] = [
        ("b01", "2025-01-10T08:00:00Z"), // Fri, 2025-W02
        ("b02", "2025-03-15T09:00:00Z"), // Sat, 2025-W11
        ("b03", "2025-03-20T10:00:00Z"), // Thu, 2025-W12
        ("b04", "2025-12-31T23:00:00Z"), // Wed, ISO week 2026-W01
        ("b05", "2026-01-01T01:00:00Z"), // Thu, 2026-W01
        ("b06", "2026-06-01T10:00:00Z"), // Mon, 2026-W23
        ("b07", "2026-06-03T10:00:00Z"), // Wed, 2026-W23
        ("b08", "2026-06-07T22:00:00Z"), // Sun, 2026-W23
        ("b09", "2026-06-08T08:00:00Z"), // Mon, 2026-W24
        ("b10", "2026-11-27T10:00:00Z"), // Fri, 2026-W48
        ("b11", "2026-11-28T09:00:00Z"), // Sat
        ("b12", "2026-11-28T09:30:00Z"), // Sat, the same hour as b11
        ("b13", "2026-11-28T18:00:00Z"), // Sat
        ("b14", "2026-11-29T08:00:00Z"), // Sun
        ("b15", "2026-11-29T08:45:00Z"), // Sun, the same hour as b14
    ];

    fn chain() -> Vec<Candidate> {
        TIMES
            .iter()
            .enumerate()
            .map(|(i, (id, t))| Candidate {
                id: id.to_string(),
                time: t.parse().unwrap(),
                // One chain: b01 full, every other backed by the one before.
                parents: if i == 0 {
                    vec![]
                } else {
                    vec![TIMES[i - 1].0.to_string()]
                },
            })
            .collect()
    }

    fn kept(rules: KeepRules) -> Vec<(&'static str, Rule)> {
        let times: Vec<(String, Timestamp)> = chain().into_iter().map(|c| (c.id, c.time)).collect();
        let marks = keep_marks(&times, &rules, &TimeZone::UTC);
        TIMES
            .iter()
            .zip(marks)
            .filter_map(|((id, _), m)| m.map(|r| (*id, r)))
            .collect()
    }

    #[test]
    fn every_rule_alone_keeps_what_was_worked_out_by_hand() {
        use Rule::*;
        let r = KeepRules::default;
        let table: Vec<(KeepRules, Vec<(&str, Rule)>)> = vec![
            (r(), vec![]),
            (
                KeepRules { last: 3, ..r() },
                vec![("b13", Last), ("b14", Last), ("b15", Last)],
            ),
            (
                KeepRules { last: 99, ..r() },
                TIMES.iter().map(|(id, _)| (*id, Last)).collect(),
            ),
            // Hours: b15 (b14 shares its hour), b13, b12 (b11 shares its hour), b10.
            (
                KeepRules { hourly: 4, ..r() },
                vec![
                    ("b10", Hourly),
                    ("b12", Hourly),
                    ("b13", Hourly),
                    ("b15", Hourly),
                ],
            ),
            (
                KeepRules { daily: 3, ..r() },
                vec![("b10", Daily), ("b13", Daily), ("b15", Daily)],
            ),
            (
                KeepRules { weekly: 3, ..r() },
                vec![("b08", Weekly), ("b09", Weekly), ("b15", Weekly)],
            ),
            // b04 (2025-12-31) lies in ISO week 2026-W01 with b05, so b03 is the fifth week.
            (
                KeepRules { weekly: 5, ..r() },
                vec![
                    ("b03", Weekly),
                    ("b05", Weekly),
                    ("b08", Weekly),
                    ("b09", Weekly),
                    ("b15", Weekly),
                ],
            ),
            (
                KeepRules { monthly: 3, ..r() },
                vec![("b05", Monthly), ("b09", Monthly), ("b15", Monthly)],
            ),
            // Only two years have backups: two kept, however many are asked for.
            (
                KeepRules { yearly: 3, ..r() },
                vec![("b04", Yearly), ("b15", Yearly)],
            ),
            (KeepRules { yearly: 1, ..r() }, vec![("b15", Yearly)]),
        ];
        for (rules, want) in table {
            assert_eq!(kept(rules), want, "{rules:?}");
        }
    }

    #[test]
    fn rules_combine_and_never_count_a_period_twice() {
        use Rule::*;
        // keep-last 2: b15, b14. keep-daily 2: 11-29 is held already, so 11-28 (b13) and
        // 11-27 (b10). keep-monthly 2: 2026-11 is held; 2026-06 (b09) and 2026-01 (b05).
        // keep-yearly 2: 2026 is held; 2025 (b04), and no other year has a backup.
        let rules = KeepRules {
            last: 2,
            daily: 2,
            monthly: 2,
            yearly: 2,
            ..KeepRules::default()
        };
        assert_eq!(
            kept(rules),
            vec![
                ("b04", Yearly),
                ("b05", Monthly),
                ("b09", Monthly),
                ("b10", Daily),
                ("b13", Daily),
                ("b14", Last),
                ("b15", Last),
            ]
        );
        // keep-hourly 2 then keep-weekly 2: hours 11-29 08 (b15) and 11-28 18 (b13); week 48
        // is held, so W24 (b09) and W23 (b08).
        let rules = KeepRules {
            hourly: 2,
            weekly: 2,
            ..KeepRules::default()
        };
        assert_eq!(
            kept(rules),
            vec![
                ("b08", Weekly),
                ("b09", Weekly),
                ("b13", Hourly),
                ("b15", Hourly)
            ]
        );
    }

    #[test]
    fn removed_backups_a_kept_one_depends_on_are_merged_into_the_nearest() {
        let rules = KeepRules {
            last: 2,
            daily: 2,
            monthly: 2,
            yearly: 2,
            ..KeepRules::default()
        };
        let backups = chain();
        let marks = prune_marks(&backups, &rules, &TimeZone::UTC);
        let merge = |into: &str| Mark::Merge { into: into.into() };
        let keep = |rule| Mark::Keep { rule: Some(rule) };
        assert_eq!(
            marks,
            vec![
                merge("b04"),
                merge("b04"),
                merge("b04"),
                keep(Rule::Yearly),
                keep(Rule::Monthly),
                merge("b09"),
                merge("b09"),
                merge("b09"),
                keep(Rule::Monthly),
                keep(Rule::Daily),
                merge("b13"),
                merge("b13"),
                keep(Rule::Daily),
                keep(Rule::Last),
                keep(Rule::Last),
            ]
        );
        // A new chain at b05 (a full): what only b04 needs still goes into b04; removing the
        // chain's end with nothing kept after it is a plain removal.
        let mut split = chain();
        split[4].parents.clear();
        let rules = KeepRules {
            last: 1,
            yearly: 2,
            ..KeepRules::default()
        };
        let marks = prune_marks(&split, &rules, &TimeZone::UTC);
        assert_eq!(marks[0], merge("b04"));
        assert_eq!(marks[3], keep(Rule::Yearly));
        assert_eq!(marks[4], merge("b15"), "b05 heads the chain b15 needs");
        let rules = KeepRules {
            yearly: 1,
            ..KeepRules::default()
        };
        let marks = prune_marks(&split, &rules, &TimeZone::UTC);
        assert_eq!(
            &marks[..4],
            &[Mark::Remove, Mark::Remove, Mark::Remove, Mark::Remove]
        );
        // Without rules, everything stays.
        let marks = prune_marks(&backups, &KeepRules::default(), &TimeZone::UTC);
        assert!(marks.iter().all(Mark::is_kept));
    }

    #[test]
    fn a_backup_a_rule_passed_over_is_not_kept_by_a_later_rule() {
        // keep-weekly 1 keeps 02-01 (Sunday) and passes over 01-28 (Wednesday of the same ISO
        // week); keep-monthly 2 then holds February and keeps January's newest it may: 01-10,
        // not 01-28, as Proxmox Backup Server does.
        let times: Vec<(String, Timestamp)> = [
            ("a", "2026-01-10T10:00:00Z"),
            ("b", "2026-01-28T10:00:00Z"),
            ("c", "2026-02-01T10:00:00Z"),
        ]
        .iter()
        .map(|(id, t)| (id.to_string(), t.parse().unwrap()))
        .collect();
        let rules = KeepRules {
            weekly: 1,
            monthly: 2,
            ..KeepRules::default()
        };
        assert_eq!(
            keep_marks(&times, &rules, &TimeZone::UTC),
            [Some(Rule::Monthly), None, Some(Rule::Weekly)]
        );
    }

    #[test]
    fn periods_are_local_time_with_its_daylight_saving() {
        // Central European time: UTC+1, UTC+2 from the last Sunday of March.
        let cet = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        let times: Vec<(String, Timestamp)> = [
            ("a", "2026-03-28T22:30:00Z"), // 23:30 on the 28th, local
            ("b", "2026-03-28T23:30:00Z"), // 00:30 on the 29th, local
            ("c", "2026-03-29T00:30:00Z"), // 01:30 CET
            ("d", "2026-03-29T01:30:00Z"), // 03:30 CEST: the clock jumped over 02:00
        ]
        .iter()
        .map(|(id, t)| (id.to_string(), t.parse().unwrap()))
        .collect();
        let daily = KeepRules {
            daily: 2,
            ..KeepRules::default()
        };
        let local = keep_marks(&times, &daily, &cet);
        assert_eq!(local, [Some(Rule::Daily), None, None, Some(Rule::Daily)]);
        // In UTC, a and b are one day and c and d the next.
        let utc = keep_marks(&times, &daily, &TimeZone::UTC);
        assert_eq!(utc, [None, Some(Rule::Daily), None, Some(Rule::Daily)]);
        let hourly = KeepRules {
            hourly: 4,
            ..KeepRules::default()
        };
        assert!(keep_marks(&times, &hourly, &cet)
            .iter()
            .all(Option::is_some));
    }
}
