//! The extent-aware parallel copy engine: every byte of every backup and restore goes through it.
//!
//! 1. Plan: BLOCK_STATUS on the source, window by window — `base:allocation` for a full copy;
//!    for an incremental, the dirty bitmap with the allocation telling which dirty parts are
//!    now zero ([`plan::classify`]). Short zero gaps are read through, data is cut into aligned
//!    requests ([`plan::plan`]). Planning streams into a bounded queue, so memory does not grow
//!    with the disk size.
//! 2. Copy: up to `connections` source and destination connections, up to `requests` workers on
//!    each, every worker owning one buffer of `request_size` bytes (memory at most connections ×
//!    requests × request_size, whatever the disk size). A small copy uses fewer: one worker per
//!    [`REQUESTS_PER_WORKER`] requests the plan holds, on as few connections as hold them
//!    ([`parallelism`]). A worker reads a data item, inspects every byte in
//!    64 KiB blocks, writes the non-zero runs and handles the zero runs like holes.
//! 3. Zeroes: by default holes and zero runs are written with WRITE_ZEROES, which is correct for
//!    any destination — in an incremental QCOW2 overlay it hides the parent's old data. With
//!    `destination_is_zero` (a fresh target) they are skipped instead.
//! 4. FLUSH on every destination connection at the end.
//!
//! Progress is reported as events with cumulative bytes; a cancelled or failed copy stops all
//! workers and reports the offset where it failed.

pub mod plan;
pub mod untracked;
pub mod zero;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Event, EventKind, SharedSink};
use crate::nbd::{
    dirty_bitmap_context, ConnectOptions, Extent, NbdClient, NbdUrl, BASE_ALLOCATION,
};
use plan::{PlanOptions, Work};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

/// Zero detection granularity: the default QCOW2 cluster size.
const ZERO_GRANULARITY: u64 = 64 * 1024;
/// How much of the disk one planning step covers.
const PLAN_WINDOW: u64 = 1 << 30;

/// What to copy and how.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// Source export.
    pub src: NbdUrl,
    /// Destination export.
    pub dst: NbdUrl,
    /// Copy only what changed (an incremental); `None` copies all allocated data.
    pub changes: Option<Changes>,
    /// The destination reads as zeroes already: skip holes and zero blocks instead of writing them.
    pub destination_is_zero: bool,
    /// Connections to each side.
    pub connections: usize,
    /// Requests in flight per connection.
    pub requests: usize,
    /// Largest read or write.
    pub request_size: usize,
    /// Disk key reported in events.
    pub disk: u32,
    /// Why this copy is full or incremental, reported in events.
    pub reason: String,
    /// What the copy is, for events (by default `full`, or `incremental` with changes).
    pub mode: Option<crate::event::CopyMode>,
    /// Job reported in events.
    pub job: Option<i64>,
    /// Per-request timeout.
    pub io_timeout: Option<Duration>,
    /// Receives every 64 KiB block written as data, and every range written as zeroes, to
    /// record their digests (for `backup verify` and verified restores).
    pub digests: Option<Arc<dyn BlockDigests>>,
    /// Checks every block read, and every range the source reports as zeroes, before anything
    /// of it is written (a restore checking the chain's digest records).
    pub check: Option<Arc<dyn BlockCheck>>,
    /// The source must have this size (QEMU's rounding up to 512-byte sectors aside): a source
    /// that is shorter or longer than what was recorded is an error, never a partial copy.
    pub expected_size: Option<u64>,
    /// Read this instead of connecting to `src` (a restore reading its chain itself).
    pub local_src: Option<Arc<crate::repo::chain_read::ChainReader>>,
    /// Write this instead of connecting to `dst` (a restore into a raw file).
    pub local_dst: Option<Arc<LocalFile>>,
}

