//! The netcode private key and connect tokens.
//!
//! The key comes from `--netcode-key` / `LANDWORLD_NETCODE_KEY` (base64 of exactly 32 bytes) or
//! is generated once into `<data-dir>/netcode.key` (mode 0600, like `jwt.key`). The same key
//! signs the connect tokens `POST /api/v1/game/connect-token` hands out and lets the netcode
//! server (in the world thread) open them; it never leaves the server.
//!
//! A token names its user in netcode's user data (see
//! [`landworld_shared::protocol::game::encode_user_data`]); its `client_id` is a fresh random
//! number per token, so a user may hold several game connections like several WebSockets.
//! Tokens expire after [`CONNECT_TOKEN_TTL_SECS`]; netcode refuses expired tokens, tokens sealed
//! with another key, and a token already used from another address.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use landworld_shared::limits::{CONNECT_TOKEN_TTL_SECS, GAME_TIMEOUT_SECS};
use landworld_shared::protocol::game::{PROTOCOL_ID, encode_user_data};
use renet_netcode::{ConnectToken, NETCODE_KEY_BYTES};
use uuid::Uuid;

use crate::auth::{AuthError, read_or_create_key_file};

/// Why the netcode key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the configured netcode_key must be base64 of exactly {NETCODE_KEY_BYTES} bytes")]
    BadConfigured,
    #[error("{0}")]
    File(#[from] AuthError),
    #[error("the key in {0} must be base64 of exactly {NETCODE_KEY_BYTES} bytes")]
    BadFile(String),
}

/// Loads the configured key, or reads (creating on first start) `<data_dir>/netcode.key`.
pub fn load_or_create_key(configured: Option<&str>, data_dir: &Path) -> Result<[u8; NETCODE_KEY_BYTES], KeyError> {
    if let Some(text) = configured {
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| KeyError::BadConfigured)?;
        return <[u8; NETCODE_KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| KeyError::BadConfigured);
    }
    let path = data_dir.join("netcode.key");
    let bytes = read_or_create_key_file(&path, NETCODE_KEY_BYTES)?;
    <[u8; NETCODE_KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| KeyError::BadFile(path.display().to_string()))
}

/// A connect token as the API returns it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token's bytes (netcode's 2048-byte connect token).
    pub bytes: Vec<u8>,
    pub client_id: u64,
    pub expires_in: Duration,
    pub server_addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot issue a connect token: {0}")]
    Generate(String),
}

/// Issues connect tokens for the game server.
#[derive(Clone)]
pub struct GameTokens {
    key: [u8; NETCODE_KEY_BYTES],
    public_addr: SocketAddr,
    ttl: Duration,
}

impl std::fmt::Debug for GameTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameTokens").field("public_addr", &self.public_addr).finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch: netcode's clock for token creation and expiry.
pub fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

impl GameTokens {
    pub fn new(key: [u8; NETCODE_KEY_BYTES], public_addr: SocketAddr) -> Self {
        Self { key, public_addr, ttl: Duration::from_secs(CONNECT_TOKEN_TTL_SECS) }
    }

    /// The address clients connect to (the one in every token).
    pub fn public_addr(&self) -> SocketAddr {
        self.public_addr
    }

    pub fn key(&self) -> &[u8; NETCODE_KEY_BYTES] {
        &self.key
    }

    /// A fresh token for this user, valid for [`CONNECT_TOKEN_TTL_SECS`].
    pub fn issue(&self, user_id: Uuid, username: &str) -> Result<IssuedToken, TokenError> {
        let user_data = encode_user_data(user_id, username).map_err(|e| TokenError::Generate(e.to_string()))?;
        // 0 is a valid netcode id, but keep it out so that "no client" stays unambiguous in logs.
        let client_id = rand::random::<u64>().max(1);
        let token = ConnectToken::generate(
            unix_now(),
            PROTOCOL_ID,
            self.ttl.as_secs(),
            client_id,
            GAME_TIMEOUT_SECS,
            vec![self.public_addr],
            Some(&user_data),
            &self.key,
        )
        .map_err(|e| TokenError::Generate(e.to_string()))?;
        let mut bytes = Vec::with_capacity(2048);
        token.write(&mut bytes).map_err(|e| TokenError::Generate(e.to_string()))?;
        Ok(IssuedToken { bytes, client_id, expires_in: self.ttl, server_addr: self.public_addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_load_from_config_or_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let made = load_or_create_key(None, dir.path()).expect("generated");
        assert_eq!(load_or_create_key(None, dir.path()).expect("reread"), made);
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(load_or_create_key(Some(&b64), dir.path()).expect("configured"), [7u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        assert!(matches!(load_or_create_key(Some(&short), dir.path()), Err(KeyError::BadConfigured)));
        assert!(matches!(load_or_create_key(Some("not base64!"), dir.path()), Err(KeyError::BadConfigured)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("netcode.key")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tokens_carry_the_user_and_the_address() {
        let addr: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let tokens = GameTokens::new([1u8; 32], addr);
        let user = Uuid::new_v4();
        let issued = tokens.issue(user, "zed").expect("issue");
        let token = ConnectToken::read(&mut issued.bytes.as_slice()).expect("reads back");
        assert_eq!(token.client_id, issued.client_id);
        assert_eq!(token.protocol_id, PROTOCOL_ID);
        assert_eq!(token.server_addresses[0], Some(addr));
        assert_eq!(token.expire_timestamp - token.create_timestamp, CONNECT_TOKEN_TTL_SECS);
        assert_ne!(tokens.issue(user, "zed").expect("again").client_id, issued.client_id);
    }
}
