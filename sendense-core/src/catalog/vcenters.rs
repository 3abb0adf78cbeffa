//! vCenter rows: the vSphere servers VMware VMs are reached through. The password is not here:
//! it lives in a 0600 file of the state directory ([`crate::Sendense::vcenter_password_file`]).

use super::{unique_violation, Catalog};
use crate::error::{Error, Result};
use rusqlite::{OptionalExtension, Row};
use serde::Serialize;

/// A registered vCenter. Also its `--json` shape (no secret in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VcenterRecord {
    /// Catalog row id.
    #[serde(skip)]
    pub id: i64,
    /// Name chosen by the operator.
    pub name: String,
    /// `https://HOST:PORT/sdk`.
    pub url: String,
    /// The account Sendense logs in as.
    pub user: String,
    /// The pinned certificate thumbprint (`AA:BB:...`).
    pub thumbprint: String,
    /// What the server said it is, at the last check.
    pub full_name: Option<String>,
    /// Its API version, at the last check.
    pub api_version: Option<String>,
    /// When it was last reached.
    pub checked_at: Option<String>,
    /// When it was added.
    pub created_at: String,
}

/// What `vcenter add` records.
#[derive(Debug, Clone)]
pub struct NewVcenter {
    /// Name.
    pub name: String,
    /// URL.
    pub url: String,
    /// Account.
    pub user: String,
    /// Pinned thumbprint.
    pub thumbprint: String,
    /// What it said it is.
    pub full_name: String,
    /// Its API version.
    pub api_version: String,
}

const SELECT: &str = "SELECT id, name, url, user_name, thumbprint, full_name, api_version, \
     checked_at, created_at FROM vcenters";

fn from_row(r: &Row<'_>) -> rusqlite::Result<VcenterRecord> {
    Ok(VcenterRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
        user: r.get(3)?,
        thumbprint: r.get(4)?,
        full_name: r.get(5)?,
        api_version: r.get(6)?,
        checked_at: r.get(7)?,
        created_at: r.get(8)?,
    })
}

impl Catalog {
    /// Records a vCenter.
    pub fn insert_vcenter(&mut self, v: &NewVcenter) -> Result<VcenterRecord> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO vcenters (name, url, user_name, thumbprint, full_name, api_version, \
                 checked_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                (
                    &v.name,
                    &v.url,
                    &v.user,
                    &v.thumbprint,
                    &v.full_name,
                    &v.api_version,
                    &now,
                ),
            )
            .map_err(|e| {
                unique_violation(e, || {
                    Error::already_exists(format!("a vCenter named `{}` exists already", v.name))
                        .with_help("Choose another name, or see `sendense vcenter list`.")
                })
            })?;
            Ok(())
        })?;
        self.vcenter(&v.name)
    }

    /// Every vCenter, by name.
    pub fn vcenters(&self) -> Result<Vec<VcenterRecord>> {
        let mut stmt = self.conn().prepare(&format!("{SELECT} ORDER BY name"))?;
        let rows = stmt.query_map([], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One vCenter.
    pub fn vcenter(&self, name: &str) -> Result<VcenterRecord> {
        self.conn()
            .query_row(&format!("{SELECT} WHERE name = ?1"), [name], from_row)
            .optional()?
            .ok_or_else(|| {
                Error::not_found(format!("no vCenter named `{name}`"))
                    .with_help("See `sendense vcenter list`; add one with `sendense vcenter add`.")
            })
    }

    /// Records that vCenter `name` was reached now and what it said it is.
    pub fn set_vcenter_checked(
        &mut self,
        name: &str,
        full_name: &str,
        api_version: &str,
    ) -> Result<()> {
        let now = crate::time::now_rfc3339();
        self.write(|tx| {
            tx.execute(
                "UPDATE vcenters SET full_name = ?1, api_version = ?2, checked_at = ?3 \
                 WHERE name = ?4",
                (full_name, api_version, &now, name),
            )?;
            Ok(())
        })
    }

    /// Removes vCenter `name`.
    pub fn delete_vcenter(&mut self, name: &str) -> Result<VcenterRecord> {
        let v = self.vcenter(name)?;
        self.write(|tx| {
            tx.execute("DELETE FROM vcenters WHERE id = ?1", [v.id])?;
            Ok(())
        })?;
        Ok(v)
    }
}
