//! The W3C trace context of events (`traceparent`, carried as a record
//! header). A chain of events — a frame, the command a rule asked for, its
//! dispatch, its delivery — is one trace: the trace id is the chain's
//! correlation id (a UUID is 16 bytes, as a trace id is). Each event is a
//! span: its span id is the low 8 bytes of the event's id. So a trace needs
//! no state of its own: any service, and any replay, derives the same
//! header from the envelope.

use serde::Deserialize;
use uuid::Uuid;

/// `00-<trace id>-<span id>-01` for the event `id` of the chain `correlation`.
pub fn traceparent(correlation: &Uuid, id: &Uuid) -> String {
    // A span id must not be all zeros; a UUID's low half never is in
    // practice (v7 random bits, v5 hash), but the format says so.
    format!("00-{}-{:016x}-01", correlation.simple(), low_half(id))
}

/// The ids of an event's span, as hex: the trace (its chain), the span (the
/// event) and its parent (the event's cause, when it has one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
}

/// The span ids of `envelope`, matching its `traceparent`.
pub fn span_ids(envelope: &crate::Envelope) -> SpanIds {
    SpanIds {
        trace_id: envelope.correlation.simple().to_string(),
        span_id: format!("{:016x}", low_half(&envelope.id)),
        parent_span_id: envelope
            .causation
            .map(|cause| format!("{:016x}", low_half(&cause))),
    }
}

fn low_half(id: &Uuid) -> u64 {
    u64::from_be_bytes(id.as_bytes()[8..].try_into().expect("8 bytes")).max(1)
}

/// The trace id of a `traceparent` header, if it is one.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.next().is_none()
        && hex(version, 2)
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0'))
    .then_some(trace)
}

/// The `traceparent` of an envelope already encoded as JSON (an outbox
/// row), read without decoding the rest of it.
pub fn traceparent_of_json(envelope: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Ids {
        id: Uuid,
        correlation: Option<Uuid>,
    }
    let ids: Ids = serde_json::from_slice(envelope).ok()?;
    Some(traceparent(&ids.correlation.unwrap_or(ids.id), &ids.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, Event, FrameReceived, Payload};

    #[test]
    fn a_chain_is_one_trace_and_each_event_a_span() {
        let frame = Envelope::new(
            "thermo-1",
            "socket-0",
            Event::FrameReceived(FrameReceived {
                model: "demo-thermostat".into(),
                channel: None,
                payload: Payload::from_bytes(b"{}"),
            }),
        );
        let header = frame.traceparent();
        let trace = trace_id(&header).expect("a valid traceparent");
        assert_eq!(trace, frame.correlation.simple().to_string());
        assert_eq!(traceparent_of_json(&frame.to_json()), Some(header.clone()));
        let other = traceparent(&frame.correlation, &crate::new_id());
        assert_eq!(trace_id(&other), Some(trace));
        assert_ne!(other, header, "another event of the chain is another span");
    }

    #[test]
    fn malformed_headers_are_not_trace_contexts() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01-extra",
        ] {
            assert_eq!(trace_id(bad), None, "{bad}");
        }
    }
}
