//! The hub's SSH client for nodes (russh): a pinned host key, a private key file or the
//! ssh-agent, commands in exec channels. Blocking to its callers; each session runs its own
//! small tokio runtime.
//!
//! The host key is checked during the key exchange, before anything is sent: a key other than
//! the pinned one ends the connection with an error naming both fingerprints. No secret ever
//! appears in an argument, a log line or an error: a key file is named by its path only.

use crate::error::{Error, ErrorKind, Result};
use russh::client::{self, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long connecting and signing in may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a short command (`hello`, `uname`) may take.
const SHORT_COMMAND: Duration = Duration::from_secs(60);

/// How long a command fed a file (installing `sendense-sna`) may take.
const LONG_COMMAND: Duration = Duration::from_secs(30 * 60);

/// Per-channel receive window unless configured (`node_window_mib`): large, so one channel is
/// not capped at a window per round trip (OpenSSH's 2 MiB window is what capped tunnels at WAN
/// latency: 16 MiB allows 800 MiB/s at 20 ms). Not larger by default: on loopback a 64 MiB
/// window made sshd's sends slower.
pub const WINDOW: u32 = 16 << 20;

/// Where a connection a node makes to a forwarded port goes on the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalTarget {
    /// A TCP address (the hub's own loopback).
    Tcp(std::net::SocketAddr),
    /// A Unix socket.
    Unix(PathBuf),
}

/// Where a node listens for a forward.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Listen {
    /// A port on the node's loopback.
    Port(u32),
    /// A Unix socket on the node.
    Socket(String),
}

/// Forwards of a session (where the node listens → the hub's target).
type Forwards = Arc<Mutex<std::collections::HashMap<Listen, LocalTarget>>>;

/// Where and as whom to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Account.
    pub user: String,
    /// Private key file; `None`: the ssh-agent at `SSH_AUTH_SOCK`.
    pub identity: Option<PathBuf>,
}

impl SshTarget {
    /// Parses `[USER@]HOST[:PORT]` (`[v6addr]:PORT` for IPv6); the user defaults to `user`.
    pub fn parse(text: &str, user: &str, identity: Option<PathBuf>) -> Result<SshTarget> {
        let bad = || {
            Error::invalid(format!("--ssh `{text}` is not [USER@]HOST[:PORT]"))
                .with_help("For example `--ssh backup@kvm1.example.com` or `--ssh 10.0.0.5:2222`.")
        };
        let (who, rest) = match text.rsplit_once('@') {
            Some((u, r)) => (u.to_string(), r),
            None => (user.to_string(), text),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if after.is_empty() => 22,
                None => return Err(bad()),
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                // An IPv6 address is given in brackets.
                Some((h, _)) if h.contains(':') => return Err(bad()),
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
                None => (rest.to_string(), 22),
            }
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
        };
        if !valid(&host) || !valid(&who) || port == 0 {
            return Err(bad());
        }
        Ok(SshTarget {
            host,
            port,
            user: who,
            identity,
        })
    }
}

/// Which host key to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    /// Only this one (`SHA256:...`).
    Pinned(String),
    /// Whichever the node presents: it is reported, to be pinned (first contact, accepted
    /// explicitly by the operator).
    Accept,
    /// None: connect only to learn the node's key, and fail naming it.
    Show,
}

/// What a command run on the node did.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
    /// Its exit status (`None`: killed by a signal, or the node did not say).
    pub status: Option<u32>,
}

/// An SSH connection to a node.
pub struct SshSession {
    /// `None` only while it is dropped.
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle<Client>,
    /// The node's host key fingerprint (`SHA256:...`), as checked.
    pub host_key: String,
    what: String,
    forwards: Forwards,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("node", &self.what)
            .field("host_key", &self.host_key)
            .finish()
    }
}

/// The russh handler: checks the host key; connects what the node opens on a forwarded port
/// to the hub's target of that port (and refuses anything else).
struct Client {
    expect: HostKey,
    seen: Arc<Mutex<Option<String>>>,
    forwards: Forwards,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let fp = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        let ok = match &self.expect {
            HostKey::Pinned(want) => *want == fp,
            HostKey::Accept => true,
            HostKey::Show => false,
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fp);
        }
        Ok(ok)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        let target = self
            .forwards
            .lock()
            .ok()
            .and_then(|f| f.get(&Listen::Port(connected_port)).cloned());
        connect_forwarded(channel, target, reply).await;
        Ok(())
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        channel: russh::Channel<client::Msg>,
        socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> std::result::Result<(), Self::Error> {
        let target = self
            .forwards
            .lock()
            .ok()
            .and_then(|f| f.get(&Listen::Socket(socket_path.to_string())).cloned());
        connect_forwarded(channel, target, reply).await;
        Ok(())
    }
}

