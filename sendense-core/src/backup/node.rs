//! The node side of a backup: the transfer plan the hub hands over, and running it.
//!
//! The node protocol, version [`PROTOCOL`]: the hub hands the node a [`TransferPlan`] — per
//! disk its source and target exports, mode, changes and size; nothing in it is a path of the
//! hub's. In-process (hub = node) the plan runs directly; with `transfer: process` the hub
//! spawns `sendense-sna transfer`, writes the plan as JSON on its stdin and reads NDJSON on its
//! stdout: events, the block digests as [`NodeLine::Digest`] and [`NodeLine::Zeroes`] (the hub
//! writes the digest files), and last the [`NodeLine::Summary`]. The exit status says how it
//! ended (0, 1, 2 for a plan it refuses, 130). A plan or a node of another protocol version is
//! refused. A remote node speaks the same protocol over SSH.

use crate::catalog::BackupMode;
use crate::error::{Error, Result};
use crate::event::SharedSink;
use crate::nbd::NbdUrl;
use crate::repo::digests::Scheme;
use crate::transfer::{self, CopyRequest};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// The version of the node protocol this Sendense speaks. 1: targets as one `KEY:URL,...`
/// string and digest files written by the node at the hub's paths; 2: targets per disk, digests
/// sent back.
pub const PROTOCOL: u32 = 2;

/// The protocol of a plan that names none.
fn first_protocol() -> u32 {
    1
}

/// One disk of a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferDisk {
    /// Disk key.
    pub key: u32,
    /// Full or incremental.
    pub mode: BackupMode,
    /// Why.
    pub reason: String,
    /// The source export (snapshot) of the disk.
    pub source: String,
    /// The target export the disk is written into.
    pub target: String,
    /// Dirty bitmap on the source holding the changes (incrementals).
    pub bitmap: Option<String>,
    /// Or the changed areas, `(offset, length)`, sorted and disjoint (incrementals of sources
    /// that answer their changes as a list: VMware).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extents: Option<Vec<(u64, u64)>>,
    /// Disk size.
    pub size_bytes: u64,
    /// Send the digest of every block written back to the hub.
    #[serde(default)]
    pub record_digests: bool,
    /// Tag of the scheme the digests are computed in ([`Scheme`]). Plans of hubs that did not
    /// name it meant `blake3k-64k` (those hubs tagged the digest file with it).
    #[serde(default)]
    pub digest_scheme: Option<String>,
}

/// The scheme of plans and results that do not name one: what hubs and nodes wrote before the
/// scheme was handed over (they already tagged digest files with it).
const UNNAMED_SCHEME: Scheme = Scheme::OffsetKeyed;

/// The scheme a plan asks the digests of `disk` to be written in.
fn plan_scheme(disk: &TransferDisk) -> Result<Scheme> {
    named_scheme(disk.digest_scheme.as_deref()).ok_or_else(|| {
        Error::invalid(format!(
            "disk {}: the digest scheme `{}` is unknown to this sendense-sna",
            disk.key,
            disk.digest_scheme.as_deref().unwrap_or_default()
        ))
        .with_help("Run sendense-sna of the same version as the hub.")
    })
}

/// The scheme a plan or result names, [`UNNAMED_SCHEME`] when it names none; `None` for a tag
/// this version does not know.
fn named_scheme(tag: Option<&str>) -> Option<Scheme> {
    tag.map_or(Some(UNNAMED_SCHEME), Scheme::from_tag)
}

