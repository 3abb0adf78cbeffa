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

/// Per-channel receive window: large, so one channel is not capped at a window per round trip
/// (OpenSSH's 2 MiB window is what capped tunnels at WAN latency).
const WINDOW: u32 = 64 << 20;

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
    runtime: tokio::runtime::Runtime,
    handle: Handle<Client>,
    /// The node's host key fingerprint (`SHA256:...`), as checked.
    pub host_key: String,
    what: String,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("node", &self.what)
            .field("host_key", &self.host_key)
            .finish()
    }
}

/// The russh handler: checks the host key.
struct Client {
    expect: HostKey,
    seen: Arc<Mutex<Option<String>>>,
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
}

fn client_config() -> client::Config {
    client::Config {
        window_size: WINDOW,
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
        let handler = Client {
            expect: expect.clone(),
            seen: seen.clone(),
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
                let mut handle = client::connect_stream(Arc::new(client_config()), tcp, handler)
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
        })?;
        let host_key = seen.lock().ok().and_then(|s| s.clone()).unwrap_or_default();
        Ok(SshSession {
            runtime,
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
            .runtime
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
        self.runtime.block_on(async {
            tokio::time::timeout(limit, async {
            let mut ch = self
                .handle
                .channel_open_session()
                .await
                .map_err(failed)?;
            ch.exec(true, command).await.map_err(failed)?;
            let mut writer = ch.make_writer();
            let feed = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                tokio::io::copy(&mut stdin, &mut writer).await?;
                writer.shutdown().await
            });
            let _feeding = AbortOnDrop(feed);
            let mut out = ExecOutput::default();
            while let Some(msg) = ch.wait().await {
                match msg {
                    ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                    ChannelMsg::ExtendedData { data, ext: 1 } => {
                        out.stderr.extend_from_slice(&data)
                    }
                    ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                    ChannelMsg::Failure => {
                        return Err(Error::refused(format!(
                            "{what} refused to run `{command}`"
                        ))
                        .with_help(
                            "Check the node account's authorized_keys options (see the README's remote nodes section).",
                        ))
                    }
                    _ => {}
                }
            }
            Ok(out)
            })
            .await
            .map_err(|_| late())?
        })
    }
}

/// A command running on the node for as long as a session with it lasts (`sendense-sna
/// source`): lines in on its standard input, lines out of its standard output, read on the
/// session's runtime. Its standard error goes to the log. Dropping it closes the channel: the
/// command sees its input end (and the session's end when the connection drops).
pub struct RemoteProcess {
    input: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    _pump: AbortOnDrop<()>,
}

/// The output of a [`RemoteProcess`], line by line; an error (its exit status, a lost
/// connection) last.
pub type RemoteLines = std::sync::mpsc::Receiver<std::io::Result<String>>;

impl std::fmt::Debug for RemoteProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteProcess").finish_non_exhaustive()
    }
}

impl RemoteProcess {
    /// Sends one line (a newline is added).
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
        let mut ch = self.runtime.block_on(async {
            let ch = self.handle.channel_open_session().await.map_err(failed)?;
            ch.exec(true, command).await.map_err(failed)?;
            Ok::<_, Error>(ch)
        })?;
        let (input, mut calls) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
        let (out, lines) = std::sync::mpsc::channel();
        let what = self.what.clone();
        let pump = self.runtime.spawn(async move {
            let mut stdout: Vec<u8> = Vec::new();
            let mut stderr: Vec<u8> = Vec::new();
            let mut status = None;
            let mut feeding = true;
            loop {
                tokio::select! {
                    call = calls.recv(), if feeding => match call {
                        Some(bytes) => {
                            if ch.data(&bytes[..]).await.is_err() {
                                feeding = false;
                            }
                        }
                        None => {
                            let _ = ch.eof().await;
                            feeding = false;
                        }
                    },
                    msg = ch.wait() => match msg {
                        Some(ChannelMsg::Data { data }) => {
                            stdout.extend_from_slice(&data);
                            while let Some(at) = stdout.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = stdout.drain(..=at).collect();
                                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                                if out.send(Ok(text)).is_err() {
                                    return;
                                }
                            }
                        }
                        Some(ChannelMsg::ExtendedData { data, .. }) => {
                            stderr.extend_from_slice(&data);
                            while let Some(at) = stderr.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = stderr.drain(..=at).collect();
                                tracing::info!("{what}: {}", String::from_utf8_lossy(&line).trim_end());
                            }
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => status = Some(exit_status),
                        Some(ChannelMsg::Failure) => {
                            let _ = out.send(Err(std::io::Error::other("the node refused to run the command")));
                            return;
                        }
                        Some(_) => {}
                        None => break,
                    },
                }
            }
            let end = match status {
                Some(0) => return,
                Some(s) => format!("it ended with exit status {s}"),
                None => "the connection to the node ended".to_string(),
            };
            let _ = out.send(Err(std::io::Error::other(end)));
        });
        Ok((
            RemoteProcess {
                input: Some(input),
                _pump: AbortOnDrop(pump),
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
        let handle = &self.handle;
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                handle.disconnect(russh::Disconnect::ByApplication, "", "en"),
            )
            .await
        });
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
        Error::refused(format!("{what} did not accept the key"))
            .with_help("Add the hub's public key to the node account's authorized_keys (see the README's remote nodes section).")
    };
    let failed =
        |e: russh::Error| Error::new(ErrorKind::External, format!("signing in to {what}: {e}"));
    match &target.identity {
        Some(path) => {
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
        for bad in ["", "u@", "h:0", "h:x", "h;rm -rf", "u u@h", "[fd00::5"] {
            assert!(SshTarget::parse(bad, "root", None).is_err(), "{bad}");
        }
    }
}
