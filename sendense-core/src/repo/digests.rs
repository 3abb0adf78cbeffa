//! Block digests of what a backup wrote, for `backup verify`.
//!
//! Next to each image, `<backup-id>.digests` holds one 32-byte record per 64 KiB block of the
//! disk, at position `block index × 32`: the digest of the block ([`Scheme`]) for every block
//! the backup wrote as data, a zero marker ([`Scheme::zero_record`]) for every block it wrote as
//! zeroes over its parent, zeroes elsewhere (the file is sparse). So every block a backup wrote
//! is verifiable, and the chain tells what each block of a restore must read as: the record of
//! the newest backup that wrote it, zeroes where none did. Records are written with
//! positional writes while the copy runs, in any order, in constant memory. The manifest keeps
//! a digest of the file, tagged with the scheme, so the digests themselves cannot be changed
//! unnoticed and each backup is verified the way it was written.
//!
//! The file digest (`<scheme>+records:<hex>`) is the blake3 of the file's length followed by
//! every non-zero record with its index — computed from the file's data regions only, so it
//! costs what the backup wrote, not the size of the disk (the file of a 1 TiB disk is 512 MiB,
//! mostly holes). Backups made before it carry `<scheme>:<hex>`, the blake3 of the whole file,
//! and are verified that way.

pub mod packed;

use crate::error::{Error, Result};
use crate::transfer::{BlockDigests, BLOCK};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Length of one record.
pub const RECORD: u64 = 32;

/// How the records of a digest file were computed. The manifest and the catalog keep the file's
/// digest as `<scheme>:<hex>`, so every backup is verified the way it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `blake3-64k`: blake3 over the block's offset (little endian) followed by its bytes; the
    /// backups written before the keyed scheme.
    OffsetPrefixed,
    /// `blake3k-64k`: the blake3 keyed hash of the block's bytes, keyed with its offset (little
    /// endian, zero-padded to 32 bytes). The bytes stay aligned to blake3's chunks, which hashes
    /// a third faster.
    OffsetKeyed,
    /// `blake3kz-64k`: [`Scheme::OffsetKeyed`]'s records, and a zero marker for every block
    /// written as zeroes: a block without a record was not written by that backup.
    OffsetKeyedZeroes,
}

impl Default for Scheme {
    fn default() -> Self {
        Scheme::CURRENT
    }
}

impl Scheme {
    /// The scheme new backups write.
    pub const CURRENT: Scheme = Scheme::OffsetKeyedZeroes;

    const ALL: [Scheme; 3] = [
        Scheme::OffsetPrefixed,
        Scheme::OffsetKeyed,
        Scheme::OffsetKeyedZeroes,
    ];

    /// The tag in front of a file digest.
    pub fn tag(self) -> &'static str {
        match self {
            Scheme::OffsetPrefixed => "blake3-64k",
            Scheme::OffsetKeyed => "blake3k-64k",
            Scheme::OffsetKeyedZeroes => "blake3kz-64k",
        }
    }

    /// The scheme of `tag`.
    pub fn from_tag(tag: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.tag() == tag)
    }

    /// The scheme a recorded file digest (`<tag>+records:<hex>`, or `<tag>:<hex>` from before)
    /// names.
    pub fn of_digest(digest: &str) -> Option<Scheme> {
        parse_digest(digest).map(|(scheme, _)| scheme)
    }

    /// The record of the block at `offset`.
    pub fn block_digest(self, offset: u64, block: &[u8]) -> [u8; 32] {
        match self {
            Scheme::OffsetPrefixed => {
                let mut h = blake3::Hasher::new();
                h.update(&offset.to_le_bytes());
                h.update(block);
                *h.finalize().as_bytes()
            }
            Scheme::OffsetKeyed | Scheme::OffsetKeyedZeroes => {
                *blake3::keyed_hash(&offset_key(offset), block).as_bytes()
            }
        }
    }

    /// True when the records of this scheme mark the blocks written as zeroes too, so a block
    /// without a record was not written at all.
    pub fn records_zeroes(self) -> bool {
        self == Scheme::OffsetKeyedZeroes
    }

    /// The record of a block written as zeroes at `offset`: the keyed hash of no bytes, which
    /// no block (at least one byte) has, and which no other offset has.
    pub fn zero_record(offset: u64) -> [u8; 32] {
        *blake3::keyed_hash(&offset_key(offset), &[]).as_bytes()
    }

    /// True when `record`, read at the block at `offset`, says the backup wrote data that hashes
    /// to it: `data` is the block as read, `disk_size` the size the backup recorded. A last block
    /// is accepted hashed at the length the source had (QEMU rounds sizes up to 512 bytes) or
    /// at the disk's own length (the rest zero).
    pub fn matches(self, offset: u64, data: &[u8], record: &[u8; 32], disk_size: u64) -> bool {
        if self.block_digest(offset, data) == *record {
            return true;
        }
        let own = disk_size.saturating_sub(offset) as usize;
        own < data.len()
            && data[own..].iter().all(|b| *b == 0)
            && self.block_digest(offset, &data[..own]) == *record
    }
}

