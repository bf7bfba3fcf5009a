//! The built-in demo: a thermostat model whose `fan` command a rule requests
//! when it reports a temperature above 30.

use serde_json::json;
use wharf_receiver::rules::{ConditionConfig, RuleConfig};

/// The demo device model.
pub const MODEL: &str = "demo-thermostat";

/// The demo device id the printed token is for.
pub const DEVICE: &str = "thermo-1";

/// The demo model's profile.
pub const PROFILE: &str = include_str!("../../../commander/profiles/demo-thermostat.toml");

/// Turns the fan on when the thermostat reports more than 30 degrees.
pub fn fan_rule() -> RuleConfig {
    RuleConfig {
        name: Some("demo-fan-on-heat".into()),
        model: MODEL.into(),
        when: ConditionConfig {
            field: "temperature".into(),
            op: ">".into(),
            value: json!(30),
        },
        command: "fan".into(),
        args: json!({"on": true})
            .as_object()
            .cloned()
            .expect("a JSON object literal is an object"),
        cooldown: None,
    }
}