/// A raw file a copy writes directly, with positional writes from every worker.
#[derive(Debug)]
pub struct LocalFile {
    file: Arc<std::fs::File>,
    path: std::path::PathBuf,
    size: u64,
    /// Bytes written since writeback was last started.
    unsynced: AtomicU64,
    /// A background sync runs (on a thread of its own).
    syncing: Arc<std::sync::atomic::AtomicBool>,
    /// The first error a background sync met: the kernel reports a writeback error once, so
    /// the final flush must report it.
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

/// Written bytes after which a background `fdatasync` runs while the copy goes on, so the final
/// flush waits for little: the disk writes while the copy still reads.
const SYNC_EVERY: u64 = 64 << 20;

impl LocalFile {
    /// The new, empty file `path` of `size` bytes (sparse: it reads as zeroes).
    pub fn create(path: &std::path::Path, size: u64) -> Result<LocalFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("creating", path, e))?;
        file.set_len(size)
            .map_err(|e| Error::io("sizing", path, e))?;
        Ok(LocalFile {
            file: Arc::new(file),
            path: path.to_path_buf(),
            size,
            unsynced: AtomicU64::new(0),
            syncing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            failed: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| Error::io("writing", &self.path, e))?;
        let unsynced = self
            .unsynced
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        if unsynced + data.len() as u64 >= SYNC_EVERY && !self.syncing.swap(true, Ordering::AcqRel)
        {
            self.unsynced.store(0, Ordering::Relaxed);
            let (file, syncing, failed) =
                (self.file.clone(), self.syncing.clone(), self.failed.clone());
            // A head start for the final flush, which reports what this one met.
            let started = std::thread::Builder::new()
                .name("sendense-sync".into())
                .spawn(move || {
                    if let Err(e) = file.sync_data() {
                        failed
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .get_or_insert(e.to_string());
                    }
                    syncing.store(false, Ordering::Release);
                });
            if started.is_err() {
                self.syncing.store(false, Ordering::Release);
            }
        }
        Ok(())
    }

    /// Zeroes: the range's blocks are deallocated (the file stays as long).
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let punched = nix::fcntl::fallocate(
            &self.file,
            nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        );
        if punched.is_ok() {
            return Ok(());
        }
        let zeroes = vec![0u8; (len.min(1 << 20)) as usize];
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(zeroes.len() as u64) as usize;
            self.file
                .write_all_at(&zeroes[..n], at)
                .map_err(|e| Error::io("writing", &self.path, e))?;
            at += n as u64;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io("syncing", &self.path, e))?;
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match failed {
            Some(e) => Err(Error::new(
                ErrorKind::Io,
                format!("syncing {}: {e}", self.path.display()),
            )),
            None => Ok(()),
        }
    }
}

/// Where a copy reads: an NBD export, or a chain read directly.
#[derive(Debug, Clone)]
enum Src {
    Nbd(Arc<NbdClient>),
    Chain(Arc<crate::repo::chain_read::ChainReader>),
}

impl Src {
    fn size(&self) -> u64 {
        match self {
            Src::Nbd(c) => c.size(),
            Src::Chain(r) => r.size(),
        }
    }

    fn max_block(&self) -> u64 {
        match self {
            Src::Nbd(c) => u64::from(c.info().max_block),
            Src::Chain(_) => u64::from(u32::MAX),
        }
    }

    /// `base:allocation` (and, for an NBD export, other contexts) within a range.
    async fn extents(&self, contexts: &[&str], offset: u64, len: u64) -> Result<Vec<Vec<Extent>>> {
        match self {
            Src::Nbd(c) => c.extents(contexts, offset, len).await,
            Src::Chain(r) if contexts == [BASE_ALLOCATION] => Ok(vec![r.extents(offset, len)?]),
            Src::Chain(_) => Err(Error::internal(
                "a chain read directly has only base:allocation",
            )),
        }
    }

    async fn read(&self, offset: u64, buf: Vec<u8>) -> Result<Vec<u8>> {
        match self {
            Src::Nbd(c) => c.read(offset, buf).await,
            Src::Chain(r) => {
                let r = r.clone();
                tokio::task::spawn_blocking(move || {
                    let mut buf = buf;
                    r.read(offset, &mut buf).map(|()| buf)
                })
                .await
                .map_err(|e| Error::internal(format!("a read task: {e}")))?
            }
        }
    }
}

/// Runs `f`, which blocks on the file system, from an async task: the runtime moves its other
/// tasks to other threads meanwhile (on a current-thread runtime it just runs).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Where a copy writes: an NBD export, or a raw file.
#[derive(Debug, Clone)]
enum Dst {
    Nbd(Arc<NbdClient>),
    File(Arc<LocalFile>),
}

impl Dst {
    fn size(&self) -> u64 {
        match self {
            Dst::Nbd(c) => c.size(),
            Dst::File(f) => f.size,
        }
    }

    fn max_block(&self) -> u64 {
        match self {
            Dst::Nbd(c) => u64::from(c.info().max_block),
            Dst::File(_) => u64::from(u32::MAX),
        }
    }

    fn read_only(&self) -> bool {
        matches!(self, Dst::Nbd(c) if c.info().read_only())
    }

    fn can_multi_conn(&self) -> bool {
        match self {
            Dst::Nbd(c) => c.info().can_multi_conn(),
            Dst::File(_) => true,
        }
    }

