//! The WebSocket protocol on the server's side: the opening handshake (an axum extractor) and
//! RFC 6455 framing of what clients send, read straight off the socket.
//!
//! Why not tungstenite's stream: an idle chat connection should cost as little as possible
//! (issue 3 wants ≤ 8 KiB per idle connection), and a general WebSocket stream keeps a read
//! buffer, a codec, two waker proxies and a message assembler per connection, plus the task that
//! awaits hyper's upgrade around it. Here a connection's whole read state is a [`FrameReader`]:
//! an empty `Vec` and a few words while nothing is arriving. What the server writes is framed in
//! [`crate::world::conn`].
//!
//! Rules enforced (RFC 6455 §5): client frames must be masked; no reserved bits (no extension
//! is negotiated); only the six defined opcodes; control frames unfragmented and ≤ 125 bytes;
//! continuation frames only inside a fragmented message, and no new message before it ends; text
//! must be UTF-8. A message over the limit ends the connection with 1009 (SPEC §4), a protocol
//! violation with 1002, invalid UTF-8 with 1007.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::upgrade::OnUpgrade;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::api::error::ApiError;
use crate::world::conn::frame_header;

/// A WebSocket upgrade request, checked: `GET` with `Connection: upgrade`, `Upgrade: websocket`,
/// `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`, on a connection hyper can hand over.
/// Anything else is refused with 400 and a JSON error.
#[derive(Debug)]
pub struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bad = |msg: &str| ApiError::BadRequest(msg.to_string());
        if parts.method != axum::http::Method::GET {
            return Err(bad("a WebSocket upgrade must be a GET request"));
        }
        if !header_has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(bad("not a WebSocket upgrade: `Connection` header did not include `upgrade`"));
        }
        if !header_has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(bad("not a WebSocket upgrade: `Upgrade` header did not include `websocket`"));
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v.as_bytes() != b"13") {
            return Err(bad("`Sec-WebSocket-Version` header must be 13"));
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(bad("`Sec-WebSocket-Key` header missing"));
        };
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|_| bad("`Sec-WebSocket-Key` header is not valid"))?;
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(bad("this connection cannot be upgraded to a WebSocket"));
        };
        Ok(Self { accept, on_upgrade })
    }
}

impl Upgrade {
    /// The `101 Switching Protocols` answer, and the future that completes once hyper wrote it
    /// and handed the connection over.
    pub fn accept(self) -> (Response, OnUpgrade) {
        let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        (res, self.on_upgrade)
    }
}

/// A client frame or message, as the connection handles it.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole text message (fragments joined), valid UTF-8.
    Text(String),
    /// A whole binary message (the chat protocol has none), its length.
    Binary(usize),
    /// A ping and its payload (answered with a pong carrying the same payload).
    Ping(Bytes),
    /// The client's close frame and its status code, if it had one.
    Close(Option<u16>),
}

/// Why a connection's input ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A message over the size limit: close 1009.
    TooBig,
    /// Broken framing: close 1002.
    Protocol(&'static str),
    /// A text message that is not UTF-8: close 1007.
    InvalidUtf8,
}

