//! The HTTP listener's connections, shared between hyper and the chat WebSocket's writers.
//!
//! axum serves each accepted TCP connection through a [`SocketIo`]: hyper reads requests and
//! writes responses through it. The same socket reaches the WebSocket handler as connect info
//! ([`Peer`]): after the upgrade, hyper lets go of the connection and the chat WebSocket reads
//! client frames from the socket itself ([`crate::api::ws::frames`]) and writes its frames to it
//! directly — one `writev` by the thread that delivers them, see [`crate::world::conn`].

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::world::conn::DirectWrite;

/// One accepted TCP connection.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
}

impl Socket {
    fn new(stream: TcpStream) -> Self {
        Self { stream }
    }

    /// Waits until the socket may have bytes to read (or the peer is gone).
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Reads what is there without waiting: `WouldBlock` when nothing is, `Ok(0)` at the end of
    /// the stream.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.try_read(buf)
    }

    /// Writes all of `buf`, waiting for the socket to take it.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match std::future::poll_fn(|cx| self.poll_write(cx, buf)).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    /// Writes what the socket takes of `buf`, waiting until it takes something (the one write
    /// loop: [`Self::write_all`] for the chat WebSocket's writer, [`SocketIo`] for hyper).
    fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl DirectWrite for Socket {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.try_write_vectored(bufs)
    }
}

/// The I/O object hyper serves a connection on (and hands back, wrapped in hyper-util's
/// `TokioIo`, when a request upgrades the connection).
#[derive(Debug, Clone)]
pub struct SocketIo(Arc<Socket>);

impl AsyncRead for SocketIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        // Read through a small stack buffer: `ReadBuf::initialize_unfilled` would zero the
        // caller's whole spare capacity (hyper's 8 KiB request buffer) on every read, making
        // memory resident that an idle connection never uses.
        let mut chunk = [0u8; 2048];
        loop {
            ready!(self.0.stream.poll_read_ready(cx))?;
            let room = buf.remaining().min(chunk.len());
            match self.0.stream.try_read(&mut chunk[..room]) {
                Ok(n) => {
                    buf.put_slice(&chunk[..n]);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when its last holder lets go of it.
        Poll::Ready(Ok(()))
    }
}

/// The HTTP listener: accepts TCP connections (with `TCP_NODELAY`: chat frames are small and
/// latency-bound, and with Nagle a frame written while the previous one is unacknowledged
/// waits for the client's delayed ACK, tens of milliseconds).
#[derive(Debug)]
pub struct SocketListener(pub TcpListener);

impl Listener for SocketListener {
    type Io = SocketIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "setting TCP_NODELAY failed");
                    }
                    return (SocketIo(Arc::new(Socket::new(stream))), addr);
                }
                // As axum's own TCP listener: a connection that failed while being accepted is
                // skipped; anything else (out of file descriptors) is logged and retried later.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Connect info of a request: the peer's address and the connection's socket.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub socket: Arc<Socket>,
}

impl Connected<IncomingStream<'_, SocketListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, SocketListener>) -> Self {
        Self { addr: *stream.remote_addr(), socket: stream.io().0.clone() }
    }
}
