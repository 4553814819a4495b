//! Property tests of the game protocol's decoders (they read bytes from the network):
//!
//! - any bytes given to [`decode_client`] / [`decode_server`] / [`apply_snapshot`] give a value or
//!   an error, never a panic; a decoded client message re-encodes to bytes that decode to it;
//! - a snapshot body encoded from any baseline and any current state (sorted, unique ids, any
//!   coordinates) applies back onto that baseline to exactly the current state, and a body cut
//!   short never applies.

use std::collections::BTreeMap;

use landworld_shared::protocol::game::{Entry, apply_snapshot, decode_client, decode_server, encode, encode_snapshot};
use landworld_shared::world::TilePos;
use proptest::prelude::*;

fn state() -> impl Strategy<Value = Vec<Entry>> {
    let coord = prop_oneof![-40i32..40, any::<i32>()];
    prop::collection::btree_map(0u16..300, (coord.clone(), coord), 0..80)
        .prop_map(|m: BTreeMap<u16, (i32, i32)>| m.into_iter().map(|(id, (x, y))| (id, TilePos::new(x, y))).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), base in state()) {
        if let Ok(msg) = decode_client(&bytes) {
            prop_assert_eq!(decode_client(&encode(&msg)), Ok(msg));
        }
        let _ = decode_server(&bytes);
        let _ = apply_snapshot(&base, &bytes, TilePos::new(3, -7));
    }

    #[test]
    fn snapshots_round_trip(base in state(), current in state(), vx in any::<i32>(), vy in any::<i32>()) {
        let viewer = TilePos::new(vx, vy);
        let body = encode_snapshot(&base, &current, viewer);
        prop_assert_eq!(apply_snapshot(&base, &body, viewer), Ok(current.clone()));
        if !body.is_empty() {
            prop_assert!(apply_snapshot(&base, &body[..body.len() - 1], viewer).is_err());
        }
    }
}
