//! Encryption at rest for message content: AES-256-GCM (the `aes-gcm` crate) with a fresh random
//! 96-bit nonce per message and the message id and room id bound as associated data, so a
//! ciphertext moved to another row (or another room) fails to decrypt. Every row stores the id of
//! the key that sealed it, so keys can rotate while old rows stay readable.
//!
//! The keyring lives in `<data-dir>/chat.keys` (mode 0600), one `id:base64key` line per key; the
//! highest id is the current key. A key configured with `--message-key` (base64 of 32 bytes) is
//! key id 0 and is current only while the file holds no other key. `landworld-server rotate-key`
//! appends a new key (making it current) and re-encrypts older rows with it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use uuid::Uuid;

/// Length of a key (AES-256) and of a nonce (96 bits).
pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("keyring {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("keyring {path} line {line}: {reason}")]
    Format { path: String, line: usize, reason: String },
    #[error("the configured message key must be base64 of {KEY_LEN} bytes")]
    BadConfiguredKey,
    #[error("no key with id {0}")]
    UnknownKey(i32),
    #[error("decryption failed (wrong key, tampered row or moved ciphertext)")]
    Decrypt,
    #[error("encryption failed")]
    Encrypt,
}

/// A sealed message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: i32,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

struct Ring {
    keys: BTreeMap<i32, Aes256Gcm>,
    current: i32,
}

/// The message keys. Cheap to clone; reloads its file when it meets a key id it does not know
/// (a `rotate-key` run while the server was up).
#[derive(Clone)]
pub struct Keyring {
    ring: Arc<RwLock<Ring>>,
    path: Option<PathBuf>,
    configured: Option<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("path", &self.path).field("current", &self.current_id()).finish()
    }
}

fn aad(message_id: Uuid, room_id: Uuid) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(message_id.as_bytes());
    out[16..].copy_from_slice(room_id.as_bytes());
    out
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Keyring {
    /// One in-memory key (tests and benches).
    pub fn single(key: [u8; KEY_LEN]) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(1, Aes256Gcm::new(&key.into()));
        Self { ring: Arc::new(RwLock::new(Ring { keys, current: 1 })), path: None, configured: None }
    }

    /// Loads `<data_dir>/chat.keys`, creating it with one random key when it does not exist and
    /// no key is configured.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> Result<Self, CryptoError> {
        let configured = match configured {
            Some(text) => {
                let bytes = b64().decode(text.trim()).map_err(|_| CryptoError::BadConfiguredKey)?;
                Some(<[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| CryptoError::BadConfiguredKey)?)
            }
            None => None,
        };
        let path = data_dir.join("chat.keys");
        if configured.is_none() && !path.exists() {
            append_key(&path, 1, &random_key())?;
        }
        let ring = read_ring(&path, configured.as_ref())?;
        Ok(Self { ring: Arc::new(RwLock::new(ring)), path: Some(path), configured })
    }

    pub fn current_id(&self) -> i32 {
        self.ring.read().map(|r| r.current).unwrap_or(0)
    }

    /// Adds a new random key to the file and makes it current. Returns its id.
    pub fn rotate(&self) -> Result<i32, CryptoError> {
        let path = self.path.clone().ok_or(CryptoError::UnknownKey(0))?;
        let next = {
            let ring = self.ring.read().map_err(|_| CryptoError::Encrypt)?;
            ring.keys.keys().next_back().copied().unwrap_or(0) + 1
        };
        append_key(&path, next, &random_key())?;
        self.reload()?;
        Ok(next)
    }

    fn reload(&self) -> Result<(), CryptoError> {
        let Some(path) = &self.path else { return Ok(()) };
        let fresh = read_ring(path, self.configured.as_ref())?;
        if let Ok(mut ring) = self.ring.write() {
            *ring = fresh;
        }
        Ok(())
    }

    pub fn seal(&self, message_id: Uuid, room_id: Uuid, plaintext: &[u8]) -> Result<Sealed, CryptoError> {
        let ring = self.ring.read().map_err(|_| CryptoError::Encrypt)?;
        let key_id = ring.current;
        let cipher = ring.keys.get(&key_id).ok_or(CryptoError::UnknownKey(key_id))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut nonce);
        let aad = aad(message_id, room_id);
        let ciphertext = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| CryptoError::Encrypt)?;
        Ok(Sealed { key_id, nonce: nonce.to_vec(), ciphertext })
    }

    pub fn open(&self, message_id: Uuid, room_id: Uuid, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        match self.open_once(message_id, room_id, sealed) {
            Err(CryptoError::UnknownKey(_)) if self.path.is_some() => {
                self.reload()?;
                self.open_once(message_id, room_id, sealed)
            }
            other => other,
        }
    }

    fn open_once(&self, message_id: Uuid, room_id: Uuid, sealed: &Sealed) -> Result<Vec<u8>, CryptoError> {
        let ring = self.ring.read().map_err(|_| CryptoError::Decrypt)?;
        let cipher = ring.keys.get(&sealed.key_id).ok_or(CryptoError::UnknownKey(sealed.key_id))?;
        let nonce = <[u8; NONCE_LEN]>::try_from(sealed.nonce.as_slice()).map_err(|_| CryptoError::Decrypt)?;
        let aad = aad(message_id, room_id);
        cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: &sealed.ciphertext, aad: &aad })
            .map_err(|_| CryptoError::Decrypt)
    }

    /// Opens a message body as text.
    pub fn open_text(&self, message_id: Uuid, room_id: Uuid, sealed: &Sealed) -> Result<String, CryptoError> {
        String::from_utf8(self.open(message_id, room_id, sealed)?).map_err(|_| CryptoError::Decrypt)
    }
}

