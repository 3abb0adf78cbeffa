//! Fixed newstyle negotiation: greeting, structured replies, metadata contexts, `NBD_OPT_GO`.

use super::proto::*;
use super::protocol_error;
use crate::error::{Error, ErrorKind, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest option reply payload accepted (the spec caps strings at 4096 bytes).
const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// What the server told us about the export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Export name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Minimum block size (1 when not advertised).
    pub min_block: u32,
    /// Preferred block size (4096 when not advertised).
    pub preferred_block: u32,
    /// Largest request payload the server accepts (32 MiB when not advertised).
    pub max_block: u32,
    /// Structured replies are in use.
    pub structured: bool,
    /// Negotiated metadata contexts: (id, name).
    pub contexts: Vec<(u32, String)>,
}

impl ExportInfo {
    /// The export refuses writes.
    pub fn read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    /// Several connections see each other's writes after FLUSH.
    pub fn can_multi_conn(&self) -> bool {
        self.flags & TFLAG_CAN_MULTI_CONN != 0
    }

    /// `NBD_CMD_WRITE_ZEROES` is supported.
    pub fn can_write_zeroes(&self) -> bool {
        self.flags & TFLAG_SEND_WRITE_ZEROES != 0
    }

    /// `NBD_CMD_FLAG_FAST_ZERO` is supported.
    pub fn can_fast_zero(&self) -> bool {
        self.flags & TFLAG_SEND_FAST_ZERO != 0
    }

    /// `NBD_CMD_FLUSH` is supported.
    pub fn can_flush(&self) -> bool {
        self.flags & TFLAG_SEND_FLUSH != 0
    }

    /// `NBD_CMD_TRIM` is supported.
    pub fn can_trim(&self) -> bool {
        self.flags & TFLAG_SEND_TRIM != 0
    }

    /// `NBD_CMD_FLAG_FUA` is supported.
    pub fn can_fua(&self) -> bool {
        self.flags & TFLAG_SEND_FUA != 0
    }

    /// The id of a negotiated context.
    pub fn context_id(&self, name: &str) -> Option<u32> {
        self.contexts
            .iter()
            .find(|(_, n)| n == name)
            .map(|(id, _)| *id)
    }
}

struct OptionReply {
    kind: u32,
    data: Vec<u8>,
}

async fn send_option<S: AsyncWrite + Unpin>(s: &mut S, option: u32, data: &[u8]) -> Result<()> {
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    s.write_all(&msg).await.map_err(io_err)?;
    s.flush().await.map_err(io_err)
}

async fn read_option_reply<S: AsyncRead + Unpin>(s: &mut S, option: u32) -> Result<OptionReply> {
    let magic = s.read_u64().await.map_err(io_err)?;
    if magic != OPT_REPLY_MAGIC {
        return Err(protocol_error(format!(
            "bad option reply magic {magic:#x} (expected {OPT_REPLY_MAGIC:#x})"
        )));
    }
    let opt = s.read_u32().await.map_err(io_err)?;
    if opt != option {
        return Err(protocol_error(format!(
            "option reply for option {opt}, but option {option} was sent"
        )));
    }
    let kind = s.read_u32().await.map_err(io_err)?;
    let len = s.read_u32().await.map_err(io_err)?;
    if len > MAX_OPTION_REPLY {
        return Err(protocol_error(format!(
            "option reply of {len} bytes exceeds the {MAX_OPTION_REPLY}-byte limit"
        )));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).await.map_err(io_err)?;
    Ok(OptionReply { kind, data })
}

fn option_error(what: &str, reply: &OptionReply) -> Error {
    let text = String::from_utf8_lossy(&reply.data);
    let detail = if text.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", text.trim())
    };
    let kind = if reply.kind == REP_FLAG_ERROR + 6 || reply.kind == REP_FLAG_ERROR + 3 {
        ErrorKind::NotFound
    } else {
        ErrorKind::Protocol
    };
    Error::new(
        kind,
        format!("{what}: server said {}{detail}", rep_error_name(reply.kind)),
    )
}