/// What one record says about its block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The backup did not write the block (or, in a scheme without zero records, wrote zeroes).
    None,
    /// The backup wrote zeroes.
    Zero,
    /// The backup wrote data with this digest.
    Data([u8; 32]),
}

impl Record {
    /// Reads the 32 bytes of the record of the block at `offset`.
    pub fn of(bytes: &[u8], offset: u64) -> Record {
        let mut rec = [0u8; 32];
        rec.copy_from_slice(&bytes[..RECORD as usize]);
        if rec == [0u8; 32] {
            Record::None
        } else if rec == Scheme::zero_record(offset) {
            Record::Zero
        } else {
            Record::Data(rec)
        }
    }
}

/// The blake3 key of the block at `offset`: its offset, little endian, zero-padded.
fn offset_key(offset: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&offset.to_le_bytes());
    key
}

/// The digest file of an image path (`x/<id>.qcow2` → `x/<id>.digests`).
pub fn digests_of(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".partial").unwrap_or(&name);
    let stem = stem.strip_suffix(".qcow2").unwrap_or(stem);
    let partial = name.ends_with(".partial");
    image.with_file_name(format!(
        "{stem}.digests{}",
        if partial { ".partial" } else { "" }
    ))
}

/// A digest file being written.
#[derive(Debug)]
pub struct DigestFile {
    file: File,
    path: PathBuf,
    scheme: Scheme,
}

impl DigestFile {
    /// Creates (truncating) the file for a disk of `size` bytes.
    pub fn create(path: &Path, size: u64) -> Result<DigestFile> {
        let file = File::create(path).map_err(|e| Error::io("creating", path, e))?;
        file.set_len(size.div_ceil(BLOCK) * RECORD)
            .map_err(|e| Error::io("sizing", path, e))?;
        Ok(DigestFile {
            file,
            path: path.to_path_buf(),
            scheme: Scheme::CURRENT,
        })
    }

    /// Opens an existing file for writing records computed with `scheme`.
    pub fn open(path: &Path, scheme: Scheme) -> Result<DigestFile> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io("opening", path, e))?;
        Ok(DigestFile {
            file,
            path: path.to_path_buf(),
            scheme,
        })
    }
}

impl DigestFile {
    /// Writes a record computed elsewhere (a node sends them) for the block at `offset`.
    pub fn write_record(&self, offset: u64, record: &[u8; 32]) -> Result<()> {
        self.file
            .write_all_at(record, offset / BLOCK * RECORD)
            .map_err(|e| Error::io("writing digests to", &self.path, e))
    }

    /// The scheme the records are computed in.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
}

impl BlockDigests for DigestFile {
    fn record(&self, offset: u64, block: &[u8]) -> Result<()> {
        self.file
            .write_all_at(
                &self.scheme.block_digest(offset, block),
                offset / BLOCK * RECORD,
            )
            .map_err(|e| Error::io("writing digests to", &self.path, e))
    }

    fn record_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        if !self.scheme.records_zeroes() {
            return Ok(());
        }
        // At most 1 MiB of records (2 GiB of disk) per write.
        let first = offset / BLOCK;
        let end = offset.saturating_add(len).div_ceil(BLOCK);
        let mut buf = Vec::new();
        let mut at = first;
        while at < end {
            let n = (end - at).min(1 << 15);
            buf.clear();
            for b in at..at + n {
                buf.extend_from_slice(&Scheme::zero_record(b * BLOCK));
            }
            self.file
                .write_all_at(&buf, at * RECORD)
                .map_err(|e| Error::io("writing digests to", &self.path, e))?;
            at += n;
        }
        Ok(())
    }
}

