//! An object in a bucket read by offset, as a file is ([`ReadAt`]): the chain reader opens a
//! chain's images in an S3 repository through it, so a restore or a verify reads the blocks it
//! needs with range requests — never the whole object first.
//!
//! Reads go in aligned chunks of [`CHUNK`] bytes, the last [`KEPT_CHUNKS`] kept: the small reads
//! of QCOW2 tables and neighbouring clusters cost one request. Requests run on the client's
//! runtime and are waited for from the reading thread, so an object can be read from blocking
//! code anywhere.

use super::S3Client;
use crate::recent::Recent;
use crate::repo::read_at::ReadAt;
use std::sync::Arc;

/// Bytes fetched per request.
pub const CHUNK: u64 = 4 << 20;

/// Chunks kept per object.
const KEPT_CHUNKS: usize = 8;

/// One object of a bucket, of a known size, read by offset.
#[derive(Debug)]
pub struct S3Object {
    client: S3Client,
    key: String,
    version: Option<String>,
    size: u64,
    runtime: tokio::runtime::Handle,
    kept: Recent<Vec<u8>>,
}

impl S3Object {
    /// Object `key` of `size` bytes (as listed or recorded: a read past it is an error), read
    /// with `client` on `runtime`.
    pub fn new(
        client: S3Client,
        key: String,
        size: u64,
        runtime: tokio::runtime::Handle,
    ) -> S3Object {
        S3Object {
            client,
            key,
            version: None,
            size,
            runtime,
            kept: Recent::new(KEPT_CHUNKS),
        }
    }

    /// The object read at version `version` (`None`: the latest): on a versioned bucket, the
    /// version Sendense wrote, whatever was written over it since.
    pub fn at_version(mut self, version: Option<String>) -> S3Object {
        self.version = version;
        self
    }

    /// Chunk `c`, fetched (or kept from before).
    fn chunk(&self, c: u64) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(data) = self.kept.get(c) {
            return Ok(data);
        }
        let start = c * CHUNK;
        let len = CHUNK.min(self.size - start);
        let (client, key, version) = (self.client.clone(), self.key.clone(), self.version.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(
                client
                    .get_range_of(&key, version.as_deref(), start, len)
                    .await,
            );
        });
        let data = rx
            .recv()
            .map_err(|_| {
                std::io::Error::other(format!("reading {}: the request was lost", self.key))
            })?
            .map_err(|e| std::io::Error::other(e.message().to_string()))?;
        let data = self.kept.put(c, data);
        Ok(data)
    }
}

impl ReadAt for S3Object {
    fn read_full_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= self.size)
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} bytes at {offset} of {}, which has {}",
                        buf.len(),
                        self.key,
                        self.size
                    ),
                )
            })?;
        let mut at = offset;
        while at < end {
            let c = at / CHUNK;
            let data = self.chunk(c)?;
            let from = (at - c * CHUNK) as usize;
            let n = (data.len() - from).min((end - at) as usize);
            let to = (at - offset) as usize;
            buf[to..to + n].copy_from_slice(&data[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.size)
    }
}
