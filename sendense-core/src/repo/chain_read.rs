//! A restore point read straight from the QCOW2 images of its chain, without a QEMU process:
//! each link's own map ([`super::qcow2_map`]) says which guest ranges it decides — data at a
//! place in its file, or zeroes — and the newest link deciding a range is the one QEMU would
//! read it from (a range no link decides reads as zeroes: the full at the bottom has no backing
//! file). The chain is the one the catalog records, link by link: the images' own backing names
//! are never followed. An image with a layout this reader leaves to QEMU (compression,
//! encryption, an external data file) is not read here: the caller serves the chain with
//! qemu-nbd instead.
//!
//! Everything is read positionally from files opened once, so any number of readers share one
//! [`ChainReader`]. The chain is composed a window (1 GiB of guest space) at a time, from the
//! L2 tables of that window only, and the last few windows used are kept: memory stays bounded
//! whatever the disk's size and however fragmented its images are.

use super::qcow2_map::{OwnMap, Qcow2Tables};
use super::read_at::ReadAt;
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::Extent;
use crate::recent::Recent;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Guest bytes composed at a time.
const WINDOW: u64 = 1 << 30;

/// Composed windows kept.
const KEPT_WINDOWS: usize = 8;

/// A run of guest bytes and where they come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    offset: u64,
    len: u64,
    /// The link and the offset in its file; `None`: zeroes.
    data: Option<(usize, u64)>,
}

/// The disk of a restore point, readable by guest offset.
#[derive(Debug)]
pub struct ChainReader {
    size: u64,
    /// Top first.
    links: Vec<(Box<dyn ReadAt>, Qcow2Tables)>,
    /// The images, for messages.
    paths: Vec<String>,
    window: u64,
    /// Composed windows (sorted, disjoint pieces covering each), the last used at the back.
    kept: Recent<Vec<Piece>>,
    /// Names the chain in messages.
    name: String,
}

/// `[a, b)` minus the sorted, disjoint ranges `cut`: what is left, in order.
fn subtract(a: u64, b: u64, cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = a;
    let first = cut.partition_point(|(_, e)| *e <= a);
    for &(s, e) in &cut[first..] {
        if s >= b {
            break;
        }
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
        if at >= b {
            break;
        }
    }
    if at < b {
        out.push((at, b));
    }
    out
}

