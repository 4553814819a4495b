//! The load tool's WebSocket client: the handshake and RFC 6455 framing over a plain
//! `TcpStream`, for the one thing the tool does a million times a run — read a server frame.
//!
//! The tool shares the machine's cores with the server it measures, so what it spends per
//! delivery shows up as the server's latency. A general client (tokio-tungstenite) costs several
//! layers per frame (waker proxies on every poll, a zeroed read chunk per read, a message
//! object per frame); here a frame is a header check and a `split_to` of the read buffer.
//! Client frames are masked as RFC 6455 requires; fragmented text is reassembled; pings get
//! pongs; anything else is a protocol error.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest frame or message the tool accepts from the server.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Largest HTTP response head.
const MAX_HEAD: usize = 16 * 1024;

/// What the server sent.
#[derive(Debug, PartialEq)]
pub enum Event {
    Text(Bytes),
    /// A close frame and its code, if it had one.
    Close(Option<u16>),
}

/// A client WebSocket connection.
#[derive(Debug)]
pub struct RawWs {
    stream: TcpStream,
    buf: BytesMut,
    /// A fragmented text message being reassembled.
    partial: Option<BytesMut>,
    /// Mask keys: a per-connection xorshift (RFC 6455 wants unpredictable keys against
    /// intermediaries; a load tool on loopback only needs them present).
    mask_state: u64,
}

