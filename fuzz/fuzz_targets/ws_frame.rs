//! The chat WebSocket's frame parser on arbitrary text: never panics; a frame either parses (and
//! survives a serialize/parse round trip) or yields an `error` frame with a known code.
#![no_main]

use landworld_shared::protocol::ws::{ServerFrame, error_code, parse_client_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The server only ever parses text frames (valid UTF-8); lossy conversion keeps every input.
    let text = String::from_utf8_lossy(data);
    match parse_client_frame(&text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).expect("client frames serialize");
            assert_eq!(parse_client_frame(&again).ok(), Some(frame), "round trip");
        }
        Err(ServerFrame::Error { code, message, reference }) => {
            assert!(code == error_code::INVALID_FRAME || code == error_code::UNKNOWN_TYPE, "code {code}");
            assert!(!message.is_empty());
            assert!(reference.is_none_or(|r| r.chars().count() <= 64), "unbounded ref");
        }
        Err(other) => panic!("parse error is not an error frame: {other:?}"),
    }
});