/// Takes a channel the node opened for a forward to `target`; refuses one for a forward the
/// hub did not ask for (`None`).
async fn connect_forwarded(
    channel: russh::Channel<client::Msg>,
    target: Option<LocalTarget>,
    reply: client::ChannelOpenHandle,
) {
    let Some(target) = target else {
        reply
            .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        return;
    };
    reply.accept().await;
    // Not here: the handler runs in the session's loop.
    tokio::spawn(pump(channel, target));
}

/// Copies between a forwarded channel and a new connection to `target`, both ways, until both
/// ends are done.
async fn pump(channel: russh::Channel<client::Msg>, target: LocalTarget) {
    const BUF: usize = 256 << 10;
    let mut stream = channel.into_stream();
    let done = match &target {
        LocalTarget::Tcp(addr) => match tokio::net::TcpStream::connect(addr).await {
            Ok(mut tcp) => {
                let _ = tcp.set_nodelay(true);
                tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut tcp, BUF, BUF).await
            }
            Err(e) => Err(e),
        },
        LocalTarget::Unix(path) => match tokio::net::UnixStream::connect(path).await {
            Ok(mut unix) => {
                tokio::io::copy_bidirectional_with_sizes(&mut stream, &mut unix, BUF, BUF).await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = done {
        tracing::debug!("a forwarded connection to {target:?} ended: {e}");
    }
}

impl SshSession {
    /// Asks the node's sshd to listen on its loopback (`127.0.0.1`, a port it chooses) and to
    /// pass every connection there to the hub, which connects it to `target`. Returns the port
    /// on the node. The forward ends with [`SshSession::cancel_forward`] or the session.
    pub fn forward(&self, target: LocalTarget) -> Result<u16> {
        let what = &self.what;
        let port = self.rt()?.block_on(async {
            tokio::time::timeout(SHORT_COMMAND, self.handle.tcpip_forward("127.0.0.1", 0))
                .await
                .map_err(|_| {
                    Error::new(ErrorKind::External, format!("{what} did not answer a forward request"))
                })?
                .map_err(|e| {
                    Error::refused(format!("{what} refused to forward a port on its loopback: {e}"))
                        .with_help("Allow it in the node account's authorized_keys: port-forwarding,permitlisten=\"127.0.0.1:*\" (see the guide's remote nodes section).")
                })
        })?;
        let port16 = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    format!("{what} forwarded port {port}, which is not a port"),
                )
            })?;
        if let Ok(mut f) = self.forwards.lock() {
            f.insert(Listen::Port(port), target);
        }
        Ok(port16)
    }

    /// Asks the node's sshd to listen on the Unix socket `path` (on the node; its directory
    /// must exist, the socket must not) and to pass every connection there to the hub, which
    /// connects it to `target`. sshd creates the socket as the node account, mode 0600 (its
    /// `StreamLocalBindMask`), so no other user of the node reaches the target through it.
    /// The forward ends with the session (sshd leaves the socket file).
    pub fn forward_socket(&self, path: &str, target: LocalTarget) -> Result<()> {
        let what = &self.what;
        if let Ok(mut f) = self.forwards.lock() {
            f.insert(Listen::Socket(path.to_string()), target);
        }
        let asked = self.rt()?.block_on(async {
            tokio::time::timeout(SHORT_COMMAND, self.handle.streamlocal_forward(path))
                .await
                .map_err(|_| {
                    Error::new(ErrorKind::External, format!("{what} did not answer a forward request"))
                })?
                .map_err(|e| {
                    Error::refused(format!("{what} refused to forward its Unix socket {path}: {e}"))
                        .with_help("Allow forwarding in the node account's authorized_keys (port-forwarding) and in its sshd_config (AllowStreamLocalForwarding, the default); see the guide's remote nodes section.")
                })
        });
        if asked.is_err() {
            if let Ok(mut f) = self.forwards.lock() {
                f.remove(&Listen::Socket(path.to_string()));
            }
        }
        asked
    }

    /// Whether the connection has ended (the node or the network dropped it).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Ends the forward of `port` on the node.
    pub fn cancel_forward(&self, port: u16) -> Result<()> {
        if let Ok(mut f) = self.forwards.lock() {
            f.remove(&Listen::Port(u32::from(port)));
        }
        let what = &self.what;
        self.rt()?.block_on(async {
            match tokio::time::timeout(
                Duration::from_secs(10),
                self.handle
                    .cancel_tcpip_forward("127.0.0.1", u32::from(port)),
            )
            .await
            {
                Ok(Ok(())) => Ok(()),
                _ => Err(Error::new(
                    ErrorKind::External,
                    format!("{what} did not end the forward of port {port}"),
                )),
            }
        })
    }
}

