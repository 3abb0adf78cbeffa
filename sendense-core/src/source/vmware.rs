//! A VMware VM reached through a vCenter (or ESXi host) over the vSphere API. Its disks are
//! keyed by their real device keys and identified by key and backing. The checkpoint of a
//! disk is its CBT change id.
//!
//! Snapshot: changed block tracking turned on when it is off; ONE snapshot of the VM, quiesced
//! (crash-consistent, with a warning in the job log, when quiescing fails), named
//! `sd<job>-<hub>-<checkpoint>` (`<hub>`: the first 8 characters of the hub's id); each disk's
//! change id read from the snapshot; each disk served read-only by `nbdkit` with the VDDK plugin
//! (`vm=moref=`, `snapshot=`, `transports=`, `thumbprint=`; the password in a 0600 file of the
//! job's scratch directory, `password=+FILE`, never in an argument), a supervised child on a Unix
//! socket. An incremental copies the areas `QueryChangedDiskAreas` reports changed since the
//! recorded change id (paged to the disk's end); one it cannot answer (change tracking reset) makes
//! the disk a full. Finish: the nbdkit processes stopped, the snapshot removed (consolidated).
//! Repair after an interrupted backup: the snapshots named `sd<job>-<hub>-` of those jobs are
//! removed, and only those (another hub's, or a user's, stay).

use super::repair::{RepairRequest, Repaired};
use super::{CheckpointState, DiscoveredDisk, SnapshotDisk, SnapshotRequest, Source, SourceHost};
use crate::catalog::DiskRecord;
use crate::config::VddkConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::NbdUrl;
use crate::supervise::{ChildKind, Supervised};
use crate::vsphere::{MoRef, ServiceContent, Vim, VmInfo};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Everything a VMware source needs to run: on the hub, or sent to a node's `sendense-sna` in
/// its source session (over SSH, never in an argument). The password is in it: it is never
/// printed (see its `Debug`).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct VmwareOpen {
    /// The vCenter's name on the hub (for messages).
    pub vcenter: String,
    /// `https://HOST[:PORT]/sdk`.
    pub url: String,
    /// Account.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The pinned certificate thumbprint.
    pub thumbprint: String,
    /// The VM's managed object reference.
    pub moref: String,
    /// Its BIOS uuid as registered (empty: not checked).
    pub uuid: String,
    /// The hub's id: the snapshots of its backups carry its first 8 characters, so two hubs
    /// never remove each other's.
    pub hub: String,
    /// The transports VDDK may use (`vddk.transports` of the hub).
    pub transports: String,
}

impl std::fmt::Debug for VmwareOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmwareOpen")
            .field("vcenter", &self.vcenter)
            .field("url", &self.url)
            .field("user", &self.user)
            .field("moref", &self.moref)
            .finish_non_exhaustive()
    }
}

/// A VM of a vCenter, with a logged-in session.
#[derive(Debug)]
pub struct VmwareSource {
    vim: Vim,
    content: ServiceContent,
    vm: MoRef,
    /// Its BIOS uuid as registered: a reference that names another VM now is refused.
    uuid: String,
    /// The login and VM (the password goes to VDDK in a 0600 file, nowhere else).
    open: VmwareOpen,
    /// The vCenter's host and port, for VDDK.
    server: (String, u16),
    vddk: VddkConfig,
    active: Option<Active>,
    /// The name of a snapshot being created: a task that could not be waited for may still
    /// have made it, and `finish` removes it by name.
    pending: Option<String>,
    /// The hub's tag in snapshot names (`sd<job>-<hub>-sendense-<id>`).
    hub: String,
}

/// What a snapshot set up, for `finish`.
#[derive(Debug)]
struct Active {
    snapshot: MoRef,
    scratch: PathBuf,
    servers: Vec<Supervised>,
}

/// How long nbdkit has to listen, and to end after SIGTERM.
const NBDKIT_START: Duration = Duration::from_secs(60);
const NBDKIT_GRACE: Duration = Duration::from_secs(5);

