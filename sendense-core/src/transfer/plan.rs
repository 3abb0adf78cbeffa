//! Extent planning: which byte ranges a copy reads and which it zeroes. Pure functions.

use crate::nbd::proto::{STATE_DIRTY, STATE_ZERO};
use crate::nbd::Extent;

/// One unit of work for the copy engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// Read from the source and write what is not zero.
    Data {
        /// Start.
        offset: u64,
        /// Length (at most the request size).
        len: u64,
    },
    /// The source reads as zeroes here.
    Zero {
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
}

impl Work {
    /// Bytes covered.
    pub fn len(&self) -> u64 {
        match self {
            Work::Data { len, .. } | Work::Zero { len, .. } => *len,
        }
    }

    /// True for an empty item (never produced by the planner).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Planning knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Largest data item (one read request).
    pub request_size: u64,
    /// Zero gaps up to this size between data extents are read through instead of split
    /// around (fewer, larger requests; zero detection still keeps them sparse).
    pub coalesce_gap: u64,
    /// Largest zero item.
    pub zero_chunk: u64,
    /// Data is read and written in whole aligned blocks of this size (zero detection and block
    /// digests work per block, so a block must never be split between two items).
    pub block: u64,
    /// End of the disk: the last block may be shorter.
    pub size: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            request_size: 2 << 20,
            coalesce_gap: 64 << 10,
            zero_chunk: 1 << 30,
            block: 64 << 10,
            size: u64::MAX,
        }
    }
}

/// Ranges of the window `[start, end)` classified as data (`true`) or zero (`false`).
///
/// Full copy: allocation alone decides; an extent reads as zero when `STATE_ZERO` is set (a hole
/// without `STATE_ZERO` has undefined contents and is read). Incremental: only extents marked
/// dirty in the bitmap are copied, and the allocation tells which dirty parts are now zero.
pub fn classify(alloc: &[Extent], dirty: Option<&[Extent]>) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let mut push = |s: u64, e: u64, data: bool| {
        if s >= e {
            return;
        }
        match out.last_mut() {
            Some(last) if last.1 == s && last.2 == data => last.1 = e,
            _ => out.push((s, e, data)),
        }
    };
    match dirty {
        None => {
            for a in alloc {
                push(a.offset, a.end(), a.flags & STATE_ZERO == 0);
            }
        }
        Some(dirty) => {
            // Walk both sorted lists together.
            let mut ai = 0;
            for d in dirty.iter().filter(|d| d.flags & STATE_DIRTY != 0) {
                while ai < alloc.len() && alloc[ai].end() <= d.offset {
                    ai += 1;
                }
                let mut j = ai;
                while j < alloc.len() && alloc[j].offset < d.end() {
                    let s = alloc[j].offset.max(d.offset);
                    let e = alloc[j].end().min(d.end());
                    push(s, e, alloc[j].flags & STATE_ZERO == 0);
                    j += 1;
                }
            }
        }
    }
    out
}

/// Makes every range cover whole `block`s (the last block ends at `size`): data ranges are
/// widened, zero ranges keep only the blocks they cover entirely, and the parts of a block a
/// zero range covers only in part are read as data instead.
///
/// So no write or zeroing ever touches part of a block. A target image whose clusters are
/// `block` bytes then never needs its backing file to fill the rest of a cluster, and zero
/// detection and block digests see whole blocks. Reading a little more is harmless: what the
/// source holds outside the changed ranges is what the backing chain holds.
pub fn align_to_blocks(
    ranges: &[(u64, u64, bool)],
    block: u64,
    size: u64,
) -> Vec<(u64, u64, bool)> {
    let up = |x: u64| x.div_ceil(block).saturating_mul(block).min(size);
    let down = |x: u64| if x >= size { size } else { x / block * block };
    // Whole data blocks, widened and merged.
    let mut data: Vec<(u64, u64)> = Vec::new();
    let mut add = |s: u64, e: u64| {
        if s >= e {
            return;
        }
        let (s, e) = (s / block * block, up(e));
        match data.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => data.push((s, e)),
        }
    };
    // Zero ranges shrunk to the blocks they cover entirely; their ragged edges become data.
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    for &(s, e, is_data) in ranges {
        if is_data {
            add(s, e);
            continue;
        }
        let (zs, ze) = (up(s), down(e));
        if zs < ze {
            add(s, zs);
            zeros.push((zs, ze));
            add(ze, e);
        } else {
            add(s, e);
        }
    }
    let mut out: Vec<(u64, u64, bool)> = data.iter().map(|&(s, e)| (s, e, true)).collect();
    for (s, e) in zeros {
        // Data edges are block multiples (or `size`), so what is left stays whole blocks.
        let mut pos = s;
        for &(ds, de) in data.iter().filter(|(ds, de)| *de > s && *ds < e) {
            if ds > pos {
                out.push((pos, ds, false));
            }
            pos = pos.max(de);
        }
        if pos < e {
            out.push((pos, e, false));
        }
    }
    out.sort_by_key(|r| r.0);
    let mut merged: Vec<(u64, u64, bool)> = Vec::with_capacity(out.len());
    for (s, e, d) in out {
        match merged.last_mut() {
            Some(last) if last.1 == s && last.2 == d => last.1 = e,
            _ => merged.push((s, e, d)),
        }
    }
    merged
}

