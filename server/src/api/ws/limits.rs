//! Per-connection rate limiting: token buckets, and a strike window that tells a burst from
//! sustained abuse (which closes the connection with 4008).

use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(burst), tokens: f64::from(burst), last: Instant::now() }
    }

    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts refusals in a sliding window; too many means sustained abuse.
#[derive(Debug)]
pub struct Strikes {
    window: Duration,
    limit: u32,
    started: Instant,
    count: u32,
}

impl Strikes {
    pub fn new(window: Duration, limit: u32) -> Self {
        Self { window, limit, started: Instant::now(), count: 0 }
    }

    /// Records a refusal; true when the connection should be closed.
    pub fn strike(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.started) > self.window {
            self.started = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(150)));
    }

    #[test]
    fn strikes_window() {
        let t0 = Instant::now();
        let mut s = Strikes::new(Duration::from_secs(1), 2);
        assert!(!s.strike(t0));
        assert!(!s.strike(t0));
        assert!(s.strike(t0));
        assert!(!s.strike(t0 + Duration::from_secs(2)));
    }
}