impl VmwareSource {
    /// Logs in to the vCenter of `open` (its certificate checked against the pinned one) for
    /// its VM, read through VDDK with `vddk` (whose transports `open` sets).
    pub fn connect(open: &VmwareOpen, mut vddk: VddkConfig) -> Result<VmwareSource> {
        let url = crate::vsphere::VcenterUrl::parse(&open.url)?;
        if open.moref.is_empty() || open.hub.len() < 8 || !open.hub.is_char_boundary(8) {
            return Err(Error::invalid(format!(
                "VMware source of vCenter `{}`: no VM reference or hub id",
                open.vcenter
            )));
        }
        let (vim, content) = crate::vsphere::login(
            &format!("vCenter `{}`", open.vcenter),
            &open.url,
            &open.thumbprint,
            &open.user,
            &open.password,
        )?;
        if !open.transports.is_empty() {
            vddk.transports = open.transports.clone();
        }
        Ok(VmwareSource {
            vim,
            content,
            vm: MoRef::new("VirtualMachine", &open.moref),
            uuid: open.uuid.clone(),
            open: open.clone(),
            server: (url.host, url.port),
            vddk,
            active: None,
            pending: None,
            hub: open.hub[..8].to_string(),
        })
    }

    /// The prefix of the names of job `job`'s snapshots.
    fn snapshot_prefix(&self, job: i64) -> String {
        format!("sd{job}-{}-", self.hub)
    }

    /// What vSphere says about the VM now; refused when its reference names another VM (an
    /// ESXi host reuses references).
    pub fn info(&self) -> Result<VmInfo> {
        let info = self.vim.vm_info(&self.content, &self.vm)?;
        if !self.uuid.is_empty() && !info.uuid.eq_ignore_ascii_case(&self.uuid) {
            return Err(Error::refused(format!(
                "{}: {} is now VM `{}` (uuid {}), not the VM registered (uuid {})",
                self.vim.what(),
                self.vm.value,
                info.name,
                info.uuid,
                self.uuid
            ))
            .with_help("Register the VM again by its uuid (`sendense vm add NAME --vcenter VC --uuid UUID`)."));
        }
        Ok(info)
    }

    /// Starts `nbdkit` with the VDDK plugin for disk file `file` of the snapshot, on `socket`.
    fn serve(
        &self,
        host: &mut dyn SourceHost,
        key: u32,
        file: &str,
        snapshot: &MoRef,
        scratch: &std::path::Path,
    ) -> Result<(Supervised, NbdUrl)> {
        let socket = scratch.join(format!("vddk-{key}.sock"));
        let log_file = scratch.join(format!("vddk-{key}.log"));
        let password = scratch.join("vddk.password");
        let log =
            std::fs::File::create(&log_file).map_err(|e| Error::io("creating", &log_file, e))?;
        let mut cmd = std::process::Command::new("nbdkit");
        cmd.args(["--foreground", "--exit-with-parent", "--readonly", "--unix"])
            .arg(&socket)
            .arg(&self.vddk.plugin)
            .arg(format!("libdir={}", self.vddk.libdir.display()))
            .arg(format!("file={file}"))
            .arg(format!("server={}", self.server.0))
            .arg(format!("port={}", self.server.1))
            .arg(format!("user={}", self.open.user))
            .arg(format!("password=+{}", password.display()))
            .arg(format!("thumbprint={}", self.open.thumbprint))
            .arg(format!("vm=moref={}", self.vm.value))
            .arg(format!("snapshot={}", snapshot.value))
            .arg(format!("transports={}", self.vddk.transports))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log);
        let ledger = host.ledger();
        let mut server = Supervised::spawn(
            cmd,
            ChildKind::Nbdkit,
            &format!("VDDK export of disk {key}"),
            NBDKIT_GRACE,
            ledger.as_ref(),
        )
        .map_err(|e| e.with_help("Install nbdkit, and nbdkit's VDDK plugin (configuration key vddk.plugin) with VMware's VDDK (vddk.libdir)."))?;
        let deadline = Instant::now() + NBDKIT_START;
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let ended = server.exited_within(Duration::from_millis(5));
            if ended || Instant::now() > deadline {
                if !ended {
                    let _ = server.stop();
                }
                let said = std::fs::read_to_string(&log_file).unwrap_or_default();
                let last: Vec<&str> = said.lines().rev().take(5).collect();
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "nbdkit's VDDK plugin did not serve disk {key} ({file}): {}",
                        last.into_iter().rev().collect::<Vec<_>>().join(" / ")
                    ),
                )
                .with_help("Check vddk.libdir and vddk.plugin in the configuration, and that VDDK can reach the vCenter."));
            }
        }
        Ok((server, NbdUrl::unix(&socket, "")))
    }

    /// Serves each disk of `req` from `snapshot` (whose disks are `disks`) with the changed
    /// areas of an incremental.
    fn serve_disks(
        &mut self,
        host: &mut dyn SourceHost,
        req: &SnapshotRequest,
        snapshot: &MoRef,
        disks: &[crate::vsphere::VmDisk],
    ) -> Result<Vec<SnapshotDisk>> {
        let mut out = Vec::new();
        for d in &req.disks {
            let disk = disks
                .iter()
                .find(|x| x.identity() == d.identity)
                .ok_or_else(|| {
                    Error::not_found(format!(
                        "disk {} ({}) is not in the snapshot",
                        d.key, d.identity
                    ))
                })?;
            // An incremental: the areas changed since the recorded change id. One the vCenter
            // cannot answer (change tracking was reset) leaves the disk without changes, and
            // the backup takes it in full.
            let extents = match &d.previous {
                None => None,
                // vSphere's own key of the disk (Sendense's may differ: a disk replaced at the
                // same key got a key of its own in the catalog).
                Some(previous) => match self.vim.changed_areas(
                    &self.vm,
                    snapshot,
                    disk.key,
                    previous,
                    disk.capacity_bytes,
                ) {
                    Ok(areas) => Some(areas),
                    // Anything but vSphere not knowing the change id fails the backup.
                    Err(e)
                        if !CHANGE_ID_FAULTS
                            .iter()
                            .any(|f| e.message().contains(&format!("({f})"))) =>
                    {
                        return Err(e)
                    }
                    Err(e) => {
                        host.log(&format!(
                            "warning: disk {}: the changed areas since change id {previous} cannot be read: {e}",
                            d.key
                        ));
                        None
                    }
                },
            };
            let (server, url) = self.serve(host, d.key, &disk.file, snapshot, &req.scratch)?;
            if let Some(a) = self.active.as_mut() {
                a.servers.push(server);
            }
            out.push(SnapshotDisk {
                key: d.key,
                url,
                size_bytes: disk.capacity_bytes,
                bitmap: None,
                extents,
                checkpoint: disk.change_id.clone(),
            });
        }
        Ok(out)
    }
}

