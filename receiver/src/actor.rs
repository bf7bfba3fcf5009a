//! One device's actor: its state, loaded once and then changed in memory on
//! every event; written back by the write-behind.

use std::time::UNIX_EPOCH;

use serde_json::Value;
use wharf_events::{CommandRequested, Envelope, Event};
use wharf_store::DeviceStateRow;

use crate::rules::Rules;

/// A device's in-memory state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceActor {
    state: DeviceStateRow,
}

/// What handling one event did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Whether the state changed and must be written back.
    pub changed: bool,
    /// Events to publish, with ids derived from the handled event.
    pub replies: Vec<Envelope>,
}

impl DeviceActor {
    /// The actor of a device, from its stored state or, for a device never
    /// seen before, empty.
    pub fn new(device: &str, stored: Option<DeviceStateRow>) -> Self {
        let state = stored.unwrap_or_else(|| DeviceStateRow {
            device: device.to_owned(),
            model: String::new(),
            reported: Default::default(),
            message_count: 0,
            last_seen_ms: None,
        });
        DeviceActor { state }
    }

    /// The state to write back.
    pub fn state(&self) -> &DeviceStateRow {
        &self.state
    }

    /// Applies one event; `source` names this Receiver in the replies.
    pub fn apply(&mut self, envelope: &Envelope, rules: &Rules, source: &str) -> Applied {
        let seen = envelope
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .ok();
        let mut applied = Applied::default();
        match &envelope.event {
            Event::FrameReceived(frame) => {
                self.state.model.clone_from(&frame.model);
                self.state.message_count += 1;
                if let Some(values) = frame.payload.as_object() {
                    for (key, value) in values {
                        self.state.reported.insert(key.clone(), value.clone());
                    }
                    applied.replies = self.fire_rules(envelope, values, rules, source);
                }
            }
            Event::DeviceConnected(connected) => {
                self.state.model.clone_from(&connected.model);
            }
            Event::DeviceDisconnected(_) => {}
            // Other events are not about device state.
            _ => return applied,
        }
        self.state.last_seen_ms = seen.max(self.state.last_seen_ms);
        applied.changed = true;
        applied
    }

    /// Evaluates the rules against the values this frame reported, so a rule
    /// fires on the reports that meet it, not on every later frame.
    fn fire_rules(
        &self,
        cause: &Envelope,
        values: &serde_json::Map<String, Value>,
        rules: &Rules,
        source: &str,
    ) -> Vec<Envelope> {
        rules
            .matching(&self.state.model, values)
            .map(|rule| {
                cause.derive(
                    &format!("rule:{}", rule.name),
                    source,
                    Event::CommandRequested(CommandRequested {
                        model: self.state.model.clone(),
                        command: rule.command.clone(),
                        args: rule.args.clone(),
                    }),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use wharf_events::{FrameReceived, Payload};

    use super::*;
    use crate::rules::{ConditionConfig, RuleConfig};

    fn frame(payload: Payload) -> Envelope {
        Envelope::new(
            "thermo-42",
            "socket-0",
            Event::FrameReceived(FrameReceived {
                model: "demo-thermostat".into(),
                channel: None,
                payload,
            }),
        )
    }

    fn fan_rule() -> Rules {
        Rules::compile(&[RuleConfig {
            name: Some("hot".into()),
            model: "demo-thermostat".into(),
            when: ConditionConfig {
                field: "temperature".into(),
                op: ">".into(),
                value: json!(30),
            },
            command: "fan".into(),
            args: json!({"on": true}).as_object().cloned().unwrap(),
        }])
        .unwrap()
    }

    #[test]
    fn merges_reported_values_and_counts_frames() {
        let mut actor = DeviceActor::new("thermo-42", None);
        let rules = Rules::default();
        actor.apply(
            &frame(Payload::Json(json!({"temperature": 20, "unit": "C"}))),
            &rules,
            "r",
        );
        let applied = actor.apply(
            &frame(Payload::Json(json!({"temperature": 21}))),
            &rules,
            "r",
        );
        actor.apply(&frame(Payload::Binary(vec![1, 2])), &rules, "r");
        assert!(applied.changed);
        let state = actor.state();
        assert_eq!(state.message_count, 3);
        assert_eq!(state.reported["temperature"], json!(21));
        assert_eq!(state.reported["unit"], json!("C"));
        assert_eq!(state.model, "demo-thermostat");
        assert!(state.last_seen_ms.is_some());
    }

    #[test]
    fn a_matching_rule_requests_its_command_with_a_reproducible_id() {
        let rules = fan_rule();
        let hot = frame(Payload::Json(json!({"temperature": 35})));
        let first = DeviceActor::new("thermo-42", None).apply(&hot, &rules, "r");
        let replay = DeviceActor::new("thermo-42", None).apply(&hot, &rules, "r");
        assert_eq!(first.replies.len(), 1);
        assert_eq!(first.replies[0].id, replay.replies[0].id);
        let Event::CommandRequested(request) = &first.replies[0].event else {
            panic!("expected a CommandRequested");
        };
        assert_eq!(request.command, "fan");
        assert_eq!(request.args["on"], json!(true));
        assert_eq!(first.replies[0].causation, Some(hot.id));
    }

    #[test]
    fn rules_look_only_at_what_the_frame_reported() {
        let rules = fan_rule();
        let mut actor = DeviceActor::new("thermo-42", None);
        actor.apply(
            &frame(Payload::Json(json!({"temperature": 35}))),
            &rules,
            "r",
        );
        let later = actor.apply(&frame(Payload::Json(json!({"humidity": 40}))), &rules, "r");
        assert!(
            later.replies.is_empty(),
            "an unrelated frame must not re-fire the rule"
        );
    }
}
