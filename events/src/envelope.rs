//! The envelope around every event, and its JSON encoding.

use std::borrow::Cow;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::event::Event;
use crate::ids;

/// The envelope schema version this crate writes and reads.
pub const VERSION: u16 = 1;

/// One event with its metadata, exactly as it travels on every topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// UUIDv7 for a new fact; UUIDv5 of the cause for a derived one.
    pub id: Uuid,
    pub time: SystemTime,
    /// The device the event is about; also the bus key, which keeps one
    /// device's events in order.
    pub device: String,
    /// The service instance that produced the event (`socket-0`, `receiver`).
    pub source: String,
    /// The id of the first event of the chain this event belongs to.
    pub correlation: Uuid,
    /// The id of the event that directly caused this one.
    pub causation: Option<Uuid>,
    pub event: Event,
}

/// Why bytes could not be decoded as an envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("envelope version {found} is newer than the supported version {VERSION}")]
    UnsupportedVersion { found: u16 },
    #[error("invalid time {0:?}: expected RFC 3339 in UTC, like 2026-11-22T10:00:00.123Z")]
    InvalidTime(String),
    #[error("malformed data of {kind} event: {source}")]
    MalformedData {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Envelope {
    /// A new fact about `device`, starting a new chain.
    pub fn new(device: impl Into<String>, source: impl Into<String>, event: Event) -> Self {
        let id = ids::new_id();
        Envelope {
            id,
            time: SystemTime::now(),
            device: device.into(),
            source: source.into(),
            correlation: id,
            causation: None,
            event,
        }
    }

    /// An event caused by `self`, with a deterministic id derived from
    /// `self.id` and `discriminator`: the same cause always yields the same id.
    pub fn derive(&self, discriminator: &str, source: impl Into<String>, event: Event) -> Self {
        Envelope {
            id: ids::derive_id(self.id, discriminator),
            time: SystemTime::now(),
            device: self.device.clone(),
            source: source.into(),
            correlation: self.correlation,
            causation: Some(self.id),
            event,
        }
    }

    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        self.event.kind()
    }

    /// The W3C trace context of this event ([`crate::trace`]): the chain is
    /// the trace, the event a span.
    pub fn traceparent(&self) -> String {
        crate::trace::traceparent(&self.correlation, &self.id)
    }

    /// Encodes the envelope as one line of JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = WireOut {
            id: &self.id,
            kind: self.event.kind(),
            v: VERSION,
            time: humantime::format_rfc3339_millis(self.time).to_string(),
            device: &self.device,
            source: &self.source,
            correlation: &self.correlation,
            causation: &self.causation,
            data: &self.event,
        };
        serde_json::to_vec(&wire).expect("an envelope always serializes: all keys are strings")
    }

    /// Decodes an envelope; the error says what was wrong.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire: WireIn<'_> = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
        if wire.v > VERSION {
            return Err(DecodeError::UnsupportedVersion { found: wire.v });
        }
        let time = crate::time::parse(&wire.time)
            .ok_or_else(|| DecodeError::InvalidTime(wire.time.clone().into_owned()))?;
        let event = match Event::decode(&wire.kind, wire.data.get()) {
            None => return Err(DecodeError::UnknownType(wire.kind.into_owned())),
            Some(Err(source)) => {
                return Err(DecodeError::MalformedData {
                    kind: wire.kind.into_owned(),
                    source,
                });
            }
            Some(Ok(event)) => event,
        };
        Ok(Envelope {
            id: wire.id,
            time,
            device: wire.device,
            source: wire.source,
            correlation: wire.correlation.unwrap_or(wire.id),
            causation: wire.causation,
            event,
        })
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    id: &'a Uuid,
    #[serde(rename = "type")]
    kind: &'static str,
    v: u16,
    time: String,
    device: &'a str,
    source: &'a str,
    correlation: &'a Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation: &'a Option<Uuid>,
    data: &'a Event,
}

