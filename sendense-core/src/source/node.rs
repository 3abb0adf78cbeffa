//! The source side behind the process boundary: `sendense-sna source` runs a VM's source —
//! discover, checkpoints, repair, snapshot, finish — next to the hypervisor, and the hub drives
//! it with one JSON call per line on the node's stdin, one reply per line on its stdout (log
//! lines first, then `ok` or `error`). The node keeps the source object between calls, so a
//! snapshot and its finish are one session. The hub never touches the VM's QMP socket itself.
//!
//! A live QEMU VM serves its snapshot from QEMU's own NBD server; image files are served by a
//! read-only qemu-nbd of the node's, a VMware VM's disks by the node's nbdkit with its VDDK
//! plugin (the vSphere calls go from the node too). NBD sources stay on the hub.

use super::{
    CheckpointState, DiscoveredDisk, RepairRequest, Repaired, SnapshotDisk, SnapshotRequest,
    Source, SourceHost,
};
use crate::catalog::DiskRecord;
use crate::error::{Error, ErrorKind, Result};
use crate::supervise::Supervised;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

/// The version of the source session protocol. 2: scratch directories the node places itself
/// (relative names), `resize_suspects`, `ping`, image sources.
pub const SOURCE_PROTOCOL: u32 = 2;

/// How often the hub pings an idle session.
const PING_EVERY: Duration = Duration::from_secs(20);

/// A session that hears nothing from the hub this long is over, as if its input had ended: a
/// hub whose host or network died sends no end of input, and the snapshot must not stay.
/// `SENDENSE_SNA_SESSION_IDLE_SECS` sets another (at least twice the hub's ping interval).
pub const SESSION_IDLE: Duration = Duration::from_secs(120);

/// [`SESSION_IDLE`], or what `SENDENSE_SNA_SESSION_IDLE_SECS` says.
fn session_idle() -> Duration {
    std::env::var("SENDENSE_SNA_SESSION_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s > 0)
        .map_or(SESSION_IDLE, Duration::from_secs)
}

/// Set in `sendense-sna`'s environment by `ssh-command`: the hub reached it through a
/// restricted key, so nothing but the node's own scratch names is taken as a directory.
pub const RESTRICTED_ENV: &str = "SENDENSE_SNA_RESTRICTED";

/// A call from the hub. (Its `Debug` leaves out `open`'s options: a VMware source's hold the
/// vCenter's password.)
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum SourceCall {
    /// The first call: which source to run.
    Open {
        /// [`SOURCE_PROTOCOL`].
        protocol: u32,
        /// Source kind (`qemu`).
        kind: String,
        /// Its settings (`{"qmp": "/run/…"}`).
        options: serde_json::Value,
    },
    /// [`Source::discover`].
    Discover,
    /// [`Source::checkpoints`].
    Checkpoints {
        /// The VM's disks as the catalog has them.
        disks: Vec<DiskRecord>,
    },
    /// [`Source::repair`].
    Repair {
        /// What to repair.
        req: RepairRequest,
    },
    /// [`Source::snapshot`].
    Snapshot {
        /// What to snapshot.
        req: SnapshotRequest,
    },
    /// [`Source::resize_suspects`] of a disk of the snapshot.
    ResizeSuspects {
        /// The disk's snapshot export (as the snapshot answered).
        url: String,
        /// Its changes.
        bitmap: String,
    },
    /// [`Source::finish`].
    Finish {
        /// Whether the backup committed.
        success: bool,
    },
    /// The hub is still there (no answer).
    Ping,
}

impl std::fmt::Debug for SourceCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceCall::Open { protocol, kind, .. } => f
                .debug_struct("Open")
                .field("protocol", protocol)
                .field("kind", kind)
                .finish_non_exhaustive(),
            SourceCall::Discover => f.write_str("Discover"),
            SourceCall::Checkpoints { disks } => {
                f.debug_struct("Checkpoints").field("disks", disks).finish()
            }
            SourceCall::Repair { req } => f.debug_struct("Repair").field("req", req).finish(),
            SourceCall::Snapshot { req } => f.debug_struct("Snapshot").field("req", req).finish(),
            SourceCall::ResizeSuspects { url, bitmap } => f
                .debug_struct("ResizeSuspects")
                .field("url", url)
                .field("bitmap", bitmap)
                .finish(),
            SourceCall::Finish { success } => {
                f.debug_struct("Finish").field("success", success).finish()
            }
            SourceCall::Ping => f.write_str("Ping"),
        }
    }
}

