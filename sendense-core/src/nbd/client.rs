//! One NBD connection in the transmission phase: pipelined requests, replies matched by cookie.
//!
//! Requests are written whole under a writer lock; one reader task reads every reply and hands it
//! to the waiting request. A read request owns its buffer while in flight: the reader fills it
//! directly from the socket (no intermediate copy) and returns it. At most `max_in_flight`
//! requests are outstanding (a semaphore). Any protocol violation or I/O error kills the
//! connection: every waiting request fails with the reason, later requests fail at once.

use super::handshake::{negotiate, ExportInfo};
use super::proto::*;
use super::quickack::QuickAck;
use super::url::{Endpoint, NbdUrl};
use super::{protocol_error, Extent};
use crate::error::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{oneshot, Semaphore};

/// Largest structured chunk accepted: the biggest read we issue plus its header.
const MAX_CHUNK: u32 = 64 * 1024 * 1024 + 64;

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Metadata contexts to negotiate (`base:allocation`, `qemu:dirty-bitmap:NAME`).
    pub contexts: Vec<String>,
    /// Limit for connecting and negotiating.
    pub connect_timeout: Duration,
    /// Limit for one request to be answered; `None` waits forever.
    pub io_timeout: Option<Duration>,
    /// Requests in flight on this connection.
    pub max_in_flight: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            contexts: Vec::new(),
            connect_timeout: Duration::from_secs(30),
            io_timeout: Some(Duration::from_secs(300)),
            max_in_flight: 16,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T>>;

/// The header fields of one request.
struct Req {
    what: &'static str,
    cmd: u16,
    flags: u16,
    offset: u64,
    length: u32,
}

enum Pending {
    Read {
        offset: u64,
        buf: Vec<u8>,
        covered: Vec<(u64, u64)>,
        error: Option<Error>,
        tx: Reply<Vec<u8>>,
    },
    Status {
        offset: u64,
        length: u32,
        extents: Vec<(u32, Vec<Extent>)>,
        error: Option<Error>,
        tx: Reply<Vec<(u32, Vec<Extent>)>>,
    },
    Plain {
        error: Option<Error>,
        tx: Reply<()>,
    },
}

impl Pending {
    fn fail(self, err: Error) {
        match self {
            Pending::Read { tx, .. } => drop(tx.send(Err(err))),
            Pending::Status { tx, .. } => drop(tx.send(Err(err))),
            Pending::Plain { tx, .. } => drop(tx.send(Err(err))),
        }
    }

    fn set_error(&mut self, err: Error) {
        let slot = match self {
            Pending::Read { error, .. } => error,
            Pending::Status { error, .. } => error,
            Pending::Plain { error, .. } => error,
        };
        slot.get_or_insert(err);
    }

    /// Completes the request after its last reply.
    fn finish(self, what: &str) {
        match self {
            Pending::Read {
                buf,
                covered,
                error,
                tx,
                ..
            } => {
                let result = match error {
                    Some(e) => Err(e),
                    None => {
                        let total: u64 = covered.iter().map(|(s, e)| e - s).sum();
                        if total == buf.len() as u64 {
                            Ok(buf)
                        } else {
                            Err(protocol_error(format!(
                                "{what}: the reply covered {total} of {} bytes",
                                buf.len()
                            )))
                        }
                    }
                };
                let _ = tx.send(result);
            }
            Pending::Status {
                extents, error, tx, ..
            } => {
                let _ = tx.send(match error {
                    Some(e) => Err(e),
                    None => Ok(extents),
                });
            }
            Pending::Plain { error, tx } => {
                let _ = tx.send(match error {
                    Some(e) => Err(e),
                    None => Ok(()),
                });
            }
        }
    }
}

struct Shared {
    pending: Mutex<HashMap<u64, (Pending, &'static str)>>,
    dead: Mutex<Option<String>>,
}

impl Shared {
    fn kill(&self, reason: String) {
        let mut dead = self.dead.lock().unwrap_or_else(|p| p.into_inner());
        if dead.is_none() {
            *dead = Some(reason.clone());
        }
        drop(dead);
        let drained: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (_, (p, _)) in drained {
            p.fail(Error::new(ErrorKind::Protocol, reason.clone()));
        }
    }

