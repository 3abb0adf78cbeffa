//! vCenters: the vSphere servers VMware VMs are reached through — added with their certificate
//! pinned and the login checked, tested, listed, removed. The password goes into a 0600 file of
//! the state directory, never into the catalog, an argument, a log line or `--json`.

use crate::catalog::{NewVcenter, VcenterRecord};
use crate::error::{Error, Result};
use crate::sendense::Sendense;
use crate::vsphere::{About, Pin, ServiceContent, VcenterUrl, Vim};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What `vcenter add` is given.
#[derive(Debug, Clone, Default)]
pub struct AddVcenter {
    /// Name.
    pub name: String,
    /// `https://HOST[:PORT]/sdk`.
    pub url: String,
    /// Account.
    pub user: String,
    /// A file holding the password (only the hub's user may read it).
    pub password_file: PathBuf,
    /// The certificate thumbprint to pin.
    pub thumbprint: Option<String>,
    /// Pin whatever certificate the server presents (shown in the output).
    pub accept_certificate: bool,
}

/// A vCenter and what it said it is. Also the `--json` shape of `vcenter add` and `test`.
#[derive(Debug, Clone, Serialize)]
pub struct VcenterCheck {
    /// The vCenter as recorded.
    #[serde(flatten)]
    pub vcenter: VcenterRecord,
    /// What it said now.
    pub about: About,
}

impl Sendense {
    /// Adds a vCenter: connects (its certificate pinned as given, or as presented when accepted
    /// explicitly; never silently), logs in, and records it with its password in a 0600 file.
    pub fn add_vcenter(&mut self, req: &AddVcenter) -> Result<VcenterCheck> {
        crate::vm::validate_name("vCenter", &req.name)?;
        if self.catalog().vcenter(&req.name).is_ok() {
            return Err(Error::already_exists(format!(
                "a vCenter named `{}` exists already",
                req.name
            ))
            .with_help("Choose another name, or see `sendense vcenter list`."));
        }
        let url = VcenterUrl::parse(&req.url)?;
        if req.user.is_empty() || req.user.chars().any(char::is_control) {
            return Err(Error::invalid("--user must name the vCenter account"));
        }
        let password = read_password_file(&req.password_file)?;
        let pin = match (&req.thumbprint, req.accept_certificate) {
            (Some(t), _) => Pin::Thumbprint(crate::vsphere::parse_thumbprint(t)?),
            (None, true) => Pin::Accept,
            (None, false) => Pin::Show,
        };
        let mut vim = Vim::new(
            &format!("vCenter `{}`", req.name),
            &url.host,
            url.port,
            &url.path,
            pin,
        );
        let content = vim.service_content()?;
        let thumbprint = vim
            .thumbprint_seen()
            .ok_or_else(|| Error::internal("the vCenter's certificate was not seen"))?;
        // The password goes only to the certificate that is recorded.
        vim.pin_seen();
        vim.login(&content, &req.user, &password)?;
        vim.logout(&content);
        let secret = self.vcenter_password_file(&req.name);
        crate::fsutil::create_private_dir(self.state_dir().join("secrets").as_path())?;
        crate::fsutil::write_atomic(&secret, password.as_bytes(), 0o600)?;
        let added = self.catalog_mut().insert_vcenter(&NewVcenter {
            name: req.name.clone(),
            url: url.text(),
            user: req.user.clone(),
            thumbprint,
            full_name: content.about.full_name.clone(),
            api_version: content.about.api_version.clone(),
        });
        match added {
            Ok(vcenter) => Ok(VcenterCheck {
                vcenter,
                about: content.about,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&secret);
                Err(e)
            }
        }
    }

    /// Every vCenter.
    pub fn vcenters(&self) -> Result<Vec<VcenterRecord>> {
        self.catalog().vcenters()
    }

    /// One vCenter.
    pub fn vcenter(&self, name: &str) -> Result<VcenterRecord> {
        self.catalog().vcenter(name)
    }

    /// Connects to vCenter `name` again: its certificate must still be the pinned one and the
    /// login must pass. Records what it said it is.
    pub fn test_vcenter(&mut self, name: &str) -> Result<VcenterCheck> {
        let v = self.catalog().vcenter(name)?;
        let (vim, content) = self.connect_vcenter(&v)?;
        vim.logout(&content);
        self.catalog_mut().set_vcenter_checked(
            name,
            &content.about.full_name,
            &content.about.api_version,
        )?;
        Ok(VcenterCheck {
            vcenter: self.catalog().vcenter(name)?,
            about: content.about,
        })
    }