/// A line of the node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceReply {
    /// A line for the job log; more lines follow.
    Log(String),
    /// The call's result.
    Ok(serde_json::Value),
    /// The call failed.
    Error {
        /// Its kind.
        kind: ErrorKind,
        /// What happened.
        message: String,
        /// What to do.
        help: Option<String>,
    },
}

/// A snapshot disk as it travels (the URL as text).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireSnapshotDisk {
    key: u32,
    url: String,
    size_bytes: u64,
    bitmap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    extents: Option<Vec<(u64, u64)>>,
    checkpoint: Option<String>,
}

/// The node's side: answers the calls read from `input` on `output` until `input` ends, or
/// nothing came for [`SESSION_IDLE`] (the hub pings an idle session).
pub fn serve(input: impl BufRead + Send + 'static, mut output: impl Write) -> Result<()> {
    let (tx, calls) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in input.lines() {
            let end = line.is_err();
            if tx.send(line).is_err() || end {
                return;
            }
        }
    });
    let mut source: Option<Box<dyn Source>> = None;
    let result = session(&mut source, &calls, &mut output);
    // The hub is gone or done (or its pipe broke): whatever a snapshot left is torn down.
    if let Some(mut s) = source {
        let _ = s.finish(
            &mut NodeHost {
                logs: &mut Vec::new(),
            },
            false,
        );
    }
    result
}

/// Answers calls until the input ends, stays silent too long, or the output breaks.
fn session(
    source: &mut Option<Box<dyn Source>>,
    calls: &std::sync::mpsc::Receiver<std::io::Result<String>>,
    output: &mut impl Write,
) -> Result<()> {
    let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("the source session: {e}"));
    let idle = session_idle();
    loop {
        let line = match calls.recv_timeout(idle) {
            Ok(line) => line.map_err(io)?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err(Error::new(
                    ErrorKind::External,
                    format!(
                        "no word from the hub for {} s: the session is over",
                        idle.as_secs()
                    ),
                ))
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let call = serde_json::from_str::<SourceCall>(&line)
            .map_err(|e| Error::invalid(format!("a source call that is not valid: {e}")));
        if matches!(call, Ok(SourceCall::Ping)) {
            continue;
        }
        let mut logs = Vec::new();
        let result = call.and_then(|call| answer(source, call, &mut logs));
        for l in logs {
            writeln!(output, "{}", to_line(&SourceReply::Log(l))?).map_err(io)?;
        }
        let reply = match result {
            Ok(v) => SourceReply::Ok(v),
            Err(e) => SourceReply::Error {
                kind: e.kind(),
                message: e.message().to_string(),
                help: e.help().map(String::from),
            },
        };
        writeln!(output, "{}", to_line(&reply)?).map_err(io)?;
        output.flush().map_err(io)?;
    }
}

fn to_line(reply: &SourceReply) -> Result<String> {
    serde_json::to_string(reply).map_err(|e| Error::internal(format!("a source reply: {e}")))
}