    async fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        match self {
            Dst::Nbd(c) => c.write(offset, data, false).await,
            Dst::File(f) => blocking(|| f.write(offset, data)),
        }
    }

    async fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        match self {
            Dst::Nbd(c) => c.write_zeroes(offset, len, true).await,
            Dst::File(f) => blocking(|| f.write_zeroes(offset, len)),
        }
    }

    async fn flush(&self) -> Result<()> {
        match self {
            Dst::Nbd(c) => c.flush().await,
            Dst::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f.flush())
                    .await
                    .map_err(|e| Error::internal(format!("a flush task: {e}")))?
            }
        }
    }
}

/// What changed since the previous backup: where an incremental copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The source's NBD export offers this dirty bitmap (`qemu:dirty-bitmap:NAME`).
    Bitmap(String),
    /// The changed ranges as `(offset, length)`, sorted and disjoint, as a source's change
    /// tracking answers them (VMware's changed areas, say).
    Extents(Vec<(u64, u64)>),
}

impl Changes {
    /// Refuses extents out of order, overlapping, empty or past `size`, naming the first.
    pub fn check(&self, size: u64) -> Result<()> {
        let Changes::Extents(list) = self else {
            return Ok(());
        };
        let mut end = 0;
        for &(offset, len) in list {
            let bad = |why: &str| {
                Err(
                    Error::invalid(format!("changed extent {offset}+{len} {why}")).with_help(
                        "Changed extents must be sorted, disjoint, non-empty and inside the disk.",
                    ),
                )
            };
            if len == 0 {
                return bad("is empty");
            }
            if offset < end {
                return bad("overlaps or precedes the one before it");
            }
            match offset.checked_add(len) {
                Some(e) if e <= size => end = e,
                _ => return bad(&format!("reaches past the end of the disk ({size} bytes)")),
            }
        }
        Ok(())
    }
}

/// Receives every [`BLOCK`] written as data, with its offset, and keeps its digest (see
/// [`crate::repo::digests::Scheme`]).
pub trait BlockDigests: Send + Sync + std::fmt::Debug {
    /// One block (the last block of a disk may be shorter).
    fn record(&self, offset: u64, block: &[u8]) -> Result<()>;

    /// Whole blocks written as zeroes (`offset` is a block boundary; `len` ends on one, or at the
    /// disk's end). Not called for zeroes skipped on a destination that reads as zeroes.
    fn record_zeroes(&self, offset: u64, len: u64) -> Result<()>;
}

/// Checks what a copy reads against what it must read, before it is written.
pub trait BlockCheck: Send + Sync + std::fmt::Debug {
    /// `data` read at `offset` (a block boundary): whole blocks, the last one of the disk may be
    /// shorter. An error names the first block that is not as it must be.
    fn check_data(&self, offset: u64, data: &[u8]) -> Result<()>;

    /// The source reports `[offset, offset + len)` as zeroes (whole blocks).
    fn check_zeroes(&self, offset: u64, len: u64) -> Result<()>;
}

/// Granularity of zero detection and of block digests: the default QCOW2 cluster size.
pub const BLOCK: u64 = ZERO_GRANULARITY;

impl CopyRequest {
    /// The source, for messages: the export's URL, or the chain's top image.
    pub fn src_name(&self) -> String {
        match &self.local_src {
            Some(r) => r.name().to_string(),
            None => self.src.to_string(),
        }
    }

    /// The destination, for messages: the export's URL, or the file.
    pub fn dst_name(&self) -> String {
        match &self.local_dst {
            Some(f) => f.path.display().to_string(),
            None => self.dst.to_string(),
        }
    }

