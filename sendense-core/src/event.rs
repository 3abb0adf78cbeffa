//! Progress and lifecycle events.
//!
//! The core never draws progress bars or tables. Long operations emit [`Event`]s to the
//! [`EventSink`] the caller supplied when opening the [`crate::Sendense`] handle; the CLI renders
//! them as indicatif bars, plain log lines or NDJSON, and the node forwards the same serialized
//! events to the hub. Events are `serde`-serializable with a stable shape:
//! `{"ts": "...", "job": 7, "event": "disk_progress", ...fields of the kind}`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One event of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (RFC 3339, UTC).
    pub ts: String,
    /// The job it belongs to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<i64>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// An event stamped with the current time.
    pub fn now(job: Option<i64>, kind: EventKind) -> Self {
        Event {
            ts: crate::time::now_rfc3339(),
            job,
            kind,
        }
    }
}

/// The kinds of events, tagged by `"event"` in their serialized form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A job started.
    JobStarted {
        /// Job kind.
        kind: crate::catalog::JobKind,
        /// The VM concerned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vm: Option<String>,
    },
    /// The consistent snapshot of all disks was taken.
    SnapshotTaken {
        /// Number of disks in the snapshot.
        disks: usize,
    },
    /// Work on one disk started.
    DiskStarted {
        /// Disk key (2000, 2001, ...).
        disk: u32,
        /// What the copy is.
        mode: CopyMode,
        /// Why this mode was chosen.
        reason: String,
        /// Bytes that will be read (the planned extents).
        bytes_total: u64,
    },
    /// Cumulative progress of one disk.
    DiskProgress {
        /// Disk key.
        disk: u32,
        /// Bytes of the plan done so far (data read plus zero ranges handled).
        bytes_done: u64,
        /// Bytes read from the source so far.
        bytes_read: u64,
        /// Bytes written to the target so far.
        bytes_written: u64,
        /// Bytes found to be zero and not written as data.
        bytes_zero: u64,
        /// Bytes planned in total.
        bytes_total: u64,
    },
    /// One disk finished.
    DiskFinished {
        /// Disk key.
        disk: u32,
        /// Bytes read.
        bytes_read: u64,
        /// Bytes written.
        bytes_written: u64,
        /// Bytes found to be zero.
        bytes_zero: u64,
        /// Elapsed seconds.
        seconds: f64,
    },
    /// Something the operator should know; the job goes on.
    Warning {
        /// What happened.
        message: String,
    },
    /// A step of the job, for the job log.
    Step {
        /// What is being done.
        message: String,
    },
    /// The job ended.
    JobFinished {
        /// `completed`, `failed` or `cancelled`.
        status: crate::catalog::JobStatus,
        /// The error, when it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// What a copy of one disk is, in events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyMode {
    /// Every allocated block of a disk into a new chain.
    Full,
    /// The blocks changed since the previous backup, on top of its image.
    Incremental,
    /// A restore point out of a chain.
    Restore,
}

impl CopyMode {
    /// `full`, `incremental` or `restore`.
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMode::Full => "full",
            CopyMode::Incremental => "incremental",
            CopyMode::Restore => "restore",
        }
    }
}

impl std::fmt::Display for CopyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Receives events. Implementations must be cheap: they are called from the data path.
pub trait EventSink: Send + Sync {
    /// Handles one event.
    fn emit(&self, event: &Event);
}

/// A sink that drops every event.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl EventSink for NullSink {
    fn emit(&self, _event: &Event) {}
}

impl<F> EventSink for F
where
    F: Fn(&Event) + Send + Sync,
{
    fn emit(&self, event: &Event) {
        self(event)
    }
}

/// A shared sink handle.
pub type SharedSink = Arc<dyn EventSink>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_shape_is_flat_and_tagged() {
        let ev = Event {
            ts: "2026-01-01T00:00:00Z".into(),
            job: Some(3),
            kind: EventKind::DiskProgress {
                disk: 2000,
                bytes_done: 12,
                bytes_read: 10,
                bytes_written: 8,
                bytes_zero: 2,
                bytes_total: 100,
            },
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "ts": "2026-01-01T00:00:00Z", "job": 3, "event": "disk_progress",
                "disk": 2000, "bytes_done": 12, "bytes_read": 10, "bytes_written": 8, "bytes_zero": 2, "bytes_total": 100
            })
        );
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}
