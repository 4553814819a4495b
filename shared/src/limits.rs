//! Limits and input validators shared by server and clients (SPEC §3, §4, §10).

/// Smallest proximity radius a user may ask for (tiles, Chebyshev).
pub const MIN_RADIUS: u32 = 1;
/// Largest proximity radius a user may ask for (tiles, Chebyshev).
pub const MAX_RADIUS: u32 = 50;
/// Proximity radius of a fresh avatar.
pub const DEFAULT_RADIUS: u32 = 5;
/// Default shortest gap between two `nearby_users` frames to one user (ms): changes within it
/// are coalesced into one frame carrying the latest state, so a crowd moving every tick costs
/// each listener at most 1000 / this many frames per second.
pub const NEARBY_INTERVAL_MS: u64 = 200;
/// Most users listed in one `nearby_users` frame (the nearest ones); `total` then gives the full
/// count.
pub const MAX_NEARBY_LISTED: usize = 100;
/// Game clients see the avatars within this many tiles (Chebyshev) of their own.
pub const VIEW_RADIUS: u32 = 32;
/// Most avatars one game client is sent (the nearest ones) when its view is crowded.
pub const MAX_VISIBLE_AVATARS: usize = 256;
/// Lifetime of a game connect token (seconds): the client must start connecting within it.
pub const CONNECT_TOKEN_TTL_SECS: u64 = 30;
/// A connected game client that sends nothing for this long is dropped (seconds).
pub const GAME_TIMEOUT_SECS: i32 = 10;
/// Default simulation rate.
pub const DEFAULT_TICK_HZ: u32 = 20;
/// Default largest Chebyshev step per tick for an accepted move.
pub const DEFAULT_MAX_STEP: u32 = 1;
/// Largest WebSocket frame accepted; bigger frames close the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Default largest chat message content, in bytes of UTF-8.
pub const MAX_CONTENT_BYTES: usize = 4096;
/// Default per-connection message rate (messages/s) and burst.
pub const MESSAGE_RATE_PER_SEC: u32 = 20;
pub const MESSAGE_RATE_BURST: u32 = 40;
/// Default per-connection move rate (moves/s).
pub const MOVE_RATE_PER_SEC: u32 = 30;

pub const USERNAME_MIN: usize = 3;
pub const USERNAME_MAX: usize = 32;
pub const PASSWORD_MIN: usize = 8;
/// Upper bound on password length, so hashing cost stays bounded.
pub const PASSWORD_MAX: usize = 1024;
pub const DISPLAY_NAME_MAX: usize = 64;
pub const LAND_NAME_MAX: usize = 100;

/// WebSocket close codes (SPEC §10).
pub mod close_code {
    /// The server is shutting down; reconnect later.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame exceeded [`super::MAX_FRAME_BYTES`].
    pub const TOO_BIG: u16 = 1009;
    /// Missing, invalid or expired token; do not reconnect with this token.
    pub const AUTH: u16 = 4001;
    /// Sustained rate-limit abuse, or a send queue that overflowed; reconnect later.
    pub const RATE_LIMITED: u16 = 4008;
}

/// `[a-zA-Z0-9_.-]{3,32}`.
pub fn validate_username(username: &str) -> Result<(), String> {
    let len = username.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
        return Err(format!("username must be {USERNAME_MIN} to {USERNAME_MAX} characters"));
    }
    if !username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Err("username may contain only letters, digits, '_', '.' and '-'".into());
    }
    Ok(())
}

pub fn validate_password(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < PASSWORD_MIN {
        return Err(format!("password must be at least {PASSWORD_MIN} characters"));
    }
    if password.len() > PASSWORD_MAX {
        return Err(format!("password must be at most {PASSWORD_MAX} bytes"));
    }
    Ok(())
}

pub fn validate_display_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > DISPLAY_NAME_MAX {
        return Err(format!("display_name must be 1 to {DISPLAY_NAME_MAX} characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err("display_name must not contain control characters".into());
    }
    Ok(())
}

pub fn validate_radius(radius: i64) -> Result<u32, String> {
    if radius < i64::from(MIN_RADIUS) || radius > i64::from(MAX_RADIUS) {
        return Err(format!("radius must be between {MIN_RADIUS} and {MAX_RADIUS}"));
    }
    u32::try_from(radius).map_err(|_| "radius out of range".to_string())
}

pub fn validate_land_name(name: &str) -> Result<(), String> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > LAND_NAME_MAX {
        return Err(format!("name must be 1 to {LAND_NAME_MAX} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("abc").is_ok());
        assert!(validate_username("a.b-c_9").is_ok());
        assert!(validate_username("ab").is_err());
        assert!(validate_username(&"a".repeat(33)).is_err());
        assert!(validate_username("bad name").is_err());
        assert!(validate_username("émile").is_err());
    }

    #[test]
    fn passwords_and_radius() {
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password("1234567").is_err());
        assert_eq!(validate_radius(1), Ok(1));
        assert_eq!(validate_radius(50), Ok(50));
        assert!(validate_radius(0).is_err());
        assert!(validate_radius(51).is_err());
        assert!(validate_radius(-3).is_err());
    }
}