/// Marks a file digest over the records (see the module documentation).
const RECORDS_FORM: &str = "+records";

/// The file digest of a new backup's digest file whose records follow `scheme`:
/// `<tag>+records:<hex>`.
pub fn file_digest(path: &Path, scheme: Scheme) -> Result<String> {
    let hex = records_digest(path)?;
    Ok(format!("{}{RECORDS_FORM}:{hex}", scheme.tag()))
}

/// The scheme of a recorded file digest, and whether it is the records form.
/// Whether `digest` (a backup's recorded file digest) is in the records form: the only form a
/// packed digest file — a bucket's — can be checked against.
pub fn is_records_form(digest: Option<&str>) -> bool {
    digest
        .and_then(parse_digest)
        .is_some_and(|(_, records)| records)
}

fn parse_digest(recorded: &str) -> Option<(Scheme, bool)> {
    let tag = recorded.split_once(':')?.0;
    match tag.strip_suffix(RECORDS_FORM) {
        Some(tag) => Some((Scheme::from_tag(tag)?, true)),
        None => Some((Scheme::from_tag(tag)?, false)),
    }
}

/// What a digest file is against the digest its backup recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// As the backup left it; its records are in this scheme.
    Intact(Scheme),
    /// Changed since the backup.
    Changed,
    /// The recorded digest names a scheme this Sendense does not know.
    UnknownScheme,
}

/// Checks the digest file at `path` against `recorded`.
pub fn check_path(path: &Path, recorded: &str) -> Result<Checked> {
    let f = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    check_file(&f, path, recorded)
}

/// Checks the digest file at `path`, open as `f`, against `recorded`: what is checked is what
/// is then read from `f`, even should the path be replaced meanwhile.
pub fn check_file(f: &File, path: &Path, recorded: &str) -> Result<Checked> {
    Ok(match file_digest_like_open(f, path, recorded)? {
        None => Checked::UnknownScheme,
        Some((scheme, got)) if got == recorded => Checked::Intact(scheme),
        Some(_) => Checked::Changed,
    })
}

/// The scheme `recorded` names and the digest of the digest file open as `f` (`path` names it
/// in errors) computed the way `recorded` was (either form); `None` when `recorded` names a
/// scheme this version does not know.
pub fn file_digest_like_open(
    f: &File,
    path: &Path,
    recorded: &str,
) -> Result<Option<(Scheme, String)>> {
    let Some((scheme, records)) = parse_digest(recorded) else {
        return Ok(None);
    };
    if records {
        let hex = records_digest_open(f, path)?;
        return Ok(Some((
            scheme,
            format!("{}{RECORDS_FORM}:{hex}", scheme.tag()),
        )));
    }
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = f
            .read_at(&mut buf, pos)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(Some((
        scheme,
        format!("{}:{}", scheme.tag(), h.finalize().to_hex()),
    )))
}

/// blake3 of the file length (u64, little endian), then of each non-zero record as its index
/// (u64, little endian) and its 32 bytes, in file order. Holes are skipped without reading.
fn records_digest(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    records_digest_open(&f, path)
}

fn records_digest_open(f: &File, path: &Path) -> Result<String> {
    let len = f
        .metadata()
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    let mut h = blake3::Hasher::new();
    h.update(&len.to_le_bytes());
    scan_records(f, 0, u64::MAX, |block, rec| {
        h.update(&block.to_le_bytes());
        h.update(rec);
        true
    })
    .map_err(|e| Error::io("reading", path, e))?;
    Ok(h.finalize().to_hex().to_string())
}

