//! Finding VMs and reading their disks. A disk is named by its **device key** as vSphere
//! reports it (2000 + unit on SCSI bus 0, 2016 on bus 1, SATA and NVMe keys their own) — never
//! computed from its position — and identified by that key with its backing file's uuid (or
//! its file name when it has none). Sizes are `capacityInBytes`, else `capacityInKB` × 1024.

use super::soap::{child, child_text, escape, xsi_type, MoRef, ServiceContent, Vim};
use crate::error::{Error, ErrorKind, Result};
use serde::Serialize;

/// A VM as vSphere describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmInfo {
    /// Its managed object reference value (`vm-42`).
    pub moref: String,
    /// Its name.
    pub name: String,
    /// Its BIOS uuid (`config.uuid`).
    pub uuid: String,
    /// `poweredOn`, `poweredOff`, `suspended`.
    pub power_state: String,
    /// Whether changed block tracking is on.
    pub change_tracking: bool,
    /// Its virtual disks, in device order.
    pub disks: Vec<VmDisk>,
}

/// A virtual disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmDisk {
    /// Its device key.
    pub key: u32,
    /// Where it is attached (`scsi0:1`, `sata0:0`, `nvme1:0`, `ide0:0`).
    pub slot: String,
    /// Its backing file (`[datastore1] vm/vm.vmdk`).
    pub file: String,
    /// The backing's uuid, when vSphere reports one.
    pub uuid: Option<String>,
    /// The backing's change id, when change tracking gave it one.
    pub change_id: Option<String>,
    /// Its size in bytes.
    pub capacity_bytes: u64,
    /// Why it cannot be backed up, when it cannot: an independent disk or a physical-mode raw
    /// device mapping is not in the VM's snapshots (it would be read live, inconsistent with
    /// the others) and has no change tracking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<String>,
}

impl VmDisk {
    /// How Sendense recognises the disk from one backup to the next: its key and its backing.
    pub fn identity(&self) -> String {
        format!(
            "{} {}",
            self.key,
            self.uuid.as_deref().unwrap_or(&self.file)
        )
    }
}

/// The properties read of one object: its reference, and per property its name and its `val`
/// element's XML.
type ObjectProperties = (MoRef, Vec<(String, String)>);

/// Properties of a VM read in one call.
const VM_PROPERTIES: &[&str] = &[
    "name",
    "config.uuid",
    "runtime.powerState",
    "config.changeTrackingEnabled",
    "config.hardware.device",
];

impl Vim {
    /// The VM at inventory path `path` (`/DC/vm/folder/NAME`).
    pub fn find_vm_by_path(&self, content: &ServiceContent, path: &str) -> Result<Option<MoRef>> {
        let args = format!("<inventoryPath>{}</inventoryPath>", escape(path));
        let text = self.call("FindByInventoryPath", &content.search_index, &args)?;
        self.found_vm(&text, "FindByInventoryPath")
    }

    /// The VM whose BIOS uuid is `uuid`.
    pub fn find_vm_by_uuid(&self, content: &ServiceContent, uuid: &str) -> Result<Option<MoRef>> {
        let args = format!(
            "<uuid>{}</uuid><vmSearch>true</vmSearch>",
            escape(&uuid.to_ascii_lowercase())
        );
        let text = self.call("FindByUuid", &content.search_index, &args)?;
        self.found_vm(&text, "FindByUuid")
    }

    fn found_vm(&self, text: &str, method: &str) -> Result<Option<MoRef>> {
        let doc = self.parse(text)?;
        let response = self.response(&doc, method)?;
        Ok(child(response, "returnval")
            .and_then(MoRef::of)
            .filter(|m| m.kind == "VirtualMachine"))
    }

