//! Repairing a source after interrupted backups.
//!
//! A backup that dies between its snapshot and its teardown — `kill -9`, a power cut, a
//! teardown that failed — leaves objects on the source: in QEMU its fleecing block jobs and
//! nodes (whose overlay keeps growing with every guest write), its NBD exports and server; in
//! QEMU and in image files its new checkpoint bitmap, recording beside the recorded one, which
//! it disabled. [`super::Source::repair`] removes all of it, holding the VM lock, and is run by
//! the next backup of the VM and, at once, by the reconciliation of the next `sendense` command.
//!
//! Checkpoint bitmaps are decided by [`plan_bitmaps`], a pure function: a leftover bitmap is
//! either the checkpoint of a completed backup whose retirement was cut short (its changes are
//! all in later backups, so it is only removed) or the new checkpoint of a backup that did not
//! complete (its changes are not in any backup, so they are merged into the recorded checkpoint
//! first). The recorded checkpoint records again afterwards. So the next incremental holds
//! every change since the last completed backup, and no more.

use std::collections::HashSet;
use std::path::PathBuf;

/// What a repair must know.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepairRequest {
    /// The job starting now, whose objects (none yet) must stay; `None` in the reconciliation.
    pub keep_job: Option<i64>,
    /// The interrupted jobs being repaired after: their id and scratch directory (where a QEMU
    /// NBD server of theirs had its socket).
    pub interrupted: Vec<(i64, PathBuf)>,
    /// Per disk: its identity on the source and the checkpoint the catalog records for it.
    pub disks: Vec<(String, Option<String>)>,
    /// Checkpoints that completed backups ended at.
    pub retired: HashSet<String>,
}

/// What a repair found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Repaired {
    /// The source holds nothing of an interrupted backup any more.
    Done,
    /// The source is not running (a stopped QEMU): what lived in its memory is gone, and its
    /// persistent bitmaps are repaired by the next backup.
    Unreachable,
}

/// A bitmap on a disk: its name and whether it records writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitmapState {
    /// Bitmap name.
    pub name: String,
    /// Enabled (recording).
    pub enabled: bool,
}

/// What to do with one disk's checkpoint bitmaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BitmapRepair {
    /// Leftovers whose changes go into the recorded checkpoint before they are removed.
    pub merge: Vec<String>,
    /// Leftovers to remove (the merged ones included).
    pub remove: Vec<String>,
    /// The recorded checkpoint must be enabled again.
    pub enable: Option<String>,
}

impl BitmapRepair {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.merge.is_empty() && self.remove.is_empty() && self.enable.is_none()
    }

    /// For the job log: what disk `disk` gets.
    pub fn describe(&self, disk: &str) -> String {
        format!(
            "{disk}: repairing checkpoints left by an interrupted backup (merged {:?}, removed {:?})",
            self.merge, self.remove
        )
    }
}

/// Decides one disk's repair from its bitmaps, the recorded checkpoint and the checkpoints of
/// completed backups (`retired`). Only bitmaps named like Sendense's checkpoints are touched.
pub fn plan_bitmaps(
    bitmaps: &[BitmapState],
    recorded: Option<&str>,
    retired: &HashSet<String>,
) -> BitmapRepair {
    let recorded = recorded.filter(|r| bitmaps.iter().any(|b| b.name == *r));
    let mut plan = BitmapRepair::default();
    for b in bitmaps {
        let name = b.name.as_str();
        if !name.starts_with(super::CHECKPOINT_PREFIX) || Some(name) == recorded {
            continue;
        }
        // Without a recorded checkpoint the next backup is a full: nothing to keep whole.
        if recorded.is_some() && !retired.contains(name) {
            plan.merge.push(name.to_string());
        }
        plan.remove.push(name.to_string());
    }
    if let Some(r) = recorded {
        let disabled = bitmaps.iter().any(|b| b.name == r && !b.enabled);
        if disabled || !plan.merge.is_empty() {
            plan.enable = Some(r.to_string());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bm(list: &[(&str, bool)]) -> Vec<BitmapState> {
        list.iter()
            .map(|(n, e)| BitmapState {
                name: n.to_string(),
                enabled: *e,
            })
            .collect()
    }

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn table() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        struct Case {
            what: &'static str,
            bitmaps: Vec<BitmapState>,
            recorded: Option<&'static str>,
            retired: HashSet<String>,
            want: BitmapRepair,
        }
        let cases = [
            Case {
                what: "clean: only the recorded checkpoint, recording",
                bitmaps: bm(&[("sendense-a", true)]),
                recorded: Some("sendense-a"),
                retired: set(&["sendense-a"]),
                want: BitmapRepair::default(),
            },
            Case {
                what: "killed after its snapshot: the new bitmap goes back into the recorded one",
                bitmaps: bm(&[("sendense-a", false), ("sendense-b", true)]),
                recorded: Some("sendense-a"),
                retired: set(&["sendense-a"]),
                want: BitmapRepair {
                    merge: s(&["sendense-b"]),
                    remove: s(&["sendense-b"]),
                    enable: Some("sendense-a".into()),
                },
            },
            Case {
                what: "killed after its commit: the old checkpoint is only removed",
                bitmaps: bm(&[("sendense-a", false), ("sendense-b", true)]),
                recorded: Some("sendense-b"),
                retired: set(&["sendense-a", "sendense-b"]),
                want: BitmapRepair {
                    merge: vec![],
                    remove: s(&["sendense-a"]),
                    enable: None,
                },
            },
            Case {
                what: "a rollback cut short: the recorded one left disabled",
                bitmaps: bm(&[("sendense-a", false)]),
                recorded: Some("sendense-a"),
                retired: set(&["sendense-a"]),
                want: BitmapRepair {
                    merge: vec![],
                    remove: vec![],
                    enable: Some("sendense-a".into()),
                },
            },
            Case {
                what: "no recorded checkpoint: leftovers just go",
                bitmaps: bm(&[("sendense-b", true), ("sendense-c", true)]),
                recorded: None,
                retired: set(&[]),
                want: BitmapRepair {
                    merge: vec![],
                    remove: s(&["sendense-b", "sendense-c"]),
                    enable: None,
                },
            },
            Case {
                what: "recorded checkpoint gone from the disk: as if none",
                bitmaps: bm(&[("sendense-b", true)]),
                recorded: Some("sendense-a"),
                retired: set(&["sendense-a"]),
                want: BitmapRepair {
                    merge: vec![],
                    remove: s(&["sendense-b"]),
                    enable: None,
                },
            },
            Case {
                what: "foreign bitmaps are never touched",
                bitmaps: bm(&[("sendense-a", true), ("libvirt-1", false)]),
                recorded: Some("sendense-a"),
                retired: set(&[]),
                want: BitmapRepair::default(),
            },
            Case {
                what: "two killed backups in a row",
                bitmaps: bm(&[
                    ("sendense-a", false),
                    ("sendense-b", false),
                    ("sendense-c", true),
                ]),
                recorded: Some("sendense-a"),
                retired: set(&["sendense-a"]),
                want: BitmapRepair {
                    merge: s(&["sendense-b", "sendense-c"]),
                    remove: s(&["sendense-b", "sendense-c"]),
                    enable: Some("sendense-a".into()),
                },
            },
        ];
        for c in cases {
            let got = plan_bitmaps(&c.bitmaps, c.recorded, &c.retired);
            assert_eq!(got, c.want, "{}", c.what);
        }
    }
}
