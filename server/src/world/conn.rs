//! A connection as the world sees it: a bounded queue of serialized frames and a control block
//! that closes it. The connection task owns the socket; the world never waits on it.
//!
//! **Direct writes.** A WebSocket connection attaches its socket ([`ConnHandle::attach`]). Then a
//! frame pushed while nothing is queued and the connection's writer is idle is written to the
//! socket at once, by the pushing thread, with one non-blocking `writev` of the WebSocket
//! header and the shared payload — no queue slot, no wake-up of the writer task, no copy into
//! a write buffer. This is the common case of a chat fan-out: each delivery costs one syscall.
//! Anything that cannot be written whole at once (a full socket buffer, a partial write) goes
//! into the queue, and from then on frames queue behind it until the writer has drained it, so
//! the order of frames on the wire is always the order of the pushes. Every push and every take
//! happens under the connection's output lock, which is what makes "nothing queued and the
//! writer idle" a fact and not a guess.
//!
//! **The queue** is a `VecDeque` under that same lock (every push takes the lock anyway), with
//! the writer's waker beside it: an idle connection's queue holds no allocation at all (a
//! channel would keep its first block of slots, ~1.8 KiB, per connection), and the memory a
//! burst made it grow is given back as soon as the writer has emptied it.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use landworld_shared::limits::close_code;
use landworld_shared::protocol::ws::ServerFrame;
use tokio::sync::Notify;
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
    /// The frames of a shared batch from an index on: the part of a room's batch a connection
    /// does not have yet (it got the first ones in an earlier round).
    Tail(Arc<[OutFrame]>, usize),
    /// Bytes already framed for the wire: the rest of a direct write the socket took only part
    /// of, or a control frame (a pong, a close reply) written by the WebSocket protocol layer.
    Raw(Bytes),
}

impl Out {
    /// The text frames, in order (none for [`Out::Raw`]).
    pub fn frames(&self) -> &[OutFrame] {
        match self {
            Out::One(f) => std::slice::from_ref(f),
            Out::Many(v) => v,
            Out::Tail(v, from) => v.get(*from..).unwrap_or_default(),
            Out::Raw(_) => &[],
        }
    }

    /// How many frames this item counts for against [`SEND_QUEUE`].
    pub fn count(&self) -> usize {
        match self {
            Out::Raw(_) => 1,
            other => other.frames().len(),
        }
    }

    /// Appends the item's wire bytes (WebSocket framing included) to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        match self {
            Out::Raw(b) => buf.extend_from_slice(b),
            other => {
                for f in other.frames() {
                    let (h, n) = text_header(f.len());
                    buf.extend_from_slice(&h[..n]);
                    buf.extend_from_slice(f.as_bytes());
                }
            }
        }
    }
}