    /// What vSphere says about VM `vm`.
    pub fn vm_info(&self, content: &ServiceContent, vm: &MoRef) -> Result<VmInfo> {
        let objects =
            self.properties(content, "VirtualMachine", VM_PROPERTIES, &vm.xml("obj"), "")?;
        let (_, props) = objects
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found(format!("{}: VM {} is gone", self.what(), vm.value)))?;
        self.vm_from(vm, &props)
    }

    /// Every VM, by name.
    pub fn list_vms(&self, content: &ServiceContent) -> Result<Vec<VmInfo>> {
        let args = format!(
            "{}<type>VirtualMachine</type><recursive>true</recursive>",
            content.root_folder.xml("container")
        );
        let text = self.call("CreateContainerView", &content.view_manager, &args)?;
        let doc = self.parse(&text)?;
        let view = MoRef::of(self.returnval(&doc, "CreateContainerView")?).ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!(
                    "{}: CreateContainerView answered without a view",
                    self.what()
                ),
            )
        })?;
        let objects = self.properties(
            content,
            "VirtualMachine",
            VM_PROPERTIES,
            &format!("{}<skip>true</skip>", view.xml("obj")),
            "<selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type>\
             <path>view</path><skip>false</skip></selectSet>",
        );
        let _ = self.call("DestroyView", &view, "");
        let mut vms = objects?
            .iter()
            .map(|(vm, props)| self.vm_from(vm, props))
            .collect::<Result<Vec<_>>>()?;
        vms.sort_by(|a, b| a.name.cmp(&b.name).then(a.moref.cmp(&b.moref)));
        Ok(vms)
    }

    /// `paths` of the objects of `kind` that `object` (an `obj` element and what goes with it)
    /// and `select` reach, page after page: per object, its reference and its properties (name,
    /// the `val` element's XML).
    pub(crate) fn properties(
        &self,
        content: &ServiceContent,
        kind: &str,
        paths: &[&str],
        object: &str,
        select: &str,
    ) -> Result<Vec<ObjectProperties>> {
        let path_set: String = paths
            .iter()
            .map(|p| format!("<pathSet>{}</pathSet>", escape(p)))
            .collect();
        let args = format!(
            "<specSet><propSet><type>{}</type>{path_set}</propSet><objectSet>{object}{select}\
             </objectSet></specSet><options/>",
            escape(kind)
        );
        let mut text = self.call("RetrievePropertiesEx", &content.property_collector, &args)?;
        let mut method = "RetrievePropertiesEx";
        let mut out = Vec::new();
        // A bound on pages: a server that never stops paging is not followed forever.
        for _ in 0..10_000 {
            let doc = self.parse(&text)?;
            let response = self.response(&doc, method)?;
            // No returnval: nothing matched.
            let Some(ret) = child(response, "returnval") else {
                return Ok(out);
            };
            for obj in ret.children().filter(|n| n.has_tag_name("objects")) {
                let Some(reference) = child(obj, "obj").and_then(MoRef::of) else {
                    continue;
                };
                if let Some(missing) = obj.children().find(|n| n.has_tag_name("missingSet")) {
                    let fault = child(missing, "fault")
                        .and_then(|f| child(f, "fault"))
                        .and_then(xsi_type)
                        .unwrap_or("a fault");
                    return Err(Error::new(
                        ErrorKind::External,
                        format!(
                            "{}: reading {} of {}: {fault}",
                            self.what(),
                            child_text(missing, "path").unwrap_or_default(),
                            reference.value
                        ),
                    ));
                }
                let props = obj
                    .children()
                    .filter(|n| n.has_tag_name("propSet"))
                    .filter_map(|p| {
                        let name = child_text(p, "name")?;
                        let val = child(p, "val")?;
                        Some((name, text[val.range()].to_string()))
                    })
                    .collect();
                out.push((reference, props));
            }
            let Some(token) = child_text(ret, "token") else {
                return Ok(out);
            };
            method = "ContinueRetrievePropertiesEx";
            text = self.call(
                method,
                &content.property_collector,
                &format!("<token>{}</token>", escape(&token)),
            )?;
        }
        Err(Error::new(
            ErrorKind::Protocol,
            format!("{}: the property pages do not end", self.what()),
        ))
    }

    fn vm_from(&self, vm: &MoRef, props: &[(String, String)]) -> Result<VmInfo> {
        let value = |name: &str| {
            props
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let text_of = |name: &str| {
            value(name)
                .and_then(|xml| {
                    roxmltree::Document::parse(&wrap(xml)).ok().and_then(|d| {
                        d.root_element()
                            .first_element_child()?
                            .text()
                            .map(String::from)
                    })
                })
                .unwrap_or_default()
        };
        let disks = match value("config.hardware.device") {
            Some(xml) => parse_disks(&wrap(xml)).map_err(|why| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{}: the devices of VM {}: {why}", self.what(), vm.value),
                )
            })?,
            None => Vec::new(),
        };
        Ok(VmInfo {
            moref: vm.value.clone(),
            name: text_of("name"),
            uuid: text_of("config.uuid"),
            power_state: text_of("runtime.powerState"),
            change_tracking: text_of("config.changeTrackingEnabled") == "true",
            disks,
        })
    }
}

