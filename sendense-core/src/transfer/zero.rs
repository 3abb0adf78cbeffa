//! Zero detection. Every byte is inspected — never a sample: sampling lost data in earlier
//! backup systems (a block with a few non-zero bytes was skipped).

/// True when every byte of `buf` is zero.
pub fn is_zero(buf: &[u8]) -> bool {
    // OR-reducing fixed-size chunks vectorises well; stop at the first non-zero chunk.
    let mut chunks = buf.chunks_exact(256);
    for c in &mut chunks {
        if c.iter().fold(0u8, |acc, b| acc | b) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|b| *b == 0)
}

/// Splits `buf`, which holds the disk bytes starting at `offset`, into maximal runs of
/// `granularity`-aligned blocks that are all zero (`true`) or not (`false`). Runs are
/// `(start, end)` indexes into `buf`.
pub fn zero_runs(buf: &[u8], offset: u64, granularity: u64) -> Vec<(usize, usize, bool)> {
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0usize;
    while pos < buf.len() {
        let abs = offset + pos as u64;
        let next_boundary = ((abs / granularity + 1) * granularity - offset) as usize;
        let end = next_boundary.min(buf.len());
        let zero = is_zero(&buf[pos..end]);
        match runs.last_mut() {
            Some(last) if last.2 == zero => last.1 = end,
            _ => runs.push((pos, end, zero)),
        }
        pos = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_counts() {
        let mut buf = vec![0u8; 1 << 20];
        assert!(is_zero(&buf));
        // A single non-zero byte anywhere, including the unaligned tail, is found.
        for at in [0, 1, 255, 256, 4095, 65_537, (1 << 20) - 1] {
            buf[at] = 1;
            assert!(!is_zero(&buf), "byte at {at} missed");
            buf[at] = 0;
        }
        assert!(is_zero(&[]));
        assert!(!is_zero(&[0, 0, 7]));
    }

    #[test]
    fn runs_follow_aligned_blocks() {
        let g = 4096u64;
        let mut buf = vec![0u8; 5 * 4096];
        buf[4096 + 17] = 9; // block 1 of the buffer
                            // The buffer starts 1024 bytes into a block: the first run ends at the boundary.
        let runs = zero_runs(&buf, 1024, g);
        assert_eq!(
            runs,
            vec![(0, 3072, true), (3072, 7168, false), (7168, 5 * 4096, true)]
        );
        let runs = zero_runs(&buf, 0, g);
        assert_eq!(
            runs,
            vec![(0, 4096, true), (4096, 8192, false), (8192, 20480, true)]
        );
        assert_eq!(zero_runs(&[1, 2, 3], 0, g), vec![(0, 3, false)]);
    }
}
