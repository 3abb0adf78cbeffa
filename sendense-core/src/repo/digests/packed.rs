//! A digest file packed for object storage: only its non-zero records, each with its block
//! index. The sparse file of a 1 TiB disk is 512 MiB, mostly holes, which an object cannot be;
//! packed it is as large as what the backup recorded.
//!
//! ```text
//! SDDIGPK1                 8 bytes, the format
//! length                   u64, little endian: the sparse file's length
//! (block, record) ...      u64 little endian + 32 bytes, block ascending
//! ```
//!
//! The records-form file digest a backup records (`<scheme>+records:<hex>`, see the parent
//! module) is the blake3 of the length followed by every non-zero record with its index — which
//! is exactly the packed bytes after the format tag. So a packed file is checked against the
//! manifest without being expanded, and read by offset (a binary search over its fixed-size
//! entries) wherever it is: a file, or an object read by range.

use super::{parse_digest, scan_records, Checked, RECORD, RECORDS_FORM};
use crate::error::{Error, ErrorKind, Result};
use crate::repo::read_at::ReadAt;
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// The format tag.
pub const MAGIC: &[u8; 8] = b"SDDIGPK1";

/// The header: the tag and the length.
const HEADER: u64 = 16;

/// One entry: the block index and its record.
const ENTRY: u64 = 8 + RECORD;