/// Calls `visit` with every record that is not all zeroes of the blocks `[first, end)`, in
/// order, with its block index; `visit` returns false to stop. Only the file's data regions are
/// read (a bounded buffer at a time): the cost is what the backup recorded, not the disk's size.
pub(crate) fn scan_records(
    file: &File,
    first: u64,
    end: u64,
    mut visit: impl FnMut(u64, &[u8]) -> bool,
) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let stop = end.saturating_mul(RECORD).min(len);
    // Sized by the first data region met: a range of holes costs no buffer (a restore asks
    // about its zeroes a range at a time).
    let mut buf: Vec<u8> = Vec::new();
    let mut next = first.saturating_mul(RECORD);
    while next < stop {
        let Some((start, region_end)) = data_region(file, next, len)? else {
            break;
        };
        let mut pos = (start / RECORD * RECORD).max(next);
        let region_end = region_end.div_ceil(RECORD).saturating_mul(RECORD).min(stop);
        while pos < region_end {
            let want = (region_end - pos).min(1 << 20) as usize;
            if buf.len() < want {
                buf.resize(want, 0);
            }
            let n = (region_end - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos)?;
            for (i, rec) in buf[..n].chunks_exact(RECORD as usize).enumerate() {
                if rec.iter().any(|&b| b != 0) && !visit(pos / RECORD + i as u64, rec) {
                    return Ok(());
                }
            }
            pos += n as u64;
        }
        next = region_end.max(next + RECORD);
    }
    Ok(())
}

/// The first data region of `file` at or after `from`, as `[start, end)`; `None` when only a
/// hole follows. Where the filesystem cannot tell holes from data, everything is data.
pub(crate) fn data_region(file: &File, from: u64, len: u64) -> std::io::Result<Option<(u64, u64)>> {
    use nix::errno::Errno;
    use nix::unistd::{lseek, Whence};
    let start = match lseek(file, from as i64, Whence::SeekData) {
        Ok(o) => o as u64,
        Err(Errno::ENXIO) => return Ok(None),
        Err(Errno::EINVAL) => return Ok(Some((from, len))),
        Err(e) => return Err(e.into()),
    };
    let end = match lseek(file, start as i64, Whence::SeekHole) {
        Ok(o) => o as u64,
        Err(Errno::EINVAL) => len,
        Err(e) => return Err(e.into()),
    };
    Ok(Some((start, end.min(len))))
}

/// Writes `out` (created, synced): the records of the digest files `sources`, oldest first, a
/// newer record replacing an older one of the same block — the digests of images merged into
/// one.
pub fn overlay(sources: &[&Path], out: &Path) -> Result<()> {
    let dst = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(|e| Error::io("creating", out, e))?;
    for path in sources {
        overlay_onto(&dst, out, path)?;
    }
    sync_file_and_dir(&dst, out)
}

/// Writes the records of the digest file `src` over those of the digest file `dst` (at
/// `dst_path`), in place, and syncs it: only the data regions of `src` are read, a bounded
/// chunk at a time, and each chunk of `dst` is written once. Doing it again changes nothing.
pub fn overlay_onto(dst: &File, dst_path: &Path, src: &Path) -> Result<()> {
    let s = File::open(src).map_err(|e| Error::io("reading", src, e))?;
    let len = s
        .metadata()
        .map_err(|e| Error::io("reading", src, e))?
        .len();
    let dst_len = dst
        .metadata()
        .map_err(|e| Error::io("reading", dst_path, e))?
        .len();
    if len > dst_len {
        dst.set_len(len)
            .map_err(|e| Error::io("sizing", dst_path, e))?;
    }
    let mut src_buf = vec![0u8; 1 << 20];
    let mut dst_buf = vec![0u8; 1 << 20];
    let mut next = 0;
    while next < len {
        let Some((start, end)) =
            data_region(&s, next, len).map_err(|e| Error::io("reading", src, e))?
        else {
            break;
        };
        let mut pos = start / RECORD * RECORD;
        let end = end.div_ceil(RECORD).saturating_mul(RECORD).min(len);
        while pos < end {
            let n = (end - pos).min(src_buf.len() as u64) as usize;
            s.read_exact_at(&mut src_buf[..n], pos)
                .map_err(|e| Error::io("reading", src, e))?;
            dst.read_exact_at(&mut dst_buf[..n], pos)
                .map_err(|e| Error::io("reading", dst_path, e))?;
            let mut changed = false;
            for (a, b) in src_buf[..n]
                .chunks_exact(RECORD as usize)
                .zip(dst_buf[..n].chunks_exact_mut(RECORD as usize))
            {
                if a.iter().any(|&x| x != 0) && a != b {
                    b.copy_from_slice(a);
                    changed = true;
                }
            }
            if changed {
                dst.write_all_at(&dst_buf[..n], pos)
                    .map_err(|e| Error::io("writing", dst_path, e))?;
            }
            pos += n as u64;
        }
        next = end.max(next + RECORD);
    }
    dst.sync_all()
        .map_err(|e| Error::io("syncing", dst_path, e))
}

