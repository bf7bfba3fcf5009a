//! Frames from a device as the Socket tells its answers to commands from
//! its other frames: JSON frames (`{"reply": …}`) and MQTT publishes on
//! topics of any shape, `devices/t-1/replies/…` among them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, limit], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = 16 + usize::from(limit) * 4;
    if mode & 1 == 0 {
        wharf_socket::fuzzing::device_answer(None, rest, max);
        return;
    }
    // MQTT: a topic (up to the first 0 byte), then the payload.
    let (topic, payload) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let topic = String::from_utf8_lossy(topic);
    let topic = if mode & 2 == 0 {
        format!("devices/t-1/replies/{topic}")
    } else {
        topic.into_owned()
    };
    wharf_socket::fuzzing::device_answer(Some(&topic), payload, max);
});