impl Drop for VmwareSource {
    fn drop(&mut self) {
        self.vim.logout(&self.content);
    }
}

/// The disks of `info` that can be backed up, as a source reports them (independent disks and
/// physical-mode RDMs are left out, with a warning).
pub fn discovered(info: &VmInfo) -> Vec<DiscoveredDisk> {
    for d in info.disks.iter() {
        if let Some(why) = &d.excluded {
            tracing::warn!(
                "VM {}: disk {} ({}) is not backed up: {why}",
                info.name,
                d.key,
                d.file
            );
        }
    }
    info.disks
        .iter()
        .filter(|d| d.excluded.is_none())
        .map(|d| DiscoveredDisk {
            identity: d.identity(),
            format: None,
            size_bytes: d.capacity_bytes,
            detail: format!("{} {}", d.slot, d.file),
            key: Some(d.key),
        })
        .collect()
}

/// The faults of a snapshot whose guest could not be quiesced (the others fail the backup).
const QUIESCE_FAULTS: &[&str] = &[
    "ApplicationQuiesceFault",
    "ToolsUnavailable",
    "ToolsUnavailableFault",
    "ToolsNotRunning",
    "GuestOperationsUnavailable",
];

/// The faults of `QueryChangedDiskAreas` for a change id vSphere does not know (change tracking
/// reset): the disk is taken in full. Any other failure fails the backup.
const CHANGE_ID_FAULTS: &[&str] = &["FileFault", "InvalidArgument"];

/// The job of a name of Sendense's form: `tag_job("sd12-0a1b2c3d-sendense-x") == Some(12)`.
fn tag_job(name: &str) -> Option<i64> {
    name.strip_prefix("sd")?.split('-').next()?.parse().ok()
}

