//! The built-in twin and rules on any rules and any frames: never a panic,
//! the twin stays within its limits, and applying the same events again
//! from the same state decides the same (what replay after a crash relies on).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use wharf_events::{Envelope, Event, FrameReceived, Payload};
use wharf_receiver::rules::{RuleConfig, Rules};
use wharf_receiver::{DeviceLogic, DeviceState, Replies, TwinLimits, TwinLogic};

const LIMITS: TwinLimits = TwinLimits {
    max_keys: 16,
    max_bytes: 2048,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // rules (a JSON array of rule configurations), then one frame a line
    let mut lines = text.split('\n');
    let configs: Vec<RuleConfig> =
        serde_json::from_str(lines.next().unwrap_or_default()).unwrap_or_default();
    let Ok(rules) = Rules::compile(&configs) else {
        return;
    };
    let logic = TwinLogic::new(rules, "set_desired").with_limits(LIMITS);
    let events: Vec<Envelope> = lines
        .enumerate()
        .map(|(n, line)| Envelope {
            time: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + n as u64 * 30),
            ..Envelope::new(
                "device-1",
                "socket-0",
                Event::FrameReceived(FrameReceived {
                    model: "m".into(),
                    channel: None,
                    payload: Payload::from_bytes(line.as_bytes()),
                }),
            )
        })
        .collect();
    let run = || {
        let mut state = DeviceState::new("device-1");
        let mut replies = Vec::new();
        for event in &events {
            let mut out = Replies::new(event, "receiver");
            logic.apply(&mut state, event, &mut out);
            replies.extend(out.events().iter().map(|reply| (reply.id, reply.kind())));
            assert!(state.reported.len() <= LIMITS.max_keys);
        }
        (state, replies)
    };
    let (first, second) = (run(), run());
    assert_eq!(first, second, "the same events decided differently");
});