    /// A full copy with default tuning.
    pub fn new(src: NbdUrl, dst: NbdUrl) -> Self {
        let defaults = crate::config::CopyConfig::default();
        CopyRequest {
            src,
            dst,
            changes: None,
            destination_is_zero: false,
            connections: defaults.connections as usize,
            requests: defaults.requests as usize,
            request_size: defaults.request_size as usize,
            disk: 0,
            reason: String::new(),
            mode: None,
            job: None,
            io_timeout: ConnectOptions::default().io_timeout,
            digests: None,
            check: None,
            expected_size: None,
            local_src: None,
            local_dst: None,
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CopyReport {
    /// Size of the source.
    pub size: u64,
    /// Bytes the plan covered (data + zero ranges).
    pub bytes_planned: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Bytes written as data.
    pub bytes_written: u64,
    /// Bytes that were zero: written as WRITE_ZEROES, or skipped on a zero destination.
    pub bytes_zero: u64,
    /// Seconds.
    pub seconds: f64,
    /// Connections used per side.
    pub connections: usize,
}

impl CopyReport {
    /// Read throughput in MiB/s.
    pub fn mib_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.bytes_read as f64 / self.seconds / (1024.0 * 1024.0)
        } else {
            0.0
        }
    }
}

#[derive(Default)]
struct Counters {
    done: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    zero: AtomicU64,
}

/// Copies `req.src` into `req.dst`. Cancelling `cancel` stops it with [`ErrorKind::Cancelled`].
///
/// Steps: connect a first pair and check it ([`connect`]); plan the whole copy once for the
/// totals and the parallelism it is worth; open the other connections; run the planner, the
/// workers and the progress ticker until the plan is done ([`run_copy`]); flush
/// ([`flush_all`]).
pub async fn copy(
    req: &CopyRequest,
    sink: &SharedSink,
    cancel: &CancellationToken,
) -> Result<CopyReport> {
    let started = Instant::now();
    let link = connect(req).await?;
    let size = link.srcs[0].size();
    let opts = plan_options(req, &link.srcs[0], &link.dsts[0], size)?;
    tracing::debug!(disk = req.disk, elapsed = ?started.elapsed(), "connected");
    // First pass: totals for progress, from the same metadata the copy will use.
    let totals = plan_totals(&link.srcs[0], link.dirty.as_deref(), &opts, size).await?;
    let planned = totals.bytes;
    let (connections, requests) = parallelism(
        totals.requests(req.destination_is_zero),
        req.connections.max(1),
        req.requests.max(1),
    );
    let link = link.widen(req, connections).await?;
    tracing::debug!(
        disk = req.disk,
        elapsed = ?started.elapsed(),
        planned,
        connections,
        requests,
        "planned"
    );
    emit(
        sink,
        req,
        EventKind::DiskStarted {
            disk: req.disk,
            mode: req.mode.unwrap_or(if req.changes.is_some() {
                crate::event::CopyMode::Incremental
            } else {
                crate::event::CopyMode::Full
            }),
            reason: req.reason.clone(),
            bytes_total: planned,
        },
    );
    let counters = Arc::new(Counters::default());
    let running = Running {
        req,
        sink,
        link: &link,
        counters: &counters,
        planned,
        requests,
    };
    run_copy(&running, cancel, opts, totals.kept)
        .await
        .map_err(|e| e.context(format!("copying {} to {}", req.src_name(), req.dst_name())))?;
    tracing::debug!(disk = req.disk, elapsed = ?started.elapsed(), "copied");
    flush_all(req, &link.dsts).await?;
    let report = CopyReport {
        size,
        bytes_planned: planned,
        bytes_read: counters.read.load(Ordering::Relaxed),
        bytes_written: counters.written.load(Ordering::Relaxed),
        bytes_zero: counters.zero.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        connections,
    };
    emit(sink, req, progress(req, &counters, planned));
    emit(
        sink,
        req,
        EventKind::DiskFinished {
            disk: req.disk,
            bytes_read: report.bytes_read,
            bytes_written: report.bytes_written,
            bytes_zero: report.bytes_zero,
            seconds: report.seconds,
        },
    );
    Ok(report)
}

/// The connections of one copy, pair by pair, and where its changes come from.
struct Link {
    srcs: Vec<Src>,
    dsts: Vec<Dst>,
    src_opts: ConnectOptions,
    dst_opts: ConnectOptions,
    dirty: Option<Arc<Dirty>>,
}

/// The first source and destination connections, checked against each other and the request.
async fn connect(req: &CopyRequest) -> Result<Link> {
    let requests = req.requests.max(1);
    let mut contexts = vec![BASE_ALLOCATION.to_string()];
    let dirty_ctx = match &req.changes {
        Some(Changes::Bitmap(name)) => Some(dirty_bitmap_context(name)),
        _ => None,
    };
    if let Some(c) = &dirty_ctx {
        contexts.push(c.clone());
    }
    let src_opts = ConnectOptions {
        contexts,
        max_in_flight: requests + 1,
        io_timeout: req.io_timeout,
        ..Default::default()
    };
    let dst_opts = ConnectOptions {
        max_in_flight: requests + 1,
        io_timeout: req.io_timeout,
        ..Default::default()
    };
    let (src, dst) = tokio::try_join!(connect_src(req, &src_opts), connect_dst(req, &dst_opts))?;
    check_pair(req, &src, &dst, dirty_ctx.as_deref())?;
    if let Some(changes) = &req.changes {
        changes.check(src.size())?;
    }
    // Where an incremental's changes come from, for the planner.
    let dirty = match &req.changes {
        None => None,
        Some(Changes::Bitmap(_)) => dirty_ctx.map(|c| Arc::new(Dirty::Context(c))),
        Some(Changes::Extents(list)) => Some(Arc::new(Dirty::Extents(list.clone()))),
    };
    Ok(Link {
        srcs: vec![src],
        dsts: vec![dst],
        src_opts,
        dst_opts,
        dirty,
    })
}

/// A source connection: the local chain shared, or a new NBD connection.
async fn connect_src(req: &CopyRequest, opts: &ConnectOptions) -> Result<Src> {
    Ok(match &req.local_src {
        Some(r) => Src::Chain(r.clone()),
        None => Src::Nbd(Arc::new(NbdClient::connect(&req.src, opts).await?)),
    })
}

/// A destination connection: the local file shared, or a new NBD connection.
async fn connect_dst(req: &CopyRequest, opts: &ConnectOptions) -> Result<Dst> {
    Ok(match &req.local_dst {
        Some(f) => Dst::File(f.clone()),
        None => Dst::Nbd(Arc::new(NbdClient::connect(&req.dst, opts).await?)),
    })
}

impl Link {
    /// Opens pairs until there are `connections`.
    async fn widen(mut self, req: &CopyRequest, connections: usize) -> Result<Link> {
        let more = (self.srcs.len()..connections).map(|_| async {
            tokio::try_join!(
                connect_src(req, &self.src_opts),
                connect_dst(req, &self.dst_opts)
            )
        });
        for pair in join_all(more.collect()).await {
            let (s, d) = pair?;
            self.srcs.push(s);
            self.dsts.push(d);
        }
        Ok(self)
    }
}

/// Whole blocks per request: zero detection and block digests work per aligned block, and a
/// target never sees a write to part of a cluster. Zeroing is cut where the client would have
/// to cut it, on block boundaries.
fn plan_options(req: &CopyRequest, src: &Src, dst: &Dst, size: u64) -> Result<PlanOptions> {
    let server_max = src.max_block().min(dst.max_block());
    if server_max < ZERO_GRANULARITY {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!("the servers accept requests of at most {server_max} bytes; Sendense needs {ZERO_GRANULARITY}"),
        ));
    }
    let request_size = ((req.request_size as u64).min(server_max) / ZERO_GRANULARITY
        * ZERO_GRANULARITY)
        .max(ZERO_GRANULARITY);
    Ok(PlanOptions {
        request_size,
        size,
        // Zero items of a GiB: zeroes a destination already reads are not written, a file is
        // zeroed by one fallocate, and an NBD server is sent zero requests larger than its
        // largest payload (payload-free, as nbdcopy sends them; see
        // `NbdClient::write_zeroes`). A restore of a large, sparse disk then plans, checks and
        // zeroes its holes a GiB at a time, not 32 MiB at a time.
        ..Default::default()
    })
}