impl Source for VmwareSource {
    fn kind(&self) -> &'static str {
        "vmware"
    }

    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>> {
        Ok(discovered(&self.info()?))
    }

    fn repair(&mut self, host: &mut dyn SourceHost, req: &RepairRequest) -> Result<Repaired> {
        let mut errors = Vec::new();
        for snap in self.vim.snapshots(&self.content, &self.vm)? {
            // Only the snapshots of this hub's interrupted backups of this VM.
            let ours = tag_job(&snap.name).filter(|job| {
                snap.name.starts_with(&format!(
                    "{}{}",
                    self.snapshot_prefix(*job),
                    crate::source::CHECKPOINT_PREFIX
                )) && Some(*job) != req.keep_job
                    && req.interrupted.iter().any(|(j, _)| j == job)
            });
            if ours.is_none() {
                continue;
            }
            match self.vim.remove_snapshot(&self.content, &snap.moref) {
                Ok(()) => host.log(&format!(
                    "removed snapshot `{}` left by an interrupted backup",
                    snap.name
                )),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "removing snapshots an interrupted backup left: {}",
                    errors.join("; ")
                ),
            ));
        }
        Ok(Repaired::Done)
    }

    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>> {
        let info = self.info()?;
        Ok(disks
            .iter()
            .map(|d| {
                if !info.disks.iter().any(|x| x.identity() == d.identity) {
                    return CheckpointState::Missing;
                }
                match &d.checkpoint {
                    None => CheckpointState::None,
                    // Change tracking turned off since: the change id means nothing now.
                    Some(_) if !info.change_tracking => CheckpointState::Missing,
                    Some(_) => CheckpointState::Present,
                }
            })
            .collect())
    }

    fn snapshot(
        &mut self,
        host: &mut dyn SourceHost,
        req: &SnapshotRequest,
    ) -> Result<Vec<SnapshotDisk>> {
        let info = self.info()?;
        if !info.change_tracking {
            self.vim.enable_change_tracking(&self.content, &self.vm)?;
            host.log("changed block tracking was off: turned on for the VM");
        }
        crate::fsutil::create_private_dir(&req.scratch)?;
        let name = format!("{}{}", self.snapshot_prefix(req.job), req.checkpoint);
        self.pending = Some(name.clone());
        let snapshot = match self
            .vim
            .create_snapshot(&self.content, &self.vm, &name, true)?
        {
            Ok(s) => s,
            // Only the guest could not be quiesced: anything else fails the backup.
            Err(f) if !QUIESCE_FAULTS.contains(&f.fault.as_str()) => {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "{}: creating a snapshot failed: {} ({})",
                        self.vim.what(),
                        f.message,
                        f.fault
                    ),
                ))
            }
            Err(f) if req.require_quiesce => {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "{}: quiescing the guest failed ({}: {}), and the backup requires a quiesced snapshot",
                        self.vim.what(),
                        f.fault,
                        f.message
                    ),
                )
                .with_help("Check VMware Tools in the guest, or back up without --require-quiesce (a crash-consistent snapshot, with a warning)."));
            }
            Err(f) => {
                host.log(&format!(
                    "warning: quiescing the guest failed ({}: {}); the snapshot is crash-consistent",
                    f.fault, f.message
                ));
                self.vim
                    .create_snapshot(&self.content, &self.vm, &name, false)?
                    .map_err(|f| {
                        Error::new(
                            ErrorKind::External,
                            format!(
                                "{}: creating a snapshot failed: {} ({})",
                                self.vim.what(),
                                f.message,
                                f.fault
                            ),
                        )
                    })?
            }
        };
        crate::crash::point("vmware.snapshot-taken");
        self.pending = None;
        self.active = Some(Active {
            snapshot: snapshot.clone(),
            scratch: req.scratch.clone(),
            servers: Vec::new(),
        });
        host.log(&format!("snapshot `{name}` ({}) taken", snapshot.value));
        let disks = self.vim.snapshot_disks(&self.content, &snapshot)?;
        crate::fsutil::write_atomic(
            &req.scratch.join("vddk.password"),
            self.open.password.as_bytes(),
            0o600,
        )?;
        let served = self.serve_disks(host, req, &snapshot, &disks);
        // nbdkit read the password when it started (or none will).
        let _ = std::fs::remove_file(req.scratch.join("vddk.password"));
        served
    }

    fn finish(&mut self, host: &mut dyn SourceHost, _success: bool) -> Result<()> {
        let Some(active) = self.active.take() else {
            // A snapshot task that could not be waited for may have made it all the same.
            let Some(name) = self.pending.take() else {
                return Ok(());
            };
            let mut errors = Vec::new();
            for snap in self.vim.snapshots(&self.content, &self.vm)? {
                if snap.name == name {
                    match self.vim.remove_snapshot(&self.content, &snap.moref) {
                        Ok(()) => host.log(&format!("snapshot `{name}` removed")),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
            }
            return super::teardown_result(host, &errors);
        };
        let mut errors = Vec::new();
        for server in active.servers {
            if let Err(e) = server.stop_checked() {
                errors.push(e.to_string());
            }
        }
        match self.vim.remove_snapshot(&self.content, &active.snapshot) {
            Ok(()) => host.log(&format!("snapshot {} removed", active.snapshot.value)),
            Err(e) => errors.push(e.to_string()),
        }
        if let Err(e) = std::fs::remove_dir_all(&active.scratch) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("removing {}: {e}", active.scratch.display()));
            }
        }
        super::teardown_result(host, &errors)
    }
}