/// AEAD ciphers only, AES-GCM first: with AES instructions (x86-64, ARMv8) it moves backup
/// data faster than chacha20-poly1305, which russh prefers by default; AES-128 before AES-256
/// (as OpenSSH orders them), four fewer rounds per block on both sides of every byte.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
];

fn client_config(window: u32) -> client::Config {
    client::Config {
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(CIPHERS),
            ..Default::default()
        },
        window_size: window,
        maximum_packet_size: 32768,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    }
}

impl SshSession {
    /// Connects to `target` as `name` (for messages), checks its host key as `expect` says,
    /// and signs in.
    pub fn connect(name: &str, target: &SshTarget, expect: &HostKey) -> Result<SshSession> {
        SshSession::connect_with_window(name, target, expect, WINDOW)
    }

    /// [`SshSession::connect`] with a receive window of `window` bytes per channel.
    pub fn connect_with_window(
        name: &str,
        target: &SshTarget,
        expect: &HostKey,
        window: u32,
    ) -> Result<SshSession> {
        let what = format!(
            "node `{name}` ({}@{}:{})",
            target.user, target.host, target.port
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("an SSH runtime: {e}")))?;
        let seen = Arc::new(Mutex::new(None));
        let forwards: Forwards = Default::default();
        let handler = Client {
            expect: expect.clone(),
            seen: seen.clone(),
            forwards: forwards.clone(),
        };
        let connected = runtime.block_on(async {
            tokio::time::timeout(CONNECT_TIMEOUT, async {
                let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::External, format!("connecting to {what}: {e}"))
                            .with_help("Check the address and port, and that sshd runs there.")
                    })?;
                let _ = tcp.set_nodelay(true);
                let mut handle =
                    client::connect_stream(Arc::new(client_config(window)), tcp, handler)
                        .await
                        .map_err(|e| key_error(&what, expect, &seen, e))?;
                authenticate(&mut handle, &what, target).await?;
                Ok::<_, Error>(handle)
            })
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::External,
                    format!(
                        "connecting to {what}: no answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            })?
        });
        let connected = match connected {
            Ok(c) => c,
            Err(e) => {
                // Not waited for: a name lookup that hangs.
                runtime.shutdown_timeout(Duration::from_secs(2));
                return Err(e);
            }
        };
        let host_key = seen.lock().ok().and_then(|s| s.clone()).unwrap_or_default();
        Ok(SshSession {
            runtime: Some(runtime),
            forwards,
            handle: connected,
            host_key,
            what,
        })
    }

    /// Runs `command` on the node with `stdin` as its input; returns what it printed and its
    /// exit status.
    pub fn exec(&self, command: &str, stdin: &[u8]) -> Result<ExecOutput> {
        self.exec_reading(command, std::io::Cursor::new(stdin.to_vec()), SHORT_COMMAND)
    }

    /// Runs `command` on the node with the file `input` as its input, streamed (a binary of
    /// any size in bounded memory).
    pub fn exec_file(&self, command: &str, input: &std::path::Path) -> Result<ExecOutput> {
        let file = self
            .rt()?
            .block_on(tokio::fs::File::open(input))
            .map_err(|e| Error::io("reading", input, e))?;
        self.exec_reading(command, file, LONG_COMMAND)
    }

    /// The input is fed beside reading the output: a command that ends without reading all
    /// of it (it failed) ends the call, the rest of the input is not sent.
    fn exec_reading<R>(&self, command: &str, mut stdin: R, limit: Duration) -> Result<ExecOutput>
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        let what = &self.what;
        let late = || {
            Error::new(
                ErrorKind::External,
                format!(
                    "`{command}` on {what} did not end within {} s",
                    limit.as_secs()
                ),
            )
        };
        let failed = |e: russh::Error| {
            Error::new(
                ErrorKind::External,
                format!("running `{command}` on {what}: {e}"),
            )
        };
        let rt = self.rt()?;
        rt.block_on(async {
            let mut ch = tokio::time::timeout(SHORT_COMMAND, async {
                let ch = self
                    .handle
                    .channel_open_session()
                    .await
                    .map_err(failed)?;
                ch.exec(true, command).await.map_err(failed)?;
                Ok::<_, Error>(ch)
            })
            .await
            .map_err(|_| late())??;
            let mut writer = ch.make_writer();
            let feed = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tokio::io::copy(&mut stdin, &mut writer).await?;
                writer.shutdown().await
            });
            let _feeding = AbortOnDrop(feed);
            let ran = tokio::time::timeout(limit, async {
                let mut out = ExecOutput::default();
                while let Some(msg) = ch.wait().await {
                    let (into, data) = match msg {
                        ChannelMsg::Data { data } => (&mut out.stdout, data),
                        ChannelMsg::ExtendedData { data, ext: 1 } => (&mut out.stderr, data),
                        ChannelMsg::ExitStatus { exit_status } => {
                            out.status = Some(exit_status);
                            continue;
                        }
                        ChannelMsg::Failure => {
                            return Err(Error::refused(format!(
                                "{what} refused to run `{command}`"
                            ))
                            .with_help(
                                "Check the node account's authorized_keys options (see the README's remote nodes section).",
                            ))
                        }
                        _ => continue,
                    };
                    // A node is untrusted: its answers to short commands are short.
                    if into.len() + data.len() > MAX_OUTPUT {
                        return Err(Error::new(
                            ErrorKind::Protocol,
                            format!("`{command}` on {what} answered more than 1 MiB"),
                        ));
                    }
                    into.extend_from_slice(&data);
                }
                Ok(out)
            })
            .await;
            if !matches!(ran, Ok(Ok(_))) {
                // The command may still run there: its channel goes.
                let _ = tokio::time::timeout(Duration::from_secs(2), ch.close()).await;
            }
            ran.map_err(|_| late())?
        })
    }

    /// The session's runtime (there until the session is dropped).
    fn rt(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| Error::internal("the SSH session was closed"))
    }
}

