//! What a QCOW2 image holds itself, read from its own L1/L2 tables: the guest ranges it holds
//! as data (and where in the file they are) and the ranges it marks as zeroes. Only reads —
//! QEMU's tools own every QCOW2 write — and without opening the backing chain, so reading the
//! map of each link of a chain costs what that link holds, and no process.
//!
//! Everything read is untrusted: every table and every data cluster must lie inside the file,
//! or the image is reported damaged. Layouts this reader leaves to QEMU — encryption, an
//! external data file, extended L2 entries, compressed clusters — give `None`, and the caller
//! asks QEMU instead.

use super::read_at::ReadAt;
use std::fs::File;
use std::path::Path;

/// The image's own clusters, as guest ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnMap {
    /// Data: (guest offset, length, offset in the file), adjacent clusters merged.
    pub data: Vec<(u64, u64, u64)>,
    /// Ranges the image decides (data or zeroes), where a backing file does not show through.
    pub own: Vec<(u64, u64)>,
    /// Its virtual size, as its header says.
    pub size: u64,
}

/// The largest L1 table QEMU opens.
const MAX_L1_BYTES: u64 = 32 << 20;
/// Incompatible features this reader follows: dirty (1), corrupt is left to QEMU.
const INCOMPAT_DIRTY: u64 = 1;
/// L2 entry: the cluster reads as zeroes.
const L2_ZERO: u64 = 1;
/// L2 entry: the cluster is compressed.
const L2_COMPRESSED: u64 = 1 << 62;
/// Offset bits of L1 and standard L2 entries.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the map of the QCOW2 image at `path`: `Ok(None)` for a layout left to QEMU,
/// `Err(why)` for an image whose tables point outside it.
pub fn own_map(path: &Path) -> std::result::Result<Option<OwnMap>, String> {
    let f = File::open(path).map_err(|e| e.to_string())?;
    own_map_of(&f)
}

/// [`own_map`] of the image open as `f`.
pub fn own_map_of(f: &dyn ReadAt) -> std::result::Result<Option<OwnMap>, String> {
    match Qcow2Tables::open(f)? {
        None => Ok(None),
        Some(t) => t.map(f, 0, t.size).map(Some),
    }
}

/// An image's cluster tables: the header and the L1 table, checked when opened, and the L2
/// tables read again for each guest range mapped — so mapping a range costs memory in
/// proportion to that range, whatever the image's size.
#[derive(Debug, Clone)]
pub struct Qcow2Tables {
    /// The virtual size.
    pub size: u64,
    cluster: u64,
    /// L2 entries per table.
    per_l2: u64,
    /// Where each L2 table is (0: none).
    l1: Vec<u64>,
    file_len: u64,
}

/// What an L2 entry says of its guest cluster.
enum Cluster {
    /// Nothing: a backing file shows through.
    Unallocated,
    /// Zeroes.
    Zero,
    /// Data at this offset of the file.
    Data(u64),
    /// Compressed: left to QEMU.
    Compressed,
}

impl Qcow2Tables {
    /// The tables of the image open as `f`: `Ok(None)` for a layout left to QEMU, `Err(why)`
    /// for an image whose tables point outside it or at each other. Every L2 table is read
    /// once here, one at a time, to find such entries before anything is read through them.
    pub fn open(f: &dyn ReadAt) -> std::result::Result<Option<Qcow2Tables>, String> {
        let file_len = f.len().map_err(|e| e.to_string())?;
        let mut h = vec![0u8; file_len.min(112) as usize];
        f.read_full_at(&mut h, 0).map_err(|e| e.to_string())?;
        let short = || "its header is cut short".to_string();
        if be32(&h, 0) != Some(0x5146_49fb) {
            return Err("it is not a QCOW2 image (bad magic)".into());
        }
        let version = be32(&h, 4).ok_or_else(short)?;
        let cluster_bits = be32(&h, 20).ok_or_else(short)?;
        let size = be64(&h, 24).ok_or_else(short)?;
        let crypt = be32(&h, 32).ok_or_else(short)?;
        let l1_size = u64::from(be32(&h, 36).ok_or_else(short)?);
        let l1_offset = be64(&h, 40).ok_or_else(short)?;
        let incompatible = if version >= 3 {
            be64(&h, 72).ok_or_else(short)?
        } else {
            0
        };
        if !(9..=21).contains(&cluster_bits) {
            return Err(format!("its cluster size 2^{cluster_bits} is impossible"));
        }
        // Versions 2 and 3 are read here; any other is left to QEMU, which knows or refuses it.
        if version != 2 && version != 3 {
            return Ok(None);
        }
        if crypt != 0 || incompatible & !INCOMPAT_DIRTY != 0 {
            return Ok(None);
        }
        let cluster = 1u64 << cluster_bits;
        let per_l2 = cluster / 8;
        let clusters = size.div_ceil(cluster);
        if l1_size < clusters.div_ceil(per_l2) {
            return Err(format!(
                "its L1 table ({l1_size} entries) does not cover its {size} bytes"
            ));
        }
        let l1_len = clusters.div_ceil(per_l2) * 8;
        // QEMU refuses L1 tables over 32 MiB; a larger one is a forged header, not an image.
        if l1_len > MAX_L1_BYTES {
            return Err(format!(
                "its L1 table ({l1_len} bytes) is larger than QEMU allows"
            ));
        }
        let t = Qcow2Tables {
            size,
            cluster,
            per_l2,
            l1: Vec::new(),
            file_len,
        };
        if !t.inside(l1_offset, l1_len) {
            return Err("its L1 table lies beyond the end of the file".into());
        }
        let mut l1 = vec![0u8; l1_len as usize];
        f.read_full_at(&mut l1, l1_offset)
            .map_err(|e| e.to_string())?;
        let mut tables = std::collections::HashSet::new();
        let mut offsets = Vec::with_capacity(l1.len() / 8);
        for (i, entry) in l1.chunks_exact(8).enumerate() {
            let l2_offset = be64(entry, 0).unwrap_or(0) & OFFSET_MASK;
            if l2_offset != 0 {
                if !l2_offset.is_multiple_of(cluster) || !t.inside(l2_offset, cluster) {
                    return Err(format!("L1 entry {i} points outside the file"));
                }
                // One L2 table per L1 entry: tables shared between entries (which QEMU never
                // writes) would let a small file describe an endless map.
                if !tables.insert(l2_offset) {
                    return Err(format!("L1 entry {i} shares its L2 table with another"));
                }
            }
            offsets.push(l2_offset);
        }
        let t = Qcow2Tables { l1: offsets, ..t };
        let mut l2 = vec![0u8; cluster as usize];
        for i in 0..t.l1.len() {
            for c in t.clusters_of(f, i, &mut l2)? {
                if let (_, Cluster::Compressed) = c? {
                    return Ok(None);
                }
            }
        }
        Ok(Some(t))
    }