/// A `val` element cut out of its document, in a root that declares the namespaces its
/// prefixes may use (the answer's envelope declared them).
pub(crate) fn wrap(val: &str) -> String {
    format!(
        "<r xmlns:xsi=\"{xsi}\" xmlns:XMLSchema-instance=\"{xsi}\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns=\"{vim}\">{val}</r>",
        xsi = super::soap::XSI_NS,
        vim = super::soap::VIM_NS
    )
}

/// The virtual disks among the devices of `xml` (`<r><val>...</val></r>`).
pub(crate) fn parse_disks(xml: &str) -> std::result::Result<Vec<VmDisk>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let devices: Vec<roxmltree::Node> = doc
        .root_element()
        .first_element_child()
        .map(|val| val.children().filter(|n| n.is_element()).collect())
        .unwrap_or_default();
    let number =
        |n: roxmltree::Node, name: &str| child_text(n, name).and_then(|t| t.parse::<i64>().ok());
    // Controllers by key: their bus kind and number.
    let controllers: Vec<(i64, String, i64)> = devices
        .iter()
        .filter_map(|d| {
            let kind = xsi_type(*d)?;
            let bus = if kind.contains("SCSI")
                || kind.contains("LsiLogic")
                || kind.contains("BusLogic")
            {
                "scsi"
            } else if kind.contains("AHCI") || kind.contains("SATA") {
                "sata"
            } else if kind.contains("NVME") || kind.contains("NVMe") {
                "nvme"
            } else if kind.contains("IDE") {
                "ide"
            } else {
                return None;
            };
            Some((
                number(*d, "key")?,
                bus.to_string(),
                number(*d, "busNumber")?,
            ))
        })
        .collect();
    let mut disks = Vec::new();
    for d in devices
        .iter()
        .filter(|d| xsi_type(**d) == Some("VirtualDisk"))
    {
        let key = number(*d, "key")
            .and_then(|k| u32::try_from(k).ok())
            .ok_or("a disk without a key")?;
        let bytes = number(*d, "capacityInBytes")
            .filter(|b| *b > 0)
            .or_else(|| number(*d, "capacityInKB").map(|kb| kb.saturating_mul(1024)))
            .and_then(|b| u64::try_from(b).ok())
            .ok_or_else(|| format!("disk {key} has no capacity"))?;
        let backing = child(*d, "backing").ok_or_else(|| format!("disk {key} has no backing"))?;
        let file = child_text(backing, "fileName").unwrap_or_default();
        let slot = match (number(*d, "controllerKey"), number(*d, "unitNumber")) {
            (Some(c), Some(unit)) => controllers
                .iter()
                .find(|(k, _, _)| *k == c)
                .map(|(_, bus, n)| format!("{bus}{n}:{unit}"))
                .unwrap_or_else(|| format!("controller {c}:{unit}")),
            _ => String::new(),
        };
        let mode = child_text(backing, "diskMode").unwrap_or_default();
        let excluded = if mode.starts_with("independent") {
            Some(format!(
                "an {} disk is not in the VM's snapshots",
                mode.replace('_', "-")
            ))
        } else if xsi_type(backing) == Some("VirtualDiskRawDiskMappingVer1BackingInfo")
            && child_text(backing, "compatibilityMode").as_deref() == Some("physicalMode")
        {
            Some("a physical-mode raw device mapping is not in the VM's snapshots".to_string())
        } else {
            None
        };
        disks.push(VmDisk {
            key,
            slot,
            file,
            uuid: child_text(backing, "uuid").filter(|u| !u.is_empty()),
            change_id: child_text(backing, "changeId").filter(|c| !c.is_empty()),
            capacity_bytes: bytes,
            excluded,
        });
    }
    Ok(disks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Devices as vCenter writes them (`xsi:`), with a second SCSI controller, a SATA one and
    /// a disk known only by KB.
    #[test]
    fn disks_keep_their_real_keys_and_sizes_in_bytes() {
        let val = r#"<val xsi:type="ArrayOfVirtualDevice">
          <VirtualDevice xsi:type="ParaVirtualSCSIController"><key>1000</key><busNumber>0</busNumber></VirtualDevice>
          <VirtualDevice xsi:type="VirtualLsiLogicSASController"><key>1001</key><busNumber>1</busNumber></VirtualDevice>
          <VirtualDevice xsi:type="VirtualAHCIController"><key>15000</key><busNumber>0</busNumber></VirtualDevice>
          <VirtualDevice xsi:type="VirtualDisk"><key>2000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] pg/pg.vmdk</fileName><uuid>6000C29a-0001</uuid><changeId>52 a1/7</changeId></backing><controllerKey>1000</controllerKey><unitNumber>0</unitNumber><capacityInKB>104857600</capacityInKB><capacityInBytes>107374182400</capacityInBytes></VirtualDevice>
          <VirtualDevice xsi:type="VirtualDisk"><key>2016</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] pg/pg_1.vmdk</fileName></backing><controllerKey>1001</controllerKey><unitNumber>0</unitNumber><capacityInKB>5242880</capacityInKB></VirtualDevice>
          <VirtualDevice xsi:type="VirtualDisk"><key>16000</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds2] pg/pg_2.vmdk</fileName><uuid>6000C29a-0003</uuid></backing><controllerKey>15000</controllerKey><unitNumber>0</unitNumber><capacityInBytes>1048576</capacityInBytes></VirtualDevice>
          <VirtualDevice xsi:type="VirtualDisk"><key>2001</key><backing xsi:type="VirtualDiskFlatVer2BackingInfo"><fileName>[ds1] pg/scratch.vmdk</fileName><diskMode>independent_persistent</diskMode></backing><controllerKey>1000</controllerKey><unitNumber>1</unitNumber><capacityInBytes>1048576</capacityInBytes></VirtualDevice>
          <VirtualDevice xsi:type="VirtualDisk"><key>2002</key><backing xsi:type="VirtualDiskRawDiskMappingVer1BackingInfo"><fileName>[ds1] pg/rdm.vmdk</fileName><compatibilityMode>physicalMode</compatibilityMode></backing><controllerKey>1000</controllerKey><unitNumber>2</unitNumber><capacityInBytes>1048576</capacityInBytes></VirtualDevice>
          <VirtualDevice xsi:type="VirtualCdrom"><key>3000</key></VirtualDevice>
        </val>"#;
        let all = parse_disks(&wrap(val)).unwrap();
        // Independent disks and physical-mode RDMs are named, with why they cannot be kept.
        let excluded: Vec<(u32, bool)> = all
            .iter()
            .filter(|d| d.excluded.is_some())
            .map(|d| (d.key, d.excluded.as_deref().unwrap().contains("snapshots")))
            .collect();
        assert_eq!(excluded, [(2001, true), (2002, true)]);
        let disks: Vec<VmDisk> = all.into_iter().filter(|d| d.excluded.is_none()).collect();
        let got: Vec<(u32, &str, u64)> = disks
            .iter()
            .map(|d| (d.key, d.slot.as_str(), d.capacity_bytes))
            .collect();
        assert_eq!(
            got,
            [
                (2000, "scsi0:0", 107374182400),
                (2016, "scsi1:0", 5368709120),
                (16000, "sata0:0", 1048576)
            ]
        );
        assert_eq!(disks[0].identity(), "2000 6000C29a-0001");
        assert_eq!(disks[1].identity(), "2016 [ds1] pg/pg_1.vmdk");
        assert_eq!(disks[0].change_id.as_deref(), Some("52 a1/7"));
        // The simulator's prefix for the same namespace reads the same.
        let sim = val.replace("xsi:", "XMLSchema-instance:");
        let sim_disks: Vec<VmDisk> = parse_disks(&wrap(&sim))
            .unwrap()
            .into_iter()
            .filter(|d| d.excluded.is_none())
            .collect();
        assert_eq!(sim_disks, disks);
        // A disk without a size is refused, not read as empty.
        let bad = r#"<val><VirtualDevice xsi:type="VirtualDisk"><key>2000</key><backing><fileName>x</fileName></backing></VirtualDevice></val>"#;
        assert!(parse_disks(&wrap(bad)).is_err());
    }
}