/// What `rotate-key` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub key_id: i32,
    pub resealed: u64,
    /// Rows that did not decrypt with any known key (left as they were, and logged).
    pub failed: u64,
}

/// `landworld-server rotate-key`: adds a new current key, then re-seals every older row with it,
/// a page per transaction. Rows stay readable throughout (old keys stay in the ring).
pub async fn rotate_and_reseal(db: &crate::store::Db, ring: &Keyring) -> Result<Rotation, anyhow::Error> {
    const PAGE: i64 = 1000;
    let key_id = ring.rotate()?;
    let (mut resealed, mut failed) = (0u64, 0u64);
    loop {
        let rows = db.messages_not_sealed_with(key_id, PAGE, i64::try_from(failed).unwrap_or(i64::MAX)).await?;
        if rows.is_empty() {
            break;
        }
        let mut updates = Vec::with_capacity(rows.len());
        for row in &rows {
            let sealed = Sealed { key_id: row.key_id, nonce: row.nonce.clone(), ciphertext: row.ciphertext.clone() };
            match ring.open(row.id, row.session_id, &sealed).and_then(|plain| ring.seal(row.id, row.session_id, &plain))
            {
                Ok(new) => updates.push((row.id, new.key_id, new.nonce, new.ciphertext)),
                Err(e) => {
                    tracing::error!(message_id = %row.id, error = %e, "cannot re-seal a message; left as it is");
                    failed += 1;
                }
            }
        }
        resealed += updates.len() as u64;
        db.reseal_messages(&updates).await?;
    }
    Ok(Rotation { key_id, resealed, failed })
}

fn random_key() -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    rand::Rng::fill(&mut rand::rng(), &mut key);
    key
}

fn append_key(path: &Path, id: i32, key: &[u8; KEY_LEN]) -> Result<(), CryptoError> {
    let io = |source| CryptoError::Io { path: path.display().to_string(), source };
    let mut opts = std::fs::OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(io)?;
    writeln!(file, "{id}:{}", b64().encode(key)).and_then(|()| file.sync_all()).map_err(io)
}

fn read_ring(path: &Path, configured: Option<&[u8; KEY_LEN]>) -> Result<Ring, CryptoError> {
    let mut keys = BTreeMap::new();
    if let Some(key) = configured {
        keys.insert(0, Aes256Gcm::new(&(*key).into()));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let bad = |reason: &str| CryptoError::Format {
                    path: path.display().to_string(),
                    line: i + 1,
                    reason: reason.to_string(),
                };
                let (id, key) = line.split_once(':').ok_or_else(|| bad("expected id:base64key"))?;
                let id: i32 = id.trim().parse().map_err(|_| bad("key id is not a number"))?;
                if id <= 0 {
                    return Err(bad("key ids start at 1 (0 is the configured key)"));
                }
                let bytes = b64().decode(key.trim()).map_err(|_| bad("key is not base64"))?;
                let key = <[u8; KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| bad("key is not 32 bytes"))?;
                keys.insert(id, Aes256Gcm::new(&key.into()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(CryptoError::Io { path: path.display().to_string(), source }),
    }
    let current = keys.keys().next_back().copied().ok_or(CryptoError::UnknownKey(0))?;
    Ok(Ring { keys, current })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_bound_ids() {
        let ring = Keyring::single([3u8; KEY_LEN]);
        let (m, r) = (Uuid::new_v4(), Uuid::new_v4());
        let sealed = ring.seal(m, r, b"hello").expect("seal");
        assert_ne!(sealed.ciphertext, b"hello");
        assert_eq!(sealed.nonce.len(), NONCE_LEN);
        assert_eq!(ring.open(m, r, &sealed).expect("open"), b"hello");
        // Another message id or room id: refused.
        assert!(matches!(ring.open(Uuid::new_v4(), r, &sealed), Err(CryptoError::Decrypt)));
        assert!(matches!(ring.open(m, Uuid::new_v4(), &sealed), Err(CryptoError::Decrypt)));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(ring.open(m, r, &flipped).is_err());
        // Fresh nonce per message.
        assert_ne!(ring.seal(m, r, b"hello").expect("seal").nonce, sealed.nonce);
    }

    #[test]
    fn file_keyring_rotates_and_keeps_old_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = Keyring::load_or_create(None, dir.path()).expect("create");
        assert_eq!(ring.current_id(), 1);
        let (m, r) = (Uuid::new_v4(), Uuid::new_v4());
        let old = ring.seal(m, r, b"old").expect("seal");
        // A second process rotates; this one learns the new key when it meets it.
        let other = Keyring::load_or_create(None, dir.path()).expect("load");
        assert_eq!(other.rotate().expect("rotate"), 2);
        let new = other.seal(m, r, b"new").expect("seal");
        assert_eq!(new.key_id, 2);
        assert_eq!(ring.open(m, r, &new).expect("reload on unknown key"), b"new");
        assert_eq!(other.open(m, r, &old).expect("old key kept"), b"old");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("chat.keys")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_keyrings_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("chat.keys"), "1:notbase64!!\n").expect("write");
        assert!(matches!(Keyring::load_or_create(None, dir.path()), Err(CryptoError::Format { .. })));
        assert!(matches!(Keyring::load_or_create(Some("short"), dir.path()), Err(CryptoError::BadConfiguredKey)));
    }
}