fn protocol(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl RawWs {
    /// Connects to `ws://host:port/path` and completes the opening handshake.
    pub async fn connect(url: &str) -> io::Result<Self> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| protocol("only ws:// URLs"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        let nonce: [u8; 16] = rand::random();
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, nonce);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut ws =
            Self { stream, buf: BytesMut::with_capacity(4096), partial: None, mask_state: rand::random::<u64>() | 1 };
        ws.stream.write_all(request.as_bytes()).await?;
        let head_len = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if ws.buf.len() > MAX_HEAD {
                return Err(protocol("response head too long"));
            }
            ws.buf.reserve(4096);
            if ws.stream.read_buf(&mut ws.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let head = ws.buf.split_to(head_len);
        let head = std::str::from_utf8(&head).map_err(|_| protocol("response head is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            return Err(protocol(format!("upgrade refused: {status}")));
        }
        let accept = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, v)| v.trim());
        if accept != Some(derive_accept_key(key.as_bytes()).as_str()) {
            return Err(protocol("wrong Sec-WebSocket-Accept"));
        }
        Ok(ws)
    }

    /// The next text message or close frame; None at end of stream. Cancel-safe: bytes read
    /// stay in the buffer for the next call.
    pub async fn next(&mut self) -> Option<io::Result<Event>> {
        loop {
            match self.parse() {
                Ok(Some(event)) => return Some(Ok(event)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            self.buf.reserve(4096);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Takes complete frames from the buffer until one makes an event.
    fn parse(&mut self) -> io::Result<Option<Event>> {
        loop {
            let Some((fin, opcode, header, len)) = header(&self.buf)? else { return Ok(None) };
            if len > MAX_MESSAGE {
                return Err(protocol("frame too big"));
            }
            if self.buf.len() < header + len {
                self.buf.reserve(header + len - self.buf.len());
                return Ok(None);
            }
            self.buf.advance(header);
            let payload = self.buf.split_to(len);
            match (opcode, self.partial.as_mut()) {
                (0x1, None) if fin => return Ok(Some(Event::Text(payload.freeze()))),
                (0x1, None) => self.partial = Some(payload),
                (0x0, Some(partial)) => {
                    if partial.len() + payload.len() > MAX_MESSAGE {
                        return Err(protocol("message too big"));
                    }
                    partial.extend_from_slice(&payload);
                    if fin {
                        let whole = self.partial.take().unwrap_or_default();
                        return Ok(Some(Event::Text(whole.freeze())));
                    }
                }
                (0x8, _) => {
                    let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Event::Close(code)));
                }
                (0x9, _) => {
                    // Best effort: a pong the socket cannot take now is skipped (the server
                    // does not ping; a peer that does will ping again).
                    let pong = self.frame(0xA, &payload);
                    let _ = self.stream.try_write(&pong);
                }
                (0xA, _) | (0x2, None) => {}
                _ => return Err(protocol(format!("unexpected frame (opcode {opcode})"))),
            }
        }
    }

    /// A masked client frame.
    fn frame(&mut self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.mask_state ^= self.mask_state << 13;
        self.mask_state ^= self.mask_state >> 7;
        self.mask_state ^= self.mask_state << 17;
        let key = (self.mask_state as u32).to_be_bytes();
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let frame = self.frame(0x1, text.as_bytes());
        self.stream.write_all(&frame).await
    }

    /// Sends a close frame with `code`.
    pub async fn send_close(&mut self, code: u16) -> io::Result<()> {
        let frame = self.frame(0x8, &code.to_be_bytes());
        self.stream.write_all(&frame).await
    }
}

/// `(fin, opcode, header length, payload length)` of the frame at the start of `buf`, once
/// its header is complete. Server frames must not be masked.
fn header(buf: &[u8]) -> io::Result<Option<(bool, u8, usize, usize)>> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(protocol("reserved bits set (no extension was negotiated)"));
    }
    if b1 & 0x80 != 0 {
        return Err(protocol("masked frame from the server"));
    }
    let (header, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(b) => (4, usize::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (10, usize::try_from(u64::from_be_bytes(be)).unwrap_or(usize::MAX))
            }
            None => return Ok(None),
        },
        n => (2, usize::from(n)),
    };
    Ok(Some((b0 & 0x80 != 0, b0 & 0x0f, header, len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client over a real loopback connection, with the server's end to write frames into.
    async fn pair() -> io::Result<(RawWs, TcpStream)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        Ok((RawWs { stream: client, buf: BytesMut::new(), partial: None, mask_state: 7 }, server))
    }

    #[tokio::test]
    async fn frames_split_anywhere_come_out_whole_and_fragments_are_joined() -> io::Result<()> {
        let (mut ws, mut server) = pair().await?;
        let mut wire = vec![0x81, 5];
        wire.extend_from_slice(b"hello");
        // "abc" + "def" as a fragmented text message with a ping in between.
        wire.extend_from_slice(&[0x01, 3, b'a', b'b', b'c', 0x89, 1, b'p', 0x80, 3, b'd', b'e', b'f']);
        let long = "x".repeat(300);
        wire.extend_from_slice(&[0x81, 126, 1, 44]);
        wire.extend_from_slice(long.as_bytes());
        wire.extend_from_slice(&[0x88, 2, 0x0f, 0xa8]);
        // Written a few bytes at a time, so frames arrive split across reads.
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(7) {
                server.write_all(chunk).await?;
                server.flush().await?;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            // The pong the client sent for the ping: masked, payload "p".
            let mut pong = [0u8; 7];
            server.read_exact(&mut pong).await?;
            Ok::<_, io::Error>(pong)
        });
        let mut events = Vec::new();
        while let Some(event) = ws.next().await {
            let event = event?;
            let end = matches!(event, Event::Close(_));
            events.push(event);
            if end {
                break;
            }
        }
        assert_eq!(events[0], Event::Text(Bytes::from_static(b"hello")));
        assert_eq!(events[1], Event::Text(Bytes::from_static(b"abcdef")));
        assert_eq!(events[2], Event::Text(Bytes::from(long)));
        assert_eq!(events[3], Event::Close(Some(4008)));
        let pong = writer.await.map_err(io::Error::other)??;
        assert_eq!(pong[..2], [0x8a, 0x81], "a masked pong of one byte");
        assert_eq!(pong[6] ^ pong[2], b'p', "unmasks to the ping's payload");
        Ok(())
    }

    #[test]
    fn headers_of_each_length_encoding() {
        assert_eq!(header(&[0x81, 5]).ok().flatten(), Some((true, 1, 2, 5)));
        assert_eq!(header(&[0x01, 126, 1, 0]).ok().flatten(), Some((false, 1, 4, 256)));
        assert_eq!(header(&[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]).ok().flatten(), Some((true, 2, 10, 65_536)));
        assert_eq!(header(&[0x81]).ok().flatten(), None, "incomplete");
        assert_eq!(header(&[0x81, 126, 1]).ok().flatten(), None, "incomplete length");
        assert!(header(&[0x81, 0x85]).is_err(), "masked");
        assert!(header(&[0xc1, 5]).is_err(), "RSV1 without an extension");
    }
}
