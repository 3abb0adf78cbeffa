//! A read-only NBD server on a Unix socket, for QEMU to read a disk that Sendense serves
//! itself: a mount reads its restore point through it, every block checked against the
//! digests on the way (see [`crate::mount`]).
//!
//! Fixed newstyle negotiation with `NBD_OPT_GO`, `NBD_OPT_INFO` and `NBD_OPT_EXPORT_NAME` (any
//! export name: there is one disk), simple replies only (a client asking for structured
//! replies is told they are unsupported and goes on without them), and `READ`, `FLUSH` and
//! `DISC`; writes are refused with `EPERM`. Requests of a connection are answered in order by
//! one thread. Everything a client sends is untrusted: lengths are bounded before anything is
//! allocated, a malformed request ends the connection.

use super::proto::*;
use crate::error::{Error, Result};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest read served, and the most a client may send at once (the default NBD limit).
pub const MAX_REQUEST: u32 = 32 << 20;

/// The largest option a client may send.
const MAX_OPTION: u32 = 4096;

/// How often waiting threads look whether the server is stopping.
const POLL: Duration = Duration::from_millis(200);

/// How long a reply may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;

/// A read the served disk could not answer (it keeps what went wrong for its owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadFailed;

/// A disk served read-only.
pub trait ServedDisk: Send + Sync {
    /// Its size in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes at `offset` (inside the disk); an error is answered to the
    /// client as `EIO` (the disk keeps what went wrong for its owner).
    fn read(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), ReadFailed>;
}

/// A running server; stopped when dropped (its socket file removed).
pub struct NbdServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for NbdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl NbdServer {
    /// Serves `disk` on a new Unix socket at `path` (made 0600).
    pub fn start(path: &Path, disk: Arc<dyn ServedDisk>) -> Result<NbdServer> {
        let listener = UnixListener::bind(path).map_err(|e| Error::io("listening on", path, e))?;
        use std::os::unix::fs::PermissionsExt;
        let ready = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("setting the mode of", path, e))
            .and_then(|()| {
                listener
                    .set_nonblocking(true)
                    .map_err(|e| Error::io("listening on", path, e))
            });
        if let Err(e) = ready {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let listener = std::thread::Builder::new()
            .name("nbd-server".into())
            .spawn(move || accept(listener, disk, stopping))
            .map_err(|e| Error::internal(format!("starting the NBD server: {e}")))?;
        Ok(NbdServer {
            path: path.to_path_buf(),
            stop,
            listener: Some(listener),
        })
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.listener.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept(listener: UnixListener, disk: Arc<dyn ServedDisk>, stop: Arc<AtomicBool>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (disk, stop) = (disk.clone(), stop.clone());
                if let Ok(t) = std::thread::Builder::new()
                    .name("nbd-connection".into())
                    .spawn(move || {
                        let _ = serve(stream, &*disk, &stop);
                    })
                {
                    connections.push(t);
                }
                connections.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL / 4),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for t in connections {
        let _ = t.join();
    }
}

/// Why a connection ended early.
#[derive(Debug)]
enum End {
    /// The client closed it, asked to, or the server is stopping.
    Closed,
    /// It sent something the protocol does not allow.
    Malformed,
}

impl From<std::io::Error> for End {
    fn from(_: std::io::Error) -> End {
        End::Closed
    }
}

/// A connection whose reads give up when the server stops.
struct Conn<'a> {
    stream: UnixStream,
    stop: &'a AtomicBool,
}

