//! The event envelope decoder on any bytes a topic may hold: it answers
//! with an error or an event, and an event it accepts re-encodes to one it
//! reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_events::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::from_json(data) {
        let again = Envelope::from_json(&envelope.to_json()).expect("a re-encoded event decodes");
        assert_eq!(again, envelope);
    }
});
