//! A restored disk's partitions and what is on them: GPT (the primary header, else the backup
//! one at the disk's end; both checked by CRC) and MBR (primary partitions and the logical ones
//! of an extended partition), or one filesystem on the whole disk. Filesystems are recognised
//! by their superblocks. Everything here is read from a backup: untrusted input, bounds
//! checked, never a panic.

use std::io::{Read, Seek, SeekFrom};

/// A sector of the partition tables: VM disks mostly have 512-byte logical sectors; a GPT is
/// also looked for at 4096-byte ones ("4Kn" disks, whose LBAs count 4 KiB sectors). An MBR is
/// read at 512-byte sectors only.
const SECTOR: u64 = 512;

/// The logical sector sizes a GPT is looked for at.
const GPT_SECTORS: [u64; 2] = [SECTOR, 4096];

/// More GPT entries than this is not a partition table (the usual number is 128).
const MAX_GPT_ENTRIES: u32 = 1024;

/// Logical partitions followed in an extended partition, at most.
const MAX_LOGICAL: usize = 128;

/// One partition of a disk (or the whole disk, when it has no partition table).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Partition {
    /// Its name under the mount directory: `p1`, `p2`, ... by its number in the table (`p5`
    /// on for logical partitions), or `disk` for a filesystem on the whole disk.
    pub name: String,
    /// Where it starts, in bytes.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
    /// The table it is in: `gpt`, `mbr`, or `none`.
    pub table: &'static str,
    /// What it holds.
    pub content: Content,
    /// The filesystem's label (or the GPT partition name when it has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// What a partition holds, as its first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// ext2, ext3 or ext4 (the kernel's ext4 driver reads all three).
    Ext4,
    /// XFS.
    Xfs,
    /// Btrfs.
    Btrfs,
    /// NTFS (read through ntfs-3g).
    Ntfs,
    /// FAT12/16/32.
    Vfat,
    /// exFAT.
    Exfat,
    /// Linux swap.
    Swap,
    /// An LVM physical volume.
    Lvm,
    /// A LUKS encrypted volume.
    Luks,
    /// Linux software RAID.
    Raid,
    /// Nothing recognised.
    Unknown,
}

impl Content {
    /// Its name (`ext4`, `ntfs`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Content::Ext4 => "ext4",
            Content::Xfs => "xfs",
            Content::Btrfs => "btrfs",
            Content::Ntfs => "ntfs",
            Content::Vfat => "vfat",
            Content::Exfat => "exfat",
            Content::Swap => "swap",
            Content::Lvm => "lvm",
            Content::Luks => "luks",
            Content::Raid => "raid",
            Content::Unknown => "unknown",
        }
    }
}

