//! What a backup asks of vSphere: tasks waited for, change tracking turned on, snapshots
//! created, read and removed.

use super::inventory::VmDisk;
use super::soap::{child, child_text, escape, xsi_type, MoRef, ServiceContent, Vim};
use crate::error::{Error, ErrorKind, Result};
use std::time::{Duration, Instant};

/// Longest a task may run (a quiesced snapshot of a busy VM takes minutes).
const TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A snapshot of a VM: its name and reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Its name.
    pub name: String,
    /// Its reference.
    pub moref: MoRef,
}

/// How a task failed: its fault type and message.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// The fault's type (`ApplicationQuiesceFault`).
    pub fault: String,
    /// Its message.
    pub message: String,
}

impl Vim {
    /// Waits for `task` to end; its result (a reference) on success, its fault otherwise.
    pub fn wait_task(
        &self,
        content: &ServiceContent,
        task: &MoRef,
        what: &str,
    ) -> Result<std::result::Result<Option<MoRef>, TaskFailure>> {
        let deadline = Instant::now() + TASK_TIMEOUT;
        let mut pause = Duration::from_millis(100);
        loop {
            let objects = self.properties(content, "Task", &["info"], &task.xml("obj"), "")?;
            let info = objects
                .first()
                .and_then(|(_, props)| props.iter().find(|(n, _)| n == "info"))
                .map(|(_, xml)| xml.clone())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        format!("{}: task {} has no info", self.what(), task.value),
                    )
                })?;
            let wrapped = super::inventory::wrap(&info);
            let doc = roxmltree::Document::parse(&wrapped).map_err(|e| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{}: task info: {e}", self.what()),
                )
            })?;
            let info = doc.root_element().first_element_child().ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{}: empty task info", self.what()),
                )
            })?;
            match child_text(info, "state").as_deref() {
                Some("success") => return Ok(Ok(child(info, "result").and_then(MoRef::of))),
                Some("error") => {
                    let error = child(info, "error");
                    let fault = error
                        .and_then(|e| child(e, "fault"))
                        .and_then(xsi_type)
                        .unwrap_or("a fault")
                        .to_string();
                    let message = error
                        .and_then(|e| child_text(e, "localizedMessage"))
                        .unwrap_or_default();
                    return Ok(Err(TaskFailure { fault, message }));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "{}: {what} (task {}) did not end within {} min",
                        self.what(),
                        task.value,
                        TASK_TIMEOUT.as_secs() / 60
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Runs task method `method` on `this` and waits for it; a failed task is an error naming
    /// its fault.
    fn run_task(
        &self,
        content: &ServiceContent,
        method: &str,
        this: &MoRef,
        args: &str,
        what: &str,
    ) -> Result<std::result::Result<Option<MoRef>, TaskFailure>> {
        let text = self.call(method, this, args)?;
        let doc = self.parse(&text)?;
        let task = MoRef::of(self.returnval(&doc, method)?).ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("{}: {method} answered without a task", self.what()),
            )
        })?;
        self.wait_task(content, &task, what)
    }

    fn task_error(&self, what: &str, f: TaskFailure) -> Error {
        Error::new(
            ErrorKind::External,
            format!(
                "{}: {what} failed: {} ({})",
                self.what(),
                f.message,
                f.fault
            ),
        )
    }

    /// Turns changed block tracking on for `vm`.
    pub fn enable_change_tracking(&self, content: &ServiceContent, vm: &MoRef) -> Result<()> {
        let what = "turning on change tracking";
        self.run_task(
            content,
            "ReconfigVM_Task",
            vm,
            "<spec><changeTrackingEnabled>true</changeTrackingEnabled></spec>",
            what,
        )?
        .map(drop)
        .map_err(|f| self.task_error(what, f))
    }

    /// Creates snapshot `name` of `vm` (no memory), quiesced or not; its reference, or how the
    /// task failed (the caller decides whether an unquiesced one will do).
    pub fn create_snapshot(
        &self,
        content: &ServiceContent,
        vm: &MoRef,
        name: &str,
        quiesce: bool,
    ) -> Result<std::result::Result<MoRef, TaskFailure>> {
        let args = format!(
            "<name>{}</name><description>Sendense backup; removed when the backup ends</description>\
             <memory>false</memory><quiesce>{quiesce}</quiesce>",
            escape(name)
        );
        let done = self.run_task(
            content,
            "CreateSnapshot_Task",
            vm,
            &args,
            "creating a snapshot",
        )?;
        Ok(match done {
            Ok(Some(snapshot)) => Ok(snapshot),
            Ok(None) => {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    format!("{}: the snapshot task named no snapshot", self.what()),
                ))
            }
            Err(f) => Err(f),
        })
    }

    /// Removes (consolidates) snapshot `snapshot`.
    pub fn remove_snapshot(&self, content: &ServiceContent, snapshot: &MoRef) -> Result<()> {
        let what = format!("removing snapshot {}", snapshot.value);
        self.run_task(
            content,
            "RemoveSnapshot_Task",
            snapshot,
            "<removeChildren>false</removeChildren><consolidate>true</consolidate>",
            &what,
        )?
        .map(drop)
        .map_err(|f| self.task_error(&what, f))
    }

    /// The disks of `snapshot` as it holds them (their change ids included).
    pub fn snapshot_disks(
        &self,
        content: &ServiceContent,
        snapshot: &MoRef,
    ) -> Result<Vec<VmDisk>> {
        let objects = self.properties(
            content,
            "VirtualMachineSnapshot",
            &["config.hardware.device"],
            &snapshot.xml("obj"),
            "",
        )?;
        let xml = objects
            .first()
            .and_then(|(_, props)| props.first())
            .map(|(_, xml)| xml.clone())
            .ok_or_else(|| {
                Error::not_found(format!(
                    "{}: snapshot {} is gone",
                    self.what(),
                    snapshot.value
                ))
            })?;
        super::inventory::parse_disks(&super::inventory::wrap(&xml)).map_err(|why| {
            Error::new(
                ErrorKind::Protocol,
                format!(
                    "{}: the devices of snapshot {}: {why}",
                    self.what(),
                    snapshot.value
                ),
            )
        })
    }

    /// Every snapshot of `vm` (the whole tree), by name and reference.
    pub fn snapshots(&self, content: &ServiceContent, vm: &MoRef) -> Result<Vec<SnapshotRef>> {
        let objects =
            self.properties(content, "VirtualMachine", &["snapshot"], &vm.xml("obj"), "")?;
        let Some(xml) = objects
            .first()
            .and_then(|(_, props)| props.iter().find(|(n, _)| n == "snapshot"))
            .map(|(_, xml)| xml.clone())
        else {
            // No snapshot at all: the property is unset.
            return Ok(Vec::new());
        };
        let text = super::inventory::wrap(&xml);
        let doc = roxmltree::Document::parse(&text).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("{}: snapshot tree: {e}", self.what()),
            )
        })?;
        Ok(doc
            .descendants()
            .filter(|n| n.has_tag_name("rootSnapshotList") || n.has_tag_name("childSnapshotList"))
            .filter_map(|n| {
                Some(SnapshotRef {
                    name: child_text(n, "name")?,
                    moref: child(n, "snapshot").and_then(MoRef::of)?,
                })
            })
            .collect())
    }
}

