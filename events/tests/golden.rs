//! Golden fixtures guard the wire format: each file is one envelope exactly
//! as Wharf writes it. Decoding and re-encoding must give the same bytes, so
//! a renamed field, a reordered key or a changed type name fails here.

use std::path::Path;

use wharf_events::{Envelope, Event, Payload};

const FIXTURES: &[(&str, &str)] = &[
    ("device_connected.json", "DeviceConnected"),
    ("device_disconnected.json", "DeviceDisconnected"),
    ("frame_received_json.json", "FrameReceived"),
    ("frame_received_binary.json", "FrameReceived"),
    ("desired_state_changed.json", "DesiredStateChanged"),
    ("command_requested.json", "CommandRequested"),
    ("command_requested_with_ttl.json", "CommandRequested"),
    ("command_rejected.json", "CommandRejected"),
    ("command_queued.json", "CommandQueued"),
    ("command_dispatched.json", "CommandDispatched"),
    ("command_dispatched_mqtt.json", "CommandDispatched"),
    ("command_dispatched_binary_qos0.json", "CommandDispatched"),
    ("command_dispatched_with_expiry.json", "CommandDispatched"),
    ("command_delivered.json", "CommandDelivered"),
    ("command_failed.json", "CommandFailed"),
    ("command_failed_no_outcome.json", "CommandFailed"),
    ("command_expired.json", "CommandExpired"),
    ("device_revoked.json", "DeviceRevoked"),
    ("command_dispatched_reply.json", "CommandDispatched"),
    ("command_replied.json", "CommandReplied"),
    ("command_replied_error.json", "CommandReplied"),
    ("command_timed_out.json", "CommandTimedOut"),
];

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim_end()
        .to_owned()
}

#[test]
fn every_fixture_reencodes_to_the_same_bytes() {
    for (name, kind) in FIXTURES {
        let text = fixture(name);
        let envelope = Envelope::from_json(text.as_bytes())
            .unwrap_or_else(|e| panic!("{name} does not decode: {e}"));
        assert_eq!(envelope.kind(), *kind, "{name}");
        let encoded = String::from_utf8(envelope.to_json()).unwrap();
        assert_eq!(encoded, text, "{name} changed on re-encoding");
    }
}

#[test]
fn every_event_type_has_a_fixture() {
    let kinds: Vec<&str> = FIXTURES.iter().map(|(_, kind)| *kind).collect();
    for kind in [
        "DeviceConnected",
        "DeviceDisconnected",
        "FrameReceived",
        "DesiredStateChanged",
        "CommandRequested",
        "CommandRejected",
        "CommandQueued",
        "CommandDispatched",
        "CommandDelivered",
        "CommandFailed",
        "CommandExpired",
        "DeviceRevoked",
        "CommandReplied",
        "CommandTimedOut",
    ] {
        assert!(kinds.contains(&kind), "no golden fixture for {kind}");
    }
}

#[test]
fn binary_payloads_travel_as_base64() {
    let envelope = Envelope::from_json(fixture("frame_received_binary.json").as_bytes()).unwrap();
    let Event::FrameReceived(frame) = envelope.event else {
        panic!("expected a FrameReceived");
    };
    assert_eq!(frame.payload, Payload::Binary(vec![0x00, 0x01, 0xff]));
    assert_eq!(frame.channel.as_deref(), Some("devices/thermo-42/raw"));
}

#[test]
fn lifecycle_events_carry_reasons_and_times() {
    let rejected = Envelope::from_json(fixture("command_rejected.json").as_bytes()).unwrap();
    let Event::CommandRejected(rejected) = rejected.event else {
        panic!("expected a CommandRejected");
    };
    assert_eq!(rejected.reason, wharf_events::RejectReason::InvalidArgument);
    assert_eq!(rejected.argument.as_deref(), Some("celsius"));

    let queued = Envelope::from_json(fixture("command_queued.json").as_bytes()).unwrap();
    let Event::CommandQueued(queued) = queued.event else {
        panic!("expected a CommandQueued");
    };
    let expires = queued.expires_at.duration_since(envelope_time()).unwrap();
    assert_eq!(expires.as_secs(), 30);

    let dispatched =
        Envelope::from_json(fixture("command_dispatched_binary_qos0.json").as_bytes()).unwrap();
    let Event::CommandDispatched(dispatched) = dispatched.event else {
        panic!("expected a CommandDispatched");
    };
    assert_eq!(dispatched.qos, Some(0));
    assert_eq!(dispatched.frame, Payload::Binary(vec![0x02, 0x15, 0xd7]));
    assert_eq!(dispatched.expires_at, None);

    let dispatched =
        Envelope::from_json(fixture("command_dispatched_with_expiry.json").as_bytes()).unwrap();
    let Event::CommandDispatched(dispatched) = dispatched.event else {
        panic!("expected a CommandDispatched");
    };
    let expires_at = dispatched.expires_at.expect("an expiry");
    assert_eq!(
        expires_at
            .duration_since(envelope_time())
            .unwrap()
            .as_millis(),
        3_599_877
    );

    let failed = Envelope::from_json(fixture("command_failed_no_outcome.json").as_bytes()).unwrap();
    let Event::CommandFailed(failed) = failed.event else {
        panic!("expected a CommandFailed");
    };
    assert_eq!(failed.reason, wharf_events::FailureReason::NoOutcome);
}

fn envelope_time() -> std::time::SystemTime {
    humantime::parse_rfc3339("2026-11-22T10:00:00.123Z").unwrap()
}