fn answer(
    source: &mut Option<Box<dyn Source>>,
    call: SourceCall,
    logs: &mut Vec<String>,
) -> Result<serde_json::Value> {
    let json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| Error::internal(format!("a source result: {e}")))
    };
    if let SourceCall::Open {
        protocol,
        kind,
        options,
    } = &call
    {
        if *protocol != SOURCE_PROTOCOL {
            return Err(Error::invalid(format!(
                "the hub speaks source protocol {protocol}; this sendense-sna speaks \
                 {SOURCE_PROTOCOL}"
            ))
            .with_help("Run sendense-sna of the same version as the hub."));
        }
        if source.is_some() {
            return Err(Error::invalid("the source session is open already"));
        }
        *source = Some(match kind.as_str() {
            "qemu" => {
                let qmp = options["qmp"].as_str().unwrap_or_default();
                Box::new(super::qemu::QemuSource::new(qmp.into()))
            }
            "image" => {
                let files: Vec<std::path::PathBuf> = options["files"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|f| f.as_str())
                            .map(Into::into)
                            .collect()
                    })
                    .unwrap_or_default();
                if files.is_empty() || files.iter().any(|f| !f.is_absolute()) {
                    return Err(Error::invalid(
                        "an image source names its files by absolute paths",
                    ));
                }
                Box::new(super::image::ImageSource::new(files))
            }
            "vmware" => {
                let mut open: super::vmware::VmwareOpen =
                    serde_json::from_value(options.clone())
                        .map_err(|e| Error::invalid(format!("a VMware source's settings: {e}")))?;
                let vddk = node_vddk();
                if let Some(t) = std::env::var("SENDENSE_SNA_VDDK_TRANSPORTS")
                    .ok()
                    .filter(|t| !t.is_empty())
                {
                    open.transports = t;
                }
                Box::new(super::vmware::VmwareSource::connect(&open, vddk)?)
            }
            other => {
                return Err(
                    Error::invalid(format!("a `{other}` source does not run on a node")).with_help(
                        "Install the hub's sendense-sna on the node: `sendense node install NODE`.",
                    ),
                )
            }
        });
        return Ok(serde_json::Value::Null);
    }
    let s = source
        .as_mut()
        .ok_or_else(|| Error::invalid("a source call before `open`"))?;
    let mut host = NodeHost { logs };
    match call {
        SourceCall::Open { .. } => Ok(serde_json::Value::Null),
        SourceCall::Discover => json(serde_json::to_value(s.discover()?)),
        SourceCall::Checkpoints { disks } => json(serde_json::to_value(s.checkpoints(&disks)?)),
        SourceCall::Repair { mut req } => {
            // Scratch directories the hub names relative are this node's own.
            let mut ours = Vec::new();
            for (job, dir) in req.interrupted.iter_mut() {
                if dir.is_relative() {
                    *dir = node_scratch(dir)?;
                    ours.push((*job, dir.clone()));
                } else {
                    refuse_if_restricted(dir)?;
                }
            }
            let repaired = s.repair(&mut host, &req)?;
            // Nothing in QEMU uses them any more: what the interrupted jobs left goes.
            for (job, dir) in ours {
                if Some(job) != req.keep_job {
                    match std::fs::remove_dir_all(&dir) {
                        Ok(()) => host.log(&format!("removed {}", dir.display())),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => host.log(&format!("removing {}: {e}", dir.display())),
                    }
                }
            }
            json(serde_json::to_value(repaired))
        }
        SourceCall::Snapshot { mut req } => {
            if req.scratch.is_relative() {
                req.scratch = node_scratch(&req.scratch)?;
            } else {
                refuse_if_restricted(&req.scratch)?;
            }
            let disks: Vec<WireSnapshotDisk> = s
                .snapshot(&mut host, &req)?
                .into_iter()
                .map(|d| WireSnapshotDisk {
                    key: d.key,
                    url: d.url.to_string(),
                    size_bytes: d.size_bytes,
                    bitmap: d.bitmap,
                    extents: d.extents,
                    checkpoint: d.checkpoint,
                })
                .collect();
            json(serde_json::to_value(disks))
        }
        SourceCall::ResizeSuspects { url, bitmap } => {
            let url: crate::nbd::NbdUrl = url.parse()?;
            json(serde_json::to_value(s.resize_suspects(&url, &bitmap)?))
        }
        SourceCall::Finish { success } => {
            s.finish(&mut host, success)?;
            Ok(serde_json::Value::Null)
        }
        SourceCall::Ping => Ok(serde_json::Value::Null),
    }
}

/// The node's own VDDK: `SENDENSE_SNA_VDDK_LIBDIR` (where VMware's VDDK is installed, default
/// `/usr/lib/vmware-vix-disklib`) and `SENDENSE_SNA_VDDK_PLUGIN` (nbdkit's VDDK plugin, its name
/// or path, default `vddk`); the transports are the hub's unless `SENDENSE_SNA_VDDK_TRANSPORTS`
/// sets the node's own.
fn node_vddk() -> crate::config::VddkConfig {
    let mut vddk = crate::config::VddkConfig::default();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(libdir) = var("SENDENSE_SNA_VDDK_LIBDIR") {
        vddk.libdir = libdir.into();
    }
    if let Some(plugin) = var("SENDENSE_SNA_VDDK_PLUGIN") {
        vddk.plugin = plugin;
    }
    vddk
}