impl Vim {
    /// The areas of disk `key` of `snapshot` of `vm` that changed since `change_id`
    /// (`QueryChangedDiskAreas`, page after page to the disk's end `size`): sorted, disjoint,
    /// adjacent areas merged, inside the disk.
    pub fn changed_areas(
        &self,
        vm: &MoRef,
        snapshot: &MoRef,
        key: u32,
        change_id: &str,
        size: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::Protocol,
                format!("{}: changed areas of disk {key}: {why}", self.what()),
            )
        };
        let mut areas: Vec<(u64, u64)> = Vec::new();
        let mut start = 0u64;
        while start < size {
            let args = format!(
                "{}<deviceKey>{key}</deviceKey><startOffset>{start}</startOffset>\
                 <changeId>{}</changeId>",
                snapshot.xml("snapshot"),
                escape(change_id)
            );
            let text = self.call("QueryChangedDiskAreas", vm, &args)?;
            let doc = self.parse(&text)?;
            let ret = self.returnval(&doc, "QueryChangedDiskAreas")?;
            let number = |n: roxmltree::Node, name: &str| {
                child_text(n, name).and_then(|t| t.parse::<u64>().ok())
            };
            let (Some(from), Some(length)) = (number(ret, "startOffset"), number(ret, "length"))
            else {
                return Err(bad("an answer without its range".into()));
            };
            // Each page goes on where the last one ended, and covers something.
            if from != start || length == 0 {
                return Err(bad(format!(
                    "asked from offset {start}, answered {length} bytes from {from}"
                )));
            }
            let end = from.saturating_add(length).min(size);
            for area in ret.children().filter(|n| n.has_tag_name("changedArea")) {
                let (Some(a), Some(l)) = (number(area, "start"), number(area, "length")) else {
                    return Err(bad("an area without its range".into()));
                };
                let a_end = a.saturating_add(l);
                if l == 0 {
                    continue;
                }
                if a < from || a_end > end {
                    return Err(bad(format!("area {a}+{l} outside the page {from}..{end}")));
                }
                match areas.last_mut() {
                    Some((s, len)) if *s + *len > a => {
                        return Err(bad(format!("areas out of order or overlapping at {a}")))
                    }
                    Some((s, len)) if *s + *len == a => *len += l,
                    _ => areas.push((a, l)),
                }
            }
            start = end;
        }
        Ok(areas)
    }
}