/// Why a disk's partitions cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableError(pub String);

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something to read a disk from: bytes at an offset. Short reads past the end are zeros.
pub trait Disk {
    /// The disk's size.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; what lies past the disk's end reads as zeros.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

/// A file (or anything seekable) as a [`Disk`].
#[derive(Debug)]
pub struct FileDisk<F> {
    file: F,
    size: u64,
}

impl<F: Read + Seek> FileDisk<F> {
    /// `file`, `size` bytes long.
    pub fn new(file: F, size: u64) -> Self {
        FileDisk { file, size }
    }
}

impl<F: Read + Seek> Disk for FileDisk<F> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        if offset >= self.size {
            return Ok(());
        }
        let n = usize::try_from((self.size - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        self.file.seek(SeekFrom::Start(offset))?;
        self.file.read_exact(&mut buf[..n])
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

/// CRC-32 (IEEE, reflected), as GPT uses it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The partitions of `disk` with what each holds. A disk without a partition table is one
/// partition `disk` when a filesystem starts at its first byte, else none.
pub fn partitions(disk: &mut dyn Disk) -> Result<Vec<Partition>, TableError> {
    let io = |e: std::io::Error| TableError(format!("reading the disk: {e}"));
    let mut mbr = [0u8; SECTOR as usize];
    disk.read_at(0, &mut mbr).map_err(io)?;
    let mut found = if mbr[510..512] == [0x55, 0xAA] && protective(&mbr) {
        gpt(disk)?
    } else {
        let mut at_lba1 = false;
        for sector in GPT_SECTORS {
            let mut gpt_header = [0u8; 8];
            if disk.size() >= sector + 8 {
                disk.read_at(sector, &mut gpt_header).map_err(io)?;
            }
            at_lba1 |= &gpt_header == b"EFI PART";
        }
        if at_lba1 {
            // A GPT disk whose protective MBR went (some tools leave none): still a GPT.
            gpt(disk)?
        } else if mbr[510..512] == [0x55, 0xAA] && !filesystem_boot_sector(&mbr) {
            self::mbr(disk, &mbr)?
        } else {
            Vec::new()
        }
    };
    if found.is_empty() {
        let size = disk.size();
        let (content, label) = content_at(disk, 0, size).map_err(io)?;
        if content != Content::Unknown {
            found.push(Partition {
                name: "disk".into(),
                offset: 0,
                size,
                table: "none",
                content,
                label,
            });
        }
        return Ok(found);
    }
    for p in found.iter_mut() {
        let (content, label) = content_at(disk, p.offset, p.size).map_err(io)?;
        p.content = content;
        if label.is_some() {
            p.label = label;
        }
    }
    Ok(found)
}

/// Whether the MBR's partitions include GPT's protective one (type 0xEE).
fn protective(mbr: &[u8]) -> bool {
    (0..4).any(|i| mbr[446 + 16 * i + 4] == 0xEE)
}

/// Whether sector 0 is a filesystem's boot sector (NTFS, FAT) rather than an MBR: both end in
/// 0x55AA.
fn filesystem_boot_sector(sector: &[u8]) -> bool {
    &sector[3..11] == b"NTFS    "
        || &sector[3..11] == b"EXFAT   "
        || &sector[82..87] == b"FAT32"
        || &sector[54..59] == b"FAT16"
        || &sector[54..59] == b"FAT12"
}

/// GPT: the primary header and entries, else the backup ones; at 512-byte sectors, else at
/// 4096-byte ones (the header says which: it records its own LBA).
fn gpt(disk: &mut dyn Disk) -> Result<Vec<Partition>, TableError> {
    let size = disk.size();
    if size / SECTOR < 3 {
        return Err(TableError("a GPT disk too small for its table".into()));
    }
    let mut primary = Vec::new();
    for sector in GPT_SECTORS.into_iter().filter(|s| size / s >= 3) {
        match gpt_at(disk, 1, sector) {
            Ok(p) => return Ok(p),
            Err(e) => primary.push((sector, e)),
        }
    }
    let mut backup = Vec::new();
    for sector in GPT_SECTORS.into_iter().filter(|s| size / s >= 3) {
        match gpt_at(disk, size / sector - 1, sector) {
            Ok(p) => return Ok(p),
            Err(e) => backup.push((sector, e)),
        }
    }
    // The errors where a header was found at all say most.
    let say = |tried: &[(u64, TableError)]| {
        tried
            .iter()
            .find(|(_, e)| !e.0.starts_with("no GPT header"))
            .or(tried.first())
            .map(|(_, e)| e.0.clone())
            .unwrap_or_default()
    };
    Err(TableError(format!(
        "the GPT partition table is damaged: primary: {}; backup: {}",
        say(&primary),
        say(&backup)
    )))
}

/// The GPT whose header is at `lba` of `sector`-byte sectors.
fn gpt_at(disk: &mut dyn Disk, lba: u64, sector: u64) -> Result<Vec<Partition>, TableError> {
    let io = |e: std::io::Error| TableError(format!("reading the disk: {e}"));
    let mut h = vec![0u8; sector as usize];
    disk.read_at(lba * sector, &mut h).map_err(io)?;
    if &h[0..8] != b"EFI PART" {
        return Err(TableError(format!("no GPT header at sector {lba}")));
    }
    if le64(&h, 24) != lba {
        return Err(TableError(format!(
            "the header at sector {lba} of {sector} bytes says it is at sector {}",
            le64(&h, 24)
        )));
    }
    let header_size = le32(&h, 12) as usize;
    if !(92..=sector as usize).contains(&header_size) {
        return Err(TableError(format!("header size {header_size}")));
    }
    let mut copy = h[..header_size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != le32(&h, 16) {
        return Err(TableError("header checksum mismatch".into()));
    }
    let entries_lba = le64(&h, 72);
    let count = le32(&h, 80);
    let entry_size = le32(&h, 84);
    if count > MAX_GPT_ENTRIES
        || !(128..=4096).contains(&entry_size)
        || !entry_size.is_multiple_of(8)
    {
        return Err(TableError(format!("{count} entries of {entry_size} bytes")));
    }
    let disk_sectors = disk.size() / sector;
    let bytes = u64::from(count) * u64::from(entry_size);
    if entries_lba >= disk_sectors || bytes.div_ceil(sector) > disk_sectors - entries_lba {
        return Err(TableError("entries outside the disk".into()));
    }
    let mut entries = vec![0u8; bytes as usize];
    disk.read_at(entries_lba * sector, &mut entries)
        .map_err(io)?;
    if crc32(&entries) != le32(&h, 88) {
        return Err(TableError("entries checksum mismatch".into()));
    }
    let mut found = Vec::new();
    for (i, e) in entries.chunks_exact(entry_size as usize).enumerate() {
        if e[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        let first = le64(e, 32);
        let last = le64(e, 40);
        if first == 0 || last < first || last >= disk_sectors {
            return Err(TableError(format!(
                "partition {} spans sectors {first}..{last}, outside the disk",
                i + 1
            )));
        }
        let name: Vec<u16> = (0..36)
            .map(|k| le16(e, 56 + 2 * k))
            .take_while(|c| *c != 0)
            .collect();
        let name = String::from_utf16_lossy(&name);
        found.push(Partition {
            name: format!("p{}", i + 1),
            offset: first * sector,
            size: (last - first + 1) * sector,
            table: "gpt",
            content: Content::Unknown,
            label: (!name.is_empty()).then_some(name),
        });
    }
    Ok(found)
}

/// MBR: the primary partitions, and the logical ones an extended partition chains.
fn mbr(disk: &mut dyn Disk, sector0: &[u8]) -> Result<Vec<Partition>, TableError> {
    let io = |e: std::io::Error| TableError(format!("reading the disk: {e}"));
    let sectors = disk.size() / SECTOR;
    let inside = |start: u64, count: u64| start > 0 && count > 0 && start + count <= sectors;
    let mut found = Vec::new();
    let mut extended = None;
    for i in 0..4 {
        let e = &sector0[446 + 16 * i..446 + 16 * (i + 1)];
        let kind = e[4];
        let start = u64::from(le32(e, 8));
        let count = u64::from(le32(e, 12));
        if kind == 0 || count == 0 {
            continue;
        }
        if !inside(start, count) {
            return Err(TableError(format!(
                "MBR partition {} (sectors {start}+{count}) lies outside the disk",
                i + 1
            )));
        }
        if matches!(kind, 0x05 | 0x0F | 0x85) {
            extended = Some((start, count));
            continue;
        }
        found.push(Partition {
            name: format!("p{}", i + 1),
            offset: start * SECTOR,
            size: count * SECTOR,
            table: "mbr",
            content: Content::Unknown,
            label: None,
        });
    }
    if let Some((ext_start, ext_count)) = extended {
        let mut ebr = ext_start;
        let mut seen = std::collections::HashSet::new();
        let mut number = 5;
        while seen.insert(ebr) {
            if seen.len() > MAX_LOGICAL {
                return Err(TableError(format!(
                    "more than {MAX_LOGICAL} logical partitions"
                )));
            }
            let mut s = [0u8; SECTOR as usize];
            disk.read_at(ebr * SECTOR, &mut s).map_err(io)?;
            if s[510..512] != [0x55, 0xAA] {
                break;
            }
            let (this, next) = (&s[446..462], &s[462..478]);
            let start = ebr + u64::from(le32(this, 8));
            let count = u64::from(le32(this, 12));
            if this[4] != 0 && count > 0 {
                if !inside(start, count) || start + count > ext_start + ext_count {
                    return Err(TableError(format!(
                        "logical partition {number} lies outside its extended partition"
                    )));
                }
                found.push(Partition {
                    name: format!("p{number}"),
                    offset: start * SECTOR,
                    size: count * SECTOR,
                    table: "mbr",
                    content: Content::Unknown,
                    label: None,
                });
                number += 1;
            }
            let rel = u64::from(le32(next, 8));
            if next[4] == 0 || rel == 0 || rel >= ext_count {
                break;
            }
            ebr = ext_start + rel;
        }
    }
    Ok(found)
}

/// What the `size` bytes at `offset` hold, and the filesystem's label.
fn content_at(
    disk: &mut dyn Disk,
    offset: u64,
    size: u64,
) -> std::io::Result<(Content, Option<String>)> {
    let mut b = vec![0u8; 72 * 1024];
    let n = usize::try_from(size.min(b.len() as u64)).unwrap_or(b.len());
    disk.read_at(offset, &mut b[..n])?;
    let text = |bytes: &[u8]| {
        let end = bytes.iter().position(|c| *c == 0).unwrap_or(bytes.len());
        let t = String::from_utf8_lossy(&bytes[..end]).trim().to_string();
        (!t.is_empty()).then_some(t)
    };
    Ok(if le16(&b, 1080) == 0xEF53 {
        (Content::Ext4, text(&b[1144..1160]))
    } else if &b[0..4] == b"XFSB" {
        (Content::Xfs, text(&b[108..120]))
    } else if &b[0x10040..0x10048] == b"_BHRfS_M" {
        (Content::Btrfs, text(&b[0x1012b..0x1012b + 256]))
    } else if &b[3..11] == b"NTFS    " {
        (Content::Ntfs, None)
    } else if &b[3..11] == b"EXFAT   " {
        (Content::Exfat, None)
    } else if &b[82..87] == b"FAT32" || &b[54..59] == b"FAT16" || &b[54..59] == b"FAT12" {
        (Content::Vfat, None)
    } else if &b[4086..4096] == b"SWAPSPACE2" {
        (Content::Swap, None)
    } else if &b[512..520] == b"LABELONE" && &b[536..544] == b"LVM2 001" {
        (Content::Lvm, None)
    } else if b[0..6] == *b"LUKS\xba\xbe" {
        (Content::Luks, None)
    } else if le32(&b, 4096) == 0xA92B_4EFC {
        (Content::Raid, None)
    } else {
        (Content::Unknown, None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A disk in memory.
    struct Mem(Vec<u8>);

    impl Disk for Mem {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            buf.fill(0);
            let len = self.0.len() as u64;
            if offset < len {
                let n = (len - offset).min(buf.len() as u64) as usize;
                buf[..n].copy_from_slice(&self.0[offset as usize..offset as usize + n]);
            }
            Ok(())
        }
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put64(b: &mut [u8], at: usize, v: u64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// A GPT disk of `sectors` with partitions `(first, last, name)`, both headers written.
    fn gpt_disk(sectors: u64, parts: &[(u64, u64, &str)]) -> Vec<u8> {
        gpt_disk_of(SECTOR, sectors, parts)
    }

    /// The same with `sector`-byte logical sectors.
    fn gpt_disk_of(sector: u64, sectors: u64, parts: &[(u64, u64, &str)]) -> Vec<u8> {
        let mut d = vec![0u8; (sectors * sector) as usize];
        d[446 + 4] = 0xEE;
        put32(&mut d, 446 + 8, 1);
        put32(&mut d, 446 + 12, (sectors - 1) as u32);
        d[510] = 0x55;
        d[511] = 0xAA;
        let mut entries = vec![0u8; 128 * 128];
        for (i, (first, last, name)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[0] = 0xAF; // some type GUID
            e[16] = i as u8 + 1;
            put64(e, 32, *first);
            put64(e, 40, *last);
            for (k, c) in name.encode_utf16().enumerate() {
                e[56 + 2 * k..58 + 2 * k].copy_from_slice(&c.to_le_bytes());
            }
        }
        let crc = crc32(&entries);
        for (header_lba, entries_lba) in [(1, 2), (sectors - 1, sectors - 33)] {
            let at = (entries_lba * sector) as usize;
            d[at..at + entries.len()].copy_from_slice(&entries);
            let mut h = vec![0u8; 92];
            h[0..8].copy_from_slice(b"EFI PART");
            put32(&mut h, 8, 0x0001_0000);
            put32(&mut h, 12, 92);
            put64(&mut h, 24, header_lba);
            put64(&mut h, 72, entries_lba);
            put32(&mut h, 80, 128);
            put32(&mut h, 84, 128);
            put32(&mut h, 88, crc);
            let hcrc = crc32(&h);
            put32(&mut h, 16, hcrc);
            let at = (header_lba * sector) as usize;
            d[at..at + 92].copy_from_slice(&h);
        }
        d
    }

    fn ext4_at(d: &mut [u8], offset: usize, label: &str) {
        d[offset + 1080..offset + 1082].copy_from_slice(&0xEF53u16.to_le_bytes());
        d[offset + 1144..offset + 1144 + label.len()].copy_from_slice(label.as_bytes());
    }

    #[test]
    fn crc32_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn gpt_partitions_with_their_filesystems() {
        let mut d = gpt_disk(4096, &[(34, 2047, "root"), (2048, 4000, "data")]);
        ext4_at(&mut d, 34 * 512, "rootfs");
        d[2048 * 512 + 3..2048 * 512 + 11].copy_from_slice(b"NTFS    ");
        let p = partitions(&mut Mem(d)).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].offset, p[0].size, p[0].content),
            ("p1", 34 * 512, 2014 * 512, Content::Ext4)
        );
        assert_eq!(p[0].label.as_deref(), Some("rootfs"));
        assert_eq!(
            (p[1].content, p[1].label.as_deref()),
            (Content::Ntfs, Some("data"))
        );
    }

    #[test]
    fn a_damaged_primary_gpt_falls_back_to_the_backup_and_both_damaged_is_an_error() {
        let mut d = gpt_disk(4096, &[(34, 2047, "a")]);
        d[512 + 40] ^= 1;
        assert_eq!(partitions(&mut Mem(d.clone())).unwrap().len(), 1);
        let last = (4095 * 512) as usize;
        d[last + 40] ^= 1;
        let e = partitions(&mut Mem(d)).unwrap_err();
        assert!(e.0.contains("damaged"), "{e}");
    }

    #[test]
    fn a_gpt_of_4096_byte_sectors_is_read_at_them() {
        let mut d = gpt_disk_of(4096, 1024, &[(6, 500, "root"), (512, 900, "data")]);
        ext4_at(&mut d, 6 * 4096, "rootfs");
        let p = partitions(&mut Mem(d.clone())).unwrap();
        assert_eq!(
            p.iter()
                .map(|p| (p.offset, p.size, p.content))
                .collect::<Vec<_>>(),
            vec![
                (6 * 4096, 495 * 4096, Content::Ext4),
                (512 * 4096, 389 * 4096, Content::Unknown)
            ]
        );
        // Its primary header damaged: the backup at the last 4 KiB sector.
        d[4096 + 40] ^= 1;
        assert_eq!(partitions(&mut Mem(d.clone())).unwrap().len(), 2);
        // Without the protective MBR too.
        d[510] = 0;
        assert_eq!(partitions(&mut Mem(d.clone())).unwrap().len(), 2);
        // A header that is not where it says it is is not taken.
        let mut d = gpt_disk(4096, &[(34, 2047, "a")]);
        d[512 + 24] = 7;
        d[4095 * 512 + 24] = 7;
        let e = partitions(&mut Mem(d)).unwrap_err();
        assert!(e.0.contains("says it is at sector"), "{e}");
    }

    #[test]
    fn gpt_entries_outside_the_disk_are_refused() {
        let d = gpt_disk(4096, &[(34, 9000, "a")]);
        assert!(partitions(&mut Mem(d)).is_err());
    }

    #[test]
    fn mbr_primary_and_logical_partitions() {
        let mut d = vec![0u8; 8192 * 512];
        let entry = |d: &mut [u8], at: usize, kind: u8, start: u32, count: u32| {
            d[at + 4] = kind;
            put32(d, at + 8, start);
            put32(d, at + 12, count);
        };
        entry(&mut d, 446, 0x83, 63, 1000);
        entry(&mut d, 462, 0x05, 2048, 4096);
        d[510] = 0x55;
        d[511] = 0xAA;
        // Two logical partitions chained from the extended one.
        let ebr1 = 2048 * 512;
        entry(&mut d, ebr1 + 446, 0x83, 63, 1000);
        entry(&mut d, ebr1 + 462, 0x05, 2048, 2048);
        d[ebr1 + 510] = 0x55;
        d[ebr1 + 511] = 0xAA;
        let ebr2 = 4096 * 512;
        entry(&mut d, ebr2 + 446, 0x07, 63, 500);
        d[ebr2 + 510] = 0x55;
        d[ebr2 + 511] = 0xAA;
        ext4_at(&mut d, (2048 + 63) * 512, "");
        let p = partitions(&mut Mem(d)).unwrap();
        let names: Vec<(&str, u64, Content)> = p
            .iter()
            .map(|p| (p.name.as_str(), p.offset / 512, p.content))
            .collect();
        assert_eq!(
            names,
            [
                ("p1", 63, Content::Unknown),
                ("p5", 2111, Content::Ext4),
                ("p6", 4159, Content::Unknown)
            ]
        );
    }

    #[test]
    fn an_ebr_chain_that_loops_ends() {
        let mut d = vec![0u8; 8192 * 512];
        d[446 + 4] = 0x05;
        put32(&mut d, 446 + 8, 2048);
        put32(&mut d, 446 + 12, 4096);
        d[510] = 0x55;
        d[511] = 0xAA;
        let ebr = 2048 * 512;
        d[ebr + 462 + 4] = 0x05;
        put32(&mut d, ebr + 462 + 8, 0); // points back at itself
        d[ebr + 510] = 0x55;
        d[ebr + 511] = 0xAA;
        assert_eq!(partitions(&mut Mem(d)).unwrap(), []);
    }

    #[test]
    fn a_filesystem_on_the_whole_disk_and_an_empty_disk() {
        let mut d = vec![0u8; 4096 * 512];
        assert_eq!(partitions(&mut Mem(d.clone())).unwrap(), []);
        d[0..4].copy_from_slice(b"XFSB");
        let p = partitions(&mut Mem(d)).unwrap();
        assert_eq!((p[0].name.as_str(), p[0].content), ("disk", Content::Xfs));
        // An NTFS boot sector ends in 0x55AA too: it is no MBR.
        let mut n = vec![0u8; 4096 * 512];
        n[3..11].copy_from_slice(b"NTFS    ");
        n[510] = 0x55;
        n[511] = 0xAA;
        let p = partitions(&mut Mem(n)).unwrap();
        assert_eq!((p[0].name.as_str(), p[0].content), ("disk", Content::Ntfs));
    }

    #[test]
    fn any_bytes_are_read_without_a_panic() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..200 {
            let mut d = gpt_disk(256, &[(34, 200, "x")]);
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed % d.len() as u64) as usize;
                d[at] = (seed >> 32) as u8;
            }
            let _ = partitions(&mut Mem(d));
        }
    }
}
