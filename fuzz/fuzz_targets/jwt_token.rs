//! Access-token verification on arbitrary strings: never panics, and only a token signed with
//! the server's key, with HS256, and not expired passes.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use landworld_server::auth::TokenKeys;
use libfuzzer_sys::fuzz_target;

/// The key the seed corpus's `valid` token is signed with.
static KEYS: LazyLock<TokenKeys> = LazyLock::new(|| TokenKeys::from_secret(&[7u8; 32], Duration::from_secs(60)));

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(claims) = KEYS.verify(&text) {
        // Only reachable with a correctly signed token: its claims are well-formed.
        assert!(claims.exp >= chrono_now() - 5, "expired token accepted");
    }
});

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