#[derive(Deserialize)]
struct WireIn<'a> {
    id: Uuid,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    v: u16,
    #[serde(borrow)]
    time: Cow<'a, str>,
    device: String,
    source: String,
    #[serde(default)]
    correlation: Option<Uuid>,
    #[serde(default)]
    causation: Option<Uuid>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CommandRequested, FrameReceived};
    use crate::payload::Payload;

    fn frame() -> Envelope {
        Envelope::new(
            "thermo-42",
            "socket-0",
            Event::FrameReceived(FrameReceived {
                model: "demo-thermostat".into(),
                channel: None,
                payload: Payload::Json(serde_json::json!({"temperature": 35})),
            }),
        )
    }

    #[test]
    fn round_trips_through_json() {
        let envelope = frame();
        let decoded = Envelope::from_json(&envelope.to_json()).unwrap();
        // The wire keeps milliseconds; compare the rest exactly.
        assert_eq!(decoded.id, envelope.id);
        assert_eq!(decoded.event, envelope.event);
        assert_eq!(decoded.correlation, envelope.id);
        let drift = envelope.time.duration_since(decoded.time).unwrap();
        assert!(drift.as_millis() < 1);
    }

    /// Found by fuzz/envelope: a time with more than millisecond precision
    /// was kept as read, then written back shorter: the same event decoded
    /// twice differed.
    #[test]
    fn a_decoded_event_encodes_back_to_the_same_event() {
        let text = br#"{"id":"0193a0c4-3c1e-7000-8000-000000000004","type":"FrameReceived","v":1,"time":"2026-11-22T10:00:00.1293Z","device":"thermo-42","source":"socket-0","correlation":"0193a0c4-3c1e-7000-8000-000000000004","data":{"model":"demo-thermostat","payload":"Aet-0"}}"#;
        let decoded = Envelope::from_json(text).unwrap();
        let again = Envelope::from_json(&decoded.to_json()).unwrap();
        assert_eq!(again, decoded);
        assert!(
            String::from_utf8(decoded.to_json())
                .unwrap()
                .contains("10:00:00.129Z")
        );
    }

    #[test]
    fn derived_events_keep_the_chain_and_a_reproducible_id() {
        let cause = frame();
        let request = Event::CommandRequested(CommandRequested {
            model: "demo-thermostat".into(),
            command: "fan".into(),
            args: Default::default(),
            ttl_ms: None,
        });
        let a = cause.derive("rule:hot", "receiver", request.clone());
        let b = cause.derive("rule:hot", "receiver", request);
        assert_eq!(a.id, b.id);
        assert_eq!(a.causation, Some(cause.id));
        assert_eq!(a.correlation, cause.correlation);
        assert_eq!(a.device, "thermo-42");
    }

    #[test]
    fn names_what_is_wrong_with_bad_input() {
        let err = Envelope::from_json(b"not json").unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err}");

        let unknown = br#"{"id":"0193a0c4-3c1e-7000-8000-000000000001","type":"Teleported","v":1,"time":"2026-11-22T10:00:00.123Z","device":"d","source":"s","data":{}}"#;
        let err = Envelope::from_json(unknown).unwrap_err();
        assert_eq!(err.to_string(), "unknown event type \"Teleported\"");

        let newer = br#"{"id":"0193a0c4-3c1e-7000-8000-000000000001","type":"CommandDelivered","v":9,"time":"2026-11-22T10:00:00.123Z","device":"d","source":"s","data":{}}"#;
        let err = Envelope::from_json(newer).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnsupportedVersion { found: 9 }),
            "{err}"
        );

        let bad_time = br#"{"id":"0193a0c4-3c1e-7000-8000-000000000001","type":"CommandDelivered","v":1,"time":"yesterday","device":"d","source":"s","data":{}}"#;
        let err = Envelope::from_json(bad_time).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidTime(_)), "{err}");

        let bad_data = br#"{"id":"0193a0c4-3c1e-7000-8000-000000000001","type":"CommandDelivered","v":1,"time":"2026-11-22T10:00:00.123Z","device":"d","source":"s","data":{"command_id":5}}"#;
        let err = Envelope::from_json(bad_data).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("malformed data of CommandDelivered event"),
            "{err}"
        );
    }
}