impl Violation {
    pub fn close_code(self) -> u16 {
        match self {
            Violation::TooBig => 1009,
            Violation::Protocol(_) => 1002,
            Violation::InvalidUtf8 => 1007,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Violation::TooBig => "frame too big",
            Violation::Protocol(why) => why,
            Violation::InvalidUtf8 => "text frame is not valid UTF-8",
        }
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// Reads client frames from the bytes of a connection (see the module docs).
#[derive(Debug)]
pub struct FrameReader {
    /// Received bytes not yet consumed (a partial frame at most, once [`Self::next_frame`] said
    /// `None`); empty and unallocated while the connection is idle.
    buf: Vec<u8>,
    /// A fragmented message being joined: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
    /// Bytes of a refused frame still to be skipped (while draining before the close).
    skip: u64,
    /// Largest message, in bytes.
    max: usize,
}

impl FrameReader {
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), partial: None, skip: 0, max }
    }

    /// Bytes received and not yet consumed (at most one frame's worth once [`Self::next_frame`]
    /// said `None`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Adds bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        let skip = usize::try_from(self.skip).unwrap_or(usize::MAX).min(data.len());
        self.skip -= skip as u64;
        self.buf.extend_from_slice(&data[skip..]);
    }

    /// The next complete frame or message, `None` until more bytes arrive. After a violation
    /// the reader can go on (to find the client's close frame while the connection closes):
    /// the refused frame's bytes are skipped, also those not yet received.
    pub fn next_frame(&mut self) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some((fin, opcode, at, len, mask)) = self.header()? else {
                self.release_if_empty();
                return Ok(None);
            };
            let total = (at as u64).saturating_add(len);
            let is_control = opcode >= OP_CLOSE;
            if !is_control {
                let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len() as u64);
                if so_far + len > self.max as u64 {
                    // Refused whole: skip it, and forget the message it belonged to.
                    self.partial = None;
                    self.discard(total);
                    return Err(Violation::TooBig);
                }
            }
            // `len` fits the limit (data) or is ≤ 125 (control), so this does not overflow.
            let total = total as usize;
            if self.buf.len() < total {
                return Ok(None);
            }
            let mut payload: Vec<u8> = self.buf[at..total].to_vec();
            self.buf.drain(..total);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            match opcode {
                OP_PING => return Ok(Some(Incoming::Ping(Bytes::from(payload)))),
                OP_PONG => continue,
                OP_CLOSE => {
                    let code = match payload.len() {
                        0 => None,
                        1 => return Err(Violation::Protocol("close frame with a one-byte payload")),
                        _ => Some(u16::from_be_bytes([payload[0], payload[1]])),
                    };
                    return Ok(Some(Incoming::Close(code)));
                }
                OP_CONTINUATION => {
                    let Some((first, mut joined)) = self.partial.take() else {
                        return Err(Violation::Protocol("continuation frame outside a fragmented message"));
                    };
                    joined.extend_from_slice(&payload);
                    if !fin {
                        self.partial = Some((first, joined));
                        continue;
                    }
                    return Self::message(first, joined).map(Some);
                }
                _ => {
                    if self.partial.is_some() {
                        return Err(Violation::Protocol("new message before the fragmented one ended"));
                    }
                    if !fin {
                        self.partial = Some((opcode, payload));
                        continue;
                    }
                    return Self::message(opcode, payload).map(Some);
                }
            }
        }
    }

    fn message(opcode: u8, payload: Vec<u8>) -> Result<Incoming, Violation> {
        if opcode == OP_BINARY {
            return Ok(Incoming::Binary(payload.len()));
        }
        String::from_utf8(payload).map(Incoming::Text).map_err(|_| Violation::InvalidUtf8)
    }

    /// Drops `n` bytes from the front, those not received yet included.
    fn discard(&mut self, n: u64) {
        let now = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
        self.buf.drain(..now);
        self.skip = n - now as u64;
        self.release_if_empty();
    }

    fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
    }

    /// `(fin, opcode, header length, payload length, mask)` of the frame at the start of the
    /// buffer, once its header is complete.
    #[allow(clippy::type_complexity)]
    fn header(&self) -> Result<Option<(bool, u8, usize, u64, [u8; 4])>, Violation> {
        let b = &self.buf;
        let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else { return Ok(None) };
        if b0 & 0x70 != 0 {
            return Err(Violation::Protocol("reserved bits set (no extension was negotiated)"));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if !matches!(opcode, OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
            return Err(Violation::Protocol("unknown opcode"));
        }
        if b1 & 0x80 == 0 {
            return Err(Violation::Protocol("client frames must be masked"));
        }
        let (at, len) = match b1 & 0x7f {
            126 => match b.get(2..4) {
                Some(x) => (4, u64::from(u16::from_be_bytes([x[0], x[1]]))),
                None => return Ok(None),
            },
            127 => match b.get(2..10) {
                Some(x) => {
                    if x[0] & 0x80 != 0 {
                        return Err(Violation::Protocol("payload length with the most significant bit set"));
                    }
                    let mut be = [0u8; 8];
                    be.copy_from_slice(x);
                    (10, u64::from_be_bytes(be))
                }
                None => return Ok(None),
            },
            n => (2, u64::from(n)),
        };
        if opcode >= OP_CLOSE && (!fin || len > 125) {
            return Err(Violation::Protocol("control frames must be whole and at most 125 bytes"));
        }
        let Some(m) = b.get(at..at + 4) else { return Ok(None) };
        Ok(Some((fin, opcode, at + 4, len, [m[0], m[1], m[2], m[3]])))
    }
}

/// A pong answering a ping with `payload`, framed for the wire.
pub fn pong(payload: &[u8]) -> Bytes {
    let (h, n) = frame_header(OP_PONG, payload.len());
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
    out.into()
}