/// What the running copy shares.
struct Running<'a> {
    req: &'a CopyRequest,
    sink: &'a SharedSink,
    link: &'a Link,
    counters: &'a Arc<Counters>,
    /// Bytes the plan covers.
    planned: u64,
    /// Requests in flight per connection.
    requests: usize,
}

/// The copy proper: a planner streaming work items into a bounded queue (`kept`: the plan
/// already made, when it was small), the workers taking them, a ticker reporting progress.
/// The first failure stops the rest.
async fn run_copy(
    run: &Running<'_>,
    cancel: &CancellationToken,
    opts: PlanOptions,
    kept: Option<Vec<Vec<Work>>>,
) -> Result<()> {
    let Running {
        req,
        sink,
        link,
        counters,
        planned,
        requests,
    } = *run;
    let connections = link.srcs.len();
    let size = opts.size;
    let stop = cancel.child_token();
    let (tx, rx) = mpsc::channel::<Work>(connections * requests * 4);
    let rx = Arc::new(Mutex::new(rx));

    let planner = {
        let src = link.srcs[0].clone();
        let dirty = link.dirty.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut kept = kept.map(Vec::into_iter);
            let mut pos = 0;
            while pos < size {
                let len = PLAN_WINDOW.min(size - pos);
                let items = match kept.as_mut().and_then(Iterator::next) {
                    Some(items) => items,
                    None => window_plan(&src, dirty.as_deref(), &opts, pos, len).await?,
                };
                for item in items {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        sent = tx.send(item) => if sent.is_err() { return Ok(()) },
                    }
                }
                pos += len;
            }
            Ok::<(), Error>(())
        })
    };

    let mut workers = tokio::task::JoinSet::new();
    for c in 0..connections {
        for _ in 0..requests {
            let (src, dst) = (link.srcs[c].clone(), link.dsts[c].clone());
            let rx = rx.clone();
            let stop = stop.clone();
            let ctx = ItemContext {
                dest_zero: req.destination_is_zero,
                counters: counters.clone(),
                digests: req.digests.clone(),
                check: req.check.clone(),
            };
            let cap = opts.request_size as usize;
            workers.spawn(async move {
                let mut buf: Vec<u8> = Vec::with_capacity(cap);
                loop {
                    let item = {
                        let mut rx = rx.lock().await;
                        tokio::select! {
                            _ = stop.cancelled() => None,
                            item = rx.recv() => item,
                        }
                    };
                    let Some(item) = item else { return Ok(()) };
                    buf = run_item(&src, &dst, item, buf, &ctx).await?;
                }
            });
        }
    }

    // Progress while the workers run.
    let ticker = {
        let sink = sink.clone();
        let counters = counters.clone();
        let req = req.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => emit(&sink, &req, progress(&req, &counters, planned)),
                }
            }
        })
    };

    let mut failure: Option<Error> = None;
    while let Some(joined) = workers.join_next().await {
        let result =
            joined.unwrap_or_else(|e| Err(Error::internal(format!("copy worker failed: {e}"))));
        if let Err(e) = result {
            if failure.is_none() {
                failure = Some(e);
                stop.cancel();
            }
        }
    }
    match planner.await {
        Ok(Err(e)) if failure.is_none() => failure = Some(e),
        Err(e) if failure.is_none() => {
            failure = Some(Error::internal(format!("planner failed: {e}")))
        }
        _ => {}
    }
    stop.cancel();
    let _ = ticker.await;
    if failure.is_none() && cancel.is_cancelled() {
        failure = Some(Error::new(ErrorKind::Cancelled, "copy cancelled"));
    }
    failure.map_or(Ok(()), Err)
}