/// Where a node keeps its own state: `$SENDENSE_SNA_STATE`, else `$XDG_STATE_HOME/sendense-sna`,
/// else `~/.local/state/sendense-sna`.
pub fn node_state_dir() -> Result<std::path::PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .map(std::path::PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = env("SENDENSE_SNA_STATE") {
        return Ok(dir);
    }
    if let Some(dir) = env("XDG_STATE_HOME") {
        return Ok(dir.join("sendense-sna"));
    }
    env("HOME")
        .map(|h| h.join(".local/state/sendense-sna"))
        .ok_or_else(|| {
            Error::invalid("the node account has no home directory ($HOME) for its state")
                .with_help("Set SENDENSE_SNA_STATE for the account (sshd_config SetEnv) to a directory of its own.")
        })
}

/// The node's own scratch directory of a job the hub names `name` (one plain path component,
/// as [`crate::Sendense::snapshot_scratch`] makes it): `<state>/jobs/<name>`, its parents
/// created private.
fn node_scratch(name: &std::path::Path) -> Result<std::path::PathBuf> {
    let text = name.to_str().unwrap_or_default();
    let plain = !text.is_empty()
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !plain {
        return Err(Error::invalid(format!(
            "the hub named the scratch directory `{}`, which is not a plain name",
            name.display()
        )));
    }
    let jobs = node_state_dir()?.join("jobs");
    let dir = jobs.join(text);
    // The longest socket placed there must fit a Unix socket address (108 bytes).
    let longest = dir.join("target-4294967295-9.sock");
    if longest.as_os_str().len() >= 108 {
        return Err(Error::invalid(format!(
            "the node's scratch directory {} is too long for Unix sockets in it",
            dir.display()
        ))
        .with_help("Set SENDENSE_SNA_STATE for the node account (sshd_config SetEnv) to a shorter directory, such as /var/lib/sendense-sna."));
    }
    crate::fsutil::create_private_dir(&jobs)?;
    Ok(dir)
}

/// Refuses a directory the hub named by an absolute path when `sendense-sna` runs for a
/// restricted key ([`RESTRICTED_ENV`]): such a hub may only name scratch directories the node
/// places itself.
fn refuse_if_restricted(dir: &std::path::Path) -> Result<()> {
    if std::env::var_os(RESTRICTED_ENV).is_none() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "this node takes only its own scratch directories, not {}",
        dir.display()
    ))
    .with_help("Run sendense of the same version as this sendense-sna."))
}

/// The node's host for a source: log lines go back to the hub; the exports it starts (an
/// image source's qemu-nbd) are children of this process, recorded nowhere, and die with it.
struct NodeHost<'a> {
    logs: &'a mut Vec<String>,
}

impl SourceHost for NodeHost<'_> {
    fn start_export(
        &mut self,
        spec: &crate::export::ExportSpec,
    ) -> Result<crate::export::RunningExport> {
        crate::export::start_unrecorded(spec, &crate::config::QemuNbdConfig::default())
    }

    fn stop_export(&mut self, export: crate::export::RunningExport) -> Result<()> {
        crate::export::stop_unrecorded(export)
    }

    fn log(&mut self, message: &str) {
        self.logs.push(message.to_string());
    }
}

/// The answer lines of a node command, read on a thread or task of their own so that a node
/// that stops answering is noticed; an error (how it ended) last.
pub type NodeLines = std::sync::mpsc::Receiver<std::io::Result<String>>;

/// A `sendense-sna` command the hub talks to in lines, whatever carries them: a child process
/// of the hub ([`LocalCommand`]) or a command on a remote node over SSH ([`RemoteCommand`]).
pub trait NodeCommand: std::fmt::Debug + Send {
    /// Sends one line (a newline is added).
    fn send_line(&mut self, line: &str) -> std::io::Result<()>;
    /// Its answer lines.
    fn lines(&self) -> &NodeLines;
    /// Ends its input: a source session tears down what it holds, then exits.
    fn close_input(&mut self);
    /// Stops it now.
    fn kill(&mut self);
    /// Whether it ended within `limit` (after its input closed).
    fn ended_within(&mut self, limit: Duration) -> bool;
}