/// Turns classified ranges into work items: ranges are made whole blocks
/// ([`align_to_blocks`]), small zero gaps between data are absorbed, data is split at
/// `request_size` boundaries, zero ranges at `zero_chunk`.
pub fn plan(ranges: &[(u64, u64, bool)], opts: &PlanOptions) -> Vec<Work> {
    let aligned = align_to_blocks(ranges, opts.block, opts.size);
    let ranges = aligned.as_slice();
    // 1. Absorb short zero gaps between data ranges.
    let mut merged: Vec<(u64, u64, bool)> = Vec::with_capacity(ranges.len());
    for (i, &(s, e, data)) in ranges.iter().enumerate() {
        let absorb = !data
            && e - s <= opts.coalesce_gap
            && merged.last().is_some_and(|l| l.2 && l.1 == s)
            && ranges.get(i + 1).is_some_and(|n| n.2 && n.0 == e);
        let data = data || absorb;
        match merged.last_mut() {
            Some(last) if last.1 == s && last.2 == data => last.1 = e,
            _ => merged.push((s, e, data)),
        }
    }
    // 2. Split.
    let mut work = Vec::new();
    for (s, e, data) in merged {
        let step = if data {
            opts.request_size
        } else {
            opts.zero_chunk
        };
        let mut pos = s;
        while pos < e {
            // Cut at multiples of `step` so requests stay aligned to the image's clusters.
            let boundary = (pos / step + 1) * step;
            let next = boundary.min(e);
            let len = next - pos;
            work.push(if data {
                Work::Data { offset: pos, len }
            } else {
                Work::Zero { offset: pos, len }
            });
            pos = next;
        }
    }
    work
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, length: u64, flags: u32) -> Extent {
        Extent {
            offset,
            length,
            flags,
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn full_copy_reads_data_and_zeroes_holes() {
        let alloc = [ext(0, MIB, 0), ext(MIB, MIB, 3), ext(2 * MIB, MIB, 1)];
        // A hole without STATE_ZERO has undefined content: read it.
        assert_eq!(
            classify(&alloc, None),
            vec![
                (0, MIB, true),
                (MIB, 2 * MIB, false),
                (2 * MIB, 3 * MIB, true)
            ]
        );
    }

    #[test]
    fn incremental_takes_only_dirty_parts() {
        let alloc = [ext(0, 4 * MIB, 0), ext(4 * MIB, 4 * MIB, 3)];
        let dirty = [
            ext(0, MIB, 0),
            ext(MIB, MIB, 1),
            ext(2 * MIB, 3 * MIB, 0),
            ext(5 * MIB, MIB, 1),
            ext(6 * MIB, 2 * MIB, 0),
        ];
        assert_eq!(
            classify(&alloc, Some(&dirty)),
            vec![(MIB, 2 * MIB, true), (5 * MIB, 6 * MIB, false)]
        );
        // A dirty range spanning data and zero is cut at the allocation boundary.
        let dirty = [ext(3 * MIB, 2 * MIB, 1)];
        assert_eq!(
            classify(&alloc, Some(&dirty)),
            vec![(3 * MIB, 4 * MIB, true), (4 * MIB, 5 * MIB, false)]
        );
        assert!(
            classify(&alloc, Some(&[])).is_empty(),
            "no changes, no work"
        );
    }

    #[test]
    fn every_item_covers_whole_blocks() {
        let block = 64 << 10;
        let k = 1024;
        // A zero range inside one block, ragged zero edges, data sharing a block with zero.
        let ranges = [
            (68 * k, 72 * k, false),
            (200 * k, 400 * k, false),
            (400 * k, 410 * k, true),
            (1000 * k, 1100 * k, false),
        ];
        assert_eq!(
            align_to_blocks(&ranges, block, 2 * MIB),
            vec![
                (64 * k, 128 * k, true),
                (192 * k, 256 * k, true),
                (256 * k, 384 * k, false),
                (384 * k, 448 * k, true),
                (960 * k, 1024 * k, true),
                (1024 * k, 1088 * k, false),
                (1088 * k, 1152 * k, true),
            ]
        );
        // The last block may be short: zero up to the end of the disk stays zero.
        let size = 2 * MIB + 5;
        assert_eq!(
            align_to_blocks(&[(MIB + 3, size, false)], block, size),
            vec![(MIB, MIB + block, true), (MIB + block, size, false)]
        );

        // Any input: aligned edges, every data byte read, zero only where the input says zero.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let size = 1 + next(40 * block);
            let mut ranges = Vec::new();
            let mut pos = next(block);
            while pos < size {
                let end = (pos + 1 + next(3 * block)).min(size);
                ranges.push((pos, end, next(2) == 0));
                pos = end + next(2) * next(2 * block);
            }
            let out = align_to_blocks(&ranges, block, size);
            for w in out.windows(2) {
                assert!(w[0].1 <= w[1].0, "overlap in {out:?}");
            }
            for &(s, e, is_data) in &out {
                assert_eq!(s % block, 0, "{out:?} from {ranges:?}");
                assert!(e % block == 0 || e == size, "{out:?} from {ranges:?}");
                if !is_data {
                    // Input ranges never overlap, so this sums the zero input under it.
                    let zero: u64 = ranges
                        .iter()
                        .filter(|r| !r.2)
                        .map(|r| r.1.min(e).saturating_sub(r.0.max(s)))
                        .sum();
                    assert_eq!(zero, e - s, "zero {s}..{e} not all zero in {ranges:?}");
                }
            }
            for &(s, e, _) in &ranges {
                let covered: u64 = out
                    .iter()
                    .map(|o| o.1.min(e).saturating_sub(o.0.max(s)))
                    .sum();
                assert_eq!(covered, e - s, "{s}..{e} not covered by {out:?}");
            }
        }
    }

    #[test]
    fn plan_splits_and_coalesces() {
        let opts = PlanOptions {
            request_size: MIB,
            coalesce_gap: 64 << 10,
            zero_chunk: 4 * MIB,
            block: 1,
            size: u64::MAX,
        };
        let k = 1024;
        let ranges = [
            (0, 100 * k, true),
            (100 * k, 130 * k, false), // small gap: read through
            (130 * k, 200 * k, true),
            (200 * k, 10 * MIB, false), // large hole: zero item(s)
            (10 * MIB, 10 * MIB + 1, true),
        ];
        assert_eq!(
            plan(&ranges, &opts),
            vec![
                Work::Data {
                    offset: 0,
                    len: 200 * k
                },
                Work::Zero {
                    offset: 200 * k,
                    len: 4 * MIB - 200 * k
                },
                Work::Zero {
                    offset: 4 * MIB,
                    len: 4 * MIB
                },
                Work::Zero {
                    offset: 8 * MIB,
                    len: 2 * MIB
                },
                Work::Data {
                    offset: 10 * MIB,
                    len: 1
                },
            ]
        );
        // Data longer than a request is cut at aligned boundaries.
        let items = plan(&[(MIB / 2, 3 * MIB, true)], &opts);
        assert_eq!(
            items,
            vec![
                Work::Data {
                    offset: MIB / 2,
                    len: MIB / 2
                },
                Work::Data {
                    offset: MIB,
                    len: MIB
                },
                Work::Data {
                    offset: 2 * MIB,
                    len: MIB
                },
            ]
        );
        // A leading or trailing gap is never absorbed.
        assert_eq!(plan(&[(0, 10, false), (10, 20, true)], &opts).len(), 2);
    }
}
