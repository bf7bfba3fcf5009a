//! The built-in logic: a device twin plus rules.
//!
//! - `reported` merges the JSON objects the device sends;
//! - `desired` is set by `DesiredStateChanged` (a patch; `null` removes a key);
//! - the delta (desired keys whose reported value differs) is sent to the
//!   device with the profile's `set_desired` command when `desired` changes
//!   and when the device reconnects while a delta remains;
//! - `connected`, `last_seen` and the frame count follow the events;
//! - rules request commands when reported values meet their conditions.

use serde_json::{Map, Value};
use wharf_events::{Envelope, Event};

use crate::logic::{Change, DeviceLogic, DeviceState, Replies};
use crate::rules::Rules;

/// Where the twin keeps its bookkeeping in the state's `meta`.
const META_CONNECTION: &str = "connection";
const META_RULES: &str = "rules";

/// The device twin and the configured rules.
pub struct TwinLogic {
    rules: Rules,
    /// The command that carries a delta to a device.
    set_desired: String,
}

impl TwinLogic {
    /// The twin with `rules`; deltas travel as `set_desired` commands.
    pub fn new(rules: Rules, set_desired: impl Into<String>) -> Self {
        TwinLogic {
            rules,
            set_desired: set_desired.into(),
        }
    }

    fn request_delta(&self, state: &DeviceState, key: &str, replies: &mut Replies<'_>) {
        let delta = state.delta();
        if !delta.is_empty() && !state.model.is_empty() {
            replies.request_command(key, &state.model, &self.set_desired, delta);
        }
    }

    fn on_frame(
        &self,
        state: &mut DeviceState,
        values: &Map<String, Value>,
        at_ms: i64,
        replies: &mut Replies<'_>,
    ) {
        let fired: Vec<(String, String, Map<String, Value>)> = self
            .rules
            .triggered(&state.model, &state.reported, values)
            .filter(|rule| !cooling_down(state, &rule.name, rule.cooldown_ms(), at_ms))
            .map(|rule| (rule.name.clone(), rule.command.clone(), rule.args.clone()))
            .collect();
        for (name, command, args) in fired {
            replies.request_command(&format!("rule:{name}"), &state.model, &command, args);
            rule_marks(state).insert(name, Value::from(at_ms));
        }
        for (key, value) in values {
            state.reported.insert(key.clone(), value.clone());
        }
    }
}

impl DeviceLogic for TwinLogic {
    fn apply(
        &self,
        state: &mut DeviceState,
        event: &Envelope,
        replies: &mut Replies<'_>,
    ) -> Change {
        let at_ms = millis(event);
        match &event.event {
            Event::FrameReceived(frame) => {
                state.model.clone_from(&frame.model);
                state.message_count += 1;
                if let Some(values) = frame.payload.as_object() {
                    self.on_frame(state, values, at_ms, replies);
                }
            }
            Event::DesiredStateChanged(change) => {
                for (key, value) in &change.desired {
                    if value.is_null() {
                        state.desired.remove(key);
                    } else {
                        state.desired.insert(key.clone(), value.clone());
                    }
                }
                self.request_delta(state, "set_desired", replies);
                return Change::Changed;
            }
            Event::DeviceConnected(connected) => {
                state.model.clone_from(&connected.model);
                state.connected = true;
                state.meta.insert(
                    META_CONNECTION.into(),
                    Value::String(connected.connection.to_string()),
                );
                self.request_delta(state, "set_desired", replies);
            }
            Event::DeviceDisconnected(disconnected) => {
                // A late disconnect of an older connection must not hide a newer one.
                let current = state.meta.get(META_CONNECTION).and_then(Value::as_str);
                if current.is_none_or(|id| id == disconnected.connection.to_string()) {
                    state.connected = false;
                    state.meta.remove(META_CONNECTION);
                }
            }
            _ => return Change::Unchanged,
        }
        state.last_seen_ms = Some(at_ms).max(state.last_seen_ms);
        Change::Changed
    }
}

fn cooling_down(state: &DeviceState, rule: &str, cooldown_ms: Option<i64>, at_ms: i64) -> bool {
    let Some(cooldown) = cooldown_ms else {
        return false;
    };
    state
        .meta
        .get(META_RULES)
        .and_then(|marks| marks.get(rule))
        .and_then(Value::as_i64)
        .is_some_and(|fired| at_ms - fired < cooldown)
}

fn rule_marks(state: &mut DeviceState) -> &mut Map<String, Value> {
    let marks = state
        .meta
        .entry(META_RULES)
        .or_insert_with(|| Value::Object(Map::new()));
    if !marks.is_object() {
        *marks = Value::Object(Map::new());
    }
    marks.as_object_mut().expect("made an object just above")
}

