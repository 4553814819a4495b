//! Accounts and tokens: argon2id password hashing (run on the blocking pool by callers) and
//! HS256 JWTs whose secret comes from config or is generated once into `<data-dir>/jwt.key`
//! with mode 0600.
//!
//! Validation accepts HS256 only, so `alg: none` and algorithm-confusion tokens are refused.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: Uuid,
    /// Username at issue time.
    pub name: String,
    /// `user` or `admin`.
    pub role: String,
    pub iat: i64,
    pub exp: i64,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid token")]
    InvalidToken,
    #[error("password hashing failed")]
    Hash,
    #[error("key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
    #[error("the key in {0} is too short (need at least 32 bytes)")]
    WeakKey(String),
}

/// Signs and verifies access tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation, ttl }
    }

    /// Uses `configured` when given, else reads `<data_dir>/jwt.key`, generating it (32 random
    /// bytes, base64, mode 0600) on first start.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path, ttl: Duration) -> Result<Self, AuthError> {
        if let Some(secret) = configured {
            if secret.len() < 32 {
                return Err(AuthError::WeakKey("the configured jwt_secret".into()));
            }
            return Ok(Self::from_secret(secret.as_bytes(), ttl));
        }
        let path = data_dir.join("jwt.key");
        let secret = read_or_create_key_file(&path, 32)?;
        Ok(Self::from_secret(&secret, ttl))
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(&self, user_id: Uuid, username: &str, role: &str) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            name: username.to_string(),
            role: role.to_string(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| AuthError::InvalidToken)
    }

    /// Verifies signature, algorithm and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() || token.len() > 4096 {
            return Err(AuthError::InvalidToken);
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| AuthError::InvalidToken)
    }
}

/// Reads a secret key file, or creates it with `len` random bytes (base64) and mode 0600.
pub fn read_or_create_key_file(path: &Path, len: usize) -> Result<Vec<u8>, AuthError> {
    let key_err = |source| AuthError::KeyFile { path: path.display().to_string(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| key_err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
            if bytes.len() < len {
                return Err(AuthError::WeakKey(path.display().to_string()));
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = vec![0u8; len];
            rand::Rng::fill(&mut rand::rng(), bytes.as_mut_slice());
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut file = opts.open(path).map_err(key_err)?;
            file.write_all(base64::engine::general_purpose::STANDARD.encode(&bytes).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(key_err)?;
            Ok(bytes)
        }
        Err(e) => Err(key_err(e)),
    }
}

/// Hashes a password with argon2id and a random salt. CPU-heavy: call from `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| AuthError::Hash)
}

/// Verifies a password against a stored PHC hash. CPU-heavy: call from `spawn_blocking`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A valid hash of a random password, verified against when a username does not exist so that
/// login takes the same time either way.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&Uuid::new_v4().to_string()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn tokens_verify_and_reject_tampering() {
        let keys = TokenKeys::from_secret(&[7u8; 32], Duration::from_secs(60));
        let id = Uuid::new_v4();
        let token = keys.issue(id, "alice", "user").expect("issue");
        assert_eq!(keys.verify(&token).expect("verify").sub, id);
        let other = TokenKeys::from_secret(&[8u8; 32], Duration::from_secs(60));
        assert!(other.verify(&token).is_err());
        let mut tampered = token.clone();
        tampered.pop();
        assert!(keys.verify(&tampered).is_err());
        assert!(keys.verify("").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k");
        let a = read_or_create_key_file(&path, 32).expect("create");
        let b = read_or_create_key_file(&path, 32).expect("read");
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
