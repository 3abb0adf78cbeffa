//! The restore point as a mount reads it: Sendense serves its chain to qemu-storage-daemon
//! over NBD ([`crate::nbd::server`]), read straight from the images ([`ChainReader`]), every
//! block checked against the digest records ([`ChainCheck`]) before a byte of it is answered.
//! A block that is not as its backup wrote it is answered with `EIO` — the program reading the
//! file gets an input/output error, never the wrong bytes — and the first one is kept for the
//! mount's end, which reports it by offset and marks the backup damaged.
//!
//! Checking is per block ([`BLOCK`], the digests' granularity): a read of part of a block reads
//! and checks all of it, and the blocks checked last are kept, so the small reads a filesystem
//! makes do not read a block again and again.

use crate::nbd::server::{ReadFailed, ServedDisk};
use crate::recent::Recent;
use crate::repo::chain_check::ChainCheck;
use crate::repo::chain_read::ChainReader;
use crate::transfer::{BlockCheck, BLOCK};
use std::sync::{Arc, Mutex};

/// Checked blocks kept (64 KiB each).
const KEPT_BLOCKS: usize = 64;

/// A chain served to a mount.
#[derive(Debug)]
pub struct ServedChain {
    reader: ChainReader,
    /// `None`: served unchecked (`--no-verify`).
    check: Option<ChainCheck>,
    /// The disk's size recorded at the backup: what lies past it is not checked.
    recorded: u64,
    /// Checked blocks, the last used at the back.
    kept: Recent<Vec<u8>>,
    /// The first read that failed other than by a check.
    read_error: Mutex<Option<String>>,
}

impl ServedChain {
    /// Serves `reader`, checked by `check` unless it is `None`; the disk was `recorded` bytes.
    pub fn new(reader: ChainReader, check: Option<ChainCheck>, recorded: u64) -> ServedChain {
        ServedChain {
            reader,
            check,
            recorded,
            kept: Recent::new(KEPT_BLOCKS),
            read_error: Mutex::new(None),
        }
    }

    /// Whether blocks are checked.
    pub fn checked(&self) -> bool {
        self.check.is_some()
    }

    /// The first block found damaged, or the first read that failed.
    pub fn failure(&self) -> Option<String> {
        self.damage()
            .or_else(|| self.read_error.lock().ok().and_then(|e| e.clone()))
    }

    /// The first block found not as its backup wrote it.
    pub fn damage(&self) -> Option<String> {
        self.check.as_ref().and_then(ChainCheck::failure)
    }

    /// Bytes read that no record could decide.
    pub fn unchecked_bytes(&self) -> u64 {
        self.check.as_ref().map_or(0, ChainCheck::unchecked_bytes)
    }

    fn read_failed(&self, message: String) {
        if let Ok(mut first) = self.read_error.lock() {
            first.get_or_insert(message);
        }
    }

    /// Block `block`, read and checked (or kept from before).
    fn block(&self, check: &ChainCheck, block: u64) -> Result<Arc<Vec<u8>>, ReadFailed> {
        if let Some(data) = self.kept.get(block) {
            return Ok(data);
        }
        let start = block * BLOCK;
        let len = BLOCK.min(self.reader.size() - start);
        let mut data = vec![0u8; len as usize];
        if let Err(e) = self.reader.read(start, &mut data) {
            self.read_failed(e.message().to_string());
            return Err(ReadFailed);
        }
        if start < self.recorded {
            let checked = (self.recorded - start).min(len) as usize;
            // The check keeps its first failure for `failure`.
            if let Err(e) = check.check_data(start, &data[..checked]) {
                // A mismatch is kept by the check; anything else (the records unreadable)
                // is kept here, so no failed read goes unexplained.
                if check.failure().is_none() {
                    self.read_failed(e.message().to_string());
                }
                return Err(ReadFailed);
            }
        }
        let data = self.kept.put(block, data);
        Ok(data)
    }
}

impl ServedDisk for ServedChain {
    fn size(&self) -> u64 {
        self.reader.size()
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ReadFailed> {
        let Some(check) = &self.check else {
            return self.reader.read(offset, buf).map_err(|e| {
                self.read_failed(e.message().to_string());
                ReadFailed
            });
        };
        let end = offset + buf.len() as u64;
        let mut at = offset;
        while at < end {
            let block = at / BLOCK;
            let data = self.block(check, block)?;
            let from = (at - block * BLOCK) as usize;
            let n = (data.len() - from).min((end - at) as usize);
            buf[(at - offset) as usize..(at - offset) as usize + n]
                .copy_from_slice(&data[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }
}
