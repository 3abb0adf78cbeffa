//! Prompt acknowledgements on TCP connections.
//!
//! Servers that leave Nagle's algorithm on (qemu-nbd does) hold a small reply back until the
//! previous one is acknowledged, while Linux delays the acknowledgement of data that nothing is
//! sent back with by up to 40 ms. Whenever the client only waits — during the handshake, for the
//! last replies of a copy — every such pair costs 40 ms. Asking for an immediate acknowledgement
//! (`TCP_QUICKACK`, which the kernel clears again on its own) before each read removes the
//! stall.

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

/// A TCP stream, or the read half of one.
pub(crate) trait Tcp {
    fn socket(&self) -> &TcpStream;
}

impl Tcp for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Tcp for OwnedReadHalf {
    fn socket(&self) -> &TcpStream {
        self.as_ref()
    }
}

/// A stream that asks for a quick acknowledgement before every read.
#[derive(Debug)]
pub(crate) struct QuickAck<S>(pub(crate) S);

impl<S: Tcp + AsyncRead + Unpin> AsyncRead for QuickAck<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // A failure only costs the optimisation.
        let _ = self.0.socket().set_quickack(true);
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for QuickAck<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
