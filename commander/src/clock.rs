//! The Commander's one way of holding time: an instant is Unix
//! milliseconds (`i64`, as the `commands` table stores it), a span is a
//! [`Duration`]. `SystemTime` appears only where an event is built (its
//! wire format) and is made here; every conversion saturates instead of
//! wrapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    wharf_store::unix_millis(SystemTime::now())
}

/// `span` in milliseconds.
pub(crate) fn millis(span: Duration) -> i64 {
    span.as_millis().min(i64::MAX as u128) as i64
}

/// The instant `span` after `at_ms`.
pub(crate) fn after(at_ms: i64, span: Duration) -> i64 {
    at_ms.saturating_add(millis(span))
}

/// The instant `span` before `at_ms`.
pub(crate) fn before(at_ms: i64, span: Duration) -> i64 {
    at_ms.saturating_sub(millis(span))
}

/// A span of `ms` milliseconds (none when negative).
pub(crate) fn span(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// `at_ms` as the events' `SystemTime`.
pub(crate) fn system_time(at_ms: i64) -> SystemTime {
    UNIX_EPOCH + span(at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_spans_convert_without_wrapping() {
        assert_eq!(after(1_000, Duration::from_secs(2)), 3_000);
        assert_eq!(before(1_000, Duration::from_secs(2)), -1_000);
        assert_eq!(after(i64::MAX - 1, Duration::from_secs(1)), i64::MAX);
        assert_eq!(millis(Duration::MAX), i64::MAX);
        assert_eq!(span(-5), Duration::ZERO);
        assert_eq!(
            system_time(1_500),
            UNIX_EPOCH + Duration::from_millis(1_500)
        );
        let now = now_ms();
        assert_eq!(wharf_store::unix_millis(system_time(now)), now);
    }
}