fn sync_file_and_dir(f: &File, path: &Path) -> Result<()> {
    f.sync_all().map_err(|e| Error::io("syncing", path, e))?;
    match path.parent() {
        Some(dir) => crate::fsutil::fsync_dir(dir),
        None => Ok(()),
    }
}

/// Reads the record of the block at `offset`.
pub fn read_record(file: &File, offset: u64) -> Result<Record> {
    let mut rec = [0u8; 32];
    match file.read_exact_at(&mut rec, offset / BLOCK * RECORD) {
        Ok(()) => Ok(Record::of(&rec, offset)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Record::None),
        Err(e) => Err(Error::new(
            crate::ErrorKind::Io,
            format!("reading a digest record: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_records() {
        assert_eq!(
            digests_of(Path::new("/r/vm/2000/b1.qcow2")),
            PathBuf::from("/r/vm/2000/b1.digests")
        );
        assert_eq!(
            digests_of(Path::new("/r/vm/2000/b1.qcow2.partial")),
            PathBuf::from("/r/vm/2000/b1.digests.partial")
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let f = DigestFile::create(&p, 10 * BLOCK + 1).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 11 * RECORD);
        let block = vec![7u8; BLOCK as usize];
        f.record(3 * BLOCK, &block).unwrap();
        let r = File::open(&p).unwrap();
        let want = Scheme::CURRENT.block_digest(3 * BLOCK, &block);
        assert_eq!(read_record(&r, 3 * BLOCK).unwrap(), Record::Data(want));
        assert_eq!(read_record(&r, 4 * BLOCK).unwrap(), Record::None);
        f.record_zeroes(6 * BLOCK, 2 * BLOCK).unwrap();
        assert_eq!(read_record(&r, 6 * BLOCK).unwrap(), Record::Zero);
        assert_eq!(read_record(&r, 7 * BLOCK).unwrap(), Record::Zero);
        assert_eq!(read_record(&r, 8 * BLOCK).unwrap(), Record::None);
        // A zero marker belongs to its offset.
        assert_ne!(
            Scheme::zero_record(6 * BLOCK),
            Scheme::zero_record(7 * BLOCK)
        );
        assert_eq!(
            Record::of(&Scheme::zero_record(6 * BLOCK), 7 * BLOCK),
            Record::Data(Scheme::zero_record(6 * BLOCK))
        );
        // A file opened for another scheme records in that one.
        let old = DigestFile::open(&p, Scheme::OffsetPrefixed).unwrap();
        old.record(5 * BLOCK, &block).unwrap();
        assert_eq!(
            read_record(&r, 5 * BLOCK).unwrap(),
            Record::Data(Scheme::OffsetPrefixed.block_digest(5 * BLOCK, &block))
        );
        // Schemes without zero records keep none.
        old.record_zeroes(9 * BLOCK, BLOCK).unwrap();
        assert_eq!(read_record(&r, 9 * BLOCK).unwrap(), Record::None);
        let d1 = file_digest(&p, Scheme::CURRENT).unwrap();
        f.record(0, &block).unwrap();
        assert_ne!(file_digest(&p, Scheme::CURRENT).unwrap(), d1);
        assert!(d1.starts_with("blake3kz-64k+records:"), "{d1}");
        assert_eq!(Scheme::of_digest(&d1), Some(Scheme::OffsetKeyedZeroes));
        assert_eq!(
            Scheme::of_digest("blake3k-64k+records:00ff"),
            Some(Scheme::OffsetKeyed)
        );
        assert_eq!(
            Scheme::of_digest("blake3-64k+records:00ff"),
            Some(Scheme::OffsetPrefixed)
        );
        assert_eq!(
            Scheme::of_digest("blake3-64k:00ff"),
            Some(Scheme::OffsetPrefixed)
        );
        assert_eq!(Scheme::of_digest("sha1:00ff"), None);
        assert_eq!(Scheme::of_digest("no tag"), None);
    }

    fn file_digest_like(path: &Path, recorded: &str) -> Result<Option<(Scheme, String)>> {
        file_digest_like_open(&File::open(path).unwrap(), path, recorded)
    }

    /// The records form, computed the slow way: every record of the whole file.
    fn records_by_hand(bytes: &[u8]) -> String {
        let mut h = blake3::Hasher::new();
        h.update(&(bytes.len() as u64).to_le_bytes());
        for (i, rec) in bytes.chunks_exact(RECORD as usize).enumerate() {
            if rec.iter().any(|&b| b != 0) {
                h.update(&(i as u64).to_le_bytes());
                h.update(rec);
            }
        }
        format!("blake3kz-64k+records:{}", h.finalize().to_hex())
    }

    #[test]
    fn the_file_digest_covers_every_record_and_the_length_but_not_how_zeroes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        // A disk of 64 GiB: a 32 MiB digest file, nearly all hole, with records in three
        // places (one at the very end), one of them in the middle of a filesystem block.
        let size = 64 << 30;
        let sparse = dir.path().join("sparse");
        let f = DigestFile::create(&sparse, size).unwrap();
        let block = vec![3u8; BLOCK as usize];
        for off in [0, 777 * BLOCK, size - BLOCK] {
            f.record(off, &block).unwrap();
        }
        let bytes = std::fs::read(&sparse).unwrap();
        let d = file_digest(&sparse, Scheme::CURRENT).unwrap();
        assert_eq!(d, records_by_hand(&bytes));
        assert_eq!(
            file_digest_like(&sparse, &d).unwrap(),
            Some((Scheme::CURRENT, d.clone()))
        );
        // The same content with its zeroes written out: the same digest.
        let dense = dir.path().join("dense");
        std::fs::write(&dense, &bytes).unwrap();
        assert_eq!(file_digest(&dense, Scheme::CURRENT).unwrap(), d);
        // A record changed, a record wiped, the file cut short or grown: all differ.
        let mut changed = bytes.clone();
        changed[777 * RECORD as usize + 5] ^= 1;
        let mut wiped = bytes.clone();
        wiped[..RECORD as usize].fill(0);
        let cut = bytes[..bytes.len() - RECORD as usize].to_vec();
        let mut grown = bytes.clone();
        grown.extend([0u8; RECORD as usize]);
        for (name, content) in [
            ("changed", changed),
            ("wiped", wiped),
            ("cut", cut),
            ("grown", grown),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, &content).unwrap();
            assert_ne!(file_digest(&p, Scheme::CURRENT).unwrap(), d, "{name}");
            assert_eq!(
                file_digest(&p, Scheme::CURRENT).unwrap(),
                records_by_hand(&content)
            );
        }
        // A digest recorded before the records form: the blake3 of the whole file.
        let whole = format!("blake3kz-64k:{}", blake3::hash(&bytes).to_hex());
        assert_eq!(
            file_digest_like(&sparse, &whole).unwrap(),
            Some((Scheme::CURRENT, whole.clone()))
        );
        assert_eq!(file_digest_like(&sparse, "md5:00").unwrap(), None);
        assert_eq!(file_digest_like(&sparse, "no tag").unwrap(), None);
    }

    #[test]
    fn only_the_data_regions_of_a_sparse_digest_file_are_read() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d");
        let len = 32u64 << 20;
        let f = DigestFile::create(&p, len / RECORD * BLOCK).unwrap();
        let block = vec![1u8; BLOCK as usize];
        f.record(777 * BLOCK, &block).unwrap();
        f.record((len / RECORD - 1) * BLOCK, &block).unwrap();
        let file = File::open(&p).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), len);
        assert!(meta.blocks() * 512 < len / 4, "the file is sparse");
        // The first region holds the first record and little else; the second, the last.
        let (s1, e1) = data_region(&file, 0, len).unwrap().unwrap();
        assert!(s1 <= 777 * RECORD && 778 * RECORD <= e1, "{s1}..{e1}");
        assert!(e1 - s1 < 1 << 20, "{s1}..{e1}");
        let (s2, e2) = data_region(&file, e1, len).unwrap().unwrap();
        assert!(s2 > e1 && len - s2 < 1 << 20 && e2 == len, "{s2}..{e2}");
        assert_eq!(data_region(&file, len, len).unwrap(), None);
    }

    #[test]
    fn both_schemes_depend_on_offset_and_every_byte_and_keep_their_definition() {
        let block = vec![0x5au8; BLOCK as usize];
        let mut flipped = block.clone();
        flipped[BLOCK as usize - 1] ^= 1;
        for scheme in Scheme::ALL {
            let d = scheme.block_digest(0, &block);
            assert_eq!(d, scheme.block_digest(0, &block));
            assert_ne!(d, scheme.block_digest(BLOCK, &block), "same data elsewhere");
            assert_ne!(d, scheme.block_digest(0, &flipped), "one bit changed");
        }
        // The definitions, so digest files written by any version stay verifiable.
        let off = 3 * BLOCK;
        let mut prefixed = blake3::Hasher::new();
        prefixed.update(&off.to_le_bytes());
        prefixed.update(&block);
        assert_eq!(
            Scheme::OffsetPrefixed.block_digest(off, &block),
            *prefixed.finalize().as_bytes()
        );
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&off.to_le_bytes());
        assert_eq!(
            Scheme::OffsetKeyed.block_digest(off, &block),
            *blake3::keyed_hash(&key, &block).as_bytes()
        );
        assert_eq!(
            Scheme::OffsetKeyedZeroes.block_digest(off, &block),
            Scheme::OffsetKeyed.block_digest(off, &block)
        );
        assert_eq!(
            Scheme::zero_record(off),
            *blake3::keyed_hash(&key, &[]).as_bytes()
        );
    }

    #[test]
    fn a_last_block_matches_at_the_source_length_or_the_disk_length_only() {
        let scheme = Scheme::CURRENT;
        // A disk of 1,000,001 bytes: its last block starts at 983,040; QEMU serves it rounded up
        // to 1,000,448 bytes.
        let (size, off) = (1_000_001u64, 15 * BLOCK);
        let mut read = vec![0u8; (1_000_448 - off) as usize];
        read[..(size - off) as usize].fill(9);
        let own = &read[..(size - off) as usize];
        for recorded in [
            scheme.block_digest(off, &read),
            scheme.block_digest(off, own),
        ] {
            assert!(scheme.matches(off, &read, &recorded, size));
        }
        // Past the disk's end the padding must be zeroes; a byte inside must match.
        let mut padded = read.clone();
        *padded.last_mut().unwrap() = 1;
        assert!(!scheme.matches(off, &padded, &scheme.block_digest(off, own), size));
        let mut inside = read.clone();
        inside[0] ^= 1;
        assert!(!scheme.matches(off, &inside, &scheme.block_digest(off, own), size));
        assert!(!scheme.matches(off, &inside, &scheme.block_digest(off, &read), size));
        // Whole blocks match exactly.
        let block = vec![4u8; BLOCK as usize];
        assert!(scheme.matches(0, &block, &scheme.block_digest(0, &block), size));
        assert!(!scheme.matches(0, &block, &scheme.block_digest(BLOCK, &block), size));
    }

    #[test]
    fn an_overlay_keeps_every_record_the_newest_wins_and_holes_stay_holes() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |b: u8| [b; 32];
        let write = |name: &str, len: u64, recs: &[(u64, u8)]| {
            let p = dir.path().join(name);
            let f = File::create(&p).unwrap();
            f.set_len(len).unwrap();
            for (block, b) in recs {
                f.write_all_at(&rec(*b), block * RECORD).unwrap();
            }
            p
        };
        // Far apart, so the files have holes between their records.
        let older = write("older", 1 << 22, &[(0, 1), (5, 2), (100_000, 3)]);
        let newer = write("newer", 1 << 22, &[(5, 9), (7, 8), (130_000, 7)]);
        let out = dir.path().join("out");
        overlay(&[&older, &newer], &out).unwrap();
        let f = File::open(&out).unwrap();
        let mut got = Vec::new();
        scan_records(&f, 0, u64::MAX, |block, r| {
            got.push((block, r[0]));
            true
        })
        .unwrap();
        assert_eq!(got, [(0, 1), (5, 9), (7, 8), (100_000, 3), (130_000, 7)]);
        assert_eq!(f.metadata().unwrap().len(), 1 << 22);
        use std::os::unix::fs::MetadataExt;
        assert!(
            f.metadata().unwrap().blocks() * 512 < 1 << 20,
            "the holes stayed holes"
        );
    }
}
