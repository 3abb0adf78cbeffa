//! Bytes read by offset from where a chain's images are: a file, or an object in a bucket
//! ([`crate::repo::s3::S3Object`]). The QCOW2 map and the chain reader read through it.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// An image's bytes, by offset. Shared by every reader of a chain.
pub trait ReadAt: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with the bytes at `offset`; reading past the end is an error.
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;

    /// Its length.
    fn len(&self) -> std::io::Result<u64>;

    /// Whether it is empty.
    fn is_empty(&self) -> std::io::Result<bool> {
        self.len().map(|n| n == 0)
    }
}

impl ReadAt for File {
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn len(&self) -> std::io::Result<u64> {
        self.metadata().map(|m| m.len())
    }
}
