//! The chat WebSocket's RFC 6455 frame reader on arbitrary bytes, fed in arbitrary pieces: never
//! panics; what it reads does not depend on how the bytes were split; text messages are within
//! the size limit; while waiting for more input it holds at most one frame's worth of bytes.
#![no_main]

use landworld_server::api::ws::frames::{FrameReader, Incoming};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1024;

/// Everything the reader yields until it needs more input or refuses the input.
fn drain(r: &mut FrameReader, out: &mut Vec<Result<Incoming, u16>>) -> bool {
    loop {
        match r.next_frame() {
            Ok(Some(f)) => {
                if let Incoming::Text(t) = &f {
                    assert!(t.len() <= MAX, "text over the limit: {}", t.len());
                }
                out.push(Ok(f));
            }
            Ok(None) => {
                assert!(r.buffered() <= MAX + 14, "buffered {} bytes while waiting", r.buffered());
                return true;
            }
            Err(v) => {
                out.push(Err(v.close_code()));
                return false;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte chooses where the input is split.
    let Some((&step, wire)) = data.split_first() else { return };
    let step = usize::from(step).max(1);
    let mut whole = FrameReader::new(MAX);
    whole.feed(wire);
    let mut expected = Vec::new();
    drain(&mut whole, &mut expected);
    let mut pieces = FrameReader::new(MAX);
    let mut got = Vec::new();
    for chunk in wire.chunks(step) {
        pieces.feed(chunk);
        if !drain(&mut pieces, &mut got) {
            break;
        }
    }
    assert_eq!(got, expected, "split every {step} bytes");
});