    fn inside(&self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.file_len)
    }

    /// The guest clusters L1 entry `i` maps, read into `l2`: (guest offset, what it is);
    /// an entry pointing outside the file is an error.
    fn clusters_of<'a>(
        &'a self,
        f: &dyn ReadAt,
        i: usize,
        l2: &'a mut [u8],
    ) -> std::result::Result<
        impl Iterator<Item = std::result::Result<(u64, Cluster), String>> + 'a,
        String,
    > {
        let l2_offset = self.l1[i];
        let first = i as u64 * self.per_l2;
        let clusters = self.size.div_ceil(self.cluster);
        let n = if l2_offset == 0 {
            0
        } else {
            f.read_full_at(l2, l2_offset).map_err(|e| e.to_string())?;
            self.per_l2.min(clusters.saturating_sub(first)) as usize
        };
        Ok(l2.chunks_exact(8).take(n).enumerate().map(move |(j, e)| {
            let guest = (first + j as u64) * self.cluster;
            let e = be64(e, 0).unwrap_or(0);
            let host = e & OFFSET_MASK;
            let what = if e & L2_COMPRESSED != 0 {
                Cluster::Compressed
            } else if e & L2_ZERO != 0 {
                Cluster::Zero
            } else if host != 0 {
                if !host.is_multiple_of(self.cluster) || !self.inside(host, self.cluster) {
                    return Err(format!(
                        "the cluster at guest offset {guest} points outside the file"
                    ));
                }
                Cluster::Data(host)
            } else {
                Cluster::Unallocated
            };
            Ok((guest, what))
        }))
    }

    /// The map of the clusters overlapping the guest range `[start, end)` (whole clusters:
    /// it may reach past either end).
    pub fn map(&self, f: &dyn ReadAt, start: u64, end: u64) -> std::result::Result<OwnMap, String> {
        let mut map = OwnMap {
            size: self.size,
            ..OwnMap::default()
        };
        let end = end.min(self.size);
        if start >= end {
            return Ok(map);
        }
        let span = self.cluster * self.per_l2;
        let mut l2 = vec![0u8; self.cluster as usize];
        for i in (start / span) as usize..=((end - 1) / span) as usize {
            for c in self.clusters_of(f, i, &mut l2)? {
                let (guest, what) = c?;
                if guest + self.cluster <= start || guest >= end {
                    continue;
                }
                let len = self.cluster.min(self.size - guest);
                match what {
                    Cluster::Unallocated => {}
                    Cluster::Zero => push_range(&mut map.own, guest, len),
                    Cluster::Data(host) => {
                        push_range(&mut map.own, guest, len);
                        match map.data.last_mut() {
                            Some((g, l, h)) if *g + *l == guest && *h + *l == host => *l += len,
                            _ => {
                                // Each data extent needs a host cluster of its own: more means
                                // tables pointing several guest clusters at the same bytes.
                                if map.data.len() as u64 > self.file_len / self.cluster {
                                    return Err("its cluster tables point more guest clusters \
                                                at data than the file holds"
                                        .into());
                                }
                                map.data.push((guest, len, host))
                            }
                        }
                    }
                    Cluster::Compressed => {
                        return Err(format!(
                            "the cluster at guest offset {guest} became compressed"
                        ))
                    }
                }
            }
        }
        Ok(map)
    }
}

