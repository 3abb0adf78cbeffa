//! Node rows: the hosts whose `sendense-sna` the hub drives over SSH.

use super::{unique_violation, Catalog};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;
use std::path::PathBuf;

/// A registered node. Also its `--json` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    /// Catalog row id.
    #[serde(skip)]
    pub id: i64,
    /// Name chosen by the operator.
    pub name: String,
    /// Host name or address the hub dials.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// The account on the node.
    pub user: String,
    /// The node's pinned host key fingerprint (`SHA256:...`).
    pub host_key: String,
    /// The private key the hub signs in with; `None`: the ssh-agent at `SSH_AUTH_SOCK`.
    pub identity: Option<PathBuf>,
    /// The `sendense-sna` the hub runs there.
    pub sna_path: String,
    /// Its version, as the last check found it.
    pub sna_version: Option<String>,
    /// When the node was last reached.
    pub checked_at: Option<String>,
    /// When it was added.
    pub created_at: String,
    /// The VMs that run there.
    pub vms: Vec<String>,
}

/// What `node add` records.
#[derive(Debug, Clone)]
pub struct NewNode {
    /// Name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Account.
    pub user: String,
    /// Pinned host key fingerprint.
    pub host_key: String,
    /// Private key file (none: the agent).
    pub identity: Option<PathBuf>,
    /// `sendense-sna` on the node.
    pub sna_path: String,
    /// Its version.
    pub sna_version: String,
}

const SELECT: &str = "SELECT n.id, n.name, n.host, n.port, n.ssh_user, n.host_key, n.identity, \
     n.sna_path, n.sna_version, n.checked_at, n.created_at FROM nodes n";

fn from_row(r: &Row<'_>) -> rusqlite::Result<NodeRecord> {
    Ok(NodeRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        host: r.get(2)?,
        port: r.get(3)?,
        user: r.get(4)?,
        host_key: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        identity: r.get::<_, Option<String>>(6)?.map(PathBuf::from),
        sna_path: r
            .get::<_, Option<String>>(7)?
            .unwrap_or_else(|| "sendense-sna".into()),
        sna_version: r.get(8)?,
        checked_at: r.get(9)?,
        created_at: r.get(10)?,
        vms: Vec::new(),
    })
}

impl Catalog {
    /// Records a node.
    pub fn insert_node(&mut self, n: &NewNode) -> Result<NodeRecord> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO nodes (name, host, port, ssh_user, host_key, identity, sna_path, \
                 sna_version, checked_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
                (
                    &n.name,
                    &n.host,
                    n.port,
                    &n.user,
                    &n.host_key,
                    n.identity.as_ref().map(|p| p.to_string_lossy().into_owned()),
                    &n.sna_path,
                    &n.sna_version,
                    &now,
                ),
            )
            .map_err(|e| {
                unique_violation(e, || {
                    Error::already_exists(format!("a node named `{}` exists already", n.name))
                        .with_help("Choose another name, or see `sendense node list`.")
                })
            })?;
            Ok(())
        })?;
        self.node(&n.name)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let mut stmt = self.conn().prepare(&format!("{SELECT} ORDER BY n.name"))?;
        let mut list = stmt
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for n in &mut list {
            n.vms = self.node_vms(n.id)?;
        }
        Ok(list)
    }

    /// One node.
    pub fn node(&self, name: &str) -> Result<NodeRecord> {
        let mut n = self
            .conn()
            .query_row(&format!("{SELECT} WHERE n.name = ?1"), [name], from_row)
            .optional()?
            .ok_or_else(|| {
                Error::not_found(format!("no node named `{name}`"))
                    .with_help("See `sendense node list`; add one with `sendense node add`.")
            })?;
        n.vms = self.node_vms(n.id)?;
        Ok(n)
    }

    fn node_vms(&self, id: i64) -> Result<Vec<String>> {
        let mut stmt = self
            .conn()
            .prepare("SELECT name FROM vms WHERE node_id = ?1 ORDER BY name")?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Records that node `name` was reached now, running `sna_version`.
    pub fn set_node_checked(&mut self, name: &str, sna_version: &str) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "UPDATE nodes SET sna_version = ?1, checked_at = ?2 WHERE name = ?3",
                (sna_version, &now, name),
            )?;
            Ok(())
        })
    }

    /// Records the `sendense-sna` installed on node `name`.
    pub fn set_node_sna(&mut self, name: &str, sna_path: &str, sna_version: &str) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "UPDATE nodes SET sna_path = ?1, sna_version = ?2, checked_at = ?3 WHERE name = ?4",
                (sna_path, sna_version, &now, name),
            )?;
            Ok(())
        })
    }

    /// Removes node `name`; refused while VMs run there.
    pub fn delete_node(&mut self, name: &str) -> Result<NodeRecord> {
        let n = self.node(name)?;
        if !n.vms.is_empty() {
            return Err(
                Error::refused(format!("node `{name}` runs VM(s) {}", n.vms.join(", "))).with_help(
                    "Remove those VMs first (`sendense vm remove VM`); their backups stay.",
                ),
            );
        }
        self.write(|tx| {
            tx.execute("DELETE FROM nodes WHERE id = ?1", [n.id])?;
            Ok(())
        })?;
        Ok(n)
    }
}