/// A command running on the node for as long as a session with it lasts (`sendense-sna
/// source`): lines in on its standard input, lines out of its standard output. Its input is
/// written by one task and its output read by another, so neither direction can hold up the
/// other (or the session's keepalives). Its standard error goes to the log, and its last lines
/// into the error that ends its output. Dropping it closes its input; [`RemoteProcess::kill`]
/// stops it.
pub struct RemoteProcess {
    input: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    write: Arc<russh::ChannelWriteHalf<client::Msg>>,
    runtime: tokio::runtime::Handle,
    _reader: AbortOnDrop<()>,
    _writer: AbortOnDrop<()>,
}

/// The output of a [`RemoteProcess`], line by line; an error (its exit status with its last
/// words, a lost connection) last.
pub type RemoteLines = std::sync::mpsc::Receiver<std::io::Result<String>>;

/// The longest line a node may send: a longer one ends the session (a node is untrusted).
const MAX_LINE: usize = 16 << 20;

/// The most a short command's output may hold.
const MAX_OUTPUT: usize = 1 << 20;

impl std::fmt::Debug for RemoteProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteProcess").finish_non_exhaustive()
    }
}

impl RemoteProcess {
    /// Sends one line (a newline is added). Not from inside an async runtime.
    pub fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the command ended");
        let input = self.input.as_ref().ok_or_else(gone)?;
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        input.blocking_send(bytes).map_err(|_| gone())
    }

    /// Ends its input.
    pub fn close_input(&mut self) {
        self.input = None;
    }

    /// Stops it: SIGTERM (sshd passes signals on to a command since OpenSSH 7.9), then the
    /// channel closed. A command that reads no input any more does not notice its end.
    pub fn kill(&mut self) {
        self.input = None;
        let write = self.write.clone();
        let _ = self.runtime.block_on(async move {
            let limit = Duration::from_secs(2);
            let _ = tokio::time::timeout(limit, write.signal(russh::Sig::TERM)).await;
            tokio::time::timeout(limit, write.close()).await
        });
    }
}

