//! WebSocket endpoints: the chat WebSocket ([`chat`]), the protocol's handshake and framing
//! ([`frames`]) and the checks every upgrade shares (Origin, token).

pub mod chat;
pub mod frames;
mod limits;

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};

/// SPEC §10: no `Origin` (non-browser clients) passes; the server's own origin (same host as
/// the `Host` header) and `--allowed-origins` pass; anything else is refused before the upgrade.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let origin = origin.trim().trim_end_matches('/');
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else { return false };
    let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().expect("host"));
        if let Some(o) = origin {
            h.insert(ORIGIN, o.parse().expect("origin"));
        }
        h
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example".to_string()];
        assert!(origin_allowed(&headers(None, "127.0.0.1:8000"), &allowed));
        assert!(origin_allowed(&headers(Some("http://127.0.0.1:8000"), "127.0.0.1:8000"), &allowed));
        assert!(origin_allowed(&headers(Some("https://app.example"), "127.0.0.1:8000"), &allowed));
        assert!(!origin_allowed(&headers(Some("http://evil.test"), "127.0.0.1:8000"), &allowed));
        assert!(!origin_allowed(&headers(Some("http://127.0.0.1:8001"), "127.0.0.1:8000"), &allowed));
        assert!(!origin_allowed(&headers(Some("null"), "127.0.0.1:8000"), &allowed));
    }
}