/// The union of two sorted, disjoint range lists (`(start, end)`), merged.
fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b.iter()).copied().collect();
    all.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (s, e) in all {
        match out.last_mut() {
            Some((_, le)) if s <= *le => *le = (*le).max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The pieces of the guest range `[start, end)` of a chain whose links (top first) have `maps`
/// (each covering at least that range).
fn compose(maps: &[OwnMap], start: u64, end: u64) -> Vec<Piece> {
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let mut pieces = Vec::new();
    for (link, map) in maps.iter().enumerate() {
        let own: Vec<(u64, u64)> = map
            .own
            .iter()
            .filter(|&&(s, l)| s < end && s + l > start)
            .map(|&(s, l)| (s.max(start), (s + l).min(end)))
            .collect();
        for &(s, e) in &own {
            for (a, b) in subtract(s, e, &covered) {
                // Within [a, b): this link's data where it has data, its zeroes elsewhere.
                let mut at = a;
                let first = map.data.partition_point(|(g, l, _)| g + l <= a);
                for &(g, l, host) in &map.data[first..] {
                    if g >= b {
                        break;
                    }
                    let (ds, de) = (g.max(a), (g + l).min(b));
                    if ds > at {
                        pieces.push(Piece {
                            offset: at,
                            len: ds - at,
                            data: None,
                        });
                    }
                    pieces.push(Piece {
                        offset: ds,
                        len: de - ds,
                        data: Some((link, host + (ds - g))),
                    });
                    at = de;
                }
                if at < b {
                    pieces.push(Piece {
                        offset: at,
                        len: b - at,
                        data: None,
                    });
                }
            }
        }
        // Past a link's own end QEMU reads zeroes, whatever older links hold there.
        let own = if map.size < end {
            union(&own, &[(map.size.max(start), end)])
        } else {
            own
        };
        covered = union(&covered, &own);
    }
    pieces.sort_unstable_by_key(|p| p.offset);
    // Gaps no link decides read as zeroes; neighbouring zeroes become one piece.
    let mut out: Vec<Piece> = Vec::with_capacity(pieces.len() + 1);
    let mut at = start;
    let push = |out: &mut Vec<Piece>, p: Piece| match out.last_mut() {
        Some(last)
            if last.data.is_none() && p.data.is_none() && last.offset + last.len == p.offset =>
        {
            last.len += p.len
        }
        _ => out.push(p),
    };
    for p in pieces {
        if p.offset > at {
            push(
                &mut out,
                Piece {
                    offset: at,
                    len: p.offset - at,
                    data: None,
                },
            );
        }
        at = p.offset + p.len;
        push(&mut out, p);
    }
    if at < end {
        push(
            &mut out,
            Piece {
                offset: at,
                len: end - at,
                data: None,
            },
        );
    }
    out
}

impl ChainReader {
    /// The chain of `files` (top first, as the catalog records it); `None` when an image has a
    /// layout only QEMU reads. A damaged image is an error. The disk is as long as the top
    /// image says (QEMU makes a QCOW2 image whole 512-byte sectors: the caller checks it
    /// against the size recorded).
    pub fn open(files: &[&Path]) -> Result<Option<ChainReader>> {
        ChainReader::open_in_windows(files, WINDOW)
    }

    fn open_in_windows(files: &[&Path], window: u64) -> Result<Option<ChainReader>> {
        let mut images: Vec<(String, Box<dyn ReadAt>)> = Vec::new();
        for path in files {
            // One handle: the tables and the data read come from the same file.
            let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
            images.push((path.display().to_string(), Box::new(file)));
        }
        ChainReader::from_images(images, window)
    }

    /// The chain of `images` (top first: a name for messages, and its bytes), wherever they
    /// are — files, or objects in a bucket. As [`ChainReader::open`] otherwise.
    pub fn open_images(images: Vec<(String, Box<dyn ReadAt>)>) -> Result<Option<ChainReader>> {
        ChainReader::from_images(images, WINDOW)
    }

    fn from_images(
        images: Vec<(String, Box<dyn ReadAt>)>,
        window: u64,
    ) -> Result<Option<ChainReader>> {
        let mut links = Vec::new();
        let mut paths = Vec::new();
        for (name, image) in images {
            let tables = match Qcow2Tables::open(&*image) {
                Ok(Some(t)) => t,
                Ok(None) => return Ok(None),
                Err(why) => return Err(damaged(&name, &why)),
            };
            links.push((image, tables));
            paths.push(name);
        }
        Ok(Some(ChainReader {
            size: links.first().map_or(0, |(_, t)| t.size),
            links,
            name: paths.first().cloned().unwrap_or_default(),
            paths,
            window,
            kept: Recent::new(KEPT_WINDOWS),
        }))
    }

    /// The disk's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chain, for messages (its top image).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pieces of window `w`, composed (or kept from before).
    fn window(&self, w: u64) -> Result<Arc<Vec<Piece>>> {
        if let Some(pieces) = self.kept.get(w) {
            return Ok(pieces);
        }
        let start = w * self.window;
        let end = (start + self.window).min(self.size);
        let mut maps = Vec::with_capacity(self.links.len());
        for (i, (file, tables)) in self.links.iter().enumerate() {
            maps.push(
                tables
                    .map(&**file, start, end)
                    .map_err(|why| damaged(&self.paths[i], &why))?,
            );
        }
        let pieces = self.kept.put(w, compose(&maps, start, end));
        Ok(pieces)
    }

    /// Calls `f` for each piece overlapping `[offset, end)` with the part of it inside:
    /// `(start, end, piece)`, in order.
    fn each_piece(
        &self,
        offset: u64,
        end: u64,
        mut f: impl FnMut(u64, u64, &Piece) -> Result<()>,
    ) -> Result<()> {
        let mut w = offset / self.window;
        while w * self.window < end {
            let pieces = self.window(w)?;
            let (from, to) = (offset.max(w * self.window), end.min((w + 1) * self.window));
            let first = pieces.partition_point(|p| p.offset + p.len <= from);
            for p in pieces[first..].iter().take_while(|p| p.offset < to) {
                f(p.offset.max(from), (p.offset + p.len).min(to), p)?;
            }
            w += 1;
        }
        Ok(())
    }

    /// What `[offset, offset + len)` holds, as NBD's `base:allocation` would say it: data
    /// (flags 0), or zeroes (`STATE_HOLE | STATE_ZERO`).
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        use crate::nbd::proto::{STATE_HOLE, STATE_ZERO};
        let end = (offset + len).min(self.size);
        let mut out: Vec<Extent> = Vec::new();
        self.each_piece(offset, end, |s, e, p| {
            let flags = if p.data.is_some() {
                0
            } else {
                STATE_HOLE | STATE_ZERO
            };
            match out.last_mut() {
                Some(last) if last.flags == flags && last.offset + last.length == s => {
                    last.length += e - s
                }
                _ => out.push(Extent {
                    offset: s,
                    length: e - s,
                    flags,
                }),
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Fills `buf` with the guest bytes from `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            return Err(Error::internal(format!(
                "a read of {} bytes at {offset} past the end of a {}-byte disk",
                buf.len(),
                self.size
            )));
        }
        self.each_piece(offset, end, |s, e, p| {
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            match p.data {
                None => dst.fill(0),
                Some((link, host)) => self.links[link]
                    .0
                    .read_full_at(dst, host + (s - p.offset))
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::Io,
                            format!("reading {} at guest offset {s}: {e}", self.name),
                        )
                    })?,
            }
            Ok(())
        })
    }
}

/// The error for image `path` whose tables are damaged (`why`).
fn damaged(path: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::External,
        format!("the image {path} is damaged: {why}"),
    )
    .with_help("Run `sendense backup verify` to check the chain.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendense_testkit::{create_image, create_overlay, qemu_io, qemu_reads};

    /// A middle link smaller than the top hides what older links hold past its end: QEMU reads
    /// zeroes there.
    #[test]
    fn past_a_smaller_links_end_the_chain_reads_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let base = create_image(&d.join("base.qcow2"), "qcow2", "4M");
        qemu_io(&base, "qcow2", &["write -P 0x11 0 4M"]);
        let mid =
            sendense_testkit::create_overlay_sized(&d.join("mid.qcow2"), "base.qcow2", Some("2M"));
        let top = create_overlay(&d.join("top.qcow2"), "mid.qcow2");
        sendense_testkit::run("qemu-img", &["resize", "-q", top.to_str().unwrap(), "4M"]);
        let reader = ChainReader::open(&[&top, &mid, &base]).unwrap().unwrap();
        let mut ours = vec![0xAAu8; 4 << 20];
        reader.read(0, &mut ours).unwrap();
        let theirs_raw = qemu_reads(&top);
        assert_eq!(ours, theirs_raw);
        assert!(ours[3 << 20..].iter().all(|b| *b == 0));
    }

    #[test]
    fn range_arithmetic() {
        assert_eq!(subtract(0, 10, &[]), [(0, 10)]);
        assert_eq!(
            subtract(0, 10, &[(2, 4), (6, 7)]),
            [(0, 2), (4, 6), (7, 10)]
        );
        assert_eq!(subtract(3, 5, &[(0, 10)]), []);
        assert_eq!(subtract(5, 10, &[(0, 6), (9, 12)]), [(6, 9)]);
        assert_eq!(
            union(&[(0, 2), (5, 6)], &[(1, 3), (6, 8)]),
            [(0, 3), (5, 8)]
        );
    }

    /// Every byte of a chain of three images (data, zero clusters, unallocated ranges, a
    /// grown top) reads as QEMU reads it.
    #[test]
    fn a_chain_reads_as_qemu_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let base = create_image(&d.join("base.qcow2"), "qcow2", "4M");
        qemu_io(
            &base,
            "qcow2",
            &["write -P 0x11 0 2M", "write -P 0x12 3M 64k"],
        );
        let mid = create_overlay(&d.join("mid.qcow2"), "base.qcow2");
        qemu_io(
            &mid,
            "qcow2",
            &[
                "write -P 0x21 1M 128k",
                "write -z 1536k 64k",
                "write -P 0x22 3M 32k",
            ],
        );
        let top = create_overlay(&d.join("top.qcow2"), "mid.qcow2");
        sendense_testkit::run("qemu-img", &["resize", "-q", top.to_str().unwrap(), "6M"]);
        qemu_io(
            &top,
            "qcow2",
            &[
                "write -P 0x31 1088k 64k",
                "write -P 0x32 5M 64k",
                "write -z 0 64k",
            ],
        );
        let size = 6 << 20;
        let theirs = qemu_reads(&top);
        // Composed in windows of any size (even ones that split clusters), more of them than
        // are kept: the same bytes.
        for window in [WINDOW, 1 << 20, 192 << 10, 100_003] {
            let reader = ChainReader::open_in_windows(&[&top, &mid, &base], window)
                .unwrap()
                .unwrap();
            let mut ours = vec![0xAAu8; size as usize];
            reader.read(0, &mut ours).unwrap();
            assert!(ours == theirs, "window {window}");
            let ext = reader.extents(0, size).unwrap();
            assert_eq!(
                ext,
                ChainReader::open(&[&top, &mid, &base])
                    .unwrap()
                    .unwrap()
                    .extents(0, size)
                    .unwrap()
            );
        }
        let reader = ChainReader::open(&[&top, &mid, &base]).unwrap().unwrap();
        assert_eq!(reader.size(), size);
        let mut ours = vec![0xAAu8; size as usize];
        reader.read(0, &mut ours).unwrap();
        assert_eq!(ours.len(), theirs.len());
        let first_diff = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        assert_eq!(first_diff, None);
        // Data where some link holds data, zeroes elsewhere, covering the disk once.
        let ext = reader.extents(0, size).unwrap();
        assert_eq!(ext.iter().map(|e| e.length).sum::<u64>(), size);
        assert!(ext
            .windows(2)
            .all(|w| w[0].offset + w[0].length == w[1].offset));
        let data: u64 = ext.iter().filter(|e| e.flags == 0).map(|e| e.length).sum();
        // 0..2M base (minus 64k zeroed by top) + 3M..3M+64k + 5M..5M+64k.
        assert_eq!(
            data,
            (2 << 20) - (64 << 10) - (64 << 10) + (64 << 10) + (64 << 10)
        );
        // Reads at any offset agree with the whole.
        let mut part = vec![0u8; 100_000];
        reader.read(1_000_003, &mut part).unwrap();
        assert_eq!(&part[..], &theirs[1_000_003..1_100_003]);
    }
}