/// The answer to a client's close frame: the same status code (none when it sent none).
pub fn close_reply(code: Option<u16>) -> Bytes {
    match code {
        Some(code) => crate::world::conn::close_frame(code, "").into(),
        None => Bytes::from_static(&[0x88, 0x00]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![b0];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn all(reader: &mut FrameReader) -> Result<Vec<Incoming>, Violation> {
        let mut out = Vec::new();
        while let Some(f) = reader.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_unmasked() {
        let mut wire = frame(0x81, b"hello");
        wire.extend(frame(0x81, "é".repeat(100).as_bytes()));
        wire.extend(frame(0x89, b"p"));
        wire.extend(frame(0x82, &[1, 2, 3]));
        wire.extend(frame(0x88, &1000u16.to_be_bytes()));
        for split in 0..wire.len() {
            let mut r = FrameReader::new(1024);
            r.feed(&wire[..split]);
            let mut got = all(&mut r).expect("valid");
            r.feed(&wire[split..]);
            got.extend(all(&mut r).expect("valid"));
            assert_eq!(
                got,
                [
                    Incoming::Text("hello".into()),
                    Incoming::Text("é".repeat(100)),
                    Incoming::Ping(Bytes::from_static(b"p")),
                    Incoming::Binary(3),
                    Incoming::Close(Some(1000)),
                ],
                "split at {split}"
            );
            assert_eq!(r.buf.capacity(), 0, "nothing kept once everything was read");
        }
    }

    #[test]
    fn fragments_are_joined_around_control_frames() {
        let mut r = FrameReader::new(1024);
        r.feed(&frame(0x01, b"{\"type\":"));
        r.feed(&frame(0x89, b""));
        r.feed(&frame(0x8a, b"unsolicited pong"));
        r.feed(&frame(0x00, b"\"ping\""));
        r.feed(&frame(0x80, b"}"));
        assert_eq!(all(&mut r), Ok(vec![Incoming::Ping(Bytes::new()), Incoming::Text("{\"type\":\"ping\"}".into())]));
    }

    #[test]
    fn a_message_over_the_limit_is_refused_and_skipped_even_before_it_arrived() {
        let mut r = FrameReader::new(100);
        let big = frame(0x81, &[b'x'; 300]);
        r.feed(&big[..50]);
        assert_eq!(r.next_frame(), Err(Violation::TooBig), "refused from its header");
        r.feed(&big[50..]);
        r.feed(&frame(0x88, &1000u16.to_be_bytes()));
        assert_eq!(all(&mut r), Ok(vec![Incoming::Close(Some(1000))]), "the close frame after it is found");
        // Over the limit only when joined.
        let mut r = FrameReader::new(100);
        r.feed(&frame(0x01, &[b'x'; 60]));
        r.feed(&frame(0x80, &[b'x'; 60]));
        assert_eq!(r.next_frame(), Err(Violation::TooBig));
        // Exactly the limit passes.
        let mut r = FrameReader::new(100);
        r.feed(&frame(0x81, &[b'x'; 100]));
        assert_eq!(all(&mut r), Ok(vec![Incoming::Text("x".repeat(100))]));
    }

    #[test]
    fn broken_framing_is_a_protocol_violation() {
        let cases: [(Vec<u8>, u16); 8] = [
            (vec![0x81, 0x02, b'h', b'i'], 1002),                    // unmasked
            (frame(0xc1, b"hi"), 1002),                              // RSV1 without an extension
            (frame(0x83, b"hi"), 1002),                              // reserved opcode
            (frame(0x09, b""), 1002),                                // fragmented ping
            (frame(0x89, &[0; 126]), 1002),                          // control frame over 125 bytes
            (frame(0x80, b"x"), 1002),                               // continuation without a message
            ([frame(0x01, b"a"), frame(0x81, b"b")].concat(), 1002), // new message inside one
            (frame(0x81, &[0xff, 0xfe]), 1007),                      // not UTF-8
        ];
        for (wire, code) in cases {
            let mut r = FrameReader::new(1024);
            r.feed(&wire);
            let err = all(&mut r).expect_err("refused");
            assert_eq!(err.close_code(), code, "{wire:x?}: {err:?}");
        }
        let mut r = FrameReader::new(1024);
        r.feed(&frame(0x88, &[3]));
        assert_eq!(r.next_frame(), Err(Violation::Protocol("close frame with a one-byte payload")));
    }

    /// Found by the `ws_wire` fuzz target: a 64-bit length of 2^64 − 1 overflowed the frame's
    /// total size (RFC 6455: the most significant bit must be 0).
    #[test]
    fn the_largest_lengths_are_refused_without_overflow() {
        let mut r = FrameReader::new(1024);
        let mut wire = vec![0x80, 0xff];
        wire.extend_from_slice(&[0xff; 8]);
        wire.extend_from_slice(&[1, 2, 3, 4]);
        r.feed(&wire);
        assert_eq!(r.next_frame(), Err(Violation::Protocol("payload length with the most significant bit set")));
        // The largest length the protocol allows: too big, and skipped without overflow.
        let mut r = FrameReader::new(1024);
        let mut wire = vec![0x81, 0xff, 0x7f];
        wire.extend_from_slice(&[0xff; 7]);
        wire.extend_from_slice(&[1, 2, 3, 4, b'x']);
        r.feed(&wire);
        assert_eq!(r.next_frame(), Err(Violation::TooBig));
        assert_eq!(r.buffered(), 0);
        r.feed(&[0u8; 100]);
        assert_eq!(r.buffered(), 0, "still skipping the refused frame");
    }

    #[test]
    fn replies_are_framed_for_the_wire() {
        assert_eq!(&pong(b"abc")[..], &[0x8a, 3, b'a', b'b', b'c']);
        assert_eq!(&close_reply(Some(1000))[..], &[0x88, 2, 0x03, 0xe8]);
        assert_eq!(&close_reply(None)[..], &[0x88, 0]);
    }
}