    /// Removes vCenter `name` and its password file.
    pub fn remove_vcenter(&mut self, name: &str) -> Result<VcenterRecord> {
        self.catalog().vcenter(name)?;
        let users: Vec<String> = self
            .catalog()
            .vms()?
            .into_iter()
            .filter(|vm| vm.source == "vmware" && vm.source_options["vcenter"] == name)
            .map(|vm| vm.name)
            .collect();
        if !users.is_empty() {
            return Err(
                Error::refused(format!("vCenter `{name}` has VM(s) {}", users.join(", ")))
                    .with_help(
                        "Remove those VMs first (`sendense vm remove VM`); their backups stay.",
                    ),
            );
        }
        let v = self.catalog_mut().delete_vcenter(name)?;
        match std::fs::remove_file(self.vcenter_password_file(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    "removing the password file of",
                    &self.vcenter_password_file(name),
                    e,
                ))
            }
        }
        Ok(v)
    }

    /// The VMs of vCenter `name` whose name contains `filter` (all without one).
    pub fn discover_vmware(
        &self,
        name: &str,
        filter: Option<&str>,
    ) -> Result<Vec<crate::vsphere::VmInfo>> {
        let v = self.catalog().vcenter(name)?;
        let (vim, content) = self.connect_vcenter(&v)?;
        let vms = vim.list_vms(&content);
        vim.logout(&content);
        Ok(vms?
            .into_iter()
            .filter(|vm| filter.is_none_or(|f| vm.name.contains(f)))
            .collect())
    }

    /// Registers VMware VM `name`: the VM at inventory path `path`, or with BIOS uuid `uuid`,
    /// of vCenter `vcenter`. Its disks keep their device keys.
    pub fn add_vmware_vm(
        &mut self,
        name: &str,
        vcenter: &str,
        path: Option<&str>,
        uuid: Option<&str>,
        node: Option<&str>,
    ) -> Result<crate::catalog::VmRecord> {
        crate::vm::validate_name("VM", name)?;
        if self.catalog().vm(name).is_ok() {
            return Err(
                Error::already_exists(format!("a VM named `{name}` exists already"))
                    .with_help("Choose another name, or see `sendense vm list`."),
            );
        }
        let v = self.catalog().vcenter(vcenter)?;
        let (vim, content) = self.connect_vcenter(&v)?;
        let found = match (path, uuid) {
            (Some(p), _) => vim.find_vm_by_path(&content, p),
            (None, Some(u)) => vim.find_vm_by_uuid(&content, u),
            (None, None) => Err(Error::invalid("name the VM with --path or --uuid")),
        };
        let info = found.and_then(|found| {
            let vm = found.ok_or_else(|| {
                Error::not_found(format!(
                    "vCenter `{vcenter}` has no VM {}",
                    path.or(uuid).unwrap_or_default()
                ))
                .with_help("See `sendense vm discover --vcenter NAME`; paths are /DATACENTER/vm/[FOLDER/]NAME.")
            })?;
            vim.vm_info(&content, &vm)
        });
        vim.logout(&content);
        let info = info?;
        if let Some(other) = self.catalog().vms()?.into_iter().find(|vm| {
            vm.source == "vmware"
                && vm.source_options["vcenter"] == vcenter
                && vm.source_options["moref"] == info.moref.as_str()
        }) {
            return Err(Error::already_exists(format!(
                "VM {} of vCenter `{vcenter}` is registered already, as `{}`",
                info.name, other.name
            ))
            .with_help(
                "One vCenter VM is one Sendense VM: two would remove each other's snapshots.",
            ));
        }
        let options = serde_json::json!({
            "vcenter": vcenter,
            "moref": info.moref,
            "uuid": info.uuid,
        });
        // A VM backed up through a node: the node must reach the vCenter too, and its view
        // of the disks is the one backups will have.
        let node = node.map(|n| self.catalog().node(n)).transpose()?;
        let found = match &node {
            None => crate::source::vmware::discovered(&info),
            Some(n) => {
                let open = serde_json::to_value(self.vmware_open_of(vcenter, &options)?)
                    .map_err(|e| Error::internal(format!("a VMware source's settings: {e}")))?;
                use crate::source::Source;
                let context = |e: Error| {
                    e.context(format!(
                        "node `{}` reaching VM {} of vCenter `{vcenter}`",
                        n.name, info.name
                    ))
                };
                self.node_source(n, "vmware", &open)
                    .map_err(context)?
                    .discover()
                    .map_err(context)?
            }
        };
        let disks: Vec<crate::catalog::NewDisk> = found
            .into_iter()
            .map(|d| crate::catalog::NewDisk {
                key: d.key,
                identity: d.identity,
                format: d.format,
                size_bytes: d.size_bytes,
            })
            .collect();
        if disks.is_empty() {
            return Err(Error::invalid(format!(
                "VM `{}` of vCenter `{vcenter}` has no virtual disks",
                info.name
            )));
        }
        self.catalog_mut()
            .insert_vm_on(name, "vmware", &options, &disks, node.map(|n| n.id))
    }

    /// The source of VMware VM `vm`: a logged-in session with its vCenter.
    pub(crate) fn vmware_source(
        &self,
        vm: &crate::catalog::VmRecord,
    ) -> Result<crate::source::vmware::VmwareSource> {
        crate::source::vmware::VmwareSource::connect(
            &self.vmware_open(vm)?,
            self.config().vddk.clone(),
        )
    }

    /// What VMware VM `vm`'s source needs, its vCenter's password included (for this hub's
    /// source, or a node's source session).
    pub(crate) fn vmware_open(
        &self,
        vm: &crate::catalog::VmRecord,
    ) -> Result<crate::source::vmware::VmwareOpen> {
        let vcenter = vm.source_options["vcenter"].as_str().unwrap_or_default();
        self.vmware_open_of(vcenter, &vm.source_options)
    }

    /// [`Sendense::vmware_open`] of the VM of vCenter `vcenter` that `options` (as recorded)
    /// name.
    fn vmware_open_of(
        &self,
        vcenter: &str,
        options: &serde_json::Value,
    ) -> Result<crate::source::vmware::VmwareOpen> {
        let text = |k: &str| options[k].as_str().unwrap_or_default().to_string();
        let v = self.catalog().vcenter(vcenter)?;
        let password = read_password_file(&self.vcenter_password_file(&v.name))
            .map_err(|e| e.context(format!("the password of vCenter `{}`", v.name)))?;
        Ok(crate::source::vmware::VmwareOpen {
            vcenter: v.name,
            url: v.url,
            user: v.user,
            password,
            thumbprint: v.thumbprint,
            moref: text("moref"),
            uuid: text("uuid"),
            hub: self.catalog().hub_id()?,
            transports: self.config().vddk.transports.clone(),
        })
    }

    /// Where the password of vCenter `name` is kept (0600, in a 0700 directory).
    pub fn vcenter_password_file(&self, name: &str) -> PathBuf {
        self.state_dir()
            .join("secrets")
            .join(format!("vcenter-{name}.password"))
    }

    /// A logged-in session with vCenter `v` (its certificate checked against the pinned one).
    pub(crate) fn connect_vcenter(&self, v: &VcenterRecord) -> Result<(Vim, ServiceContent)> {
        let password = read_password_file(&self.vcenter_password_file(&v.name))
            .map_err(|e| e.context(format!("the password of vCenter `{}`", v.name)))?;
        crate::vsphere::login(
            &format!("vCenter `{}`", v.name),
            &v.url,
            &v.thumbprint,
            &v.user,
            &password,
        )
    }
}

/// The password in `path`: one line (its line end dropped), in a file only its owner reads.
fn read_password_file(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::io("reading the password file", path, e)
            .with_help("Write the password into a file only you can read (chmod 600), and pass it with --password-file.")
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::invalid(format!(
            "the password file {} can be read by others (mode {:o})",
            path.display(),
            meta.permissions().mode() & 0o777
        ))
        .with_help("Make it yours alone: chmod 600 FILE."));
    }
    if meta.len() > 4096 {
        return Err(Error::invalid(format!(
            "the password file {} is not a password (over 4 KiB)",
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io("reading the password file", path, e))?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() || password.contains('\n') {
        return Err(Error::invalid(format!(
            "the password file {} must hold the password on one line",
            path.display()
        )));
    }
    Ok(password.to_string())
}
