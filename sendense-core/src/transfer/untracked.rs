//! Changes a dirty bitmap cannot show: a disk shrunk and grown back between two backups.
//!
//! Shrinking a disk discards everything past its new end, and QEMU cuts the dirty bitmaps with
//! it; growing it back adds clean bits over zeroes. The size is the one recorded and the bitmap
//! is present, yet the parent chain still holds data there that the disk no longer has, and an
//! incremental would copy nothing of it. Every block past the smallest size the disk had is
//! now either zeroes and clean (untouched since) or dirty (written since, so copied). A block
//! that holds data and is clean lies before that size. So the suspects are the zero, clean
//! ranges after the last clean data block of the disk, found by walking the allocation and the
//! bitmap backwards from the end: on most disks a few requests. The caller checks them
//! against the chain's records; data recorded there means the bitmap missed changes.

use super::PLAN_WINDOW;
use crate::error::Result;
use crate::nbd::proto::{STATE_DIRTY, STATE_ZERO};
use crate::nbd::{
    dirty_bitmap_context, ConnectOptions, Extent, NbdClient, NbdUrl, BASE_ALLOCATION,
};

/// The zero, clean ranges of the window `[start, end)` after its last clean data byte, and
/// whether the window has clean data (then nothing before it can be suspect). `alloc` and
/// `dirty` are the window's extents in the two contexts.
pub fn tail_suspects(
    alloc: &[Extent],
    dirty: &[Extent],
    start: u64,
    end: u64,
) -> (Vec<(u64, u64)>, bool) {
    // Cut the window where either list changes state: (from, to, zero, dirty).
    let mut cuts: Vec<u64> = alloc
        .iter()
        .chain(dirty)
        .flat_map(|e| [e.offset, e.end()])
        .chain([start, end])
        .filter(|c| (start..=end).contains(c))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let state = |list: &[Extent], at: u64, flag: u32, default: bool| {
        list.iter()
            .find(|e| e.offset <= at && at < e.end())
            .map_or(default, |e| e.flags & flag != 0)
    };
    let mut suspects: Vec<(u64, u64)> = Vec::new();
    for pair in cuts.windows(2).rev() {
        let (from, to) = (pair[0], pair[1]);
        // Unknown stretches count as data and dirty: never suspect, never a boundary.
        let zero = state(alloc, from, STATE_ZERO, false);
        let changed = state(dirty, from, STATE_DIRTY, true);
        match (zero, changed) {
            (false, false) => {
                suspects.reverse();
                return (suspects, true);
            }
            (true, false) => match suspects.last_mut() {
                Some(last) if last.0 == to => last.0 = from,
                _ => suspects.push((from, to)),
            },
            _ => {}
        }
    }
    suspects.reverse();
    (suspects, false)
}

/// The suspect ranges of the disk behind `url` whose changes since the checkpoint are in
/// `bitmap`, walking backwards from its end a window at a time until clean data is found;
/// whole `block`s only (the last block of the disk may be shorter).
pub async fn resize_suspects(url: &NbdUrl, bitmap: &str, block: u64) -> Result<Vec<(u64, u64)>> {
    let ctx = dirty_bitmap_context(bitmap);
    let opts = ConnectOptions {
        contexts: vec![BASE_ALLOCATION.to_string(), ctx.clone()],
        ..Default::default()
    };
    let client = NbdClient::connect(url, &opts).await?;
    let size = client.size();
    let mut found: Vec<(u64, u64)> = Vec::new();
    let mut end = size;
    while end > 0 {
        let start = end.saturating_sub(PLAN_WINDOW);
        let lists = client
            .extents(&[BASE_ALLOCATION, ctx.as_str()], start, end - start)
            .await?;
        let (mut ranges, stop) = tail_suspects(&lists[0], &lists[1], start, end);
        // Joined to what was found after this window.
        if let (Some(last), Some(first)) = (ranges.last_mut(), found.first()) {
            if last.1 == first.0 {
                last.1 = first.1;
                found.remove(0);
            }
        }
        ranges.append(&mut found);
        found = ranges;
        if stop {
            break;
        }
        end = start;
    }
    client.disconnect().await;
    Ok(found
        .into_iter()
        .filter_map(|(s, e)| {
            let s = s.div_ceil(block) * block;
            let e = if e == size { e } else { e / block * block };
            (s < e).then_some((s, e))
        })
        .collect())
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

    #[test]
    fn only_zero_clean_ranges_after_the_last_clean_data_are_suspect() {
        const Z: u32 = STATE_ZERO | 1;
        const D: u32 = STATE_DIRTY;
        // Data 0..4, zero 4..16; dirty 10..12 (written after the grow).
        let alloc = [ext(0, 4, 0), ext(4, 12, Z)];
        let dirty = [ext(0, 10, 0), ext(10, 2, D), ext(12, 4, 0)];
        assert_eq!(
            tail_suspects(&alloc, &dirty, 0, 16),
            (vec![(4, 10), (12, 16)], true)
        );
        // Data that changed is no boundary: it may lie past the smallest size.
        let dirty = [ext(0, 4, D), ext(4, 12, 0)];
        assert_eq!(tail_suspects(&alloc, &dirty, 0, 16), (vec![(4, 16)], false));
        // Clean data at the very end: nothing is suspect.
        let alloc = [ext(0, 12, Z), ext(12, 4, 0)];
        let dirty = [ext(0, 16, 0)];
        assert_eq!(tail_suspects(&alloc, &dirty, 0, 16), (vec![], true));
        // A window of zeroes only: all of it, and the walk goes on.
        let alloc = [ext(32, 16, Z)];
        let dirty = [ext(32, 16, 0)];
        assert_eq!(
            tail_suspects(&alloc, &dirty, 32, 48),
            (vec![(32, 48)], false)
        );
        // A hole without the zero flag is data; stretches a context left out are neither.
        let alloc = [ext(0, 8, 1), ext(8, 4, Z)];
        let dirty = [ext(0, 12, 0)];
        assert_eq!(tail_suspects(&alloc, &dirty, 0, 16), (vec![(8, 12)], true));
    }
}
