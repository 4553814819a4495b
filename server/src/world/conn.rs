//! A connection as the world sees it: a bounded queue of serialized frames and a control block
//! that closes it. The connection task owns the socket; the world never waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use axum::extract::ws::Utf8Bytes;
use landworld_shared::limits::close_code;
use landworld_shared::protocol::ws::ServerFrame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One serialized text frame; cloning shares the bytes.
pub type OutFrame = Utf8Bytes;

/// Frames queued per connection before it counts as a slow consumer.
pub const SEND_QUEUE: usize = 1024;

/// Asks a connection to close with a code. The first request wins.
#[derive(Debug, Default)]
pub struct ConnControl {
    code: AtomicU16,
    token: CancellationToken,
}

impl ConnControl {
    pub fn close(&self, code: u16) {
        let _ = self.code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// The requested close code, once [`Self::closed`] fired.
    pub fn code(&self) -> u16 {
        self.code.load(Ordering::Acquire)
    }

    pub fn closed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// The world's end of a connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub conn_id: Uuid,
    tx: mpsc::Sender<OutFrame>,
    control: Arc<ConnControl>,
}

impl ConnHandle {
    /// A handle and the receiving end the connection task drains.
    pub fn new(conn_id: Uuid) -> (Self, mpsc::Receiver<OutFrame>, Arc<ConnControl>) {
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let control = Arc::new(ConnControl::default());
        (Self { conn_id, tx, control: control.clone() }, rx, control)
    }

    /// Queues a frame without waiting. A full queue means the client cannot keep up: it is
    /// closed with 4008 (it recovers what it missed on reconnect) and nobody else waits.
    pub fn send(&self, frame: &OutFrame) -> bool {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.control.is_closed() {
                    tracing::warn!(conn_id = %self.conn_id, "send queue full; closing slow consumer");
                    metrics::counter!("landworld_ws_slow_consumers_total").increment(1);
                }
                self.control.close(close_code::RATE_LIMITED);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub fn send_frame(&self, frame: &ServerFrame) -> bool {
        self.send(&encode(frame))
    }

    /// Queues a frame, waiting for room in the queue (history replay: a long replay must not
    /// count as a slow consumer). False once the connection is closed.
    pub async fn send_wait(&self, frame: OutFrame) -> bool {
        if self.control.is_closed() {
            return false;
        }
        tokio::select! {
            sent = self.tx.send(frame) => sent.is_ok(),
            () = self.control.closed() => false,
        }
    }

    /// Asks the connection to close with `code`.
    pub fn close(&self, code: u16) {
        self.control.close(code);
    }

    pub fn is_closed(&self) -> bool {
        self.control.is_closed()
    }
}

/// Serializes a frame once for any number of recipients.
pub fn encode(frame: &ServerFrame) -> OutFrame {
    OutFrame::from(frame.to_json())
}