fn millis(event: &Envelope) -> i64 {
    event
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;
    use uuid::Uuid;
    use wharf_events::{
        DesiredStateChanged, DeviceConnected, DeviceDisconnected, FrameReceived, Payload, Transport,
    };

    use super::*;
    use crate::rules::RuleConfig;

    fn at(envelope: Envelope, secs: u64) -> Envelope {
        Envelope {
            time: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs),
            ..envelope
        }
    }

    fn frame(values: Value, secs: u64) -> Envelope {
        at(
            Envelope::new(
                "t-1",
                "socket-0",
                Event::FrameReceived(FrameReceived {
                    model: "thermo".into(),
                    channel: None,
                    payload: Payload::Json(values),
                }),
            ),
            secs,
        )
    }

    fn desired(values: Value) -> Envelope {
        Envelope::new(
            "t-1",
            "api",
            Event::DesiredStateChanged(DesiredStateChanged {
                desired: values.as_object().cloned().unwrap(),
            }),
        )
    }

    fn connected(connection: Uuid) -> Envelope {
        Envelope::new(
            "t-1",
            "socket-0",
            Event::DeviceConnected(DeviceConnected {
                model: "thermo".into(),
                transport: Transport::Websocket,
                instance: "socket-0".into(),
                connection,
                remote: None,
            }),
        )
    }

    fn disconnected(connection: Uuid) -> Envelope {
        Envelope::new(
            "t-1",
            "socket-0",
            Event::DeviceDisconnected(DeviceDisconnected {
                model: "thermo".into(),
                transport: Transport::Websocket,
                instance: "socket-0".into(),
                connection,
                reason: "closed".into(),
            }),
        )
    }

    fn rule(field: &str, op: &str, value: Value, cooldown: Option<&str>) -> RuleConfig {
        RuleConfig {
            name: Some(format!("{field}{op}")),
            cooldown: cooldown.map(|text| humantime::parse_duration(text).unwrap()),
            ..crate::rules::tests::rule(field, op, value)
        }
    }

    fn run(logic: &TwinLogic, state: &mut DeviceState, event: &Envelope) -> Vec<Envelope> {
        let mut replies = Replies::new(event, "receiver");
        logic.apply(state, event, &mut replies);
        replies.into_events()
    }

    fn commands(replies: &[Envelope]) -> Vec<(String, Value)> {
        replies
            .iter()
            .map(|reply| match &reply.event {
                Event::CommandRequested(request) => {
                    (request.command.clone(), Value::Object(request.args.clone()))
                }
                other => panic!("unexpected reply {other:?}"),
            })
            .collect()
    }

    #[test]
    fn desired_changes_send_the_delta_and_reconnects_resend_what_remains() {
        let logic = TwinLogic::new(Rules::default(), "set_desired");
        let mut state = DeviceState::new("t-1");
        let connection = Uuid::now_v7();
        run(&logic, &mut state, &connected(connection));
        run(
            &logic,
            &mut state,
            &frame(json!({"target": 19, "mode": "eco"}), 1),
        );

        let sent = run(
            &logic,
            &mut state,
            &desired(json!({"target": 21, "mode": "eco"})),
        );
        assert_eq!(
            commands(&sent),
            vec![("set_desired".into(), json!({"target": 21}))]
        );
        assert_eq!(
            state.delta(),
            json!({"target": 21}).as_object().cloned().unwrap()
        );

        run(&logic, &mut state, &disconnected(connection));
        assert!(!state.connected);
        let resent = run(&logic, &mut state, &connected(Uuid::now_v7()));
        assert_eq!(
            commands(&resent),
            vec![("set_desired".into(), json!({"target": 21}))]
        );

        run(&logic, &mut state, &frame(json!({"target": 21}), 2));
        assert!(state.delta().is_empty());
        assert!(run(&logic, &mut state, &connected(Uuid::now_v7())).is_empty());
        let removed = run(&logic, &mut state, &desired(json!({"target": null})));
        assert!(removed.is_empty() && !state.desired.contains_key("target"));
    }

    #[test]
    fn a_late_disconnect_of_an_old_connection_keeps_the_device_connected() {
        let logic = TwinLogic::new(Rules::default(), "set_desired");
        let mut state = DeviceState::new("t-1");
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        run(&logic, &mut state, &connected(old));
        run(&logic, &mut state, &connected(new));
        run(&logic, &mut state, &disconnected(old));
        assert!(state.connected);
        run(&logic, &mut state, &disconnected(new));
        assert!(!state.connected);
    }

    #[test]
    fn changed_fires_on_a_new_value_only() {
        let rules = Rules::compile(&[rule("mode", "changed", Value::Null, None)]).unwrap();
        let logic = TwinLogic::new(rules, "set_desired");
        let mut state = DeviceState::new("t-1");
        assert_eq!(
            run(&logic, &mut state, &frame(json!({"mode": "eco"}), 1)).len(),
            1
        );
        assert_eq!(
            run(&logic, &mut state, &frame(json!({"mode": "eco"}), 2)).len(),
            0
        );
        assert_eq!(
            run(&logic, &mut state, &frame(json!({"other": 1}), 3)).len(),
            0
        );
        assert_eq!(
            run(&logic, &mut state, &frame(json!({"mode": "boost"}), 4)).len(),
            1
        );
    }

    #[test]
    fn a_cooldown_holds_a_rule_back_by_event_time() {
        let rules = Rules::compile(&[rule("temperature", ">", json!(30), Some("60s"))]).unwrap();
        let logic = TwinLogic::new(rules, "set_desired");
        let mut state = DeviceState::new("t-1");
        let fired: Vec<usize> = [0, 10, 59, 60, 61, 130]
            .iter()
            .map(|secs| {
                run(
                    &logic,
                    &mut state,
                    &frame(json!({"temperature": 35}), *secs),
                )
                .len()
            })
            .collect();
        assert_eq!(fired, vec![1, 0, 0, 1, 0, 1]);
    }

    #[test]
    fn replaying_from_the_same_state_replies_the_same() {
        let rules = Rules::compile(&[rule("temperature", ">", json!(30), Some("60s"))]).unwrap();
        let logic = TwinLogic::new(rules, "set_desired");
        let stored = DeviceState::new("t-1");
        let event = frame(json!({"temperature": 35}), 5);
        let first = run(&logic, &mut stored.clone(), &event);
        let replay = run(&logic, &mut stored.clone(), &event);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, replay[0].id);
    }
}