/// `sendense-sna` as a supervised child of the hub.
#[derive(Debug)]
pub struct LocalCommand {
    /// `None` once it ended.
    node: Option<Supervised>,
    /// `None` once closed.
    input: Option<std::process::ChildStdin>,
    lines: NodeLines,
}

impl LocalCommand {
    /// Starts `sna ARGS` (recorded in `ledger`, labelled `label`), its output read line by line.
    pub fn start(
        sna: &std::path::Path,
        args: &[&str],
        label: &str,
        ledger: &crate::supervise::Ledger,
    ) -> Result<LocalCommand> {
        let mut cmd = std::process::Command::new(sna);
        cmd.args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut node = Supervised::spawn(
            cmd,
            crate::supervise::ChildKind::Sna,
            label,
            NODE_GRACE,
            Some(ledger),
        )?;
        let (input, output) = match node.child() {
            Some(c) => (c.stdin.take(), c.stdout.take()),
            None => (None, None),
        };
        let (Some(input), Some(output)) = (input, output) else {
            return Err(Error::internal("sendense-sna started without its pipes"));
        };
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let end = line.is_err();
                if tx.send(line).is_err() || end {
                    return;
                }
            }
        });
        Ok(LocalCommand {
            node: Some(node),
            input: Some(input),
            lines,
        })
    }
}

impl NodeCommand for LocalCommand {
    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        let input = self.input.as_mut().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "its input is closed")
        })?;
        writeln!(input, "{line}").and_then(|()| input.flush())
    }

    fn lines(&self) -> &NodeLines {
        &self.lines
    }

    fn close_input(&mut self) {
        self.input = None;
    }

    fn kill(&mut self) {
        self.input = None;
        if let Some(node) = self.node.take() {
            let _ = node.stop();
        }
    }

    fn ended_within(&mut self, limit: Duration) -> bool {
        let Some(node) = self.node.as_mut() else {
            return true;
        };
        if !node.exited_within(limit) {
            return false;
        }
        if let Some(node) = self.node.take() {
            let _ = node.wait();
        }
        true
    }
}

/// `sendense-sna` on a remote node, in an exec channel of an SSH session of its own. The
/// command goes before the session it runs in.
#[derive(Debug)]
pub struct RemoteCommand {
    process: crate::node::ssh::RemoteProcess,
    lines: NodeLines,
    _session: crate::node::ssh::SshSession,
}

impl RemoteCommand {
    /// Starts `SNA ARGS` on the node of `session`.
    pub fn start(
        session: crate::node::ssh::SshSession,
        sna: &str,
        args: &[&str],
    ) -> Result<RemoteCommand> {
        crate::node::check_sna_path(sna)?;
        let mut command = crate::node::shell_word(sna);
        for a in args {
            command.push(' ');
            command.push_str(a);
        }
        let (process, lines) = session.spawn(&command)?;
        Ok(RemoteCommand {
            process,
            lines,
            _session: session,
        })
    }
}

impl NodeCommand for RemoteCommand {
    fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.process.send_line(line)
    }

    fn lines(&self) -> &NodeLines {
        &self.lines
    }

    fn close_input(&mut self) {
        self.process.close_input();
    }

    fn kill(&mut self) {
        self.process.kill();
    }

    fn ended_within(&mut self, limit: Duration) -> bool {
        // It exits once it has torn down what the session left: its output ends.
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            {
                Ok(Ok(_)) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return false,
                _ => return true,
            }
        }
    }
}

/// The hub's side: a [`Source`] whose work a `sendense-sna source` command does, through a
/// [`NodeCommand`] — a child of the hub, or a command on a remote node over SSH.
#[derive(Debug)]
pub struct NodeSource {
    kind: &'static str,
    /// Longest a call may take before the session is given up on.
    call_timeout: Duration,
    command: std::sync::Arc<std::sync::Mutex<Box<dyn NodeCommand>>>,
    /// Pings the session while no call runs (see [`SESSION_IDLE`]); stopped on drop.
    pinger: Option<Pinger>,
}