/// Every write has its reply. A server that allows several connections per export
/// (CAN_MULTI_CONN) makes the writes of all of them durable with one flush; otherwise each
/// connection flushes its own, all at once.
async fn flush_all(req: &CopyRequest, dsts: &[Dst]) -> Result<()> {
    let flushing = if dsts[0].can_multi_conn() {
        &dsts[..1]
    } else {
        dsts
    };
    let mut flushes = tokio::task::JoinSet::new();
    for d in flushing {
        let d = d.clone();
        flushes.spawn(async move { d.flush().await });
    }
    while let Some(flushed) = flushes.join_next().await {
        flushed
            .unwrap_or_else(|e| Err(Error::internal(format!("flush task failed: {e}"))))
            .map_err(|e| e.context(format!("flushing {}", req.dst_name())))?;
    }
    Ok(())
}

fn check_pair(req: &CopyRequest, src: &Src, dst: &Dst, dirty: Option<&str>) -> Result<()> {
    if dst.read_only() {
        return Err(Error::refused(format!(
            "destination {} is read-only",
            req.dst_name()
        )));
    }
    if let Some(want) = req.expected_size {
        if src.size() != want && src.size() != want.div_ceil(512) * 512 {
            return Err(Error::new(
                ErrorKind::External,
                format!(
                    "source {} has {} bytes, not the {want} recorded for it",
                    req.src_name(),
                    src.size()
                ),
            )
            .with_help(
                "The image was changed since it was written; run `sendense backup verify`.",
            ));
        }
    }
    if dst.size() < src.size() {
        return Err(Error::refused(format!(
            "destination {} ({} bytes) is smaller than source {} ({} bytes)",
            req.dst_name(),
            dst.size(),
            req.src_name(),
            src.size()
        ))
        .with_help(
            "A target must never be smaller than its source; create it with the source's size.",
        ));
    }
    let Src::Nbd(nbd) = src else {
        // A chain read directly answers base:allocation and nothing else.
        return match dirty {
            Some(_) => Err(Error::internal(
                "an incremental copy from a chain read directly",
            )),
            None => Ok(()),
        };
    };
    if nbd.info().context_id(BASE_ALLOCATION).is_none() {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "source {} does not report block status (base:allocation)",
                req.src_name()
            ),
        ));
    }
    if let Some(ctx) = dirty {
        if nbd.info().context_id(ctx).is_none() {
            return Err(Error::not_found(format!(
                "source {} offers no dirty bitmap context `{ctx}`",
                req.src_name()
            ))
            .with_help("Check the bitmap name, or run a full copy without --bitmap."));
        }
    }
    Ok(())
}

/// The changes an incremental copies, as the planner reads them.
#[derive(Debug)]
enum Dirty {
    /// A dirty bitmap's metadata context on the source.
    Context(String),
    /// Changed ranges given with the request, checked sorted and disjoint.
    Extents(Vec<(u64, u64)>),
}

