//! The HTTP listener's connections, shared between hyper and the chat WebSocket's writers.
//!
//! axum serves each accepted TCP connection through a [`SocketIo`]: hyper reads requests and
//! writes responses through it, and after a WebSocket upgrade the protocol layer (tungstenite)
//! reads client frames through it. The same socket reaches the WebSocket handler as connect
//! info ([`Peer`]), so the connection's frames can be written to it directly — one `writev`
//! by the thread that delivers them, see [`crate::world::conn`] — instead of through a writer
//! task and tungstenite's write buffer. Once a WebSocket connection takes the socket over
//! ([`Socket::hand_output_to`]), what tungstenite itself writes (pongs, the answer to a close)
//! goes through the connection's ordered output too, so nothing interleaves on the wire.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::world::conn::{ConnHandle, DirectWrite};

/// One accepted TCP connection.
#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    /// The WebSocket connection that owns the output, once there is one.
    output: Mutex<Option<ConnHandle>>,
}

impl Socket {
    fn new(stream: TcpStream) -> Self {
        Self { stream, output: Mutex::new(None) }
    }

    /// From now on, bytes written through [`SocketIo`] go through `conn`'s ordered output.
    pub fn hand_output_to(&self, conn: ConnHandle) {
        *self.output.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    }

    /// Ends [`Self::hand_output_to`] (the connection is over; this also drops the handle the
    /// socket kept, which refers back to the socket).
    pub fn take_output_back(&self) {
        self.output.lock().unwrap_or_else(PoisonError::into_inner).take();
    }

    /// Writes all of `buf`, waiting for the socket to take it.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl DirectWrite for Socket {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.stream.try_write_vectored(bufs)
    }
}

/// The I/O object hyper serves a connection on.
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
        let owner = self.0.output.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(conn) = owner {
            // A control frame of the WebSocket protocol layer: in order with everything else.
            // Refused only once the connection closed its output, when it no longer matters.
            conn.send_raw(Bytes::copy_from_slice(buf));
            return Poll::Ready(Ok(buf.len()));
        }
        loop {
            ready!(self.0.stream.poll_write_ready(cx))?;
            match self.0.stream.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
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