/// A thread that sends a ping every [`PING_EVERY`] while the command is not in a call.
#[derive(Debug)]
struct Pinger {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Pinger {
    fn start(command: std::sync::Arc<std::sync::Mutex<Box<dyn NodeCommand>>>) -> Pinger {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let ping = serde_json::to_string(&SourceCall::Ping).unwrap_or_default();
        let thread = std::thread::spawn(move || {
            let mut next = std::time::Instant::now() + PING_EVERY;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if std::time::Instant::now() < next {
                    continue;
                }
                next = std::time::Instant::now() + PING_EVERY;
                // A call in progress holds the command: the node is busy with it anyway.
                if let Ok(mut c) = command.try_lock() {
                    let _ = c.send_line(&ping);
                }
            }
        });
        Pinger { stop, thread }
    }

    fn end(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Longest a call may take: QEMU answers QMP within 60 s or is given up on, and a snapshot
/// makes a few calls per disk.
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest a call of a VMware source may take: a snapshot or its removal is a vCenter task
/// waited for up to 30 minutes (a quiesced snapshot tried twice), and each disk's nbdkit has a
/// minute to start.
const VMWARE_CALL_TIMEOUT: Duration = Duration::from_secs(90 * 60);

/// How long the node has to end after its input closed.
const NODE_GRACE: Duration = Duration::from_secs(10);

impl NodeSource {
    /// Starts `SNA source` on a remote node over `session` and opens the source of `kind`
    /// with `options` there (paths in them are the node's).
    pub fn start_remote(
        session: crate::node::ssh::SshSession,
        sna: &str,
        kind: &str,
        options: &serde_json::Value,
    ) -> Result<NodeSource> {
        let command = RemoteCommand::start(session, sna, &["source"])?;
        NodeSource::open(Box::new(command), kind, options)
    }

    /// Starts `sna source` for `vm` (a QEMU VM) and opens its source there.
    pub fn start(
        sna: &std::path::Path,
        vm: &crate::catalog::VmRecord,
        ledger: &crate::supervise::Ledger,
    ) -> Result<NodeSource> {
        let label = format!("source side of VM {}", vm.name);
        let command = LocalCommand::start(sna, &["source"], &label, ledger)?;
        NodeSource::open(Box::new(command), &vm.source, &vm.source_options)
    }

    /// Opens the source of `kind` with `options` in the session of `command`.
    fn open(
        command: Box<dyn NodeCommand>,
        kind: &str,
        options: &serde_json::Value,
    ) -> Result<NodeSource> {
        let command = std::sync::Arc::new(std::sync::Mutex::new(command));
        let mut source = NodeSource {
            kind: match kind {
                "image" => "image",
                "vmware" => "vmware",
                _ => "qemu",
            },
            call_timeout: match kind {
                "vmware" => VMWARE_CALL_TIMEOUT,
                _ => CALL_TIMEOUT,
            },
            pinger: Some(Pinger::start(command.clone())),
            command,
        };
        source.call(
            None,
            &SourceCall::Open {
                protocol: SOURCE_PROTOCOL,
                kind: kind.to_string(),
                options: options.clone(),
            },
        )?;
        Ok(source)
    }

    /// One call: its log lines into `host` (when there is one), then its result.
    fn call(
        &mut self,
        mut host: Option<&mut dyn SourceHost>,
        call: &SourceCall,
    ) -> Result<serde_json::Value> {
        let lost = |what: String| {
            Error::new(
                ErrorKind::Protocol,
                format!("the source on sendense-sna: {what}"),
            )
        };
        let text = serde_json::to_string(call)
            .map_err(|e| Error::internal(format!("a source call: {e}")))?;
        let mut command = self
            .command
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        command
            .send_line(&text)
            .map_err(|e| lost(format!("sending a call: {e}")))?;
        let deadline = std::time::Instant::now() + self.call_timeout;
        loop {
            let wait = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match command.lines().recv_timeout(wait) {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => return Err(lost(format!("reading its answer: {e}"))),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(lost("it ended without answering".into()))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // Stopped: whatever it holds in the VM is repaired by the next command.
                    command.kill();
                    return Err(lost(format!(
                        "it did not answer within {} s and was stopped",
                        self.call_timeout.as_secs()
                    )));
                }
            };
            match serde_json::from_str::<SourceReply>(&line)
                .map_err(|e| lost(format!("an answer that is not valid: {e}")))?
            {
                SourceReply::Log(l) => {
                    if let Some(h) = host.as_mut() {
                        h.log(&format!("node: {l}"));
                    }
                }
                SourceReply::Ok(v) => return Ok(v),
                SourceReply::Error {
                    kind,
                    message,
                    help,
                } => {
                    let e = Error::new(kind, message);
                    return Err(match help {
                        Some(h) => e.with_help(h),
                        None => e,
                    });
                }
            }
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("the source on sendense-sna answered wrongly: {e}"),
            )
        })
    }
}