/// Takes a node's results only when there is exactly one for each disk of `keys` and each
/// confirms whole-block writes: a disk without a result was never written, and writes of parts
/// of blocks into a target opened without the chain below may have lost the rest of a block.
pub fn check_results(keys: &[u32], results: &[TransferResult]) -> Result<()> {
    let untrusted = |key: u32, why: &str| {
        Err(Error::new(
            crate::error::ErrorKind::Protocol,
            format!("disk {key}: {why}; the backup is discarded"),
        )
        .with_help("Run sendense-sna of the same version as the hub."))
    };
    for key in keys {
        match results.iter().filter(|r| r.key == *key).count() {
            1 => {}
            0 => return untrusted(*key, "the node reported no result for it"),
            _ => return untrusted(*key, "the node reported more than one result for it"),
        }
    }
    if let Some(r) = results.iter().find(|r| !keys.contains(&r.key)) {
        return untrusted(r.key, "the node reported a disk that was not planned");
    }
    match results.iter().find(|r| !r.whole_blocks) {
        None => Ok(()),
        Some(r) => untrusted(
            r.key,
            "the node did not confirm it wrote whole 64 KiB blocks only, so its image cannot be \
             trusted",
        ),
    }
}

/// The scheme a node reports it wrote the digests of a disk in.
pub fn result_scheme(result: &TransferResult) -> Result<Scheme> {
    named_scheme(result.digest_scheme.as_deref()).ok_or_else(|| {
        Error::new(
            crate::error::ErrorKind::Protocol,
            format!(
                "disk {}: the node wrote digests in the unknown scheme `{}`",
                result.key,
                result.digest_scheme.as_deref().unwrap_or_default()
            ),
        )
        .with_help("Run sendense-sna of the same version as the hub.")
    })
}

/// What the hub hands the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferPlan {
    /// The node protocol the plan is written in ([`PROTOCOL`]).
    #[serde(default = "first_protocol")]
    pub protocol: u32,
    /// The job, for events.
    pub job: Option<i64>,
    /// The disks.
    pub disks: Vec<TransferDisk>,
    /// Connections per disk.
    pub connections: u32,
    /// Requests in flight per connection.
    pub requests: u32,
    /// Largest request.
    pub request_size: u32,
}

/// A line of the node's output other than an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeLine {
    /// The digest of a block the node wrote as data.
    Digest {
        /// Disk key.
        disk: u32,
        /// The block's offset (a multiple of 64 KiB).
        offset: u64,
        /// Its record, 32 bytes in hex.
        record: String,
    },
    /// Whole blocks the node wrote as zeroes.
    Zeroes {
        /// Disk key.
        disk: u32,
        /// Start (a multiple of 64 KiB).
        offset: u64,
        /// Length.
        len: u64,
    },
    /// The last line: what each disk moved.
    Summary {
        /// The node protocol the node speaks.
        protocol: u32,
        /// Per disk.
        results: Vec<TransferResult>,
    },
}

/// Refuses a plan written in another protocol than this Sendense's.
pub fn check_plan_protocol(plan: &TransferPlan) -> Result<()> {
    check_plan_version(plan.protocol)
}

/// Refuses a plan of protocol `version` unless it is this Sendense's (read before the plan is
/// parsed: a plan of another version may not parse at all).
pub fn check_plan_version(version: u32) -> Result<()> {
    if version == PROTOCOL {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the transfer plan is written in node protocol {version}; this sendense-sna speaks \
         protocol {PROTOCOL}"
    ))
    .with_help("Run sendense-sna of the same version as the hub."))
}

/// Parses a plan, refusing one of another protocol version first.
pub fn parse_plan(text: &str) -> Result<TransferPlan> {
    let bad = |e: serde_json::Error| Error::invalid(format!("the transfer plan is not valid: {e}"));
    let raw: serde_json::Value = serde_json::from_str(text).map_err(bad)?;
    let version = raw.get("protocol").map_or(Some(first_protocol()), |p| {
        p.as_u64().and_then(|v| u32::try_from(v).ok())
    });
    check_plan_version(version.unwrap_or(0))?;
    serde_json::from_value(raw).map_err(bad)
}

/// Refuses a node that speaks another protocol than this hub.
pub fn check_node_protocol(protocol: u32) -> Result<()> {
    if protocol == PROTOCOL {
        return Ok(());
    }
    Err(Error::new(
        crate::error::ErrorKind::Protocol,
        format!("the node speaks node protocol {protocol}; this hub speaks protocol {PROTOCOL}"),
    )
    .with_help("Run sendense-sna of the same version as the hub."))
}

