//! Per-device rate limiting (a token bucket), and the bound on what a
//! connection may send before it has authenticated.

use std::time::Instant;

/// The most a connection may send before it is authenticated: the TCP
/// token frame, the MQTT CONNECT packet. A device token is a few hundred
/// bytes; an unauthenticated peer never makes the Socket buffer (or
/// reserve) more than this, whatever `max_frame_bytes` allows afterwards.
pub(crate) const MAX_PRE_AUTH_BYTES: usize = 8 * 1024;

use crate::config::RateLimit;

/// Allows `per_second` frames on average and `burst` at once.
pub(crate) struct TokenBucket {
    tokens: f64,
    per_second: f64,
    burst: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        TokenBucket {
            tokens: f64::from(limit.burst),
            per_second: f64::from(limit.per_second),
            burst: f64::from(limit.burst),
            refilled: Instant::now(),
        }
    }

    /// Takes a token for one frame; false when the device is over its rate.
    pub(crate) fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(RateLimit {
            per_second: 10,
            burst: 3,
        });
        bucket.refilled = start;
        let burst: Vec<bool> = (0..4).map(|_| bucket.take_at(start)).collect();
        assert_eq!(burst, vec![true, true, true, false]);
        assert!(bucket.take_at(start + Duration::from_millis(100)));
        assert!(!bucket.take_at(start + Duration::from_millis(150)));
        assert!(bucket.take_at(start + Duration::from_millis(1000)));
    }
}
