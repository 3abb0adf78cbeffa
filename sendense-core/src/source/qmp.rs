//! A QMP connection over the `qapi` crate's transport. Commands are sent by name with JSON
//! arguments and answer JSON, which keeps Sendense independent of the QEMU version the typed
//! schema was generated from (Debian's QEMU here is 7.2).

use crate::error::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Stream = qapi::Stream<BufReader<UnixStream>, UnixStream>;

/// An open QMP session.
pub struct Qmp {
    qmp: qapi::Qmp<Stream>,
    socket: PathBuf,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

macro_rules! raw_commands {
    ($($ty:ident => $name:literal),* $(,)?) => {
        $(
            #[derive(Serialize)]
            #[serde(transparent)]
            struct $ty(Value);

            impl qapi::Command for $ty {
                type Ok = Value;
                const NAME: &'static str = $name;
                const ALLOW_OOB: bool = false;
            }
        )*

        fn dispatch(qmp: &mut qapi::Qmp<Stream>, name: &str, args: Value) -> std::result::Result<Value, qapi::ExecuteError> {
            match name {
                $($name => qmp.execute(&$ty(args)),)*
                other => Err(qapi::ExecuteError::Io(std::io::Error::other(format!("unknown QMP command {other}")))),
            }
        }
    };
}

raw_commands! {
    Capabilities => "qmp_capabilities",
    QueryBlock => "query-block",
    QueryNamedBlockNodes => "query-named-block-nodes",
    QueryBlockJobs => "query-block-jobs",
    Transaction => "transaction",
    BlockdevAdd => "blockdev-add",
    BlockdevDel => "blockdev-del",
    BlockJobCancel => "block-job-cancel",
    NbdServerStart => "nbd-server-start",
    NbdServerStop => "nbd-server-stop",
    BlockExportAdd => "block-export-add",
    BlockExportDel => "block-export-del",
    QueryBlockExports => "query-block-exports",
    BitmapRemove => "block-dirty-bitmap-remove",
    HumanMonitor => "human-monitor-command",
    QueryStatus => "query-status",
    Quit => "quit",
}

impl Qmp {
    /// Connects to the QMP socket and negotiates capabilities.
    pub fn connect(socket: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(socket).map_err(|e| connect_error(socket, e))?;
        Self::greet(socket, stream)
    }

    /// Connects like [`Qmp::connect`], or `None` when no QEMU listens on `socket` (it is gone,
    /// or nothing accepts connections on it): the VM is not running.
    pub fn connect_if_running(socket: &Path) -> Result<Option<Qmp>> {
        match UnixStream::connect(socket) {
            Ok(stream) => Self::greet(socket, stream).map(Some),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(connect_error(socket, e)),
        }
    }

    fn greet(socket: &Path, stream: UnixStream) -> Result<Qmp> {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let reader = stream
            .try_clone()
            .map_err(|e| Error::new(ErrorKind::External, format!("QMP socket: {e}")))?;
        let mut reader = BufReader::new(reader);
        // The greeting, read here: an EOF is an error, not a panic.
        let mut greeting = String::new();
        reader.read_line(&mut greeting).map_err(|e| {
            Error::new(
                ErrorKind::External,
                format!("reading the QMP greeting from {}: {e}", socket.display()),
            )
        })?;
        if !greeting.contains("\"QMP\"") {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "{} did not greet like QMP: {}",
                    socket.display(),
                    greeting.trim()
                ),
            ));
        }
        let mut me = Qmp {
            qmp: qapi::Qmp::new(qapi::Stream::new(reader, stream)),
            socket: socket.to_path_buf(),
        };
        me.execute("qmp_capabilities", json!({}))?;
        Ok(me)
    }

    /// Runs one command.
    pub fn execute(&mut self, name: &str, args: Value) -> Result<Value> {
        dispatch(&mut self.qmp, name, args).map_err(|e| match e {
            qapi::ExecuteError::Qapi(err) => {
                Error::new(ErrorKind::External, format!("QMP {name}: {}", err.desc))
            }
            qapi::ExecuteError::Io(err) => Error::new(
                ErrorKind::External,
                format!(
                    "QMP {name} on {}: {err} (did the VM exit?)",
                    self.socket.display()
                ),
            ),
        })
    }

    /// Polls `query-block-jobs` until no job named `id` is left.
    pub fn wait_job_gone(&mut self, id: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let jobs = self.execute("query-block-jobs", json!({}))?;
            let present = jobs
                .as_array()
                .is_some_and(|a| a.iter().any(|j| j["device"] == id));
            if !present {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::External,
                    format!("block job {id} did not end"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn connect_error(socket: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::External,
        format!("cannot connect to QMP socket {}: {e}", socket.display()),
    )
    .with_source(e)
    .with_help("Check that the VM runs and was started with -qmp unix:PATH,server=on,wait=off.")
}

/// A disk as `query-block` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BlockDevice {
    /// qdev path, e.g. `/machine/peripheral/vd0/virtio-backend`.
    pub qdev: String,
    /// Node name of the top node.
    pub node: String,
    /// Driver (`qcow2`, `raw`).
    pub format: String,
    /// Image file.
    pub file: String,
    /// Virtual size.
    pub size: u64,
    /// Dirty bitmaps on the node.
    pub bitmaps: Vec<Bitmap>,
}

/// A dirty bitmap.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Bitmap {
    /// Name.
    pub name: String,
    /// Still recording writes.
    pub recording: bool,
    /// Persistent in the image.
    pub persistent: bool,
    /// Not saved cleanly: its content cannot be trusted.
    pub inconsistent: bool,
}

impl Qmp {
    /// The VM's disks with media, in device order.
    pub fn block_devices(&mut self) -> Result<Vec<BlockDevice>> {
        let list = self.execute("query-block", json!({}))?;
        let mut out = Vec::new();
        for dev in list.as_array().into_iter().flatten() {
            let Some(ins) = dev.get("inserted") else {
                continue;
            };
            let qdev = dev["qdev"].as_str().unwrap_or_default().to_string();
            let identity = if qdev.is_empty() {
                dev["device"].as_str().unwrap_or_default().to_string()
            } else {
                qdev
            };
            let bitmaps = ins
                .get("dirty-bitmaps")
                .or_else(|| dev.get("dirty-bitmaps"))
                .and_then(|b| b.as_array())
                .map(|list| {
                    list.iter()
                        .map(|b| Bitmap {
                            name: b["name"].as_str().unwrap_or_default().to_string(),
                            recording: b["recording"].as_bool().unwrap_or(true),
                            persistent: b["persistent"].as_bool().unwrap_or(false),
                            inconsistent: b["inconsistent"].as_bool().unwrap_or(false),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(BlockDevice {
                qdev: identity,
                node: ins["node-name"].as_str().unwrap_or_default().to_string(),
                format: ins["drv"].as_str().unwrap_or_default().to_string(),
                file: ins["file"].as_str().unwrap_or_default().to_string(),
                size: ins["image"]["virtual-size"].as_u64().unwrap_or(0),
                bitmaps,
            });
        }
        Ok(out)
    }
}