/// The header of an unmasked server-to-client frame with FIN set: its bytes and length.
pub fn frame_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | (opcode & 0x0f);
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if let Ok(len16) = u16::try_from(len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len16.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

fn text_header(len: usize) -> ([u8; 10], usize) {
    frame_header(0x1, len)
}

/// A close frame with `code` and `reason`, ready for the wire.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let (h, n) = frame_header(0x8, 2 + reason.len());
    let mut out = Vec::with_capacity(n + 2 + reason.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
    out
}

/// A socket that frames can be written to without blocking (see the module docs).
pub trait DirectWrite: Send + Sync + std::fmt::Debug {
    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

/// Frames queued per connection before it counts as a slow consumer (counted in frames, not
/// queue items, so batching changes nothing about when a client is too slow).
pub const SEND_QUEUE: usize = 1024;

/// Frames written per `writev` by a direct write (two slices each: header and payload).
const DIRECT_CHUNK: usize = 32;

/// Asks a connection to close with a code. The first request wins.
#[derive(Debug, Default)]
pub struct ConnControl {
    code: AtomicU16,
    /// Set with the token: checking it is one atomic load, where the token takes a lock (the
    /// writer checks on every wake-up).
    closed: AtomicBool,
    token: CancellationToken,
    output: Mutex<Output>,
    /// Signalled when the writer took frames from a queue (room for [`ConnHandle::send_wait`]).
    space: Notify,
}

/// The connection's output state, under one lock (see the module docs).
#[derive(Debug, Default)]
struct Output {
    /// Where frames go directly while nothing is queued and the writer is idle.
    socket: Option<Arc<dyn DirectWrite>>,
    /// The writer took items from the queue and has not finished writing them.
    writing: bool,
    /// The close frame went out: nothing is written after it.
    finished: bool,
    /// A close frame was sent through the output (the protocol layer answering the client's
    /// close): the writer must not send a second one.
    close_sent: bool,
    /// Items waiting for the writer task.
    queue: VecDeque<Out>,
    /// Frames in `queue` (what [`SEND_QUEUE`] limits).
    queued: usize,
    /// The writer task, when it waits for the queue to fill.
    waker: Option<Waker>,
}

/// Queues `item`, lets go of the output lock and wakes the writer if it waits.
fn enqueue(mut out: MutexGuard<'_, Output>, item: Out) {
    out.queued += item.count();
    out.queue.push_back(item);
    let waker = out.waker.take();
    drop(out);
    if let Some(w) = waker {
        w.wake();
    }
}

impl Output {
    /// The writer takes the first item: until it reports [`OutQueue::written`], pushes queue
    /// behind it.
    fn take(&mut self) -> Option<Out> {
        let item = self.queue.pop_front()?;
        self.queued -= item.count();
        self.writing = true;
        if self.queue.is_empty() {
            // Give back what a burst made the queue grow to: an idle connection holds no queue
            // memory.
            self.queue = VecDeque::new();
        }
        Some(item)
    }
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

    /// Stops direct writes and any later output, and lets go of the socket (the connection
    /// is over).
    pub fn release_socket(&self) {
        let mut out = self.output();
        out.finished = true;
        out.socket = None;
    }

    fn output(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a direct write achieved.
enum Direct {
    /// Everything is on the socket.
    Done,
    /// Not written, or only partly: what is left, to be queued.
    Left(Out),
    /// The socket failed (the peer is gone); the reader will see it too.
    Failed,
}

/// Writes `item` to `socket` without blocking, in chunks of [`DIRECT_CHUNK`] frames.
fn write_direct(socket: &dyn DirectWrite, item: Out) -> Direct {
    if let Out::Raw(bytes) = &item {
        return match socket.try_write_vectored(&[IoSlice::new(bytes)]) {
            Ok(n) if n == bytes.len() => Direct::Done,
            Ok(n) => Direct::Left(Out::Raw(bytes.slice(n..))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Direct::Left(item),
            Err(_) => Direct::Failed,
        };
    }
    let frames = item.frames();
    let mut done = 0;
    while done < frames.len() {
        let chunk = &frames[done..frames.len().min(done + DIRECT_CHUNK)];
        let mut hdr = [([0u8; 10], 0usize); DIRECT_CHUNK];
        for (h, f) in hdr.iter_mut().zip(chunk) {
            *h = text_header(f.len());
        }
        let mut slices = [IoSlice::new(&[]); 2 * DIRECT_CHUNK];
        let mut total = 0;
        for (i, f) in chunk.iter().enumerate() {
            slices[2 * i] = IoSlice::new(&hdr[i].0[..hdr[i].1]);
            slices[2 * i + 1] = IoSlice::new(f.as_bytes());
            total += hdr[i].1 + f.len();
        }
        let written = match socket.try_write_vectored(&slices[..2 * chunk.len()]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return Direct::Failed,
        };
        if written == total {
            done += chunk.len();
            continue;
        }
        if written == 0 && done == 0 {
            return Direct::Left(item);
        }
        // A partial write: the rest of this chunk and every later frame, framed, in one piece.
        let mut rest = Vec::new();
        let mut skip = written;
        for s in &slices[..2 * chunk.len()] {
            if skip >= s.len() {
                skip -= s.len();
            } else {
                rest.extend_from_slice(&s[skip..]);
                skip = 0;
            }
        }
        Out::Many(frames[done + chunk.len()..].into()).encode_into(&mut rest);
        return Direct::Left(Out::Raw(rest.into()));
    }
    Direct::Done
}

/// The world's end of a connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub conn_id: Uuid,
    control: Arc<ConnControl>,
}

impl ConnHandle {
    /// A handle and the receiving end the connection task drains.
    pub fn new(conn_id: Uuid) -> (Self, OutQueue, Arc<ConnControl>) {
        let control = Arc::new(ConnControl::default());
        (Self { conn_id, control: control.clone() }, OutQueue { control: control.clone() }, control)
    }

    /// Lets pushes write to `socket` directly while nothing is queued (see the module docs).
    pub fn attach(&self, socket: Arc<dyn DirectWrite>) {
        self.control.output().socket = Some(socket);
    }

    /// Queues a frame without waiting, for the connection's writer task: never a syscall on
    /// the calling thread, which is what the world's tick needs. A full queue means the client
    /// cannot keep up: it is closed with 4008 (it recovers what it missed on reconnect) and
    /// nobody else waits.
    pub fn send(&self, frame: &OutFrame) -> bool {
        self.push(Out::One(frame.clone()), false)
    }

    /// Sends a frame, writing it to the socket on the calling thread when nothing is queued
    /// (see the module docs); otherwise as [`Self::send`]. For tasks whose job is writing to
    /// many connections — the chat fan-out, a connection's own reader — never the world.
    pub fn send_now(&self, frame: &OutFrame) -> bool {
        self.push(Out::One(frame.clone()), true)
    }

    /// Several frames as one item (see [`Out::Many`]), written like [`Self::send_now`].
    pub fn send_many_now(&self, frames: &Arc<[OutFrame]>) -> bool {
        self.send_tail_now(frames, 0)
    }

    /// The frames of a shared batch from index `from` on, as one item (see [`Out::Tail`]),
    /// written like [`Self::send_now`].
    pub fn send_tail_now(&self, frames: &Arc<[OutFrame]>, from: usize) -> bool {
        match frames.len().saturating_sub(from) {
            0 => true,
            1 => self.send_now(&frames[frames.len() - 1]),
            _ if from == 0 => self.push(Out::Many(frames.clone()), true),
            _ => self.push(Out::Tail(frames.clone(), from), true),
        }
    }

    /// Bytes already framed for the wire (the protocol layer's control frames, from the
    /// connection's reader), written like [`Self::send_now`].
    pub fn send_raw(&self, bytes: Bytes) -> bool {
        self.push(Out::Raw(bytes), true)
    }

    fn push(&self, item: Out, direct: bool) -> bool {
        let mut out = self.control.output();
        if out.finished {
            return false;
        }
        if let Out::Raw(bytes) = &item
            && bytes.first().is_some_and(|b| b & 0x0f == 0x8)
        {
            // A close frame (the answer to the client's close): the last thing on the wire.
            out.finished = true;
            out.close_sent = true;
        }
        let item = if direct {
            match self.write_if_idle(&mut out, item) {
                Ok(rest) => rest,
                Err(sent) => return sent,
            }
        } else {
            item
        };
        if out.queued + item.count() > SEND_QUEUE {
            drop(out);
            self.slow_consumer();
            return false;
        }
        enqueue(out, item);
        true
    }

    /// With the output lock held: writes `item` to the socket when one is attached, nothing is
    /// queued and the writer is idle. `Ok` is what is left to queue (all of `item` when it could
    /// not be written now); `Err` is the send's result when nothing is left to queue.
    fn write_if_idle(&self, out: &mut Output, item: Out) -> Result<Out, bool> {
        let idle = !out.writing && out.queue.is_empty();
        let Some(socket) = out.socket.as_ref().filter(|_| idle) else { return Ok(item) };
        match write_direct(socket.as_ref(), item) {
            Direct::Done => Err(true),
            Direct::Left(rest) => Ok(rest),
            Direct::Failed => {
                // The peer is gone: stop writing; the reader sees the same and closes.
                out.socket = None;
                self.control.close(1000);
                Err(false)
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

    /// Serializes and queues a frame (as [`Self::send`]).
    pub fn send_frame(&self, frame: &ServerFrame) -> bool {
        self.send(&encode(frame))
    }

    /// Serializes a frame and sends it as [`Self::send_now`] (the connection's own reader
    /// answering its client: the answer goes out at once, before a close that may follow).
    pub fn send_frame_now(&self, frame: &ServerFrame) -> bool {
        self.send_now(&encode(frame))
    }

    /// Queues a frame, waiting for room in the queue (history replay: a long replay must not
    /// count as a slow consumer). False once the connection is closed.
    pub async fn send_wait(&self, frame: OutFrame) -> bool {
        loop {
            if self.control.is_closed() {
                return false;
            }
            // Registered before looking, so that room made in between is not missed.
            let space = self.control.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut out = self.control.output();
                if out.finished {
                    return false;
                }
                if out.queued < SEND_QUEUE {
                    let item = match self.write_if_idle(&mut out, Out::One(frame)) {
                        Ok(rest) => rest,
                        Err(sent) => return sent,
                    };
                    enqueue(out, item);
                    return true;
                }
            }
            tokio::select! {
                () = &mut space => {}
                () = self.control.closed() => return false,
            }
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

/// The connection task's end of the queue: what it takes is no longer counted as queued, and
/// until it reports [`Self::written`], pushes queue behind what it took.
#[derive(Debug)]
pub struct OutQueue {
    control: Arc<ConnControl>,
}

impl Drop for OutQueue {
    /// Nobody drains the queue any more (the connection is gone): later sends are refused
    /// instead of filling it, and what it holds is freed.
    fn drop(&mut self) {
        self.finish();
    }
}

/// [`OutQueue::try_recv`] found nothing queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEmpty;

impl OutQueue {
    /// Waits for at least one item and takes up to `limit` (at least one). It waits as long as
    /// nothing is queued: the connection's writer also watches [`ConnControl::closed`].
    pub async fn recv_many(&mut self, buf: &mut Vec<Out>, limit: usize) -> usize {
        let n = std::future::poll_fn(|cx| {
            let mut out = self.control.output();
            if out.queue.is_empty() {
                if !out.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    out.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let mut n = 0;
            while n < limit.max(1)
                && let Some(item) = out.take()
            {
                buf.push(item);
                n += 1;
            }
            Poll::Ready(n)
        })
        .await;
        self.control.space.notify_waiters();
        n
    }

    /// Takes one item if there is one.
    pub fn try_recv(&mut self) -> Result<Out, QueueEmpty> {
        let item = self.control.output().take().ok_or(QueueEmpty)?;
        self.control.space.notify_waiters();
        Ok(item)
    }

    /// Everything taken so far is on the socket: when nothing else is queued, pushes may
    /// write directly again.
    pub fn written(&self) {
        let mut out = self.control.output();
        if out.queue.is_empty() {
            out.writing = false;
        }
    }

    /// The close frame is going out: nothing is written after it, and the socket is let go.
    /// Returns whether a close frame already went through the output (then the caller sends
    /// none).
    pub fn finish(&self) -> bool {
        let mut out = self.control.output();
        out.finished = true;
        out.writing = true;
        out.socket = None;
        out.queue = VecDeque::new();
        out.queued = 0;
        out.close_sent
    }
}

/// Serializes a frame once for any number of recipients.
pub fn encode(frame: &ServerFrame) -> OutFrame {
    OutFrame::from(frame.to_json())
}

#[cfg(test)]
/// Server frames (unmasked) back into their payloads; close frames as `close:<code>` (tests).
pub(crate) fn decode_frames(mut wire: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while wire.len() >= 2 {
        let opcode = wire[0] & 0x0f;
        let (len, at) = match wire[1] {
            126 => (usize::from(u16::from_be_bytes([wire[2], wire[3]])), 4),
            127 => (u64::from_be_bytes(wire[2..10].try_into().expect("8 bytes")) as usize, 10),
            n => (usize::from(n), 2),
        };
        let payload = &wire[at..at + len];
        out.push(match opcode {
            0x8 => format!("close:{}", u16::from_be_bytes([payload[0], payload[1]])),
            _ => String::from_utf8(payload.to_vec()).expect("utf-8"),
        });
        wire = &wire[at + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn frames(n: usize) -> Arc<[OutFrame]> {
        (0..n).map(|i| OutFrame::from(i.to_string())).collect()
    }

    /// A socket that takes at most `room` more bytes (unlimited when None) and keeps them.
    #[derive(Debug, Default)]
    struct FakeSocket {
        wire: Mutex<Vec<u8>>,
        room: Mutex<Option<usize>>,
    }

    impl FakeSocket {
        fn limit(&self, room: Option<usize>) {
            *self.room.lock().expect("lock") = room;
        }

        /// The text frames on the wire so far.
        fn frames(&self) -> Vec<String> {
            decode_frames(&self.wire.lock().expect("lock"))
        }
    }

    impl DirectWrite for FakeSocket {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.room.lock().expect("lock");
            if *room == Some(0) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut wire = self.wire.lock().expect("lock");
            let mut n = 0;
            for b in bufs {
                let take = room.map_or(b.len(), |r| b.len().min(r - n));
                wire.extend_from_slice(&b[..take]);
                n += take;
                if take < b.len() {
                    break;
                }
            }
            if let Some(r) = room.as_mut() {
                *r -= n;
            }
            Ok(n)
        }
    }

    /// What the connection's writer task does with a queue item.
    fn write_item(socket: &FakeSocket, item: &Out) {
        let mut bytes = Vec::new();
        item.encode_into(&mut bytes);
        socket.wire.lock().expect("lock").extend_from_slice(&bytes);
    }

    fn attached() -> (ConnHandle, OutQueue, Arc<FakeSocket>) {
        let (handle, rx, _control) = ConnHandle::new(Uuid::new_v4());
        let socket = Arc::new(FakeSocket::default());
        handle.attach(socket.clone());
        (handle, rx, socket)
    }

    #[test]
    fn an_idle_connection_writes_frames_straight_to_its_socket() {
        let (handle, mut rx, socket) = attached();
        assert!(handle.send_now(&OutFrame::from("a")));
        assert!(handle.send_many_now(&frames(3)));
        let big = OutFrame::from("x".repeat(70_000));
        assert!(handle.send_now(&big));
        assert!(rx.try_recv().is_err(), "nothing was queued");
        let on_wire = socket.frames();
        assert_eq!(on_wire[..4], ["a", "0", "1", "2"]);
        assert_eq!(on_wire[4].len(), 70_000, "a 64-bit length header");
    }

    #[test]
    fn a_batch_tail_goes_out_alone_whether_written_directly_or_queued() {
        let (handle, mut rx, socket) = attached();
        let batch = frames(5);
        assert!(handle.send_tail_now(&batch, 2));
        assert!(handle.send_tail_now(&batch, 5), "an empty tail sends nothing");
        assert!(rx.try_recv().is_err(), "nothing was queued");
        assert_eq!(socket.frames(), ["2", "3", "4"]);
        // A full socket: the tail is queued as one item, sharing the batch.
        socket.limit(Some(0));
        assert!(handle.send_tail_now(&batch, 3));
        let Ok(item) = rx.try_recv() else { panic!("the tail was queued") };
        assert!(matches!(&item, Out::Tail(shared, 3) if Arc::ptr_eq(shared, &batch)));
        assert_eq!(item.count(), 2);
        write_item(&socket, &item);
        assert_eq!(socket.frames(), ["2", "3", "4", "3", "4"]);
    }

    #[test]
    fn a_partial_write_queues_the_rest_and_later_frames_wait_behind_it() {
        let (handle, mut rx, socket) = attached();
        socket.limit(Some(5));
        assert!(handle.send_now(&OutFrame::from("hello world")));
        socket.limit(None);
        assert!(handle.send_now(&OutFrame::from("next")), "queued behind the rest");
        assert_eq!(socket.wire.lock().expect("lock").len(), 5, "the socket got only what it took");
        while let Ok(item) = rx.try_recv() {
            write_item(&socket, &item);
        }
        rx.written();
        assert!(handle.send_now(&OutFrame::from("after")));
        assert!(rx.try_recv().is_err(), "idle again: written directly");
        assert_eq!(socket.frames(), ["hello world", "next", "after"]);
    }

    #[test]
    fn frames_queue_while_the_writer_holds_earlier_ones() {
        let (handle, mut rx, socket) = attached();
        socket.limit(Some(0));
        assert!(handle.send_now(&OutFrame::from("first")), "blocked: queued");
        let first = rx.try_recv().expect("queued");
        // The writer holds `first`; the socket has room again, but a direct write now would
        // overtake it.
        socket.limit(None);
        assert!(handle.send_now(&OutFrame::from("second")));
        assert!(socket.frames().is_empty());
        write_item(&socket, &first);
        rx.written();
        assert!(handle.send_now(&OutFrame::from("third")), "still behind `second`");
        let second = rx.try_recv().expect("second queued");
        write_item(&socket, &second);
        let third = rx.try_recv().expect("third queued");
        write_item(&socket, &third);
        rx.written();
        assert!(handle.send_now(&OutFrame::from("fourth")));
        assert!(rx.try_recv().is_err());
        assert_eq!(socket.frames(), ["first", "second", "third", "fourth"]);
    }

    #[test]
    fn queued_sends_never_write_on_the_calling_thread_and_direct_ones_wait_behind_them() {
        let (handle, mut rx, socket) = attached();
        assert!(handle.send(&OutFrame::from("from the world")));
        assert!(socket.frames().is_empty(), "the world's thread never writes to a socket");
        assert!(handle.send_now(&OutFrame::from("a delivery")));
        assert!(socket.frames().is_empty(), "behind the queued frame");
        while let Ok(item) = rx.try_recv() {
            write_item(&socket, &item);
        }
        rx.written();
        assert_eq!(socket.frames(), ["from the world", "a delivery"]);
    }

    #[test]
    fn nothing_is_written_after_the_close_frame() {
        let (handle, rx, socket) = attached();
        assert!(handle.send_now(&OutFrame::from("last")));
        rx.finish();
        socket.wire.lock().expect("lock").extend_from_slice(&close_frame(4008, "too slow"));
        assert!(!handle.send(&OutFrame::from("late")));
        assert!(!handle.send_now(&OutFrame::from("late")));
        assert!(!handle.send_raw(Bytes::from_static(b"\x88\x02\x03\xe8")));
        assert_eq!(socket.frames(), ["last", "close:4008"]);
    }

    #[test]
    fn a_close_frame_through_the_output_is_the_last_frame() {
        let (handle, rx, socket) = attached();
        // The protocol layer answers the client's close.
        assert!(handle.send_raw(Bytes::from_static(b"\x88\x02\x03\xe8")));
        assert!(!handle.send_now(&OutFrame::from("late")));
        assert!(rx.finish(), "the writer learns that no second close frame is needed");
        assert_eq!(socket.frames(), ["close:1000"]);
    }

    #[test]
    fn frame_headers_use_the_shortest_length_encoding() {
        assert_eq!(frame_header(0x1, 125), ([0x81, 125, 0, 0, 0, 0, 0, 0, 0, 0], 2));
        assert_eq!(frame_header(0x1, 126).1, 4);
        assert_eq!(&frame_header(0x1, 65_535).0[..4], &[0x81, 126, 0xff, 0xff]);
        assert_eq!(&frame_header(0x1, 65_536).0[..10], &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let close = close_frame(1000, &"r".repeat(200));
        assert_eq!(close.len(), 2 + 125, "a control frame's payload is at most 125 bytes");
    }

    #[test]
    fn the_queue_limit_counts_frames_not_batches() {
        let (handle, _rx, control) = ConnHandle::new(Uuid::new_v4());
        let hundred = frames(100);
        for _ in 0..10 {
            assert!(handle.send_many_now(&hundred));
        }
        assert!(!control.is_closed());
        assert!(!handle.send_many_now(&hundred), "1,100 frames queued is over the limit");
        assert!(control.is_closed());
        assert_eq!(control.code(), close_code::RATE_LIMITED);
    }

    #[test]
    fn sends_are_refused_once_nobody_drains_the_queue() {
        let (handle, rx, control) = ConnHandle::new(Uuid::new_v4());
        assert!(handle.send(&OutFrame::from("read")));
        drop(rx);
        assert!(!handle.send(&OutFrame::from("nobody reads this")));
        assert!(!handle.send_now(&OutFrame::from("nor this")));
        assert!(!control.is_closed(), "not a slow consumer: just gone");
        assert_eq!(control.output().queue.capacity(), 0, "the queue was freed");
    }

    #[test]
    fn an_emptied_queue_gives_its_memory_back() {
        let (handle, mut rx, control) = ConnHandle::new(Uuid::new_v4());
        for i in 0..500 {
            assert!(handle.send(&OutFrame::from(i.to_string())));
        }
        assert!(control.output().queue.capacity() >= 500);
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, 500);
        let out = control.output();
        assert_eq!((out.queued, out.queue.capacity()), (0, 0), "nothing kept by an idle connection");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime")
    }

    #[test]
    fn the_writer_waits_until_something_is_queued() {
        let (handle, mut rx, _control) = ConnHandle::new(Uuid::new_v4());
        runtime().block_on(async {
            let mut taken = Vec::new();
            let waiting = tokio::time::timeout(Duration::from_millis(50), rx.recv_many(&mut taken, 8)).await;
            assert!(waiting.is_err(), "nothing queued: the writer waits");
            let pusher = handle.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                pusher.send(&OutFrame::from("wake up"));
            });
            let n = tokio::time::timeout(Duration::from_secs(5), rx.recv_many(&mut taken, 8)).await.expect("woken");
            assert_eq!(n, 1);
            assert_eq!(taken[0].frames()[0].as_str(), "wake up");
        });
    }

    #[test]
    fn send_wait_waits_for_room_instead_of_closing() {
        let (handle, mut rx, control) = ConnHandle::new(Uuid::new_v4());
        for _ in 0..SEND_QUEUE / 8 {
            assert!(handle.send_many_now(&frames(8)));
        }
        runtime().block_on(async {
            let waiter = handle.clone();
            let replay = tokio::spawn(async move { waiter.send_wait(OutFrame::from("replayed")).await });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!replay.is_finished(), "a full queue: the replay waits");
            assert!(!control.is_closed(), "and is not a slow consumer");
            assert!(rx.try_recv().is_ok(), "the writer takes 8 frames");
            let sent = tokio::time::timeout(Duration::from_secs(5), replay).await.expect("room").expect("task");
            assert!(sent);
        });
        let mut last = None;
        while let Ok(item) = rx.try_recv() {
            last = Some(item);
        }
        assert_eq!(last.expect("queued").frames()[0].as_str(), "replayed", "queued behind the rest");
    }

    #[test]
    fn taking_frames_makes_room_again() {
        let (handle, mut rx, control) = ConnHandle::new(Uuid::new_v4());
        let hundred = frames(100);
        for _ in 0..10 {
            assert!(handle.send_many_now(&hundred));
        }
        let mut taken = Vec::new();
        let n = tokio::runtime::Builder::new_current_thread()
            .build()
            .map(|rt| rt.block_on(rx.recv_many(&mut taken, 5)))
            .expect("runtime");
        assert_eq!(n, 5);
        assert!(rx.try_recv().is_ok());
        for _ in 0..6 {
            assert!(handle.send_many_now(&hundred), "600 frames taken, 600 fit again");
        }
        assert!(!control.is_closed());
    }
}
