//! VM registration rules that do not need a source: names and image disks.

use crate::catalog::NewDisk;
use crate::error::{Error, Result};
use crate::source::Source;
use crate::tools::qemu_img;
use std::path::Path;

/// Longest VM or repository name, in bytes (a VM name becomes a directory name in repositories).
pub const MAX_NAME_BYTES: usize = 200;

/// Names that would collide with a repository's own layout.
const RESERVED_NAMES: &[&str] = &[crate::repo::META_FILE, "manifests", "locks"];

/// Checks a VM or repository name (`what` is "VM" or "repository"). A VM name becomes a
/// directory in every repository, so names must be safe single path components: letters and
/// digits (Unicode ones too), `.`, `-` and `_`, not starting with `.` or `-`, at most
/// [`MAX_NAME_BYTES`], and none of the repository's own names. The same rule holds for names
/// read from a repository (`repo import`), which are untrusted input.
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid {what} name `{}`: {why}",
            name.escape_debug()
        ))
        .with_help(
            "Use letters, digits, `.`, `-` and `_`; no leading `.` or `-`, at most 200 bytes.",
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_BYTES {
        return bad("it is longer than 200 bytes");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("it starts with `.` or `-`");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return bad(&format!("it contains {c:?}"));
    }
    if RESERVED_NAMES.contains(&name) {
        return bad("that name is part of a repository's own layout");
    }
    Ok(())
}

/// Probes one image file for `vm add --disk`: canonical path, format and virtual size.
pub fn probe_image_disk(path: &Path) -> Result<NewDisk> {
    crate::fsutil::require_utf8("disk", path)?;
    let canonical = image_disk_path(path)?;
    crate::fsutil::require_utf8("disk", &canonical)?;
    let info = qemu_img::info(&canonical)?;
    Ok(NewDisk {
        key: None,
        identity: canonical.to_string_lossy().into_owned(),
        size_bytes: info.disk_size(&canonical),
        format: Some(info.format),
    })
}

/// The canonical path of a disk image file (or block device), which is the disk's identity.
pub fn image_disk_path(path: &Path) -> Result<std::path::PathBuf> {
    let canonical = std::fs::canonicalize(path).map_err(|e| {
        Error::io("disk image", path, e)
            .with_help("Pass the path of an existing QCOW2 or raw image file.")
    })?;
    if !canonical.is_file() && !is_block_device(&canonical) {
        return Err(Error::invalid(format!(
            "disk {} is not a regular file or block device",
            canonical.display()
        ))
        .with_help("Pass the path of a QCOW2 or raw image file."));
    }
    Ok(canonical)
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "pgtest1",
            "db-01.prod",
            "Ünïcödé-vm",
            "a_b",
            &"x".repeat(200),
        ] {
            validate_name("VM", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            ".hidden",
            "-opt",
            "a/b",
            "a b",
            "tab\t",
            &"x".repeat(201),
            "..",
            "x$(id)",
            "a:b",
            "zero\u{200b}width",
            "semi;colon",
            "sendense-repo.yaml",
            "manifests",
            "locks",
        ] {
            assert!(validate_name("VM", bad).is_err(), "{bad:?} accepted");
        }
    }
}

/// A VM's disk with the live state of its checkpoint. Also the `vm show --json` disk shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskStatus {
    /// The disk as recorded.
    #[serde(flatten)]
    pub disk: crate::catalog::DiskRecord,
    /// Its checkpoint on the source now.
    pub checkpoint_state: crate::source::CheckpointState,
}

impl crate::Sendense {
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
            .map(|d| NewDisk {
                key: None,
                identity: d.identity,
                format: d.format,
                size_bytes: d.size_bytes,
            })
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
        let found: Vec<NewDisk> = found
            .into_iter()
            .map(|d| NewDisk {
                key: None,
                identity: d.identity,
                format: d.format,
                size_bytes: d.size_bytes,
            })
            .collect();
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
