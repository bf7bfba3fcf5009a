//! How every service waits out an outage (the database, the bus): the
//! first retry after 100 ms, each wait twice the one before, never more than
//! 5 s, back to the start once an attempt succeeds.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The first wait after a failure.
pub const FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
pub const MAX: Duration = Duration::from_secs(5);

/// Waits between the attempts of one retried operation.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST,
            failures: 0,
        }
    }
}

impl Backoff {
    /// Counts a failure and says how long to wait before the next attempt.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(MAX);
        self.failures += 1;
        wait
    }

    /// An attempt succeeded: the next failure waits [`FIRST`] again.
    /// Returns how many failures came before it.
    pub fn succeeded(&mut self) -> u32 {
        let failures = self.failures;
        *self = Backoff::default();
        failures
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a failure and waits before the next attempt; false when
    /// `shutdown` came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let wait = self.failed();
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_max_and_starts_over_after_a_success() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..8).map(|_| backoff.failed()).collect();
        assert_eq!(waits[0], FIRST);
        assert_eq!(waits[1], FIRST * 2);
        assert_eq!(*waits.last().unwrap(), MAX);
        assert!(waits.windows(2).all(|pair| pair[0] <= pair[1]));
        assert_eq!(backoff.succeeded(), 8);
        assert_eq!(backoff.failed(), FIRST);
    }

    #[tokio::test]
    async fn shutdown_ends_the_wait() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.failed();
        }
        assert!(!backoff.wait(&shutdown).await);
    }
}
