//! A connection as the world sees it: a bounded queue of serialized frames and a control block
//! that closes it. The connection task owns the socket; the world never waits on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};

use axum::extract::ws::Utf8Bytes;
use landworld_shared::limits::close_code;
use landworld_shared::protocol::ws::ServerFrame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One serialized text frame; cloning shares the bytes.
pub type OutFrame = Utf8Bytes;

/// One item of a connection's queue: a frame, or several frames sent together — one room's
/// messages of a commit batch, the same `Arc` queued to every member connection. A batch costs
/// one queue slot, one wake-up of the connection's writer and one socket write however many
/// messages it holds.
#[derive(Clone, Debug)]
pub enum Out {
    One(OutFrame),
    Many(Arc<[OutFrame]>),
}

impl Out {
    /// The frames, in order.
    pub fn frames(&self) -> &[OutFrame] {
        match self {
            Out::One(f) => std::slice::from_ref(f),
            Out::Many(v) => v,
        }
    }
}

/// Frames queued per connection before it counts as a slow consumer (counted in frames, not
/// queue items, so batching changes nothing about when a client is too slow).
pub const SEND_QUEUE: usize = 1024;

/// Asks a connection to close with a code. The first request wins.
#[derive(Debug, Default)]
pub struct ConnControl {
    code: AtomicU16,
    /// Set with the token: checking it is one atomic load, where the token takes a lock (the
    /// writer checks on every wake-up).
    closed: AtomicBool,
    token: CancellationToken,
    /// Frames in the queue (pushed and not yet taken by the connection task).
    queued: AtomicUsize,
}

impl ConnControl {
    pub fn close(&self, code: u16) {
        let _ = self.code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.closed.store(true, Ordering::Release);
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
        self.closed.load(Ordering::Acquire)
    }
}

/// The world's end of a connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub conn_id: Uuid,
    tx: mpsc::Sender<Out>,
    control: Arc<ConnControl>,
}

impl ConnHandle {
    /// A handle and the receiving end the connection task drains.
    pub fn new(conn_id: Uuid) -> (Self, OutQueue, Arc<ConnControl>) {
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let control = Arc::new(ConnControl::default());
        (Self { conn_id, tx, control: control.clone() }, OutQueue { rx, control: control.clone() }, control)
    }

    /// Queues a frame without waiting. A full queue means the client cannot keep up: it is
    /// closed with 4008 (it recovers what it missed on reconnect) and nobody else waits.
    pub fn send(&self, frame: &OutFrame) -> bool {
        self.push(Out::One(frame.clone()))
    }

    /// Queues several frames as one item (see [`Out::Many`]); same rules as [`Self::send`].
    pub fn send_many(&self, frames: &Arc<[OutFrame]>) -> bool {
        match frames.len() {
            0 => true,
            1 => self.send(&frames[0]),
            _ => self.push(Out::Many(frames.clone())),
        }
    }

    fn push(&self, item: Out) -> bool {
        let n = item.frames().len();
        let queued = &self.control.queued;
        if queued.fetch_add(n, Ordering::AcqRel) + n > SEND_QUEUE {
            queued.fetch_sub(n, Ordering::AcqRel);
            self.slow_consumer();
            return false;
        }
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                queued.fetch_sub(n, Ordering::AcqRel);
                self.slow_consumer();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                queued.fetch_sub(n, Ordering::AcqRel);
                false
            }
        }
    }

    fn slow_consumer(&self) {
        if !self.control.is_closed() {
            tracing::warn!(conn_id = %self.conn_id, "send queue full; closing slow consumer");
            metrics::counter!("landworld_ws_slow_consumers_total").increment(1);
        }
        self.control.close(close_code::RATE_LIMITED);
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
        let sent = tokio::select! {
            sent = self.tx.send(Out::One(frame)) => sent.is_ok(),
            () = self.control.closed() => false,
        };
        if sent {
            self.control.queued.fetch_add(1, Ordering::AcqRel);
        }
        sent
    }

    /// Asks the connection to close with `code`.
    pub fn close(&self, code: u16) {
        self.control.close(code);
    }

    pub fn is_closed(&self) -> bool {
        self.control.is_closed()
    }
}

/// The connection task's end of the queue: what it takes is no longer counted as queued.
#[derive(Debug)]
pub struct OutQueue {
    rx: mpsc::Receiver<Out>,
    control: Arc<ConnControl>,
}

impl OutQueue {
    /// Waits for at least one item and takes up to `limit`; 0 once every sender is gone.
    pub async fn recv_many(&mut self, buf: &mut Vec<Out>, limit: usize) -> usize {
        let start = buf.len();
        let n = self.rx.recv_many(buf, limit).await;
        let frames: usize = buf[start..].iter().map(|o| o.frames().len()).sum();
        self.taken(frames);
        n
    }

    /// Takes one item if there is one.
    pub fn try_recv(&mut self) -> Result<Out, mpsc::error::TryRecvError> {
        let item = self.rx.try_recv()?;
        self.taken(item.frames().len());
        Ok(item)
    }

    fn taken(&self, frames: usize) {
        // `send_wait` counts its frame after the push, so a racing take may come first.
        let _ =
            self.control.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| Some(q.saturating_sub(frames)));
    }
}

/// Serializes a frame once for any number of recipients.
pub fn encode(frame: &ServerFrame) -> OutFrame {
    OutFrame::from(frame.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Arc<[OutFrame]> {
        (0..n).map(|i| OutFrame::from(i.to_string())).collect()
    }

    #[test]
    fn the_queue_limit_counts_frames_not_batches() {
        let (handle, _rx, control) = ConnHandle::new(Uuid::new_v4());
        let hundred = frames(100);
        for _ in 0..10 {
            assert!(handle.send_many(&hundred));
        }
        assert!(!control.is_closed());
        assert!(!handle.send_many(&hundred), "1,100 frames queued is over the limit");
        assert!(control.is_closed());
        assert_eq!(control.code(), close_code::RATE_LIMITED);
    }

    #[test]
    fn taking_frames_makes_room_again() {
        let (handle, mut rx, control) = ConnHandle::new(Uuid::new_v4());
        let hundred = frames(100);
        for _ in 0..10 {
            assert!(handle.send_many(&hundred));
        }
        let mut taken = Vec::new();
        let n = tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(rx.recv_many(&mut taken, 5)))
            .expect("runtime");
        assert_eq!(n, 5);
        assert!(rx.try_recv().is_ok());
        for _ in 0..6 {
            assert!(handle.send_many(&hundred), "600 frames taken, 600 fit again");
        }
        assert!(!control.is_closed());
    }
}
