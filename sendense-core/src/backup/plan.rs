//! The full/incremental decision per disk: a pure function, table-tested.
//!
//! Incremental only when the repository holds a completed chain for that disk that passes its
//! check (a chain that cannot be trusted is never extended), the disk size is unchanged, and the
//! source still has the checkpoint the chain's top ended at. Otherwise full, with the reason
//! recorded and shown.

use crate::catalog::{BackupMode, ChainTop};
use crate::source::CheckpointState;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requested {
    /// Incremental where possible, full otherwise.
    #[default]
    Auto,
    /// Full for every disk.
    Full,
    /// Incremental for every disk, or fail with the reason.
    Incremental,
}

/// Everything the decision depends on for one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput {
    /// Disk size now.
    pub size_bytes: u64,
    /// The newest completed image of this disk in the target repository.
    pub chain_top: Option<ChainTop>,
    /// The checkpoint Sendense last recorded for this disk on the source.
    pub recorded_checkpoint: Option<String>,
    /// What the source says about that checkpoint.
    pub state: CheckpointState,
    /// Other disks of the VM already have backups in this repository (so this one is new).
    pub vm_has_backups: bool,
    /// What is wrong with the chain below `chain_top`, if anything (see
    /// [`crate::repo::chain::chain_problems`]).
    pub chain_problem: Option<String>,
    /// Why this disk must be full although everything else allows an incremental: its change
    /// tracking was found to have missed changes (see [`crate::transfer::untracked`]).
    pub forced_full: Option<String>,
}

/// The decision for one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Full or incremental.
    pub mode: BackupMode,
    /// Why.
    pub reason: String,
    /// The parent image (incrementals).
    pub parent: Option<ChainTop>,
    /// The checkpoint whose changes the incremental copies.
    pub previous_checkpoint: Option<String>,
}

