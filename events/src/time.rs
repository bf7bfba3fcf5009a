//! Points in time inside event data, written like the envelope's `time`:
//! RFC 3339 in UTC with milliseconds.

use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes a [`SystemTime`] as `2026-11-22T10:00:00.123Z`.
pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// Reads what [`serialize`] writes.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
    humantime::parse_rfc3339(&text).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid time {text:?}: expected RFC 3339 in UTC, like 2026-11-22T10:00:00.123Z"
        ))
    })
}
