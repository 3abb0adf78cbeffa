//! The NBD client: fixed newstyle negotiation, structured replies, metadata contexts
//! (`base:allocation`, `qemu:dirty-bitmap:NAME`), and pipelined READ / WRITE / WRITE_ZEROES /
//! TRIM / FLUSH / BLOCK_STATUS / DISC over TCP or Unix sockets. The protocol is
//! NetworkBlockDevice's `doc/proto.md`.
//!
//! A server that sends garbage gets a clear [`ErrorKind::Protocol`] error naming what was wrong,
//! never a panic; a server that stops answering runs into the request timeout.

mod client;
mod handshake;
pub mod proto;
mod quickack;
pub mod server;
mod url;

pub use client::{fuzz_reply_stream, ConnectOptions, NbdClient};
pub use handshake::ExportInfo;
pub use url::{Endpoint, NbdUrl, DEFAULT_PORT};

use crate::error::{Error, ErrorKind, Result};

/// The `base:allocation` metadata context.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// The metadata context of a QEMU dirty bitmap.
pub fn dirty_bitmap_context(bitmap: &str) -> String {
    format!("qemu:dirty-bitmap:{bitmap}")
}

/// A run of bytes with the same status flags in one metadata context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Start.
    pub offset: u64,
    /// Length.
    pub length: u64,
    /// Context-specific flags (`proto::STATE_HOLE`, `STATE_ZERO`, `STATE_DIRTY`).
    pub flags: u32,
}

impl Extent {
    /// End (exclusive).
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

pub(crate) fn protocol_error(msg: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("NBD protocol error: {}", msg.into()),
    )
}

/// The largest BLOCK_STATUS window asked for at once.
const STATUS_WINDOW: u64 = 1 << 30;

impl NbdClient {
    /// Extents of `[offset, offset + len)` for each of `contexts`, querying BLOCK_STATUS until
    /// every context's list covers the whole range. Lists are returned in the order of
    /// `contexts`.
    pub async fn extents(
        &self,
        contexts: &[&str],
        offset: u64,
        len: u64,
    ) -> Result<Vec<Vec<Extent>>> {
        let ids: Vec<u32> = contexts
            .iter()
            .map(|name| {
                self.info().context_id(name).ok_or_else(|| {
                    Error::not_found(format!(
                        "{} does not offer the metadata context `{name}`",
                        self.url()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let mut out: Vec<Vec<Extent>> = vec![Vec::new(); ids.len()];
        let end = offset + len;
        let mut pos = offset;
        let align = self.info().min_block as u64;
        let window_max =
            (STATUS_WINDOW.min(self.info().max_block as u64 * 32) / align * align).max(align);
        while pos < end {
            let window = window_max.min(end - pos) as u32;
            let reply = self.block_status(pos, window).await?;
            // Every context must report; the covered prefix is the shortest of them.
            let mut covered = window as u64;
            let mut lists = Vec::with_capacity(ids.len());
            for id in &ids {
                let list = reply
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, l)| l)
                    .ok_or_else(|| {
                        protocol_error(format!("block status reply lacks context {id}"))
                    })?;
                let got: u64 = list.iter().map(|e| e.length).sum();
                covered = covered.min(got);
                lists.push(list);
            }
            if covered == 0 {
                return Err(protocol_error("block status made no progress"));
            }
            for (dst, list) in out.iter_mut().zip(lists) {
                for e in list {
                    if e.offset >= pos + covered {
                        break;
                    }
                    let length = e.length.min(pos + covered - e.offset);
                    match dst.last_mut() {
                        Some(last) if last.end() == e.offset && last.flags == e.flags => {
                            last.length += length
                        }
                        _ => dst.push(Extent {
                            offset: e.offset,
                            length,
                            flags: e.flags,
                        }),
                    }
                }
            }
            pos += covered;
        }
        Ok(out)
    }
}
