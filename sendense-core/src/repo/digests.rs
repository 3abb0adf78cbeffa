//! Block digests of what a backup wrote, for `backup verify`.
//!
//! Next to each image, `<backup-id>.digests` holds one 32-byte record per 64 KiB block of the
//! disk, at position `block index × 32`: the digest of the block ([`Scheme`]) for every block
//! the backup wrote as data, zeroes elsewhere (the file is sparse). Records are written with
//! positional writes while the copy runs, in any order, in constant memory. The manifest keeps
//! the blake3 of the whole file, tagged with the scheme, so the digests themselves cannot be
//! changed unnoticed and each backup is verified the way it was written.

use crate::error::{Error, Result};
use crate::transfer::{BlockDigests, BLOCK};
use std::fs::File;
use std::io::Read;
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
}

impl Default for Scheme {
    fn default() -> Self {
        Scheme::CURRENT
    }
}

impl Scheme {
    /// The scheme new backups write.
    pub const CURRENT: Scheme = Scheme::OffsetKeyed;

    /// The tag in front of a file digest.
    pub fn tag(self) -> &'static str {
        match self {
            Scheme::OffsetPrefixed => "blake3-64k",
            Scheme::OffsetKeyed => "blake3k-64k",
        }
    }

    /// The scheme of `tag`.
    pub fn from_tag(tag: &str) -> Option<Scheme> {
        [Scheme::OffsetPrefixed, Scheme::OffsetKeyed]
            .into_iter()
            .find(|s| s.tag() == tag)
    }

    /// The scheme a recorded file digest (`<tag>:<hex>`) names.
    pub fn of_digest(digest: &str) -> Option<Scheme> {
        Scheme::from_tag(digest.split_once(':')?.0)
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
            Scheme::OffsetKeyed => {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&offset.to_le_bytes());
                *blake3::keyed_hash(&key, block).as_bytes()
            }
        }
    }
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

impl BlockDigests for DigestFile {
    fn record(&self, offset: u64, block: &[u8]) -> Result<()> {
        self.file
            .write_all_at(
                &self.scheme.block_digest(offset, block),
                offset / BLOCK * RECORD,
            )
            .map_err(|e| Error::io("writing digests to", &self.path, e))
    }
}

/// `<tag>:<hex>` of a whole digest file whose records follow `scheme`: the blake3 of the file.
pub fn file_digest(path: &Path, scheme: Scheme) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{}:{}", scheme.tag(), h.finalize().to_hex()))
}

/// Reads the record of the block at `offset`; `None` when the backup wrote no data there.
pub fn read_record(file: &File, offset: u64) -> Result<Option<[u8; 32]>> {
    let mut rec = [0u8; 32];
    match file.read_exact_at(&mut rec, offset / BLOCK * RECORD) {
        Ok(()) => Ok((rec != [0u8; 32]).then_some(rec)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
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
        assert_eq!(read_record(&r, 3 * BLOCK).unwrap(), Some(want));
        assert_eq!(read_record(&r, 4 * BLOCK).unwrap(), None);
        // A file opened for another scheme records in that one.
        let old = DigestFile::open(&p, Scheme::OffsetPrefixed).unwrap();
        old.record(5 * BLOCK, &block).unwrap();
        assert_eq!(
            read_record(&r, 5 * BLOCK).unwrap(),
            Some(Scheme::OffsetPrefixed.block_digest(5 * BLOCK, &block))
        );
        let d1 = file_digest(&p, Scheme::CURRENT).unwrap();
        f.record(0, &block).unwrap();
        assert_ne!(file_digest(&p, Scheme::CURRENT).unwrap(), d1);
        assert!(d1.starts_with("blake3k-64k:"));
        assert_eq!(Scheme::of_digest(&d1), Some(Scheme::OffsetKeyed));
        assert_eq!(
            Scheme::of_digest("blake3-64k:00ff"),
            Some(Scheme::OffsetPrefixed)
        );
        assert_eq!(Scheme::of_digest("sha1:00ff"), None);
        assert_eq!(Scheme::of_digest("no tag"), None);
    }

    #[test]
    fn both_schemes_depend_on_offset_and_every_byte_and_keep_their_definition() {
        let block = vec![0x5au8; BLOCK as usize];
        let mut flipped = block.clone();
        flipped[BLOCK as usize - 1] ^= 1;
        for scheme in [Scheme::OffsetPrefixed, Scheme::OffsetKeyed] {
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
    }
}