/// Negotiates with a freshly connected server.
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    export: &str,
    contexts: &[String],
) -> Result<ExportInfo> {
    let magic = s.read_u64().await.map_err(io_err)?;
    if magic != NBDMAGIC {
        return Err(protocol_error(format!(
            "not an NBD server (greeting {magic:#x})"
        )));
    }
    let style = s.read_u64().await.map_err(io_err)?;
    if style != IHAVEOPT {
        return Err(protocol_error(
            "the server uses oldstyle negotiation, which Sendense does not support",
        ));
    }
    let hflags = s.read_u16().await.map_err(io_err)?;
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(protocol_error(
            "the server does not support fixed newstyle negotiation",
        ));
    }
    let mut cflags = FLAG_C_FIXED_NEWSTYLE;
    if hflags & FLAG_NO_ZEROES != 0 {
        cflags |= FLAG_C_NO_ZEROES;
    }
    s.write_all(&cflags.to_be_bytes()).await.map_err(io_err)?;

    send_option(s, OPT_STRUCTURED_REPLY, &[]).await?;
    let reply = read_option_reply(s, OPT_STRUCTURED_REPLY).await?;
    let structured = match reply.kind {
        REP_ACK => true,
        k if k & REP_FLAG_ERROR != 0 => false,
        k => {
            return Err(protocol_error(format!(
                "unexpected reply {k} to NBD_OPT_STRUCTURED_REPLY"
            )))
        }
    };

    let mut negotiated = Vec::new();
    if structured && !contexts.is_empty() {
        let mut data = Vec::new();
        data.extend_from_slice(&(export.len() as u32).to_be_bytes());
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&(contexts.len() as u32).to_be_bytes());
        for c in contexts {
            data.extend_from_slice(&(c.len() as u32).to_be_bytes());
            data.extend_from_slice(c.as_bytes());
        }
        send_option(s, OPT_SET_META_CONTEXT, &data).await?;
        loop {
            let reply = read_option_reply(s, OPT_SET_META_CONTEXT).await?;
            match reply.kind {
                REP_ACK => break,
                REP_META_CONTEXT => {
                    if reply.data.len() < 4 {
                        return Err(protocol_error("short NBD_REP_META_CONTEXT"));
                    }
                    let id = u32::from_be_bytes([
                        reply.data[0],
                        reply.data[1],
                        reply.data[2],
                        reply.data[3],
                    ]);
                    let name = String::from_utf8(reply.data[4..].to_vec())
                        .map_err(|_| protocol_error("metadata context name is not UTF-8"))?;
                    negotiated.push((id, name));
                }
                k if k & REP_FLAG_ERROR != 0 => {
                    // No contexts: block status is unavailable; callers that need it say so.
                    break;
                }
                k => {
                    return Err(protocol_error(format!(
                        "unexpected reply {k} to NBD_OPT_SET_META_CONTEXT"
                    )))
                }
            }
        }
    }

    let mut data = Vec::new();
    data.extend_from_slice(&(export.len() as u32).to_be_bytes());
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &data).await?;
    let mut size_flags = None;
    let (mut min_block, mut preferred_block, mut max_block) = (1u32, 4096u32, 32u32 << 20);
    loop {
        let reply = read_option_reply(s, OPT_GO).await?;
        match reply.kind {
            REP_ACK => break,
            REP_INFO => {
                let d = &reply.data;
                if d.len() < 2 {
                    return Err(protocol_error("short NBD_REP_INFO"));
                }
                match u16::from_be_bytes([d[0], d[1]]) {
                    INFO_EXPORT if d.len() == 12 => {
                        let size = u64::from_be_bytes(
                            d[2..10]
                                .try_into()
                                .map_err(|_| protocol_error("bad info"))?,
                        );
                        let flags = u16::from_be_bytes([d[10], d[11]]);
                        size_flags = Some((size, flags));
                    }
                    INFO_BLOCK_SIZE if d.len() == 14 => {
                        let word =
                            |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
                        min_block = word(2).max(1);
                        preferred_block = word(6).max(min_block);
                        max_block = word(10).max(min_block);
                    }
                    INFO_EXPORT | INFO_BLOCK_SIZE => {
                        return Err(protocol_error("NBD_REP_INFO with a wrong length"))
                    }
                    _ => {} // Other information we did not ask for is ignored.
                }
            }
            k if k & REP_FLAG_ERROR != 0 => {
                return Err(option_error(&format!("opening export `{export}`"), &reply));
            }
            k => {
                return Err(protocol_error(format!(
                    "unexpected reply {k} to NBD_OPT_GO"
                )))
            }
        }
    }
    let (size, flags) =
        size_flags.ok_or_else(|| protocol_error("the server did not send the export size"))?;
    if flags & TFLAG_HAS_FLAGS == 0 {
        return Err(protocol_error("transmission flags lack NBD_FLAG_HAS_FLAGS"));
    }
    // The maximum is a multiple of the minimum, or 0xffffffff: no limit of the server's own
    // (nbdkit's VDDK plugin says so).
    if !min_block.is_power_of_two()
        || !(max_block.is_multiple_of(min_block) || max_block == u32::MAX)
    {
        return Err(protocol_error(format!(
            "inconsistent block sizes: minimum {min_block}, maximum {max_block}"
        )));
    }
    Ok(ExportInfo {
        name: export.to_string(),
        size,
        flags,
        min_block,
        preferred_block,
        max_block,
        structured,
        contexts: negotiated,
    })
}

fn io_err(e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::UnexpectedEof | K::ConnectionReset | K::BrokenPipe
    ) {
        Error::new(
            ErrorKind::Protocol,
            format!("the server closed the connection during negotiation ({e})"),
        )
        .with_source(e)
    } else {
        Error::new(ErrorKind::Protocol, format!("negotiation failed: {e}")).with_source(e)
    }
}