/// Where the digests of each disk go: the hub's digest file in process, the hub over the
/// protocol on a node. `None` records none.
pub type DigestsFor<'a> =
    dyn Fn(u32, Scheme) -> Result<Option<std::sync::Arc<dyn transfer::BlockDigests>>> + 'a;

/// What one disk moved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferResult {
    /// Disk key.
    pub key: u32,
    /// Tag of the scheme the digests were written in, when any were. Nodes that did not report
    /// it wrote `blake3k-64k`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_scheme: Option<String>,
    /// Every write and zeroing covered whole 64 KiB blocks (the hub opens targets without their
    /// backing chain, which needs that). Nodes that do not say so may have written parts of
    /// blocks.
    #[serde(default)]
    pub whole_blocks: bool,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// Bytes that were zero.
    pub bytes_zero: u64,
    /// Seconds.
    pub seconds: f64,
}

/// Runs a transfer: every disk in parallel, fulls onto their fresh (zero) targets skipping
/// zeroes, incrementals writing zeroes so the parent's old data is hidden.
pub async fn run_transfer(
    plan: &TransferPlan,
    sink: &SharedSink,
    cancel: &CancellationToken,
    digests_for: &DigestsFor<'_>,
) -> Result<Vec<TransferResult>> {
    check_plan_protocol(plan)?;
    let mut keys: Vec<u32> = plan.disks.iter().map(|d| d.key).collect();
    keys.sort_unstable();
    if keys.windows(2).any(|w| w[0] == w[1]) {
        return Err(Error::invalid("the transfer plan names a disk twice"));
    }
    // One disk failing stops the others through this child token; the caller's token only
    // reflects a real cancellation.
    let stop = cancel.child_token();
    let mut tasks = tokio::task::JoinSet::new();
    for disk in &plan.disks {
        let dst: NbdUrl = disk.target.parse()?;
        if disk.mode == BackupMode::Incremental && disk.bitmap.is_none() && disk.extents.is_none() {
            return Err(Error::invalid(format!(
                "incremental disk {} has neither a bitmap nor changed areas",
                disk.key
            )));
        }
        let mut req = CopyRequest::new(disk.source.parse()?, dst);
        req.changes = match (&disk.bitmap, &disk.extents) {
            (Some(b), _) => Some(transfer::Changes::Bitmap(b.clone())),
            (None, Some(list)) => {
                let changes = transfer::Changes::Extents(list.clone());
                changes.check(disk.size_bytes)?;
                Some(changes)
            }
            (None, None) => None,
        };
        req.destination_is_zero = disk.mode == BackupMode::Full;
        req.connections = plan.connections as usize;
        req.requests = plan.requests as usize;
        req.request_size = plan.request_size as usize;
        req.disk = disk.key;
        req.job = plan.job;
        req.reason = disk.reason.clone();
        let mut scheme = None;
        if disk.record_digests {
            let s = plan_scheme(disk)?;
            req.digests = digests_for(disk.key, s)?;
            scheme = Some(s.tag().to_string());
        }
        let sink = sink.clone();
        let cancel = stop.clone();
        tasks.spawn(async move {
            let report = transfer::copy(&req, &sink, &cancel)
                .await
                .map_err(|e| e.context(format!("disk {}", req.disk)))?;
            crate::crash::point("transfer.disk-copied");
            Ok::<_, Error>(TransferResult {
                key: req.disk,
                digest_scheme: scheme,
                whole_blocks: true,
                bytes_read: report.bytes_read,
                bytes_written: report.bytes_written,
                bytes_zero: report.bytes_zero,
                seconds: report.seconds,
            })
        });
    }
    let mut results = Vec::new();
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined
            .map_err(|e| Error::internal(format!("transfer task: {e}")))
            .and_then(|r| r)
        {
            Ok(r) => results.push(r),
            Err(e) => {
                if failure.is_none() {
                    // One disk failed: the backup fails; stop the others now.
                    stop.cancel();
                    failure = Some(e);
                } else if e.kind() != crate::ErrorKind::Cancelled {
                    tracing::warn!("{e}");
                }
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    results.sort_by_key(|r| r.key);
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_schemes_are_named_and_unnamed_means_the_keyed_one() {
        let json = r#"{"key": 2000, "mode": "full", "reason": "r", "source": "nbd://h/e",
                       "target": "nbd://h/t", "bitmap": null, "size_bytes": 1,
                       "record_digests": true}"#;
        let mut disk: TransferDisk = serde_json::from_str(json).unwrap();
        assert_eq!(disk.digest_scheme, None);
        assert_eq!(plan_scheme(&disk).unwrap(), Scheme::OffsetKeyed);
        disk.digest_scheme = Some("blake3-64k".into());
        assert_eq!(plan_scheme(&disk).unwrap(), Scheme::OffsetPrefixed);
        disk.digest_scheme = Some("md5-4k".into());
        let err = plan_scheme(&disk).unwrap_err();
        assert!(err.message().contains("md5-4k"), "{err}");

        let mut result: TransferResult = serde_json::from_str(
            r#"{"key": 2000, "bytes_read": 1, "bytes_written": 1,
                                     "bytes_zero": 0, "seconds": 0.1}"#,
        )
        .unwrap();
        assert_eq!(result_scheme(&result).unwrap(), Scheme::OffsetKeyed);
        result.digest_scheme = Some("blake3-64k".into());
        assert_eq!(result_scheme(&result).unwrap(), Scheme::OffsetPrefixed);
        result.digest_scheme = Some(Scheme::CURRENT.tag().into());
        let text = serde_json::to_string(&result).unwrap();
        assert!(text.contains(r#""digest_scheme":"blake3kz-64k""#), "{text}");
        result.digest_scheme = Some("md5-4k".into());
        assert!(result_scheme(&result).is_err());

        // Only one confirmed result per planned disk is taken.
        assert!(!result.whole_blocks, "absent means not confirmed");
        let err = check_results(&[2000], std::slice::from_ref(&result)).unwrap_err();
        assert!(err.message().contains("whole 64 KiB blocks"), "{err}");
        result.whole_blocks = true;
        check_results(&[2000], std::slice::from_ref(&result)).unwrap();
        let err = check_results(&[2000, 2001], std::slice::from_ref(&result)).unwrap_err();
        assert!(
            err.message()
                .contains("disk 2001: the node reported no result"),
            "{err}"
        );
        let twice = [result.clone(), result.clone()];
        assert!(check_results(&[2000], &twice).is_err());
        assert!(
            check_results(&[], &[result]).is_err(),
            "a disk that was not planned"
        );
    }

    #[test]
    fn plans_and_nodes_of_another_protocol_are_refused() {
        let old = r#"{"job": 7, "targets": "2000:nbd://h/t", "disks": [],
                      "connections": 1, "requests": 1, "request_size": 65536}"#;
        let plan: TransferPlan = serde_json::from_str(old).unwrap();
        assert_eq!(
            plan.protocol, 1,
            "a plan that names no protocol is protocol 1"
        );
        let err = check_plan_protocol(&plan).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(err.message().contains("node protocol 1"), "{err}");
        assert!(check_plan_protocol(&TransferPlan {
            protocol: PROTOCOL,
            ..plan
        })
        .is_ok());
        let err = check_node_protocol(3).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Protocol);
        check_node_protocol(PROTOCOL).unwrap();
        // The lines, as they travel.
        let line = NodeLine::Zeroes {
            disk: 2000,
            offset: 65536,
            len: 131072,
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(
            text,
            r#"{"zeroes":{"disk":2000,"offset":65536,"len":131072}}"#
        );
        assert_eq!(serde_json::from_str::<NodeLine>(&text).unwrap(), line);
    }
}