/// Writes the packed form of the digest file open as `src` (`path` names it) to `out`
/// (created, synced); returns its length. Memory stays bounded: records are streamed.
pub fn pack(src: &File, path: &Path, out: &Path) -> Result<u64> {
    let len = src
        .metadata()
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    let file = File::create(out).map_err(|e| Error::io("creating", out, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
    let mut written = HEADER;
    let mut failed: Option<std::io::Error> = None;
    w.write_all(MAGIC)
        .and_then(|()| w.write_all(&len.to_le_bytes()))
        .map_err(|e| Error::io("writing", out, e))?;
    scan_records(src, 0, u64::MAX, |block, rec| {
        match w
            .write_all(&block.to_le_bytes())
            .and_then(|()| w.write_all(rec))
        {
            Ok(()) => {
                written += ENTRY;
                true
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })
    .map_err(|e| Error::io("reading", path, e))?;
    if let Some(e) = failed {
        return Err(Error::io("writing", out, e));
    }
    w.flush().map_err(|e| Error::io("writing", out, e))?;
    drop(w);
    file.sync_all().map_err(|e| Error::io("syncing", out, e))?;
    Ok(written)
}

/// A packed digest file, read by offset.
#[derive(Debug)]
pub struct PackedDigests {
    src: Box<dyn ReadAt>,
    name: String,
    /// The sparse file's length: records for blocks below `len / RECORD`.
    len: u64,
    entries: u64,
}

impl PackedDigests {
    /// The packed file `src` (named `name` in messages); its header checked.
    pub fn open(src: Box<dyn ReadAt>, name: &str) -> Result<PackedDigests> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::External,
                format!("the packed digest file {name} {why}"),
            )
        };
        let size = src
            .len()
            .map_err(|e| bad(format!("cannot be read ({e})")))?;
        if size < HEADER || !(size - HEADER).is_multiple_of(ENTRY) {
            return Err(bad(format!("has an impossible length ({size} bytes)")));
        }
        let mut h = [0u8; HEADER as usize];
        src.read_full_at(&mut h, 0)
            .map_err(|e| bad(format!("cannot be read ({e})")))?;
        if &h[..8] != MAGIC {
            return Err(bad("is not in a format this Sendense knows".into()));
        }
        let len = u64::from_le_bytes(h[8..16].try_into().unwrap_or_default());
        Ok(PackedDigests {
            src,
            name: name.to_string(),
            len,
            entries: (size - HEADER) / ENTRY,
        })
    }

    fn entry(&self, i: u64) -> std::io::Result<(u64, [u8; 32])> {
        let mut e = [0u8; ENTRY as usize];
        self.src.read_full_at(&mut e, HEADER + i * ENTRY)?;
        let mut rec = [0u8; 32];
        rec.copy_from_slice(&e[8..]);
        Ok((
            u64::from_le_bytes(e[..8].try_into().unwrap_or_default()),
            rec,
        ))
    }

    /// The first entry whose block is `block` or later.
    fn lower_bound(&self, block: u64) -> std::io::Result<u64> {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.0 < block {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Calls `visit` with every record of the blocks `[first, end)`, in order; `visit` returns
    /// false to stop.
    pub fn scan(
        &self,
        first: u64,
        end: u64,
        mut visit: impl FnMut(u64, &[u8; 32]) -> bool,
    ) -> std::io::Result<()> {
        let mut i = self.lower_bound(first)?;
        while i < self.entries {
            let (block, rec) = self.entry(i)?;
            if block >= end || !visit(block, &rec) {
                break;
            }
            i += 1;
        }
        Ok(())
    }

    /// Fills `buf` with the records of the blocks from `first` as the sparse file holds them
    /// (zeroes where there is none).
    pub fn read_records(&self, first: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        let n = buf.len() as u64 / RECORD;
        self.scan(first, first.saturating_add(n), |block, rec| {
            let at = ((block - first) * RECORD) as usize;
            buf[at..at + RECORD as usize].copy_from_slice(rec);
            true
        })
    }

    /// Checks the packed file against the file digest `recorded`: its entries in order and
    /// inside the file's length, and their digest the recorded one. Only the records form can be
    /// checked packed (older backups' digests cover the whole sparse file).
    pub fn check(&self, recorded: &str) -> Result<Checked> {
        let Some((scheme, records)) = parse_digest(recorded) else {
            return Ok(Checked::UnknownScheme);
        };
        if !records {
            return Ok(Checked::UnknownScheme);
        }
        let io =
            |e: std::io::Error| Error::new(ErrorKind::Io, format!("reading {}: {e}", self.name));
        let mut h = blake3::Hasher::new();
        h.update(&self.len.to_le_bytes());
        // Whole entries at a time, a bounded buffer.
        let per_read = (1 << 20) / ENTRY;
        let mut buf = vec![0u8; (per_read * ENTRY) as usize];
        let mut last: Option<u64> = None;
        let mut i = 0;
        while i < self.entries {
            let n = per_read.min(self.entries - i);
            let bytes = &mut buf[..(n * ENTRY) as usize];
            self.src
                .read_full_at(bytes, HEADER + i * ENTRY)
                .map_err(io)?;
            for e in bytes.chunks_exact(ENTRY as usize) {
                let block = u64::from_le_bytes(e[..8].try_into().unwrap_or_default());
                let in_order = last.is_none_or(|l| block > l);
                let inside = block
                    .checked_add(1)
                    .and_then(|b| b.checked_mul(RECORD))
                    .is_some_and(|end| end <= self.len);
                if !in_order || !inside || e[8..].iter().all(|b| *b == 0) {
                    return Ok(Checked::Changed);
                }
                last = Some(block);
            }
            h.update(bytes);
            i += n;
        }
        let got = format!("{}{RECORDS_FORM}:{}", scheme.tag(), h.finalize().to_hex());
        Ok(if got == recorded {
            Checked::Intact(scheme)
        } else {
            Checked::Changed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::digests::{file_digest, DigestFile, Scheme};
    use crate::transfer::{BlockDigests, BLOCK};

    /// The records of the blocks from `first` as the sparse file holds them.
    fn sparse_records(f: &File, first: u64, buf: &mut [u8]) {
        use std::os::unix::fs::FileExt;
        buf.fill(0);
        let mut done = 0;
        while done < buf.len() {
            match f
                .read_at(&mut buf[done..], first * RECORD + done as u64)
                .unwrap()
            {
                0 => break,
                n => done += n,
            }
        }
    }

    #[test]
    fn a_packed_file_holds_the_records_and_checks_against_the_recorded_digest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sparse = d.join("b.digests");
        let size = 1u64 << 40;
        let f = DigestFile::create(&sparse, size).unwrap();
        let blocks = [0u64, 1, 7, 123_456, (size / BLOCK) - 1];
        for b in blocks {
            f.record(b * BLOCK, &vec![b as u8 ^ 0x5a; BLOCK as usize])
                .unwrap();
        }
        f.record_zeroes(500 * BLOCK, BLOCK).unwrap();
        drop(f);
        let recorded = file_digest(&sparse, Scheme::CURRENT).unwrap();
        let packed = d.join("b.digests.packed");
        let src = File::open(&sparse).unwrap();
        let n = pack(&src, &sparse, &packed).unwrap();
        assert_eq!(n, HEADER + 6 * ENTRY);
        assert_eq!(std::fs::metadata(&packed).unwrap().len(), n);
        let p = PackedDigests::open(Box::new(File::open(&packed).unwrap()), "b").unwrap();
        assert_eq!(
            p.check(&recorded).unwrap(),
            Checked::Intact(Scheme::CURRENT)
        );
        // Every record reads as the sparse file holds it, at any place.
        for first in [0u64, 5, 499, 123_450, (size / BLOCK) - 3] {
            let mut want = vec![0u8; 8 * RECORD as usize];
            let mut got = vec![0xffu8; want.len()];
            sparse_records(&src, first, &mut want);
            p.read_records(first, &mut got).unwrap();
            assert_eq!(got, want, "from block {first}");
        }
        let mut seen = Vec::new();
        p.scan(1, 500, |b, _| {
            seen.push(b);
            true
        })
        .unwrap();
        assert_eq!(seen, [1, 7]);
        // A flipped byte, entries out of order, a cut file: not intact.
        let bytes = std::fs::read(&packed).unwrap();
        for (what, damaged) in [
            ("flipped", {
                let mut b = bytes.clone();
                b[HEADER as usize + 20] ^= 1;
                b
            }),
            ("swapped", {
                let mut b = bytes.clone();
                let (e0, e1) = (HEADER as usize, (HEADER + ENTRY) as usize);
                let first: Vec<u8> = b[e0..e1].to_vec();
                b.copy_within(e1..e1 + ENTRY as usize, e0);
                b[e1..e1 + ENTRY as usize].copy_from_slice(&first);
                b
            }),
            ("cut", bytes[..bytes.len() - ENTRY as usize].to_vec()),
        ] {
            let path = d.join(what);
            std::fs::write(&path, &damaged).unwrap();
            let p = PackedDigests::open(Box::new(File::open(&path).unwrap()), what).unwrap();
            assert_eq!(p.check(&recorded).unwrap(), Checked::Changed, "{what}");
        }
        let junk = d.join("junk");
        std::fs::write(&junk, b"SDDIGPK1 not really").unwrap();
        assert!(PackedDigests::open(Box::new(File::open(&junk).unwrap()), "junk").is_err());
    }
}
