//! VMs as the handle sees them: register (image files, a QEMU VM, NBD exports), discover,
//! match disks by identity, show their checkpoints, remove. Naming and image rules:
//! [`crate::vm`].

use crate::catalog::{NewDisk, VmRecord};
use crate::error::{Error, Result};
use crate::sendense::Sendense;
use crate::source::Source;
use crate::vm::{probe_image_disk, validate_name};
use std::path::Path;

/// A VM's disk with the live state of its checkpoint. Also the `vm show --json` disk shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskStatus {
    /// The disk as recorded.
    #[serde(flatten)]
    pub disk: crate::catalog::DiskRecord,
    /// Its checkpoint on the source now.
    pub checkpoint_state: crate::source::CheckpointState,
}

impl Sendense {
    /// All VMs.
    pub fn vms(&self) -> Result<Vec<VmRecord>> {
        self.catalog().vms()
    }

    /// One VM.
    pub fn vm(&self, name: &str) -> Result<VmRecord> {
        self.catalog().vm(name)
    }

    /// Unregisters a VM; refused while backups of it exist.
    pub fn remove_vm(&mut self, name: &str) -> Result<VmRecord> {
        self.catalog_mut().delete_vm(name)
    }

    fn hook_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.config().hook_timeout_secs)
    }

    /// The disks of a running QEMU VM, without registering anything.
    pub fn discover_qemu(&self, qmp: &Path) -> Result<Vec<crate::source::DiscoveredDisk>> {
        crate::source::qemu::QemuSource::new(qmp.to_path_buf()).discover()
    }

    /// Registers a VM made of disk image files (the `image` source). Disk keys are 2000, 2001,
    /// ... in the given order.
    pub fn add_image_vm(
        &mut self,
        name: &str,
        disks: &[std::path::PathBuf],
    ) -> Result<crate::catalog::VmRecord> {
        validate_name("VM", name)?;
        if disks.is_empty() {
            return Err(
                Error::invalid(format!("VM `{name}` needs at least one disk"))
                    .with_help("Pass --disk PATH once per disk."),
            );
        }
        self.ensure_new_vm(name)?;
        let mut probed = Vec::with_capacity(disks.len());
        for path in disks {
            let disk = probe_image_disk(path)?;
            if probed
                .iter()
                .any(|d: &crate::catalog::NewDisk| d.identity == disk.identity)
            {
                return Err(Error::invalid(format!(
                    "disk {} is given more than once",
                    disk.identity
                ))
                .with_help("Name each disk once; two keys must never share one disk."));
            }
            if let Some(other) = self.catalog().vm_with_disk_identity(&disk.identity)? {
                return Err(Error::already_exists(format!(
                    "disk {} already belongs to VM `{other}`",
                    disk.identity
                ))
                .with_help("A disk can be backed up as part of one VM only."));
            }
            probed.push(disk);
        }
        self.refuse_shared_files(&probed)?;
        self.catalog_mut()
            .insert_vm(name, "image", &serde_json::json!({}), &probed)
    }

    /// Refuses new disks (image files, or the files a QEMU VM's disks are) that are one file
    /// under two names (hard links) — each other, or a disk of a registered VM: two keys or two VMs on one file would destroy each other's
    /// change tracking. Files are the same when device and inode are.
    fn refuse_shared_files(&self, new: &[NewDisk]) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let file_id = |path: &str| {
            std::fs::metadata(path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| (m.dev(), m.ino()))
        };
        let mut known: Vec<(String, String, (u64, u64))> = Vec::new();
        for (vm, identity) in self.catalog().disk_identities()? {
            if let Some(id) = file_id(&identity) {
                known.push((format!("disk {identity} of VM `{vm}`"), identity, id));
            }
        }
        for d in new {
            let Some(id) = file_id(&d.identity) else {
                continue;
            };
            if let Some((what, _, _)) = known.iter().find(|(_, _, k)| *k == id) {
                return Err(Error::already_exists(format!(
                    "disk {} is the same file as {what} (a hard link)",
                    d.identity
                ))
                .with_help("A disk can be backed up as part of one VM only, under one name."));
            }
            known.push((format!("disk {}", d.identity), d.identity.clone(), id));
        }
        Ok(())
    }

    /// Registers a live QEMU VM reached through its QMP socket; its disks are discovered and
    /// keyed 2000, 2001, ... in device order.
    pub fn add_qemu_vm(&mut self, name: &str, qmp: &Path) -> Result<crate::catalog::VmRecord> {
        validate_name("VM", name)?;
        self.ensure_new_vm(name)?;
        crate::fsutil::require_utf8("QMP socket", qmp)?;
        let socket = std::fs::canonicalize(qmp).map_err(|e| {
            Error::io("QMP socket", qmp, e)
                .with_help("Pass the path given to QEMU's -qmp unix:PATH,server=on.")
        })?;
        let disks: Vec<NewDisk> = self
            .discover_qemu(&socket)?
            .into_iter()
            .map(new_disk)
            .collect();
        if disks.is_empty() {
            return Err(Error::invalid(format!(
                "the VM behind {} has no disks",
                socket.display()
            )));
        }
        crate::fsutil::require_utf8("QMP socket", &socket)?;
        self.refuse_shared_files(&disks)?;
        let opts = serde_json::json!({ "qmp": socket.to_string_lossy() });
        self.catalog_mut().insert_vm(name, "qemu", &opts, &disks)
    }

    /// The disks of a running QEMU VM on node `node`, whose QMP socket is `qmp` there, as the
    /// node's `sendense-sna` finds them; nothing is registered.
    pub fn discover_node_qemu(
        &self,
        node: &str,
        qmp: &str,
    ) -> Result<Vec<crate::source::DiscoveredDisk>> {
        let n = self.catalog().node(node)?;
        check_node_path("QMP socket", qmp)?;
        let opts = serde_json::json!({ "qmp": qmp });
        self.node_source(&n, "qemu", &opts)?.discover()
    }

    /// Registers a live QEMU VM on node `node`, reached through its QMP socket `qmp` there: a
    /// path on the node, which the hub never opens — the node's `sendense-sna` discovers the
    /// disks, keyed 2000, 2001, ... in device order.
    pub fn add_node_qemu_vm(
        &mut self,
        name: &str,
        node: &str,
        qmp: &str,
    ) -> Result<crate::catalog::VmRecord> {
        validate_name("VM", name)?;
        self.ensure_new_vm(name)?;
        let n = self.catalog().node(node)?;
        check_node_path("QMP socket", qmp)?;
        let opts = serde_json::json!({ "qmp": qmp });
        let disks: Vec<NewDisk> = self
            .node_source(&n, "qemu", &opts)?
            .discover()?
            .into_iter()
            .map(new_disk)
            .collect();
        if disks.is_empty() {
            return Err(Error::invalid(format!(
                "the VM behind {qmp} on node `{node}` has no disks"
            )));
        }
        self.catalog_mut()
            .insert_vm_on(name, "qemu", &opts, &disks, Some(n.id))
    }

    /// Registers a VM made of disk image files on node `node` (paths there, which the hub
    /// never opens): the node's `sendense-sna` inspects them; disk keys are 2000, 2001, ... in
    /// the given order.
    pub fn add_node_image_vm(
        &mut self,
        name: &str,
        node: &str,
        files: &[String],
    ) -> Result<crate::catalog::VmRecord> {
        validate_name("VM", name)?;
        if files.is_empty() {
            return Err(
                Error::invalid(format!("VM `{name}` needs at least one disk"))
                    .with_help("Pass --disk PATH once per disk."),
            );
        }
        self.ensure_new_vm(name)?;
        let n = self.catalog().node(node)?;
        for f in files {
            check_node_path("disk", f)?;
        }
        let opts = serde_json::json!({ "files": files });
        let disks: Vec<NewDisk> = self
            .node_source(&n, "image", &opts)?
            .discover()?
            .into_iter()
            .map(new_disk)
            .collect();
        for (i, d) in disks.iter().enumerate() {
            if disks[..i].iter().any(|e| e.identity == d.identity) {
                return Err(Error::invalid(format!(
                    "disk {} on node `{node}` is given more than once",
                    d.identity
                ))
                .with_help("Name each disk once; two keys must never share one disk."));
            }
        }
        // A file of the node belongs to one VM on that node.
        for vm in self.catalog().vms()? {
            if vm.node.as_deref() != Some(node) {
                continue;
            }
            if let Some(d) = disks
                .iter()
                .find(|d| vm.disks.iter().any(|e| e.identity == d.identity))
            {
                return Err(Error::already_exists(format!(
                    "disk {} on node `{node}` already belongs to VM `{}`",
                    d.identity, vm.name
                ))
                .with_help("A disk can be backed up as part of one VM only."));
            }
        }
        self.catalog_mut()
            .insert_vm_on(name, "image", &serde_json::json!({}), &disks, Some(n.id))
    }

    /// A source session with the node's `sendense-sna` over SSH.
    pub(crate) fn node_source(
        &self,
        n: &crate::catalog::NodeRecord,
        kind: &str,
        opts: &serde_json::Value,
    ) -> Result<crate::source::node::NodeSource> {
        let session = self.connect_node(n)?;
        crate::source::node::NodeSource::start_remote(session, &n.sna_path, kind, opts)
    }

    /// Registers a VM whose disks are existing NBD exports (one URL per disk, in order), with
    /// optional hook command lines (split into arguments here; never run through a shell).
    pub fn add_nbd_vm(
        &mut self,
        name: &str,
        urls: &[String],
        pre_hook: Option<&str>,
        post_hook: Option<&str>,
    ) -> Result<crate::catalog::VmRecord> {
        validate_name("VM", name)?;
        self.ensure_new_vm(name)?;
        if urls.is_empty() {
            return Err(Error::invalid(format!(
                "VM `{name}` needs at least one --nbd URL"
            )));
        }
        let mut disks = Vec::new();
        for url in urls {
            let parsed: crate::nbd::NbdUrl = url.parse()?;
            let size = crate::rt::block_on(async {
                let c = crate::nbd::NbdClient::connect(&parsed, &Default::default()).await?;
                let size = c.size();
                c.disconnect().await;
                Ok::<u64, Error>(size)
            })??;
            disks.push(NewDisk {
                key: None,
                identity: parsed.to_string(),
                format: None,
                size_bytes: size,
            });
        }
        let split = |h: Option<&str>| h.map(crate::source::nbd::split_command).transpose();
        let opts =
            serde_json::json!({ "pre_hook": split(pre_hook)?, "post_hook": split(post_hook)? });
        self.catalog_mut().insert_vm(name, "nbd", &opts, &disks)
    }

    fn ensure_new_vm(&self, name: &str) -> Result<()> {
        if self.catalog().vm(name).is_ok() {
            return Err(Error::already_exists(format!(
                "a VM named `{name}` is already registered"
            ))
            .with_help("Choose another name, or remove the old one with `sendense vm remove`."));
        }
        Ok(())
    }

    /// The VM's source, for `job` when it works for one (a source on a node is a process,
    /// recorded with it).
    pub fn source_of(
        &self,
        vm: &crate::catalog::VmRecord,
        job: Option<i64>,
    ) -> Result<Box<dyn crate::source::Source>> {
        if let Some(node) = &vm.node {
            let n = self.catalog().node(node)?;
            // An image VM's files are its disks' identities, as they are recorded now.
            let options = match vm.source.as_str() {
                "image" => serde_json::json!({
                    "files": vm.disks.iter().map(|d| d.identity.clone()).collect::<Vec<_>>()
                }),
                // The node logs in to the vCenter itself: the session carries the login.
                "vmware" => serde_json::to_value(self.vmware_open(vm)?)
                    .map_err(|e| Error::internal(format!("a VMware source's settings: {e}")))?,
                _ => vm.source_options.clone(),
            };
            return Ok(Box::new(self.node_source(&n, &vm.source, &options)?));
        }
        if vm.source == "vmware" {
            return Ok(Box::new(self.vmware_source(vm)?));
        }
        if self.config().source_side == crate::config::SourceSide::Node && vm.source == "qemu" {
            let sna = crate::backup::process::sna_binary(self.config().sna_path.as_deref());
            return Ok(Box::new(crate::source::node::NodeSource::start(
                &sna,
                vm,
                &self.ledger(job),
            )?));
        }
        crate::source::for_vm(vm, self.hook_timeout())
    }

    /// Re-discovers a VM's disks and matches them by identity (new disks get the next free key;
    /// vanished disks are marked). Returns the updated VM.
    pub fn refresh_vm_disks(&mut self, name: &str) -> Result<crate::catalog::VmRecord> {
        let vm = self.vm(name)?;
        let found = self.source_of(&vm, None)?.discover()?;
        self.record_discovered_disks(name, found)
    }

    /// Records what a source discovered as the disks of VM `name` (matched by identity; new
    /// disks get the next keys, missing ones are marked absent).
    pub(crate) fn record_discovered_disks(
        &mut self,
        name: &str,
        found: Vec<crate::source::DiscoveredDisk>,
    ) -> Result<crate::catalog::VmRecord> {
        let vm = self.vm(name)?;
        let found: Vec<NewDisk> = found.into_iter().map(new_disk).collect();
        self.catalog_mut().sync_vm_disks(vm.id, &found)?;
        self.vm(name)
    }

    /// Each disk with the live state of its checkpoint on the source.
    pub fn disk_status(&self, vm: &crate::catalog::VmRecord) -> Result<Vec<DiskStatus>> {
        let states = self.source_of(vm, None)?.checkpoints(&vm.disks)?;
        Ok(vm
            .disks
            .iter()
            .cloned()
            .zip(states)
            .map(|(disk, checkpoint_state)| DiskStatus {
                disk,
                checkpoint_state,
            })
            .collect())
    }
}

/// A discovered disk as a disk to register (its key assigned by the catalog).
fn new_disk(d: crate::source::DiscoveredDisk) -> NewDisk {
    NewDisk {
        key: d.key,
        identity: d.identity,
        format: d.format,
        size_bytes: d.size_bytes,
    }
}

/// A path on a node (it is given to the node, never opened here): absolute, plain.
fn check_node_path(what: &str, path: &str) -> Result<()> {
    let plain = path.starts_with('/')
        && !path.split('/').any(|c| c == "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@:".contains(c));
    if plain {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} `{path}` is not an absolute plain path on the node"
        ))
        .with_help("Give the path as the node sees it, e.g. /run/qemu/pgtest1.qmp."))
    }
}
