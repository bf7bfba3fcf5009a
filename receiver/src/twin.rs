//! The built-in logic: a device twin plus rules.
//!
//! - `reported` merges the JSON objects the device sends;
//! - `desired` is set by `DesiredStateChanged` (a patch; `null` removes a key);
//! - the delta (desired keys whose reported value differs) is sent to the
//!   device with the profile's `set_desired` command when `desired` changes
//!   and when the device reconnects while a delta remains;
//! - `connected`, `last_seen` and the frame count follow the events;
//! - rules request commands when reported values meet their conditions;
//! - `reported` and `desired` each hold at most [`TwinLimits`] keys and
//!   bytes: a key past them is refused (the rest of the frame or patch is
//!   applied), counted and logged, so no device can grow its row without
//!   bound and slow every write-back it shares.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Map, Value};
use tracing::warn;
use wharf_events::{Envelope, Event};

use crate::logic::{Change, DeviceLogic, DeviceState, Replies};
use crate::rules::Rules;

/// The `[receiver.twin]` section: how large one device's twin may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwinLimits {
    /// Keys `reported` may hold, and `desired` may hold.
    pub max_keys: usize,
    /// The size `reported` may reach as JSON, and `desired` may (estimated
    /// from its contents: string lengths, numbers counted long).
    pub max_bytes: usize,
}

impl Default for TwinLimits {
    fn default() -> Self {
        TwinLimits {
            max_keys: 256,
            max_bytes: 64 * 1024,
        }
    }
}

/// `reason`, `part`: why a key was refused, and where.
type RefusalLabels = [(&'static str, &'static str); 2];

/// Where the twin keeps its bookkeeping in the state's `meta`.
const META_CONNECTION: &str = "connection";
const META_RULES: &str = "rules";

/// The device twin and the configured rules.
pub struct TwinLogic {
    rules: Rules,
    /// The command that carries a delta to a device.
    set_desired: String,
    limits: TwinLimits,
    /// Keys refused by the limits, by reason and part.
    refused: Family<RefusalLabels, Counter>,
}

impl TwinLogic {
    /// The twin with `rules` and the default limits; deltas travel as
    /// `set_desired` commands.
    pub fn new(rules: Rules, set_desired: impl Into<String>) -> Self {
        TwinLogic {
            rules,
            set_desired: set_desired.into(),
            limits: TwinLimits::default(),
            refused: Family::default(),
        }
    }

    /// The same twin within `limits`.
    pub fn with_limits(mut self, limits: TwinLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Merges `patch` into `part` of `state` within the limits; `null`
    /// removes a key where `removes_on_null`.
    fn merge(
        &self,
        state: &mut DeviceState,
        part: Part,
        patch: &Map<String, Value>,
        removes_on_null: bool,
    ) {
        let (map, measured) = match part {
            Part::Reported => (&mut state.reported, &mut state.sizes.reported),
            Part::Desired => (&mut state.desired, &mut state.sizes.desired),
        };
        // The twin's size is walked at most once (the first time a value
        // grows after the state was loaded), then kept up to date entry by
        // entry: frames cost the size of what they carry, not of the twin.
        let mut size: Option<usize> = *measured;
        // Removals first: a patch that removes keys and adds others fits
        // whenever the result does.
        if removes_on_null {
            for (key, _) in patch.iter().filter(|(_, value)| value.is_null()) {
                if let (Some(old), Some(total)) = (map.remove(key), size.as_mut()) {
                    *total -= entry_size(key, &old);
                }
            }
        }
        let mut refused: Vec<(&str, &'static str)> = Vec::new();
        for (key, value) in patch {
            if removes_on_null && value.is_null() {
                continue;
            }
            let old = map.get(key).map_or(0, |old| entry_size(key, old));
            let new = entry_size(key, value);
            if old == 0 && map.len() >= self.limits.max_keys {
                refused.push((key, "too_many_keys"));
                continue;
            }
            if new > old {
                let total = *size.get_or_insert_with(|| encoded_size_of_map(map));
                if total - old + new > self.limits.max_bytes {
                    refused.push((key, "too_large"));
                    continue;
                }
            }
            if let Some(total) = size.as_mut() {
                *total = *total - old + new;
            }
            map.insert(key.clone(), value.clone());
        }
        *measured = size;
        if refused.is_empty() {
            return;
        }
        for (_, reason) in &refused {
            self.refused
                .get_or_create(&[("reason", reason), ("part", part.name())])
                .inc();
        }
        if log_refusals_now() {
            let keys: Vec<&str> = refused.iter().take(5).map(|(key, _)| *key).collect();
            warn!(
                device = %state.device,
                part = part.name(),
                refused = refused.len(),
                ?keys,
                max_keys = self.limits.max_keys,
                max_bytes = self.limits.max_bytes,
                "twin keys refused: receiver.twin limits reached (this warning repeats at most once a second)"
            );
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
        self.merge(state, Part::Reported, values, false);
    }
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Reported,
    Desired,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Reported => "reported",
            Part::Desired => "desired",
        }
    }
}

/// Whether a refusal warning may be logged now: at most one a second over
/// all devices, whatever their rate (the metric counts every refusal).
fn log_refusals_now() -> bool {
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST_SECOND.swap(now, Ordering::Relaxed) != now
}

/// The size of `"key":value,` in a JSON object.
fn entry_size(key: &str, value: &Value) -> usize {
    key.len() + 4 + encoded_size(value)
}

fn encoded_size_of_map(map: &Map<String, Value>) -> usize {
    2 + map
        .iter()
        .map(|(key, value)| entry_size(key, value))
        .sum::<usize>()
}

/// About the size of `value` as JSON, without encoding it: exact for
/// structure and unescaped strings, numbers counted at their longest.
fn encoded_size(value: &Value) -> usize {
    match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 24,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => {
            2 + items
                .iter()
                .map(|item| encoded_size(item) + 1)
                .sum::<usize>()
        }
        Value::Object(map) => encoded_size_of_map(map),
    }
}