impl Dirty {
    /// The changed ranges within `[pos, pos + len)`.
    async fn within(&self, src: &Src, pos: u64, len: u64) -> Result<Vec<Extent>> {
        let end = pos + len;
        Ok(match self {
            Dirty::Context(ctx) => src
                .extents(&[ctx.as_str()], pos, len)
                .await?
                .remove(0)
                .into_iter()
                .filter(|d| d.flags & crate::nbd::proto::STATE_DIRTY != 0)
                .collect(),
            Dirty::Extents(list) => {
                let first = list.partition_point(|(o, l)| o + l <= pos);
                list[first..]
                    .iter()
                    .take_while(|(o, _)| *o < end)
                    .map(|&(o, l)| {
                        let s = o.max(pos);
                        Extent {
                            offset: s,
                            length: (o + l).min(end) - s,
                            flags: crate::nbd::proto::STATE_DIRTY,
                        }
                    })
                    .collect()
            }
        })
    }
}

async fn window_plan(
    src: &Src,
    dirty: Option<&Dirty>,
    opts: &PlanOptions,
    pos: u64,
    len: u64,
) -> Result<Vec<Work>> {
    let ranges = match dirty {
        None => {
            let lists = src.extents(&[BASE_ALLOCATION], pos, len).await?;
            plan::classify(&lists[0], None)
        }
        Some(dirty) => {
            // Changes first; the allocation is asked only where something changed, so an
            // incremental of a large, fragmented disk does not walk its whole allocation map.
            // Those questions go out together, a batch at a time.
            let dirty = dirty.within(src, pos, len).await?;
            let mut ranges = Vec::new();
            for batch in dirty.chunks(STATUS_BATCH) {
                let allocs = join_all(
                    batch
                        .iter()
                        .map(|d| src.extents(&[BASE_ALLOCATION], d.offset, d.length))
                        .collect(),
                )
                .await;
                for (d, alloc) in batch.iter().zip(allocs) {
                    let alloc = alloc?.remove(0);
                    ranges.extend(plan::classify(&alloc, Some(std::slice::from_ref(d))));
                }
            }
            ranges
        }
    };
    Ok(plan::plan(&ranges, opts))
}

/// Allocation questions sent at once while planning an incremental.
const STATUS_BATCH: usize = 32;

/// Runs `futures` concurrently on this task; their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (slot, out) in pending.iter_mut().zip(done.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// Work items kept from the totals pass for the copy itself, at most: beyond that (a large or
/// fragmented disk, where planning twice costs little next to the copy) the copy plans each
/// window again rather than hold the whole plan. (The copy tests take both ways.)
const KEPT_ITEMS: usize = 512;

/// What the first planning pass found.
struct Totals {
    /// Bytes the copy will process (data and zero ranges).
    bytes: u64,
    /// Reads the copy will make.
    data_items: u64,
    /// Zero ranges, each one WRITE_ZEROES unless the destination is zero already.
    zero_items: u64,
    /// The plan itself, window by window, when it is small — so the copy does not ask the
    /// source the same questions again.
    kept: Option<Vec<Vec<Work>>>,
}

impl Totals {
    /// Requests the copy will send to the destination, about.
    fn requests(&self, destination_is_zero: bool) -> u64 {
        self.data_items
            + if destination_is_zero {
                0
            } else {
                self.zero_items
            }
    }
}

async fn plan_totals(
    src: &Src,
    dirty: Option<&Dirty>,
    opts: &PlanOptions,
    size: u64,
) -> Result<Totals> {
    let mut totals = Totals {
        bytes: 0,
        data_items: 0,
        zero_items: 0,
        kept: Some(Vec::new()),
    };
    let mut pos = 0;
    while pos < size {
        let len = PLAN_WINDOW.min(size - pos);
        let window = window_plan(src, dirty, opts, pos, len).await?;
        for w in &window {
            totals.bytes += w.len();
            match w {
                Work::Data { .. } => totals.data_items += 1,
                Work::Zero { .. } => totals.zero_items += 1,
            }
        }
        if totals.data_items + totals.zero_items > KEPT_ITEMS as u64 {
            totals.kept = None;
        }
        if let Some(k) = totals.kept.as_mut() {
            k.push(window);
        }
        pos += len;
    }
    Ok(totals)
}

/// Requests each worker should have to send, at least, before another worker is worth it.
/// Every worker costs buffers touched for the first time (its own, and the servers' for its
/// requests), every connection a handshake on both sides; a small copy — a typical
/// incremental — is faster with a few workers than with all of them.
const REQUESTS_PER_WORKER: u64 = 8;

/// Connections and requests in flight per connection for a copy of `requests` requests, within
/// the configured `connections` × `per_connection`: one worker per [`REQUESTS_PER_WORKER`]
/// requests, on as few connections as hold them.
fn parallelism(requests: u64, connections: usize, per_connection: usize) -> (usize, usize) {
    let most = connections * per_connection;
    let workers = usize::try_from(requests.div_ceil(REQUESTS_PER_WORKER))
        .unwrap_or(most)
        .clamp(1, most);
    let connections = workers.div_ceil(per_connection);
    (connections, workers.div_ceil(connections))
}