impl Conn<'_> {
    fn read_full(&mut self, buf: &mut [u8]) -> std::result::Result<(), End> {
        let mut done = 0;
        while done < buf.len() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(End::Closed);
            }
            match self.stream.read(&mut buf[done..]) {
                Ok(0) => return Err(End::Closed),
                Ok(n) => done += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Err(End::Closed),
            }
        }
        Ok(())
    }

    fn u32(&mut self) -> std::result::Result<u32, End> {
        let mut b = [0; 4];
        self.read_full(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> std::result::Result<u64, End> {
        let mut b = [0; 8];
        self.read_full(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    /// Reads and drops `len` bytes.
    fn skip(&mut self, mut len: u64) -> std::result::Result<(), End> {
        let mut buf = [0u8; 8192];
        while len > 0 {
            let n = len.min(buf.len() as u64) as usize;
            self.read_full(&mut buf[..n])?;
            len -= n as u64;
        }
        Ok(())
    }

    fn option_reply(&mut self, option: u32, kind: u32, data: &[u8]) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(20 + data.len());
        b.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.stream.write_all(&b)
    }

    fn simple_reply(&mut self, error: u32, cookie: u64, data: &[u8]) -> std::io::Result<()> {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&error.to_be_bytes());
        b[8..16].copy_from_slice(&cookie.to_be_bytes());
        self.stream.write_all(&b)?;
        self.stream.write_all(data)
    }
}

const TRANSMISSION_FLAGS: u16 =
    TFLAG_HAS_FLAGS | TFLAG_READ_ONLY | TFLAG_SEND_FLUSH | TFLAG_CAN_MULTI_CONN;

/// One connection: negotiation, then requests until the client leaves.
fn serve(
    stream: UnixStream,
    disk: &dyn ServedDisk,
    stop: &AtomicBool,
) -> std::result::Result<(), End> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    // A client that stops reading ends its connection rather than holding the server.
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let mut c = Conn { stream, stop };
    let mut greeting = [0u8; 18];
    greeting[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    greeting[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    greeting[16..18].copy_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    c.stream.write_all(&greeting)?;
    let client = c.u32()?;
    if client & FLAG_C_FIXED_NEWSTYLE == 0
        || client & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0
    {
        return Err(End::Malformed);
    }
    negotiate(&mut c, disk, client & FLAG_C_NO_ZEROES != 0)?;
    transmit(&mut c, disk)
}

/// Options until the client starts transmission (`Ok`) or leaves.
fn negotiate(
    c: &mut Conn<'_>,
    disk: &dyn ServedDisk,
    no_zeroes: bool,
) -> std::result::Result<(), End> {
    loop {
        if c.u64()? != IHAVEOPT {
            return Err(End::Malformed);
        }
        let option = c.u32()?;
        let len = c.u32()?;
        if len > MAX_OPTION {
            return Err(End::Malformed);
        }
        let mut data = vec![0u8; len as usize];
        c.read_full(&mut data)?;
        match option {
            OPT_EXPORT_NAME => {
                let mut b = Vec::with_capacity(134);
                b.extend_from_slice(&disk.size().to_be_bytes());
                b.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                if !no_zeroes {
                    b.extend_from_slice(&[0u8; 124]);
                }
                c.stream.write_all(&b)?;
                return Ok(());
            }
            OPT_ABORT => {
                let _ = c.option_reply(option, REP_ACK, &[]);
                return Err(End::Closed);
            }
            OPT_GO | OPT_INFO => {
                let Some(infos) = info_requests(&data) else {
                    c.option_reply(option, REP_ERR_INVALID, &[])?;
                    continue;
                };
                let mut export = Vec::with_capacity(12);
                export.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                export.extend_from_slice(&disk.size().to_be_bytes());
                export.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                c.option_reply(option, REP_INFO, &export)?;
                if infos.contains(&INFO_BLOCK_SIZE) {
                    let mut sizes = Vec::with_capacity(14);
                    sizes.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                    for v in [1u32, 4096, MAX_REQUEST] {
                        sizes.extend_from_slice(&v.to_be_bytes());
                    }
                    c.option_reply(option, REP_INFO, &sizes)?;
                }
                c.option_reply(option, REP_ACK, &[])?;
                if option == OPT_GO {
                    return Ok(());
                }
            }
            _ => c.option_reply(option, REP_ERR_UNSUP, &[])?,
        }
    }
}

/// The information types an `NBD_OPT_GO`/`NBD_OPT_INFO` asks for; `None` when malformed.
fn info_requests(data: &[u8]) -> Option<Vec<u16>> {
    let name_len = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let at = 4usize.checked_add(name_len)?;
    let n = u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?) as usize;
    let list = data.get(at + 2..)?;
    if list.len() != n * 2 {
        return None;
    }
    Some(
        list.chunks(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect(),
    )
}

/// Requests until `DISC` or the end of the connection.
fn transmit(c: &mut Conn<'_>, disk: &dyn ServedDisk) -> std::result::Result<(), End> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut h = [0u8; REQUEST_HEADER_LEN];
        c.read_full(&mut h)?;
        let field = |r: std::ops::Range<usize>| &h[r];
        if u32::from_be_bytes(field(0..4).try_into().unwrap_or_default()) != REQUEST_MAGIC {
            return Err(End::Malformed);
        }
        let kind = u16::from_be_bytes([h[6], h[7]]);
        let cookie = u64::from_be_bytes(field(8..16).try_into().unwrap_or_default());
        let offset = u64::from_be_bytes(field(16..24).try_into().unwrap_or_default());
        let len = u32::from_be_bytes(field(24..28).try_into().unwrap_or_default());
        let inside = offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= disk.size());
        match kind {
            CMD_READ if len > MAX_REQUEST || !inside => c.simple_reply(EINVAL, cookie, &[])?,
            CMD_READ => {
                buf.resize(len as usize, 0);
                match disk.read(offset, &mut buf) {
                    Ok(()) => c.simple_reply(0, cookie, &buf)?,
                    Err(ReadFailed) => c.simple_reply(EIO, cookie, &[])?,
                }
            }
            CMD_WRITE => {
                if len > MAX_REQUEST {
                    return Err(End::Malformed);
                }
                c.skip(u64::from(len))?;
                c.simple_reply(EPERM, cookie, &[])?;
            }
            CMD_TRIM | CMD_WRITE_ZEROES => c.simple_reply(EPERM, cookie, &[])?,
            CMD_FLUSH => c.simple_reply(0, cookie, &[])?,
            CMD_DISC => return Ok(()),
            _ => c.simple_reply(EINVAL, cookie, &[])?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nbd::{ConnectOptions, NbdClient, NbdUrl};

    /// A disk whose byte at `i` is `i % 251`, failing reads that touch `bad`.
    struct Pattern {
        size: u64,
        bad: u64,
    }

    impl ServedDisk for Pattern {
        fn size(&self) -> u64 {
            self.size
        }

        fn read(&self, offset: u64, buf: &mut [u8]) -> std::result::Result<(), ReadFailed> {
            if (offset..offset + buf.len() as u64).contains(&self.bad) {
                return Err(ReadFailed);
            }
            for (i, b) in buf.iter_mut().enumerate() {
                *b = ((offset + i as u64) % 251) as u8;
            }
            Ok(())
        }
    }

    fn serving(dir: &Path) -> NbdServer {
        let disk = Arc::new(Pattern {
            size: 1 << 20,
            bad: 700_000,
        });
        NbdServer::start(&dir.join("s.sock"), disk).unwrap()
    }

    #[test]
    fn qemu_reads_what_is_served_and_gets_eio_for_a_bad_read() {
        let dir = tempfile::tempdir().unwrap();
        let server = serving(dir.path());
        let url = format!("nbd+unix:///?socket={}", server.path().display());
        let out = dir.path().join("copy.raw");
        // Well short of the bad byte: read exactly.
        let ok = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(format!(
                "json:{{\"driver\":\"raw\",\"size\":524288,\"file\":{{\"driver\":\"nbd\",\"path\":\"{}\"}}}}",
                server.path().display()
            ))
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), 524288);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        // The whole disk: the read over the bad byte fails, and says so.
        let bad = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", &url])
            .arg(dir.path().join("all.raw"))
            .output()
            .unwrap();
        assert!(!bad.status.success());
        assert!(
            String::from_utf8_lossy(&bad.stderr).contains("Input/output error"),
            "{}",
            String::from_utf8_lossy(&bad.stderr)
        );
    }

    #[tokio::test]
    async fn writes_are_refused_and_bounds_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let server = serving(dir.path());
        let url: NbdUrl = format!("nbd+unix:///?socket={}", server.path().display())
            .parse()
            .unwrap();
        let client = NbdClient::connect(&url, &ConnectOptions::default())
            .await
            .unwrap();
        assert_eq!(client.info().size, 1 << 20);
        assert!(client.info().read_only());
        let data = client.read(1000, vec![0; 4000]).await.unwrap();
        assert!(data
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((1000 + i) % 251) as u8));
        assert!(client.write(0, &[1, 2, 3], false).await.is_err());
        assert!(client.read((1 << 20) - 10, vec![0; 20]).await.is_err());
        // The connection is still good after the refusals.
        assert_eq!(client.read(0, vec![0; 3]).await.unwrap(), vec![0, 1, 2]);
        client.disconnect().await;
    }

    #[test]
    fn garbage_ends_the_connection_and_stopping_removes_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let server = serving(dir.path());
        let mut s = UnixStream::connect(server.path()).unwrap();
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).unwrap();
        s.write_all(&[0xff; 64]).unwrap();
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Closed: at its end, or reset over the bytes it did not read.
        match s.read_to_end(&mut rest) {
            Ok(n) => assert_eq!(n, 0),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
        let path = server.path().to_path_buf();
        drop(server);
        assert!(!path.exists());
    }
}
