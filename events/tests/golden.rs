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
    ("command_dispatched.json", "CommandDispatched"),
    ("command_dispatched_mqtt.json", "CommandDispatched"),
    ("command_delivered.json", "CommandDelivered"),
    ("command_failed.json", "CommandFailed"),
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
        "CommandDispatched",
        "CommandDelivered",
        "CommandFailed",
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