/// What every item of one copy shares.
struct ItemContext {
    dest_zero: bool,
    counters: Arc<Counters>,
    digests: Option<Arc<dyn BlockDigests>>,
    check: Option<Arc<dyn BlockCheck>>,
}

async fn run_item(
    src: &Src,
    dst: &Dst,
    item: Work,
    mut buf: Vec<u8>,
    ctx: &ItemContext,
) -> Result<Vec<u8>> {
    let counters = &ctx.counters;
    match item {
        Work::Zero { offset, len } => {
            if let Some(check) = &ctx.check {
                check.check_zeroes(offset, len)?;
            }
            if !ctx.dest_zero {
                dst.write_zeroes(offset, len)
                    .await
                    .map_err(|e| e.context(format!("zeroing destination at offset {offset}")))?;
                if let Some(sink) = &ctx.digests {
                    sink.record_zeroes(offset, len)?;
                }
            }
            counters.zero.fetch_add(len, Ordering::Relaxed);
            counters.done.fetch_add(len, Ordering::Relaxed);
        }
        Work::Data { offset, len } => {
            buf.resize(len as usize, 0);
            let buf_in = src
                .read(offset, buf)
                .await
                .map_err(|e| e.context(format!("reading source at offset {offset}")))?;
            buf = buf_in;
            counters.read.fetch_add(len, Ordering::Relaxed);
            if let Some(check) = &ctx.check {
                check.check_data(offset, &buf)?;
            }
            for (s, e, zero) in zero::zero_runs(&buf, offset, ZERO_GRANULARITY) {
                let at = offset + s as u64;
                let n = (e - s) as u64;
                if zero {
                    if !ctx.dest_zero {
                        dst.write_zeroes(at, n).await.map_err(|e| {
                            e.context(format!("zeroing destination at offset {at}"))
                        })?;
                        if let Some(sink) = &ctx.digests {
                            sink.record_zeroes(at, n)?;
                        }
                    }
                    counters.zero.fetch_add(n, Ordering::Relaxed);
                } else {
                    dst.write(at, &buf[s..e])
                        .await
                        .map_err(|e| e.context(format!("writing destination at offset {at}")))?;
                    counters.written.fetch_add(n, Ordering::Relaxed);
                    if let Some(sink) = &ctx.digests {
                        // Runs are aligned to BLOCK on disk offsets, so blocks are too.
                        for (i, block) in buf[s..e].chunks(ZERO_GRANULARITY as usize).enumerate() {
                            let off = at + i as u64 * ZERO_GRANULARITY;
                            sink.record(off, block)?;
                        }
                    }
                }
            }
            counters.done.fetch_add(len, Ordering::Relaxed);
        }
    }
    Ok(buf)
}

fn progress(req: &CopyRequest, c: &Counters, planned: u64) -> EventKind {
    EventKind::DiskProgress {
        disk: req.disk,
        bytes_done: c.done.load(Ordering::Relaxed),
        bytes_read: c.read.load(Ordering::Relaxed),
        bytes_written: c.written.load(Ordering::Relaxed),
        bytes_zero: c.zero.load(Ordering::Relaxed),
        bytes_total: planned,
    }
}

fn emit(sink: &SharedSink, req: &CopyRequest, kind: EventKind) {
    sink.emit(&Event::now(req.job, kind));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallelism_grows_with_the_work_up_to_the_configured_limits() {
        // Nothing or a little to do: one worker on one connection.
        assert_eq!(parallelism(0, 4, 4), (1, 1));
        assert_eq!(parallelism(8, 4, 4), (1, 1));
        // A 1 % incremental of a 4 GiB disk in 1 MiB requests: 6 workers on 2 connections.
        assert_eq!(parallelism(41, 4, 4), (2, 3));
        assert_eq!(parallelism(32, 4, 4), (1, 4));
        // Enough work for all of them, and far more.
        assert_eq!(parallelism(128, 4, 4), (4, 4));
        assert_eq!(parallelism(u64::MAX, 4, 4), (4, 4));
        assert_eq!(parallelism(1 << 20, 1, 1), (1, 1));
        assert_eq!(parallelism(1 << 20, 64, 64), (64, 64));
        // Never more than configured, on either axis.
        for n in 0..600 {
            for (c, r) in [(1, 1), (1, 8), (3, 5), (4, 4), (8, 2)] {
                let (cc, rr) = parallelism(n, c, r);
                assert!(
                    (1..=c).contains(&cc) && (1..=r).contains(&rr),
                    "{n} {c} {r}"
                );
                assert!(cc * rr >= (n.div_ceil(REQUESTS_PER_WORKER) as usize).clamp(1, c * r));
            }
        }
    }
}