    fn dead_reason(&self) -> Option<String> {
        self.dead.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

type Writer = BufWriter<Box<dyn AsyncWrite + Send + Unpin>>;

/// The largest zero request sent (see [`NbdClient::write_zeroes`]).
pub const ZERO_REQUEST: u64 = 1 << 30;

/// A connected NBD client (one connection).
pub struct NbdClient {
    url: NbdUrl,
    info: ExportInfo,
    shared: Arc<Shared>,
    writer: tokio::sync::Mutex<Writer>,
    slots: Semaphore,
    next_cookie: AtomicU64,
    /// The server refused a zero request larger than its maximum block.
    small_zeroes: AtomicBool,
    io_timeout: Option<Duration>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdClient")
            .field("url", &self.url.to_string())
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl NbdClient {
    /// Connects to `url` and negotiates.
    pub async fn connect(url: &NbdUrl, opts: &ConnectOptions) -> Result<NbdClient> {
        let timeout = opts.connect_timeout;
        let fut = Self::connect_inner(url, opts);
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Protocol,
                    format!("connecting to {url} timed out after {}s", timeout.as_secs()),
                ))
            })
    }

    async fn connect_inner(url: &NbdUrl, opts: &ConnectOptions) -> Result<NbdClient> {
        let ctx = |e: Error| e.context(format!("NBD server {url}"));
        let (read, write, info): (
            Box<dyn AsyncRead + Send + Unpin>,
            Box<dyn AsyncWrite + Send + Unpin>,
            ExportInfo,
        ) = match &url.endpoint {
            Endpoint::Tcp { host, port } => {
                let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| connect_error(url, e))?;
                let _ = s.set_nodelay(true);
                let mut s = QuickAck(s);
                let info = negotiate(&mut s, &url.export, &opts.contexts)
                    .await
                    .map_err(ctx)?;
                let (r, w) = s.0.into_split();
                (Box::new(QuickAck(r)), Box::new(w), info)
            }
            Endpoint::Unix(path) => {
                let mut s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| connect_error(url, e))?;
                let info = negotiate(&mut s, &url.export, &opts.contexts)
                    .await
                    .map_err(ctx)?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w), info)
            }
        };
        Ok(Self::start(url.clone(), info, read, write, opts))
    }

    /// Starts the transmission phase over an already negotiated stream.
    pub(crate) fn start(
        url: NbdUrl,
        info: ExportInfo,
        read: Box<dyn AsyncRead + Send + Unpin>,
        write: Box<dyn AsyncWrite + Send + Unpin>,
        opts: &ConnectOptions,
    ) -> NbdClient {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            dead: Mutex::new(None),
        });
        let reader_shared = shared.clone();
        let structured = info.structured;
        let label = url.to_string();
        let reader = tokio::spawn(async move {
            let mut r = BufReader::with_capacity(256 * 1024, read);
            let err = read_replies(&mut r, &reader_shared, structured).await;
            reader_shared.kill(format!(
                "NBD connection to {label} failed: {}",
                err.message()
            ));
        });
        NbdClient {
            url,
            info,
            shared,
            writer: tokio::sync::Mutex::new(BufWriter::with_capacity(64 * 1024, write)),
            slots: Semaphore::new(opts.max_in_flight.max(1)),
            next_cookie: AtomicU64::new(1),
            small_zeroes: AtomicBool::new(false),
            io_timeout: opts.io_timeout,
            reader,
        }
    }

    /// The export as negotiated.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// Size of the export.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// The URL this client is connected to.
    pub fn url(&self) -> &NbdUrl {
        &self.url
    }

    /// Sends one request and waits for its completion.
    async fn call<T>(
        &self,
        req: Req,
        payload: Option<&[u8]>,
        make: impl FnOnce(Reply<T>) -> Pending,
    ) -> Result<T> {
        let Req {
            what,
            cmd,
            flags,
            offset,
            length,
        } = req;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| Error::internal("request slots closed"))?;
        if let Some(reason) = self.shared.dead_reason() {
            return Err(Error::new(ErrorKind::Protocol, reason));
        }
        let cookie = self.next_cookie.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cookie, (make(tx), what));
        let header = encode_request(flags, cmd, cookie, offset, length);
        let sent = async {
            let mut w = self.writer.lock().await;
            w.write_all(&header).await?;
            if let Some(p) = payload {
                w.write_all(p).await?;
            }
            w.flush().await
        }
        .await;
        if let Err(e) = sent {
            let reason = format!("NBD connection to {} failed: {e}", self.url);
            self.shared.kill(reason);
        }
        let waited = match self.io_timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(r) => r,
                Err(_) => {
                    let reason = format!(
                        "{what} at offset {offset} on {} got no reply within {}s",
                        self.url,
                        t.as_secs()
                    );
                    self.shared.kill(reason.clone());
                    self.reader.abort();
                    return Err(Error::new(ErrorKind::Protocol, reason));
                }
            },
            None => rx.await,
        };
        waited
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Protocol, "NBD connection closed")))
            .map_err(|e| e.context(format!("{what} {} bytes at offset {offset}", length)))
    }

    fn check_range(&self, what: &str, offset: u64, len: u64) -> Result<()> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.info.size)
        {
            return Err(Error::invalid(format!(
                "{what} of {len} bytes at offset {offset} is beyond the end of {} ({} bytes)",
                self.url, self.info.size
            )));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` into `buf` (which is handed back filled).
    pub async fn read(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        let len = buf.len();
        self.check_range("read", offset, len as u64)?;
        if len as u64 > self.info.max_block as u64 {
            return Err(Error::invalid(format!(
                "read of {len} bytes exceeds the server's maximum request of {}",
                self.info.max_block
            )));
        }
        self.call(
            Req {
                what: "read",
                cmd: CMD_READ,
                flags: 0,
                offset,
                length: len as u32,
            },
            None,
            |tx| Pending::Read {
                offset,
                buf,
                covered: Vec::new(),
                error: None,
                tx,
            },
        )
        .await
    }

    /// Writes `data` at `offset`.
    pub async fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        self.check_range("write", offset, data.len() as u64)?;
        if self.info.read_only() {
            return Err(Error::refused(format!("{} is read-only", self.url)));
        }
        let flags = if fua && self.info.can_fua() {
            CMD_FLAG_FUA
        } else {
            0
        };
        let req = Req {
            what: "write",
            cmd: CMD_WRITE,
            flags,
            offset,
            length: data.len() as u32,
        };
        self.call(req, Some(data), |tx| Pending::Plain { error: None, tx })
            .await
    }

    /// Writes zeroes over `len` bytes at `offset`. `punch` lets the server deallocate (no
    /// `NO_HOLE`); without it the range stays allocated.
    ///
    /// A zero request carries no payload, so servers (qemu-nbd, nbdkit) take it larger than
    /// their largest payload, and nbdcopy sends them so: requests of up to
    /// [`ZERO_REQUEST`] are sent. A server that refuses one larger than its maximum block
    /// gets that range, and every later one, split to its maximum block instead.
    pub async fn write_zeroes(&self, offset: u64, len: u64, punch: bool) -> Result<()> {
        self.check_range("write zeroes", offset, len)?;
        if !self.info.can_write_zeroes() {
            // Fall back to writing a zero buffer.
            let chunk = (self.info.max_block as u64).min(4 << 20);
            let zeroes = vec![0u8; chunk.min(len) as usize];
            let mut done = 0;
            while done < len {
                let n = chunk.min(len - done);
                self.write(offset + done, &zeroes[..n as usize], false)
                    .await?;
                done += n;
            }
            return Ok(());
        }
        let flags = if punch { 0 } else { CMD_FLAG_NO_HOLE };
        let max = u64::from(self.info.max_block);
        let min = u64::from(self.info.min_block).max(1);
        let mut done = 0;
        // A minimum block larger than a zero request (not seen in practice) goes split.
        while done < len && min <= ZERO_REQUEST && !self.small_zeroes.load(Ordering::Relaxed) {
            let n = (ZERO_REQUEST / min * min).min(len - done);
            let req = Req {
                what: "write zeroes",
                cmd: CMD_WRITE_ZEROES,
                flags,
                offset: offset + done,
                length: n as u32,
            };
            match self
                .call(req, None, |tx| Pending::Plain { error: None, tx })
                .await
            {
                Ok(()) => done += n,
                Err(e) if n > max && e.kind() == ErrorKind::External => {
                    self.small_zeroes.store(true, Ordering::Relaxed)
                }
                Err(e) => return Err(e),
            }
        }
        self.split(
            "write zeroes",
            CMD_WRITE_ZEROES,
            flags,
            offset + done,
            len - done,
        )
        .await
    }

    /// A payload-free command over `len` bytes, split at the server's maximum request size.
    async fn split(
        &self,
        what: &'static str,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u64,
    ) -> Result<()> {
        let max = self.info.max_block as u64;
        let min = self.info.min_block as u64;
        let chunk = (max / min * min).max(min);
        let mut done = 0;
        while done < len {
            let n = chunk.min(len - done);
            let req = Req {
                what,
                cmd,
                flags,
                offset: offset + done,
                length: n as u32,
            };
            self.call(req, None, |tx| Pending::Plain { error: None, tx })
                .await?;
            done += n;
        }
        Ok(())
    }

    /// Discards `len` bytes at `offset`.
    pub async fn trim(&self, offset: u64, len: u64) -> Result<()> {
        self.check_range("trim", offset, len)?;
        if !self.info.can_trim() {
            return Ok(());
        }
        self.split("trim", CMD_TRIM, 0, offset, len).await
    }

    /// Makes every completed write durable.
    pub async fn flush(&self) -> Result<()> {
        if !self.info.can_flush() {
            return Ok(());
        }
        self.call(
            Req {
                what: "flush",
                cmd: CMD_FLUSH,
                flags: 0,
                offset: 0,
                length: 0,
            },
            None,
            |tx| Pending::Plain { error: None, tx },
        )
        .await
    }

    /// One BLOCK_STATUS request: extents of every negotiated context, each list covering a
    /// prefix of `[offset, offset + len)`.
    pub async fn block_status(&self, offset: u64, len: u32) -> Result<Vec<(u32, Vec<Extent>)>> {
        self.check_range("block status", offset, len as u64)?;
        if self.info.contexts.is_empty() {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("{} offers no metadata contexts for block status", self.url),
            ));
        }
        self.call(
            Req {
                what: "block status",
                cmd: CMD_BLOCK_STATUS,
                flags: 0,
                offset,
                length: len,
            },
            None,
            |tx| Pending::Status {
                offset,
                length: len,
                extents: Vec::new(),
                error: None,
                tx,
            },
        )
        .await
    }

    /// Ends the session politely (NBD_CMD_DISC), waiting for nothing.
    pub async fn disconnect(self) {
        let header = encode_request(0, CMD_DISC, 0, 0, 0);
        let mut w = self.writer.lock().await;
        let _ = w.write_all(&header).await;
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    }
}

fn connect_error(url: &NbdUrl, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Protocol, format!("cannot connect to {url}: {e}"))
        .with_source(e)
        .with_help("Check that the NBD server is running and listening at that address.")
}

fn take(shared: &Shared, cookie: u64) -> Result<(Pending, &'static str)> {
    shared
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&cookie)
        .ok_or_else(|| protocol_error(format!("reply for unknown handle {cookie:#x}")))
}

fn put(shared: &Shared, cookie: u64, entry: (Pending, &'static str)) {
    shared
        .pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(cookie, entry);
}

/// Reads replies until the connection fails; returns why it stopped.
async fn read_replies<R: AsyncRead + Unpin>(r: &mut R, shared: &Shared, structured: bool) -> Error {
    loop {
        if let Err(e) = read_one(r, shared, structured).await {
            return e;
        }
    }
}

async fn read_one<R: AsyncRead + Unpin>(
    r: &mut R,
    shared: &Shared,
    structured: bool,
) -> Result<()> {
    let magic = r.read_u32().await.map_err(eof)?;
    match magic {
        SIMPLE_REPLY_MAGIC => {
            let errno = r.read_u32().await.map_err(eof)?;
            let cookie = r.read_u64().await.map_err(eof)?;
            let (mut p, what) = take(shared, cookie)?;
            if errno != 0 {
                p.set_error(server_error(errno, None));
                p.finish(what);
                return Ok(());
            }
            match &mut p {
                Pending::Read { buf, covered, .. } => {
                    if structured {
                        return Err(protocol_error(
                            "simple reply with data to a read after structured replies were negotiated",
                        ));
                    }
                    if let Err(e) = r.read_exact(buf).await {
                        put(shared, cookie, (p, what));
                        return Err(eof(e));
                    }
                    covered.push((0, buf.len() as u64));
                }
                Pending::Status { .. } => {
                    return Err(protocol_error("simple reply to a block status request"))
                }
                Pending::Plain { .. } => {}
            }
            p.finish(what);
            Ok(())
        }
        STRUCTURED_REPLY_MAGIC if structured => {
            let flags = r.read_u16().await.map_err(eof)?;
            let kind = r.read_u16().await.map_err(eof)?;
            let cookie = r.read_u64().await.map_err(eof)?;
            let length = r.read_u32().await.map_err(eof)?;
            if length > MAX_CHUNK {
                return Err(protocol_error(format!(
                    "reply chunk of {length} bytes exceeds the {MAX_CHUNK}-byte limit"
                )));
            }
            let (mut p, what) = take(shared, cookie)?;
            if let Err(e) = read_chunk(r, &mut p, kind, length).await {
                // Back in the table, so the connection's failure reason reaches the caller.
                put(shared, cookie, (p, what));
                return Err(e);
            }
            if flags & REPLY_FLAG_DONE != 0 {
                p.finish(what);
            } else if kind == REPLY_TYPE_NONE {
                return Err(protocol_error("NBD_REPLY_TYPE_NONE without the DONE flag"));
            } else {
                put(shared, cookie, (p, what));
            }
            Ok(())
        }
        STRUCTURED_REPLY_MAGIC => Err(protocol_error(
            "structured reply although structured replies were not negotiated",
        )),
        other => Err(protocol_error(format!("bad reply magic {other:#x}"))),
    }
}

async fn read_chunk<R: AsyncRead + Unpin>(
    r: &mut R,
    p: &mut Pending,
    kind: u16,
    length: u32,
) -> Result<()> {
    match kind {
        REPLY_TYPE_NONE => {
            if length != 0 {
                return Err(protocol_error("NBD_REPLY_TYPE_NONE with a payload"));
            }
        }
        REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
            let Pending::Read {
                offset: base,
                buf,
                covered,
                ..
            } = p
            else {
                return Err(protocol_error("read data in a reply to a non-read request"));
            };
            let min = if kind == REPLY_TYPE_OFFSET_DATA {
                9
            } else {
                12
            };
            if length < min || (kind == REPLY_TYPE_OFFSET_HOLE && length != 12) {
                return Err(protocol_error(format!("read chunk of bad length {length}")));
            }
            let at = r.read_u64().await.map_err(eof)?;
            let n = if kind == REPLY_TYPE_OFFSET_DATA {
                (length - 8) as u64
            } else {
                r.read_u32().await.map_err(eof)? as u64
            };
            let start = at
                .checked_sub(*base)
                .filter(|s| n > 0 && s.checked_add(n).is_some_and(|e| e <= buf.len() as u64))
                .ok_or_else(|| {
                    protocol_error(format!(
                        "read chunk [{at}, +{n}) lies outside the request [{base}, +{})",
                        buf.len()
                    ))
                })?;
            let end = start + n;
            if covered.iter().any(|(s, e)| start < *e && *s < end) {
                return Err(protocol_error("overlapping read chunks"));
            }
            covered.push((start, end));
            let dst = &mut buf[start as usize..end as usize];
            if kind == REPLY_TYPE_OFFSET_DATA {
                r.read_exact(dst).await.map_err(eof)?;
            } else {
                dst.fill(0);
            }
        }
        REPLY_TYPE_BLOCK_STATUS => {
            let Pending::Status {
                offset,
                length: req_len,
                extents,
                ..
            } = p
            else {
                return Err(protocol_error("block status in a reply to another request"));
            };
            if length < 12 || !(length - 4).is_multiple_of(8) {
                return Err(protocol_error(format!(
                    "block status chunk of bad length {length}"
                )));
            }
            let id = r.read_u32().await.map_err(eof)?;
            let count = (length - 4) / 8;
            let mut list = Vec::with_capacity(count.min(4096) as usize);
            let mut total = 0u64;
            for _ in 0..count {
                let len = r.read_u32().await.map_err(eof)?;
                let flags = r.read_u32().await.map_err(eof)?;
                if len == 0 {
                    return Err(protocol_error("block status extent of length 0"));
                }
                total += len as u64;
                list.push(Extent {
                    offset: *offset + total - len as u64,
                    length: len as u64,
                    flags,
                });
            }
            // A final extent may run past the request; clip it to the request.
            if total > *req_len as u64 {
                let over = total - *req_len as u64;
                let last = list
                    .last_mut()
                    .ok_or_else(|| protocol_error("empty block status"))?;
                if over >= last.length {
                    return Err(protocol_error("block status extents run past the request"));
                }
                last.length -= over;
            }
            if extents.iter().any(|(i, _)| *i == id) {
                return Err(protocol_error(format!(
                    "two block status chunks for context {id}"
                )));
            }
            extents.push((id, list));
        }
        k if k & REPLY_TYPE_ERROR_BIT != 0 => {
            // An error message is at most 4096 bytes (the spec's string limit), plus a few
            // structured fields.
            if !(6..=6 + 4096 + 64).contains(&length) {
                return Err(protocol_error(format!(
                    "error chunk of bad length {length}"
                )));
            }
            let errno = r.read_u32().await.map_err(eof)?;
            let msg_len = r.read_u16().await.map_err(eof)? as u32;
            if msg_len > length - 6 {
                return Err(protocol_error("error message longer than its chunk"));
            }
            let mut msg = vec![0u8; msg_len as usize];
            r.read_exact(&mut msg).await.map_err(eof)?;
            let mut rest = vec![0u8; (length - 6 - msg_len) as usize];
            r.read_exact(&mut rest).await.map_err(eof)?;
            let text = String::from_utf8_lossy(&msg).into_owned();
            let mut err = server_error(errno, Some(&text));
            if k == REPLY_TYPE_ERROR_OFFSET && rest.len() == 8 {
                let at = u64::from_be_bytes(rest[..8].try_into().unwrap_or([0; 8]));
                err = err.context(format!("at offset {at}"));
            }
            if errno == 0 {
                err = protocol_error("error chunk with error number 0");
            }
            p.set_error(err);
        }
        other => {
            return Err(protocol_error(format!("unknown reply chunk type {other}")));
        }
    }
    Ok(())
}

fn server_error(errno: u32, msg: Option<&str>) -> Error {
    let detail = msg
        .filter(|m| !m.trim().is_empty())
        .map(|m| format!(": {}", m.trim()))
        .unwrap_or_default();
    let kind = match errno {
        28 => ErrorKind::Io,
        _ => ErrorKind::External,
    };
    Error::new(kind, format!("server error {}{detail}", errno_name(errno)))
}

fn eof(e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    if matches!(
        e.kind(),
        K::UnexpectedEof | K::ConnectionReset | K::BrokenPipe
    ) {
        Error::new(
            ErrorKind::Protocol,
            format!("the server closed the connection ({e})"),
        )
    } else {
        Error::new(ErrorKind::Protocol, format!("reading from the server: {e}")).with_source(e)
    }
}

/// Runs the reply reader over `bytes` with a few requests pending, for fuzzing: it must end with
/// an error or after consuming everything, never panic or loop.
#[doc(hidden)]
pub fn fuzz_reply_stream(bytes: &[u8]) {
    let shared = Shared {
        pending: Mutex::new(HashMap::new()),
        dead: Mutex::new(None),
    };
    let mut receivers = Vec::new();
    for cookie in 1..=4u64 {
        let (tx, rx) = oneshot::channel();
        let p = match cookie {
            1 => Pending::Read {
                offset: 4096,
                buf: vec![0; 8192],
                covered: Vec::new(),
                error: None,
                tx,
            },
            2 => {
                let (tx2, rx2) = oneshot::channel();
                receivers.push(Box::new(rx2) as Box<dyn std::any::Any>);
                drop(tx);
                Pending::Status {
                    offset: 0,
                    length: 1 << 20,
                    extents: Vec::new(),
                    error: None,
                    tx: tx2,
                }
            }
            _ => {
                let (tx3, rx3) = oneshot::channel();
                receivers.push(Box::new(rx3) as Box<dyn std::any::Any>);
                drop(tx);
                Pending::Plain {
                    error: None,
                    tx: tx3,
                }
            }
        };
        receivers.push(Box::new(rx) as Box<dyn std::any::Any>);
        put(&shared, cookie, (p, "fuzz"));
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    // The first byte chooses simple or structured replies; the rest is the stream.
    let Some((flag, mut input)) = bytes.split_first() else {
        return;
    };
    let structured = flag & 1 == 1;
    let _ = rt.block_on(read_replies(&mut input, &shared, structured));
    shared.kill("end".into());
}
