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

/// The same for an optional time: `#[serde(default, with = "crate::time::optional")]`.
pub mod optional {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes a present time as [`super::serialize`] does (absent ones
    /// are skipped by the field's `skip_serializing_if`).
    pub fn serialize<S: Serializer>(
        time: &&Option<SystemTime>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match time {
            Some(time) => super::serialize(time, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads what [`serialize`] writes; `null` is absent.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        #[derive(Deserialize)]
        struct Time(#[serde(with = "super")] SystemTime);
        Ok(Option::<Time>::deserialize(deserializer)?.map(|Time(time)| time))
    }
}