impl DeviceLogic for TwinLogic {
    fn register_metrics(&self, registry: &mut Registry) {
        for reason in ["too_many_keys", "too_large"] {
            for part in [Part::Reported, Part::Desired] {
                let _ = self
                    .refused
                    .get_or_create(&[("reason", reason), ("part", part.name())]);
            }
        }
        registry.register(
            "twin_refused",
            "Twin keys refused by the receiver.twin limits, by reason and part",
            self.refused.clone(),
        );
    }

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
                self.merge(state, Part::Desired, &change.desired, true);
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

    fn refused(logic: &TwinLogic, reason: &'static str, part: &'static str) -> u64 {
        logic
            .refused
            .get_or_create(&[("reason", reason), ("part", part)])
            .get()
    }

    #[test]
    fn keys_past_the_limit_are_refused_and_the_rest_applied() {
        let logic = TwinLogic::new(Rules::default(), "set_desired").with_limits(TwinLimits {
            max_keys: 3,
            max_bytes: 64 * 1024,
        });
        let mut state = DeviceState::new("t-1");
        run(&logic, &mut state, &frame(json!({"a": 1, "b": 2}), 1));
        // Two new keys, one room: "c" is taken (a frame's keys are taken in
        // their sorted order), "d" refused;
        // an existing key still changes.
        run(
            &logic,
            &mut state,
            &frame(json!({"a": 10, "c": 3, "d": 4}), 2),
        );
        assert_eq!(
            Value::Object(state.reported.clone()),
            json!({"a": 10, "b": 2, "c": 3})
        );
        assert_eq!(refused(&logic, "too_many_keys", "reported"), 1);
        assert_eq!(state.message_count, 2, "the frame itself still counts");

        // desired: the same limit; removing a key makes room.
        run(
            &logic,
            &mut state,
            &desired(json!({"x": 1, "y": 2, "z": 3})),
        );
        run(&logic, &mut state, &desired(json!({"w": 0})));
        assert_eq!(refused(&logic, "too_many_keys", "desired"), 1);
        run(&logic, &mut state, &desired(json!({"x": null, "w": 0})));
        assert_eq!(
            Value::Object(state.desired.clone()),
            json!({"y": 2, "z": 3, "w": 0})
        );
    }

    #[test]
    fn values_that_would_outgrow_the_twin_are_refused() {
        let logic = TwinLogic::new(Rules::default(), "set_desired").with_limits(TwinLimits {
            max_keys: 256,
            max_bytes: 1024,
        });
        let mut state = DeviceState::new("t-1");
        let big = "x".repeat(600);
        run(&logic, &mut state, &frame(json!({"blob": big}), 1));
        run(
            &logic,
            &mut state,
            &frame(json!({"other": big, "t": 20}), 2),
        );
        assert_eq!(refused(&logic, "too_large", "reported"), 1);
        assert_eq!(state.reported["t"], json!(20));
        assert!(!state.reported.contains_key("other"));
        // Replacing a value counts its old size out first.
        run(
            &logic,
            &mut state,
            &frame(json!({"blob": "y".repeat(900)}), 3),
        );
        assert_eq!(state.reported["blob"].as_str().map(str::len), Some(900));
        let encoded = serde_json::to_string(&state.reported).unwrap().len();
        assert!(encoded <= 1024, "{encoded}");
    }

    #[test]
    fn the_kept_size_follows_every_change_as_a_fresh_walk_would() {
        let logic = TwinLogic::new(Rules::default(), "set_desired").with_limits(TwinLimits {
            max_keys: 256,
            max_bytes: 2048,
        });
        let walked = |map: &Map<String, Value>| Some(encoded_size_of_map(map));
        // A state as loaded from the store: not measured yet.
        let mut state = DeviceState::new("t-1");
        state.reported = json!({"a": "x".repeat(100)}).as_object().unwrap().clone();
        for (n, values) in [
            json!({"b": 1}),
            json!({"a": "short", "c": [1, 2, {"d": "e"}]}),
            json!({"big": "y".repeat(1500)}),
            json!({"other": "z".repeat(600)}),
            json!({"big": "s"}),
            json!({"other": "z".repeat(600)}),
        ]
        .into_iter()
        .enumerate()
        {
            run(&logic, &mut state, &frame(values, n as u64 + 1));
            assert_eq!(
                state.sizes.reported,
                walked(&state.reported),
                "after frame {n}"
            );
        }
        assert_eq!(
            refused(&logic, "too_large", "reported"),
            1,
            "the first 'other'"
        );
        assert!(
            state.reported.contains_key("other"),
            "fits once 'big' shrank"
        );
        for patch in [
            json!({"x": "1".repeat(300), "y": 2}),
            json!({"x": null, "z": true}),
            json!({"absent": null}),
        ] {
            run(&logic, &mut state, &desired(patch));
            assert_eq!(state.sizes.desired, walked(&state.desired));
        }
    }

    #[test]
    fn the_size_estimate_is_never_below_the_encoding() {
        for value in [
            json!({"a": 1.5e300, "b": [true, null, -12345678901234i64], "c": {"d": "text"}}),
            json!({"n": u64::MAX, "s": "", "e": {}}),
        ] {
            let map = value.as_object().unwrap();
            let encoded = serde_json::to_string(map).unwrap().len();
            assert!(encoded_size_of_map(map) >= encoded, "{value}");
        }
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
