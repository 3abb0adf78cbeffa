//! VM and disk rows.

use super::{unique_violation, Catalog};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;

/// A disk of a VM. Its key is assigned once and never recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DiskRecord {
    /// Catalog row id.
    #[serde(skip)]
    pub id: i64,
    /// Disk key: 2000, 2001, ... in device order at first discovery.
    pub key: u32,
    /// What the disk is on its source: a canonical file path, a QEMU qdev/node name, a URL.
    pub identity: String,
    /// Image format when known (`qcow2`, `raw`).
    pub format: Option<String>,
    /// Virtual size in bytes.
    pub size_bytes: u64,
    /// The current change-tracking checkpoint on the source, if any.
    pub checkpoint: Option<String>,
    /// False when the disk has vanished from the source.
    pub present: bool,
}

/// A VM as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmRecord {
    /// Catalog row id.
    #[serde(skip)]
    pub id: i64,
    /// Name.
    pub name: String,
    /// Source kind: `image`, `qemu`, `nbd` or `vmware`.
    pub source: String,
    /// Source settings (QMP socket, hooks, ...).
    pub source_options: serde_json::Value,
    /// When it was registered.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Its disks, by key.
    pub disks: Vec<DiskRecord>,
    /// Completed backups of it.
    pub backups: u64,
    /// The node it runs on (`None`: this hub's host).
    pub node: Option<String>,
}

/// A disk to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDisk {
    /// The key to use; `None` takes the next free one (2000, 2001, ...).
    pub key: Option<u32>,
    /// Identity on the source.
    pub identity: String,
    /// Format, when known.
    pub format: Option<String>,
    /// Virtual size.
    pub size_bytes: u64,
}

const SELECT_VM: &str =
    "SELECT v.id, v.name, v.source_kind, v.source, v.created_at, v.updated_at, \
     (SELECT count(*) FROM backups b WHERE b.vm_id = v.id AND b.status = 'completed'), \
     (SELECT n.name FROM nodes n WHERE n.id = v.node_id) \
     FROM vms v";

fn vm_from_row(r: &Row<'_>) -> rusqlite::Result<VmRecord> {
    let source: String = r.get(3)?;
    Ok(VmRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        source: r.get(2)?,
        source_options: serde_json::from_str(&source).unwrap_or(serde_json::Value::Null),
        created_at: r.get(4)?,
        updated_at: r.get(5)?,
        disks: Vec::new(),
        backups: r.get::<_, i64>(6)? as u64,
        node: r.get(7)?,
    })
}

fn disk_from_row(r: &Row<'_>) -> rusqlite::Result<DiskRecord> {
    Ok(DiskRecord {
        id: r.get(0)?,
        key: r.get(1)?,
        identity: r.get(2)?,
        format: r.get(3)?,
        size_bytes: r.get::<_, i64>(4)? as u64,
        checkpoint: r.get(5)?,
        present: r.get(6)?,
    })
}

/// The first disk key.
pub const FIRST_DISK_KEY: u32 = 2000;

impl Catalog {
    /// Registers a VM with its disks, keyed 2000, 2001, ... in the given order.
    pub fn insert_vm(
        &mut self,
        name: &str,
        source_kind: &str,
        source_options: &serde_json::Value,
        disks: &[NewDisk],
    ) -> Result<VmRecord> {
        self.insert_vm_on(name, source_kind, source_options, disks, None)
    }

