//! A VMware VM reached through a vCenter (or ESXi host) over the vSphere API. Its disks are
//! keyed by their real device keys and identified by key and backing. The checkpoint of a
//! disk is its CBT change id.

use super::{CheckpointState, DiscoveredDisk, SnapshotDisk, SnapshotRequest, Source, SourceHost};
use crate::catalog::DiskRecord;
use crate::error::{Error, Result};
use crate::vsphere::{MoRef, ServiceContent, Vim, VmInfo};

/// A VM of a vCenter, with a logged-in session.
#[derive(Debug)]
pub struct VmwareSource {
    vim: Vim,
    content: ServiceContent,
    vm: MoRef,
}

impl VmwareSource {
    /// The VM `moref` of the vCenter session `vim` (logged in).
    pub fn new(vim: Vim, content: ServiceContent, moref: &str) -> VmwareSource {
        VmwareSource {
            vim,
            content,
            vm: MoRef::new("VirtualMachine", moref),
        }
    }

    /// What vSphere says about the VM now.
    pub fn info(&self) -> Result<VmInfo> {
        self.vim.vm_info(&self.content, &self.vm)
    }
}

impl Drop for VmwareSource {
    fn drop(&mut self) {
        self.vim.logout(&self.content);
    }
}

/// The disks of `info` as a source reports them.
pub fn discovered(info: &VmInfo) -> Vec<DiscoveredDisk> {
    info.disks
        .iter()
        .map(|d| DiscoveredDisk {
            identity: d.identity(),
            format: None,
            size_bytes: d.capacity_bytes,
            detail: format!("{} {}", d.slot, d.file),
            key: Some(d.key),
        })
        .collect()
}

impl Source for VmwareSource {
    fn kind(&self) -> &'static str {
        "vmware"
    }

    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>> {
        Ok(discovered(&self.info()?))
    }

    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>> {
        let info = self.info()?;
        Ok(disks
            .iter()
            .map(|d| {
                let Some(now) = info.disks.iter().find(|x| x.identity() == d.identity) else {
                    return CheckpointState::Missing;
                };
                match (&d.checkpoint, &now.change_id) {
                    (None, _) => CheckpointState::None,
                    (Some(_), None) => CheckpointState::Missing,
                    (Some(_), Some(_)) if !info.change_tracking => CheckpointState::Missing,
                    (Some(_), Some(_)) => CheckpointState::Present,
                }
            })
            .collect())
    }

    fn snapshot(
        &mut self,
        _host: &mut dyn SourceHost,
        _req: &SnapshotRequest,
    ) -> Result<Vec<SnapshotDisk>> {
        Err(not_yet())
    }

    fn finish(&mut self, _host: &mut dyn SourceHost, _success: bool) -> Result<()> {
        Ok(())
    }
}

/// Backups of VMware VMs are refused until their data path is there.
pub fn not_yet() -> Error {
    Error::refused("backups of VMware VMs are not available in this version")
        .with_help("The VM's disks and their keys can be inspected (`sendense vm show`).")
}