/// Decides one disk. `Err(reason)` when `--incremental` was requested and cannot be honoured.
pub fn decide(requested: Requested, input: &PlanInput) -> Result<Decision, String> {
    let full = |reason: &str| Decision {
        mode: BackupMode::Full,
        reason: reason.to_string(),
        parent: None,
        previous_checkpoint: None,
    };
    let why_full: Option<String> = if requested == Requested::Full {
        return Ok(full("--full requested"));
    } else if input.chain_top.is_none() {
        Some(
            if input.vm_has_backups {
                "new disk"
            } else {
                "first backup in repository"
            }
            .into(),
        )
    } else if let Some(problem) = &input.chain_problem {
        Some(format!("previous backup failed its check ({problem})"))
    } else if let Some(reason) = &input.forced_full {
        Some(reason.clone())
    } else if input
        .chain_top
        .as_ref()
        .is_some_and(|t| t.size_bytes != input.size_bytes)
    {
        Some("disk resized".into())
    } else if let Some(reason) = input.state.full_reason() {
        Some(if input.state == CheckpointState::None {
            "checkpoint missing on source".into()
        } else {
            reason
        })
    } else if input.chain_top.as_ref().and_then(|t| t.checkpoint.as_ref())
        != input.recorded_checkpoint.as_ref()
        || input.recorded_checkpoint.is_none()
    {
        Some("checkpoint belongs to another chain".into())
    } else {
        None
    };
    match why_full {
        Some(reason) if requested == Requested::Incremental => Err(reason),
        Some(reason) => Ok(full(&reason)),
        None => Ok(Decision {
            mode: BackupMode::Incremental,
            reason: "changes since the previous backup".into(),
            parent: input.chain_top.clone(),
            previous_checkpoint: input.recorded_checkpoint.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(size: u64, cp: Option<&str>) -> Option<ChainTop> {
        Some(ChainTop {
            backup: "b1".into(),
            rel_file: "vm/2000/b1.qcow2".into(),
            size_bytes: size,
            checkpoint: cp.map(String::from),
        })
    }

    /// (requested, size now, chain top, recorded checkpoint, state, VM has backups) -> result;
    /// the chain passes its check.
    type Case = (
        Requested,
        u64,
        Option<ChainTop>,
        Option<&'static str>,
        CheckpointState,
        bool,
        Result<(BackupMode, &'static str), &'static str>,
    );

    #[test]
    fn table() {
        use BackupMode::*;
        use CheckpointState as S;
        let unsupported = S::Unsupported("raw disk: full only".into());
        // (requested, size now, chain top, recorded checkpoint, state, vm has backups) -> result
        let cases: Vec<Case> = vec![
            (
                Requested::Auto,
                10,
                None,
                None,
                S::None,
                false,
                Ok((Full, "first backup in repository")),
            ),
            (
                Requested::Auto,
                10,
                None,
                None,
                S::None,
                true,
                Ok((Full, "new disk")),
            ),
            (
                Requested::Auto,
                10,
                top(10, Some("c1")),
                Some("c1"),
                S::Present,
                true,
                Ok((Incremental, "changes since the previous backup")),
            ),
            (
                Requested::Full,
                10,
                top(10, Some("c1")),
                Some("c1"),
                S::Present,
                true,
                Ok((Full, "--full requested")),
            ),
            (
                Requested::Auto,
                20,
                top(10, Some("c1")),
                Some("c1"),
                S::Present,
                true,
                Ok((Full, "disk resized")),
            ),
            (
                Requested::Auto,
                10,
                top(10, Some("c1")),
                Some("c1"),
                S::Missing,
                true,
                Ok((Full, "checkpoint missing on source")),
            ),
            (
                Requested::Auto,
                10,
                top(10, Some("c1")),
                None,
                S::None,
                true,
                Ok((Full, "checkpoint missing on source")),
            ),
            (
                Requested::Auto,
                10,
                top(10, Some("c1")),
                Some("c1"),
                S::Inconsistent,
                true,
                Ok((Full, "checkpoint inconsistent on source")),
            ),
            (
                Requested::Auto,
                10,
                top(10, Some("c1")),
                Some("c2"),
                S::Present,
                true,
                Ok((Full, "checkpoint belongs to another chain")),
            ),
            (
                Requested::Auto,
                10,
                top(10, None),
                Some("c1"),
                unsupported.clone(),
                true,
                Ok((Full, "raw disk: full only")),
            ),
            (
                Requested::Incremental,
                10,
                top(10, Some("c1")),
                Some("c1"),
                S::Present,
                true,
                Ok((Incremental, "changes since the previous backup")),
            ),
            (
                Requested::Incremental,
                10,
                None,
                None,
                S::None,
                false,
                Err("first backup in repository"),
            ),
            (
                Requested::Incremental,
                10,
                top(10, Some("c1")),
                Some("c1"),
                S::Missing,
                true,
                Err("checkpoint missing on source"),
            ),
        ];
        for (i, (req, size, chain, recorded, state, has, want)) in cases.into_iter().enumerate() {
            let input = PlanInput {
                size_bytes: size,
                chain_top: chain.clone(),
                recorded_checkpoint: recorded.map(String::from),
                state,
                vm_has_backups: has,
                chain_problem: None,
                forced_full: None,
            };
            let got = decide(req, &input);
            match (got, want) {
                (Ok(d), Ok((mode, reason))) => {
                    assert_eq!((d.mode, d.reason.as_str()), (mode, reason), "case {i}");
                    if mode == Incremental {
                        assert_eq!(d.parent, chain, "case {i}: parent is the chain top");
                    } else {
                        assert_eq!(d.parent, None, "case {i}: a full has no parent");
                    }
                }
                (Err(r), Err(w)) => assert_eq!(r, w, "case {i}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_chain_that_fails_its_check_is_never_extended() {
        let input = PlanInput {
            size_bytes: 10,
            chain_top: top(10, Some("c1")),
            recorded_checkpoint: Some("c1".into()),
            state: CheckpointState::Present,
            vm_has_backups: true,
            chain_problem: Some("b1's image is missing".into()),
            forced_full: None,
        };
        let d = decide(Requested::Auto, &input).unwrap();
        assert_eq!(d.mode, BackupMode::Full);
        assert_eq!(d.parent, None);
        assert_eq!(
            d.reason,
            "previous backup failed its check (b1's image is missing)"
        );
        let err = decide(Requested::Incremental, &input).unwrap_err();
        assert!(err.starts_with("previous backup failed its check"), "{err}");
        assert_eq!(
            decide(Requested::Full, &input).unwrap().reason,
            "--full requested"
        );
    }

    #[test]
    fn a_disk_whose_change_tracking_missed_changes_is_full() {
        let mut input = PlanInput {
            size_bytes: 10,
            chain_top: top(10, Some("c1")),
            recorded_checkpoint: Some("c1".into()),
            state: CheckpointState::Present,
            vm_has_backups: true,
            chain_problem: None,
            forced_full: None,
        };
        assert_eq!(
            decide(Requested::Auto, &input).unwrap().mode,
            BackupMode::Incremental
        );
        input.forced_full = Some("disk resized (shrunk and grown)".into());
        let d = decide(Requested::Auto, &input).unwrap();
        assert_eq!(
            (d.mode, d.reason.as_str()),
            (BackupMode::Full, "disk resized (shrunk and grown)")
        );
        assert_eq!(
            decide(Requested::Incremental, &input).unwrap_err(),
            "disk resized (shrunk and grown)"
        );
    }
}