/// Splits `buf` into its complete lines from `from` on (`from`: what was scanned already);
/// `None` when a line grows beyond [`MAX_LINE`].
fn complete_lines(buf: &mut Vec<u8>, from: &mut usize) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    while let Some(at) = buf[*from..].iter().position(|b| *b == b'\n') {
        let end = *from + at;
        lines.push(String::from_utf8_lossy(&buf[..end]).into_owned());
        buf.drain(..=end);
        *from = 0;
    }
    *from = buf.len();
    (buf.len() <= MAX_LINE).then_some(lines)
}

impl SshSession {
    /// Starts `command` on the node, for a session of calls and answers (see
    /// [`RemoteProcess`]).
    pub fn spawn(&self, command: &str) -> Result<(RemoteProcess, RemoteLines)> {
        let what = self.what.clone();
        let failed = |e: russh::Error| {
            Error::new(
                ErrorKind::External,
                format!("starting `{command}` on {what}: {e}"),
            )
        };
        let rt = self.rt()?;
        let ch = rt.block_on(async {
            tokio::time::timeout(SHORT_COMMAND, async {
                let ch = self.handle.channel_open_session().await.map_err(failed)?;
                ch.exec(true, command).await.map_err(failed)?;
                Ok::<_, Error>(ch)
            })
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::External,
                    format!("starting `{command}` on {what}: no answer"),
                )
            })?
        })?;
        let (mut read, write) = ch.split();
        let write = Arc::new(write);
        let (input, mut calls) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let writing = write.clone();
        let writer = rt.spawn(async move {
            while let Some(bytes) = calls.recv().await {
                if writing.data(&bytes[..]).await.is_err() {
                    return;
                }
            }
            let _ = writing.eof().await;
        });
        let (out, lines) = std::sync::mpsc::channel();
        let what = self.what.clone();
        let reader = rt.spawn(async move {
            let (mut stdout, mut scanned) = (Vec::new(), 0);
            let (mut stderr, mut scanned_err) = (Vec::new(), 0);
            let mut last_words: std::collections::VecDeque<String> = Default::default();
            let mut status = None;
            let too_long = || std::io::Error::other("the node sent a line longer than 16 MiB");
            while let Some(msg) = read.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        stdout.extend_from_slice(&data);
                        let Some(lines) = complete_lines(&mut stdout, &mut scanned) else {
                            let _ = out.send(Err(too_long()));
                            return;
                        };
                        for line in lines {
                            if out.send(Ok(line)).is_err() {
                                return;
                            }
                        }
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        stderr.extend_from_slice(&data);
                        let Some(lines) = complete_lines(&mut stderr, &mut scanned_err) else {
                            let _ = out.send(Err(too_long()));
                            return;
                        };
                        for line in lines {
                            tracing::info!("{what}: {line}");
                            last_words.push_back(line);
                            if last_words.len() > 5 {
                                last_words.pop_front();
                            }
                        }
                    }
                    ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                    ChannelMsg::Failure => {
                        let _ = out.send(Err(std::io::Error::other(
                            "the node refused to run the command",
                        )));
                        return;
                    }
                    _ => {}
                }
            }
            if !stdout.is_empty() {
                let _ = out.send(Ok(String::from_utf8_lossy(&stdout).into_owned()));
            }
            if !stderr.is_empty() {
                last_words.push_back(String::from_utf8_lossy(&stderr).into_owned());
            }
            let said = match last_words.is_empty() {
                true => String::new(),
                false => format!(
                    "; it said: {}",
                    last_words.into_iter().collect::<Vec<_>>().join(" / ")
                ),
            };
            let end = match status {
                Some(0) => return,
                Some(s) => std::io::Error::other(format!("it ended with exit status {s}{said}")),
                None => std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    format!("the connection to the node ended{said}"),
                ),
            };
            let _ = out.send(Err(end));
        });
        Ok((
            RemoteProcess {
                input: Some(input),
                write,
                runtime: rt.handle().clone(),
                _reader: AbortOnDrop(reader),
                _writer: AbortOnDrop(writer),
            },
            lines,
        ))
    }
}