    /// [`Catalog::insert_vm`] for a VM on node `node_id` (`None`: this hub's host).
    pub fn insert_vm_on(
        &mut self,
        name: &str,
        source_kind: &str,
        source_options: &serde_json::Value,
        disks: &[NewDisk],
        node_id: Option<i64>,
    ) -> Result<VmRecord> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO vms (name, source_kind, source, created_at, updated_at, node_id) \
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                (name, source_kind, source_options.to_string(), &now, node_id),
            )
            .map_err(|e| {
                unique_violation(e, || {
                    Error::already_exists(format!("a VM named `{name}` is already registered"))
                        .with_help("Choose another name, or remove the old one with `sendense vm remove`.")
                })
            })?;
            let vm_id = tx.last_insert_rowid();
            let mut next = FIRST_DISK_KEY;
            for disk in disks {
                let key = disk.key.unwrap_or(next);
                next = next.max(key + 1);
                tx.execute(
                    "INSERT INTO vm_disks (vm_id, disk_key, identity, format, size_bytes, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    (
                        vm_id,
                        key,
                        &disk.identity,
                        &disk.format,
                        disk.size_bytes as i64,
                        &now,
                    ),
                )
                .map_err(|e| {
                    unique_violation(e, || {
                        Error::invalid(format!("disk {} is given twice", disk.identity))
                            .with_help("Name each disk once.")
                    })
                })?;
            }
            Ok(())
        })?;
        self.vm(name)
    }

    /// All VMs with their disks, by name.
    pub fn vms(&self) -> Result<Vec<VmRecord>> {
        let mut stmt = self
            .conn()
            .prepare(&format!("{SELECT_VM} ORDER BY v.name"))?;
        let mut vms = stmt
            .query_map([], vm_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for vm in &mut vms {
            vm.disks = self.disks(vm.id)?;
        }
        Ok(vms)
    }

    /// The VM called `name`, with its disks.
    pub fn vm(&self, name: &str) -> Result<VmRecord> {
        let mut vm = self
            .conn()
            .query_row(
                &format!("{SELECT_VM} WHERE v.name = ?1"),
                [name],
                vm_from_row,
            )
            .optional()?
            .ok_or_else(|| self.vm_not_found(name))?;
        vm.disks = self.disks(vm.id)?;
        Ok(vm)
    }

    fn vm_not_found(&self, name: &str) -> Error {
        let names: Vec<String> = self
            .conn()
            .prepare("SELECT name FROM vms ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_default();
        let help = if names.is_empty() {
            "No VMs are registered; add one with `sendense vm add NAME --disk PATH`.".to_string()
        } else {
            format!("Registered VMs: {}.", names.join(", "))
        };
        Error::not_found(format!("no VM named `{name}`")).with_help(help)
    }

    fn disks(&self, vm_id: i64) -> Result<Vec<DiskRecord>> {
        let mut stmt = self.conn().prepare(
            "SELECT id, disk_key, identity, format, size_bytes, checkpoint, present \
             FROM vm_disks WHERE vm_id = ?1 ORDER BY disk_key",
        )?;
        let rows = stmt.query_map([vm_id], disk_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The VM of this hub (not of a node, whose paths are the node's) that already has a disk
    /// with this identity, if any.
    pub fn vm_with_disk_identity(&self, identity: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT v.name FROM vm_disks d JOIN vms v ON v.id = d.vm_id \
                 WHERE d.identity = ?1 AND v.node_id IS NULL",
                [identity],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// The identity of every disk of this hub's own VMs (not of a node's) with its VM's name.
    pub fn disk_identities(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn().prepare(
            "SELECT v.name, d.identity FROM vm_disks d JOIN vms v ON v.id = d.vm_id \
             WHERE v.node_id IS NULL ORDER BY d.id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Matches freshly discovered disks to the VM's disks by identity: known disks get their new
    /// size and are marked present, new disks get the next free key, missing ones are marked
    /// vanished. Keys are never reassigned. Returns the updated VM.
    pub fn sync_vm_disks(&mut self, vm_id: i64, found: &[NewDisk]) -> Result<()> {
        let now = crate::time::now_rfc3339();
        // Unsynced: what a power loss takes back, the next discovery finds again with the same
        // keys (they follow from the rows kept), and no backup can use a key that is not
        // durable — its commit syncs everything written before it.
        self.write_unsynced(|tx| {
            let known: Vec<(i64, String, u32)> = {
                let mut stmt = tx.prepare("SELECT id, identity, disk_key FROM vm_disks WHERE vm_id = ?1")?;
                let rows = stmt.query_map([vm_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut next = known.iter().map(|k| k.2 + 1).max().unwrap_or(FIRST_DISK_KEY);
            let mut used: Vec<u32> = Vec::new();
            for (id, identity, _) in &known {
                let present = found.iter().any(|f| &f.identity == identity);
                tx.execute("UPDATE vm_disks SET present = ?1 WHERE id = ?2", (present, id))?;
            }
            for f in found {
                match known.iter().find(|k| k.1 == f.identity) {
                    Some((id, _, _)) => {
                        tx.execute(
                            // The format an image file was added with stays: one that reads as
                            // another now was replaced or damaged, and the source refuses it.
                            "UPDATE vm_disks SET size_bytes = ?1, format = CASE \
                             WHEN (SELECT source_kind FROM vms WHERE id = ?4) = 'image' THEN coalesce(format, ?2) \
                             ELSE coalesce(?2, format) END WHERE id = ?3",
                            (f.size_bytes as i64, &f.format, id, vm_id),
                        )?;
                    }
                    None => {
                        // The source's own key when no disk of the VM ever had it (a disk
                        // replaced at the same key is another disk: it never takes the old
                        // one's key, so it never continues its chain).
                        let taken = |k: u32| known.iter().any(|x| x.2 == k) || used.contains(&k);
                        let key = match f.key {
                            Some(k) if !taken(k) => k,
                            _ => {
                                while taken(next) {
                                    next += 1;
                                }
                                next
                            }
                        };
                        used.push(key);
                        tx.execute(
                            "INSERT INTO vm_disks (vm_id, disk_key, identity, format, size_bytes, created_at) \
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                            (vm_id, key, &f.identity, &f.format, f.size_bytes as i64, &now),
                        )?;
                    }
                }
            }
            tx.execute("UPDATE vms SET updated_at = ?1 WHERE id = ?2", (&now, vm_id))?;
            Ok(())
        })
    }

    /// Removes a VM and its disks; refused while backups of it exist.
    pub fn delete_vm(&mut self, name: &str) -> Result<VmRecord> {
        let vm = self.vm(name)?;
        self.write(|tx| {
            let backups: i64 =
                tx.query_row("SELECT count(*) FROM backups WHERE vm_id = ?1", [vm.id], |r| {
                    r.get(0)
                })?;
            if backups > 0 {
                return Err(Error::refused(format!(
                    "VM `{name}` still has {backups} backup(s)"
                ))
                .with_help(format!(
                    "Delete them first (`sendense backup list --vm {name}`), or keep the VM registered."
                )));
            }
            let running: i64 = tx.query_row(
                "SELECT count(*) FROM jobs WHERE vm_id = ?1 AND status IN ('pending', 'running')",
                [vm.id],
                |r| r.get(0),
            )?;
            if running > 0 {
                return Err(Error::busy(format!("VM `{name}` has a job running"))
                    .with_help("Wait for it to finish or cancel it with `sendense job cancel ID`."));
            }
            tx.execute("DELETE FROM vms WHERE id = ?1", [vm.id])?;
            Ok(())
        })?;
        Ok(vm)
    }
}