fn push_range(ranges: &mut Vec<(u64, u64)>, start: u64, len: u64) {
    match ranges.last_mut() {
        Some((s, l)) if *s + *l == start => *l += len,
        _ => ranges.push((start, len)),
    }
}

impl OwnMap {
    /// The guest bytes `[off, off + buf.len())` as the image alone reads them: its data where
    /// it holds data, zeroes elsewhere, read from `file`.
    pub fn read(&self, file: &dyn ReadAt, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        let end = off + buf.len() as u64;
        let first = self.data.partition_point(|(g, l, _)| g + l <= off);
        for (g, l, h) in &self.data[first..] {
            if *g >= end {
                break;
            }
            let from = off.max(*g);
            let to = end.min(g + l);
            let dst = &mut buf[(from - off) as usize..(to - off) as usize];
            file.read_full_at(dst, h + (from - g))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendense_testkit::{create_image, create_overlay, qemu_io, run};
    use std::os::unix::fs::FileExt;

    /// What `qemu-img map` of the image alone says: (start, length, data, present).
    fn qemu_map(img: &Path) -> Vec<(u64, u64, bool, bool)> {
        let alone = crate::repo::chain::without_backing(img).unwrap();
        let out = run("qemu-img", &["map", "--output=json", &alone]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["start"].as_u64().unwrap(),
                    e["length"].as_u64().unwrap(),
                    e["data"] == true,
                    e["present"] == true,
                )
            })
            .collect()
    }

    #[test]
    fn the_map_agrees_with_qemu_and_reads_what_qemu_reads() {
        let dir = tempfile::tempdir().unwrap();
        let base = create_image(&dir.path().join("base.qcow2"), "qcow2", "9000k");
        qemu_io(&base, "qcow2", &["write -P 0x11 0 4M"]);
        let top = create_overlay(&dir.path().join("top.qcow2"), "base.qcow2");
        qemu_io(
            &top,
            "qcow2",
            &[
                "write -P 0x22 64k 128k",
                "write -z 1M 192k",
                "write -P 0x33 8960k 40k",
                "write -P 0x44 3M 64k",
            ],
        );
        let map = own_map(&top).unwrap().unwrap();
        let q = qemu_map(&top);
        let data: Vec<(u64, u64)> = q.iter().filter(|e| e.2).map(|e| (e.0, e.1)).collect();
        let own: Vec<(u64, u64)> = q.iter().filter(|e| e.3).map(|e| (e.0, e.1)).collect();
        let mine_data: Vec<(u64, u64)> = {
            let mut v: Vec<(u64, u64)> = Vec::new();
            for (g, l, _) in &map.data {
                push_range(&mut v, *g, *l);
            }
            v
        };
        assert_eq!(mine_data, data);
        assert_eq!(map.own, own);
        // Reading through the map gives what QEMU reads from the image alone.
        let raw = dir.path().join("alone.raw");
        let alone = crate::repo::chain::without_backing(&top).unwrap();
        run(
            "qemu-img",
            &["convert", "-O", "raw", &alone, raw.to_str().unwrap()],
        );
        let want = std::fs::read(&raw).unwrap();
        let f = File::open(&top).unwrap();
        let mut got = vec![0u8; want.len()];
        map.read(&f, 0, &mut got).unwrap();
        assert!(
            got == want,
            "the image alone reads differently through the map"
        );
    }

    #[test]
    fn tables_that_point_outside_the_file_are_damage() {
        let dir = tempfile::tempdir().unwrap();
        let img = create_image(&dir.path().join("i.qcow2"), "qcow2", "4M");
        qemu_io(&img, "qcow2", &["write -P 1 0 64k"]);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let mut h = [0u8; 48];
        f.read_exact_at(&mut h, 0).unwrap();
        let l1 = be64(&h, 40).unwrap();
        let mut e = [0u8; 8];
        f.read_exact_at(&mut e, l1).unwrap();
        let l2 = be64(&e, 0).unwrap() & OFFSET_MASK;
        // The first data cluster pointed far beyond the end of the file.
        let far: u64 = (1 << 40) | (1 << 63);
        f.write_all_at(&far.to_be_bytes(), l2).unwrap();
        let err = own_map(&img).unwrap_err();
        assert!(err.contains("outside the file"), "{err}");
        // The L1 table itself beyond the end.
        f.write_all_at(&(1u64 << 40).to_be_bytes(), 40).unwrap();
        assert!(own_map(&img).unwrap_err().contains("L1 table"));
    }

    #[test]
    fn layouts_left_to_qemu_give_none() {
        let dir = tempfile::tempdir().unwrap();
        let src = create_image(&dir.path().join("s.qcow2"), "qcow2", "4M");
        let img = dir.path().join("c.qcow2");
        qemu_io(&src, "qcow2", &["write -P 1 0 1M"]);
        run(
            "qemu-img",
            &[
                "convert",
                "-c",
                "-O",
                "qcow2",
                src.to_str().unwrap(),
                img.to_str().unwrap(),
            ],
        );
        assert_eq!(own_map(&img).unwrap(), None, "compressed clusters");
    }
}