/// Stops a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let handle = &self.handle;
        let _ = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                handle.disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await
        });
        // Its tasks (a name lookup, a file read) are not waited for.
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The error for a failed key exchange: a host key other than the pinned one names both.
fn key_error(what: &str, expect: &HostKey, seen: &Mutex<Option<String>>, e: russh::Error) -> Error {
    let seen = seen.lock().ok().and_then(|s| s.clone());
    match (expect, seen, &e) {
        (HostKey::Pinned(want), Some(got), russh::Error::UnknownKey) => Error::refused(format!(
            "{what} presented host key {got}, but {want} is pinned for it: this is not the node that was added, or its host key was replaced"
        ))
        .with_help(
            "Nothing was sent. If the node's host key was replaced on purpose, check the new fingerprint on the node (`ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub`), then remove the node and add it again with --host-key.",
        ),
        (HostKey::Show, Some(got), russh::Error::UnknownKey) => Error::refused(format!(
            "{what} presented host key {got}, which is not pinned yet"
        ))
        .with_help(format!(
            "Check it on the node (`ssh-keygen -l -f /etc/ssh/ssh_host_ed25519_key.pub`), then add the node with `--host-key {got}` (or `--accept-host-key`)."
        )),
        _ => Error::new(ErrorKind::External, format!("connecting to {what}: {e}")),
    }
}

/// Signs in with the key file, or with the agent's keys one by one.
async fn authenticate(handle: &mut Handle<Client>, what: &str, target: &SshTarget) -> Result<()> {
    let rejected = || {
        Error::new(ErrorKind::External, format!("{what} did not accept the key"))
            .with_help("Add the hub's public key to the node account's authorized_keys (see the README's remote nodes section).")
    };
    let failed =
        |e: russh::Error| Error::new(ErrorKind::External, format!("signing in to {what}: {e}"));
    match &target.identity {
        Some(path) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|e| Error::io("reading", path, e))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(Error::invalid(format!(
                    "the key file {} can be read by others (mode {:o})",
                    path.display(),
                    mode & 0o777
                ))
                .with_help("Make it the hub user's alone: chmod 600 FILE."));
            }
            let key = russh::keys::load_secret_key(path, None).map_err(|e| {
                Error::invalid(format!("the key file {}: {e}", path.display())).with_help(
                    "Give an unencrypted private key file the hub's user alone can read, or load a protected key into ssh-agent and leave out --identity.",
                )
            })?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(failed)?
                .flatten();
            let res = handle
                .authenticate_publickey(
                    target.user.as_str(),
                    PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                )
                .await
                .map_err(failed)?;
            if res.success() {
                Ok(())
            } else {
                Err(rejected())
            }
        }
        None => {
            let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                .await
                .map_err(|e| {
                    Error::invalid(format!("no ssh-agent to sign in to {what} with: {e}"))
                        .with_help(
                        "Start ssh-agent and add the key (SSH_AUTH_SOCK), or pass --identity FILE.",
                    )
                })?;
            let ids = agent.request_identities().await.map_err(|e| {
                Error::new(
                    ErrorKind::External,
                    format!("asking ssh-agent for keys: {e}"),
                )
            })?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(failed)?
                .flatten();
            for id in ids {
                let key = id.public_key().into_owned();
                let res = handle
                    .authenticate_publickey_with(target.user.as_str(), key, hash, &mut agent)
                    .await;
                if matches!(res, Ok(r) if r.success()) {
                    return Ok(());
                }
            }
            Err(rejected())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_and_checked() {
        let t = SshTarget::parse("backup@kvm1.example.com:2222", "root", None).unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("backup", "kvm1.example.com", 2222)
        );
        let t = SshTarget::parse("10.0.0.5", "root", None).unwrap();
        assert_eq!((t.user.as_str(), t.port), ("root", 22));
        let t = SshTarget::parse("u@[fd00::5]:22", "root", None).unwrap();
        assert_eq!(t.host, "fd00::5");
        for bad in [
            "",
            "u@",
            "h:0",
            "h:x",
            "h;rm -rf",
            "u u@h",
            "[fd00::5",
            "u@fd00::5",
        ] {
            assert!(SshTarget::parse(bad, "root", None).is_err(), "{bad}");
        }
    }
}