impl Source for NodeSource {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn discover(&mut self) -> Result<Vec<DiscoveredDisk>> {
        let v = self.call(None, &SourceCall::Discover)?;
        Self::parse(v)
    }

    fn repair(&mut self, host: &mut dyn SourceHost, req: &RepairRequest) -> Result<Repaired> {
        let v = self.call(Some(host), &SourceCall::Repair { req: req.clone() })?;
        Self::parse(v)
    }

    fn checkpoints(&mut self, disks: &[DiskRecord]) -> Result<Vec<CheckpointState>> {
        let v = self.call(
            None,
            &SourceCall::Checkpoints {
                disks: disks.to_vec(),
            },
        )?;
        Self::parse(v)
    }

    fn snapshot(
        &mut self,
        host: &mut dyn SourceHost,
        req: &SnapshotRequest,
    ) -> Result<Vec<SnapshotDisk>> {
        let v = self.call(Some(host), &SourceCall::Snapshot { req: req.clone() })?;
        let disks: Vec<WireSnapshotDisk> = Self::parse(v)?;
        disks
            .into_iter()
            .map(|d| {
                let url: crate::nbd::NbdUrl = d.url.parse()?;
                // The snapshot is served where the job's scratch is, nowhere else: a node must
                // not point the hub at another export. (A remote node's scratch is its own,
                // named by the hub, placed by the node.)
                let inside = match &url.endpoint {
                    crate::nbd::Endpoint::Unix(path) if req.scratch.is_relative() => {
                        path.is_absolute()
                            && path.parent().and_then(|p| p.file_name())
                                == Some(req.scratch.as_os_str())
                    }
                    crate::nbd::Endpoint::Unix(path) => path.starts_with(&req.scratch),
                    crate::nbd::Endpoint::Tcp { .. } => false,
                };
                if !inside || !req.disks.iter().any(|r| r.key == d.key) {
                    return Err(Error::new(
                        ErrorKind::Protocol,
                        format!(
                            "the node served disk {} at {url}, not in the job's scratch {}",
                            d.key,
                            req.scratch.display()
                        ),
                    ));
                }
                Ok(SnapshotDisk {
                    key: d.key,
                    url,
                    size_bytes: d.size_bytes,
                    bitmap: d.bitmap,
                    extents: d.extents,
                    checkpoint: d.checkpoint,
                })
            })
            .collect()
    }

    fn finish(&mut self, host: &mut dyn SourceHost, success: bool) -> Result<()> {
        self.call(Some(host), &SourceCall::Finish { success })
            .map(drop)
    }

    fn resize_suspects(
        &mut self,
        url: &crate::nbd::NbdUrl,
        bitmap: &str,
    ) -> Result<Vec<(u64, u64)>> {
        let v = self.call(
            None,
            &SourceCall::ResizeSuspects {
                url: url.to_string(),
                bitmap: bitmap.to_string(),
            },
        )?;
        Self::parse(v)
    }
}

impl Drop for NodeSource {
    fn drop(&mut self) {
        if let Some(p) = self.pinger.take() {
            p.end();
        }
        let mut command = self
            .command
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Closing its input ends the session: the node tears down what is left and exits.
        command.close_input();
        if !command.ended_within(NODE_GRACE) {
            command.kill();
        }
    }
}
