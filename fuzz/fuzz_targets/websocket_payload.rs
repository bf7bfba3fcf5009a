//! A WebSocket message (text or binary, any bytes) becomes a frame's
//! payload, travels in an event and comes out the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_events::{Envelope, Event, FrameReceived, Payload};

fuzz_target!(|data: &[u8]| {
    let payload = Payload::from_bytes(data);
    if let Payload::Binary(bytes) = &payload {
        assert_eq!(
            bytes.as_slice(),
            data,
            "binary payloads are kept as they came"
        );
    }
    let event = Envelope::new(
        "device-1",
        "socket-0",
        Event::FrameReceived(FrameReceived {
            model: "m".into(),
            channel: None,
            payload: payload.clone(),
        }),
    );
    let decoded = Envelope::from_json(&event.to_json()).expect("an event we wrote decodes");
    let Event::FrameReceived(frame) = decoded.event else {
        panic!("a FrameReceived came back as {}", decoded.kind());
    };
    assert_eq!(frame.payload, payload);
});
