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
    parse(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid time {text:?}: expected RFC 3339 in UTC, like 2026-11-22T10:00:00.123Z"
        ))
    })
}

/// Parses RFC 3339 in UTC, to whole milliseconds: the precision events are
/// written with, so a time read from an event is written back the same
/// (`…00.1293Z` is `…00.129Z`). Found by fuzz/envelope.
pub fn parse(text: &str) -> Option<SystemTime> {
    let time = humantime::parse_rfc3339(text).ok()?;
    let since = time.duration_since(std::time::UNIX_EPOCH).ok()?;
    let millis = std::time::Duration::from_millis(since.as_millis().try_into().ok()?);
    Some(std::time::UNIX_EPOCH + millis)
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
