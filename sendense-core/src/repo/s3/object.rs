//! An object in a bucket read by offset, as a file is ([`ReadAt`]): the chain reader opens a
//! chain's images in an S3 repository through it, so a restore or a verify reads the blocks it
//! needs with range requests — never the whole object first.
//!
//! Reads go in aligned chunks of [`CHUNK`] bytes, the last [`KEPT_CHUNKS`] of all objects kept
//! (one budget for the process, however many objects a chain has): the small reads
//! of QCOW2 tables and neighbouring clusters cost one request. A chunk is requested once
//! however many readers want it at the same time, and each read asks for the next
//! [`READ_AHEAD`] chunks in the background, so a sequential reader rarely waits for the
//! network. Requests run on the client's runtime and are waited for from the reading thread,
//! so an object can be read from blocking code anywhere; memory stays bounded by the chunks
//! kept and in flight.

use super::S3Client;
use crate::recent::Recent;
use crate::repo::read_at::ReadAt;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

/// Bytes fetched per request.
pub const CHUNK: u64 = 4 << 20;
/// Chunks kept, of all objects read in this process.
const KEPT_CHUNKS: usize = 32;

/// The chunks kept, by object (its serial, high bits) and chunk number.
fn kept_chunks() -> Arc<Recent<Vec<u8>>> {
    static KEPT: std::sync::OnceLock<Arc<Recent<Vec<u8>>>> = std::sync::OnceLock::new();
    KEPT.get_or_init(|| Arc::new(Recent::new(KEPT_CHUNKS)))
        .clone()
}
/// Chunks fetched ahead of one read, in the background: reads go on while the next requests
/// travel (the chain's data lies mostly in order in its images).
const READ_AHEAD: u64 = 4;

/// A fetch on its way: its outcome, once there, for every reader waiting on it.
#[derive(Debug, Default)]
struct Pending {
    outcome: Mutex<Option<std::result::Result<Arc<Vec<u8>>, String>>>,
    done: Condvar,
}

/// One object of a bucket, of a known size, read by offset.
#[derive(Debug)]
pub struct S3Object {
    client: S3Client,
    key: String,
    version: Option<String>,
    size: u64,
    runtime: tokio::runtime::Handle,
    /// Chunks fetched (of every object; see [`kept_chunks`]), shared with the fetches that
    /// fill it.
    kept: Arc<Recent<Vec<u8>>>,
    /// This object's serial: its chunks' keys in `kept`.
    serial: u64,
    /// Chunks being fetched: a chunk is asked for once, however many readers want it.
    pending: Arc<Mutex<HashMap<u64, Arc<Pending>>>>,
    /// The last chunk read: a read of the next one is sequential, and reads ahead.
    last: std::sync::atomic::AtomicU64,
}

/// Ends a fetch whatever happens to its task (an answer, an error, a panic, a runtime going
/// away): it stops being pending and its readers wake — never a reader waiting forever.
struct Finish {
    c: u64,
    all: Arc<Mutex<HashMap<u64, Arc<Pending>>>>,
    mine: Arc<Pending>,
    outcome: Option<std::result::Result<Arc<Vec<u8>>, String>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.c);
        let outcome = self
            .outcome
            .take()
            .unwrap_or_else(|| Err("the request ended without an answer".into()));
        *self.mine.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.mine.done.notify_all();
    }
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
            kept: kept_chunks(),
            serial: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
            pending: Arc::new(Mutex::new(HashMap::new())),
            last: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// The object read at version `version` (`None`: the latest): on a versioned bucket, the
    /// version Sendense wrote, whatever was written over it since.
    pub fn at_version(mut self, version: Option<String>) -> S3Object {
        self.version = version;
        self
    }

    /// The key of chunk `c` among the chunks kept (a chunk number has 40 bits: 4 EiB objects).
    fn key_of(&self, c: u64) -> u64 {
        (self.serial << 40) | (c & ((1 << 40) - 1))
    }

    /// Starts fetching chunk `c` unless it is kept or on its way; the fetch that is (or was
    /// already) on its way.
    fn fetch(&self, c: u64) -> Option<Arc<Pending>> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pending.get(&c) {
            return Some(p.clone());
        }
        if self.kept.get(self.key_of(c)).is_some() {
            return None;
        }
        let p = Arc::new(Pending::default());
        pending.insert(c, p.clone());
        drop(pending);
        let start = c * CHUNK;
        let len = CHUNK.min(self.size - start);
        let (client, key, version) = (self.client.clone(), self.key.clone(), self.version.clone());
        let (kept, at) = (self.kept.clone(), self.key_of(c));
        let finish = Finish {
            c,
            all: self.pending.clone(),
            mine: p.clone(),
            outcome: None,
        };
        // Not started (the runtime is going away): `finish` is dropped with it, and ends it.
        // The task is not waited for here: its readers wait on `p`.
        drop(self.runtime.spawn(async move {
            // The whole guard moves in: it ends the fetch when the task ends, however.
            let mut finish = finish;
            let got = client
                .get_range_of(&key, version.as_deref(), start, len)
                .await
                .map(|data| kept.put(at, data))
                .map_err(|e| e.message().to_string());
            // Kept before it stops being pending: a reader finds it in one or the other.
            finish.outcome = Some(got);
        }));
        Some(p)
    }

    /// Chunk `c`, fetched (or kept from before); when the reads go in order, the next ones
    /// asked for ahead (after `c`).
    fn chunk(&self, c: u64) -> std::io::Result<Arc<Vec<u8>>> {
        use std::sync::atomic::Ordering;
        let chunks = self.size.div_ceil(CHUNK);
        let previous = self.last.swap(c, Ordering::Relaxed);
        if previous.wrapping_add(1) == c || previous == c {
            let _ = self.fetch(c);
            for ahead in (c + 1..=c + READ_AHEAD).filter(|a| *a < chunks) {
                let _ = self.fetch(ahead);
            }
        }
        loop {
            if let Some(data) = self.kept.get(self.key_of(c)) {
                return Ok(data);
            }
            let Some(p) = self.fetch(c) else {
                continue;
            };
            let mut outcome = p.outcome.lock().unwrap_or_else(|p| p.into_inner());
            while outcome.is_none() {
                outcome = p.done.wait(outcome).unwrap_or_else(|p| p.into_inner());
            }
            return match outcome.as_ref() {
                Some(Ok(data)) => Ok(data.clone()),
                Some(Err(e)) => Err(std::io::Error::other(e.clone())),
                None => Err(std::io::Error::other(format!(
                    "reading {}: the request was lost",
                    self.key
                ))),
            };
        }
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
