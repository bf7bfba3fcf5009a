//! Rules from configuration: when a device of a model reports a field that
//! meets a condition, request a command.
//!
//! ```toml
//! [[receiver.rules]]
//! name = "fan-on-heat"        # optional; names the rule in logs and command ids
//! model = "demo-thermostat"
//! when = { field = "temperature", op = ">", value = 30 }
//! command = "fan"
//! args = { on = true }
//! cooldown = "5m"             # optional; fire at most once per 5 minutes per device
//! ```
//!
//! Operators: `>`, `>=`, `<`, `<=` (numbers), `==`, `!=` (any JSON value),
//! and `changed` (the reported value differs from the previous one; no
//! `value`). A rule looks only at the fields a frame reports, so it fires on
//! the reports that meet it, not on every later frame.

use serde::Deserialize;
use serde_json::{Map, Value};
use wharf_runtime::ConfigError;

/// One rule as written in the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in logs and in the ids of the commands it requests;
    /// derived from the rule's content when absent.
    #[serde(default)]
    pub name: Option<String>,
    pub model: String,
    pub when: ConditionConfig,
    pub command: String,
    #[serde(default)]
    pub args: Map<String, Value>,
    /// After firing for a device, the rule stays quiet for it this long
    /// (measured in event time, so replays decide the same).
    #[serde(default, with = "humantime_serde::option")]
    pub cooldown: Option<std::time::Duration>,
}

/// `{ field = "temperature", op = ">", value = 30 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// A key of the reported JSON object; `a.b` reaches into nested objects.
    pub field: String,
    pub op: String,
    /// What to compare with; not used by `changed`.
    #[serde(default)]
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
    Changed,
}

impl Op {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            "<=" => Op::Le,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "changed" => Op::Changed,
            _ => return None,
        })
    }

    fn is_ordering(self) -> bool {
        matches!(self, Op::Gt | Op::Ge | Op::Lt | Op::Le)
    }
}

/// A validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub model: String,
    path: Vec<String>,
    op: Op,
    value: Value,
    pub command: String,
    pub args: Map<String, Value>,
    cooldown: Option<std::time::Duration>,
}

/// Every configured rule, ready to evaluate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// Validates the configured rules; on failure, one line per problem,
    /// naming the rule.
    pub fn compile(configs: &[RuleConfig]) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(configs.len());
        let mut problems = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            match Rule::compile(config) {
                Ok(rule) if rules.iter().any(|r: &Rule| r.name == rule.name) => {
                    problems.push(format!(
                        "receiver.rules[{index}] ({}): another rule has this name",
                        rule.name
                    ))
                }
                Ok(rule) => rules.push(rule),
                Err(problem) => problems.push(format!("receiver.rules[{index}]: {problem}")),
            }
        }
        if problems.is_empty() {
            Ok(Rules { rules })
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The rules of `model` that a frame reporting `values` triggers, given
    /// the values reported before it.
    pub fn triggered<'a>(
        &'a self,
        model: &'a str,
        previous: &'a Map<String, Value>,
        values: &'a Map<String, Value>,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |rule| rule.model == model && rule.holds(previous, values))
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Rule {
    fn compile(config: &RuleConfig) -> Result<Self, String> {
        let ConditionConfig { field, op, value } = &config.when;
        let label = config
            .name
            .clone()
            .unwrap_or_else(|| format!("{}:{field}{op}{value}:{}", config.model, config.command));
        let fail = |problem: String| format!("rule {label}: {problem}");
        if config.cooldown.is_some_and(|c| c.is_zero()) {
            return Err(fail("cooldown must be longer than 0s".into()));
        }
        if config.model.is_empty() {
            return Err(fail("model must not be empty".into()));
        }
        if config.command.is_empty() {
            return Err(fail("command must not be empty".into()));
        }
        if field.is_empty() || field.split('.').any(str::is_empty) {
            return Err(fail(format!("when.field {field:?} is not a field name")));
        }
        let parsed = Op::parse(op)
            .ok_or_else(|| fail(format!("when.op {op:?} is not one of >, >=, <, <=, ==, !=")))?;
        if parsed.is_ordering() && !value.is_number() {
            return Err(fail(format!(
                "when.op {op:?} compares numbers, but when.value is {value}"
            )));
        }
        Ok(Rule {
            name: label,
            model: config.model.clone(),
            path: field.split('.').map(str::to_owned).collect(),
            op: parsed,
            value: value.clone(),
            command: config.command.clone(),
            args: config.args.clone(),
            cooldown: config.cooldown,
        })
    }

    /// The cool-down in milliseconds, if the rule has one.
    pub fn cooldown_ms(&self) -> Option<i64> {
        self.cooldown.map(|c| c.as_millis() as i64)
    }

    /// Whether the condition holds for the reported `values`.
    fn holds(&self, previous: &Map<String, Value>, values: &Map<String, Value>) -> bool {
        let Some(actual) = lookup(values, &self.path) else {
            return false;
        };
        if self.op == Op::Changed {
            return lookup(previous, &self.path) != Some(actual);
        }
        let numbers = actual.as_f64().zip(self.value.as_f64());
        match (self.op, numbers) {
            (Op::Gt, Some((a, b))) => a > b,
            (Op::Ge, Some((a, b))) => a >= b,
            (Op::Lt, Some((a, b))) => a < b,
            (Op::Le, Some((a, b))) => a <= b,
            (Op::Eq, Some((a, b))) => a == b,
            (Op::Ne, Some((a, b))) => a != b,
            (Op::Eq, None) => *actual == self.value,
            (Op::Ne, None) => *actual != self.value,
            (Op::Changed, _) | (_, None) => false,
        }
    }
}

fn lookup<'a>(object: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = object.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        lookup(value.as_object()?, rest)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// A rule of model `thermo` asking for `fan` when `field op value`.
    pub(crate) fn rule(field: &str, op: &str, value: Value) -> RuleConfig {
        RuleConfig {
            name: None,
            model: "thermo".into(),
            when: ConditionConfig {
                field: field.into(),
                op: op.into(),
                value,
            },
            command: "fan".into(),
            args: Map::new(),
            cooldown: None,
        }
    }

    fn reported(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn fires_when_the_condition_holds_for_the_model() {
        let rules = Rules::compile(&[rule("temperature", ">", json!(30))]).unwrap();
        let none = Map::new();
        let hot = reported(json!({"temperature": 35}));
        let cool = reported(json!({"temperature": 30}));
        assert_eq!(rules.triggered("thermo", &none, &hot).count(), 1);
        assert_eq!(rules.triggered("thermo", &none, &cool).count(), 0);
        assert_eq!(rules.triggered("other-model", &none, &hot).count(), 0);
        assert_eq!(
            rules
                .triggered("thermo", &hot, &reported(json!({})))
                .count(),
            0
        );
    }

    #[test]
    fn compares_nested_fields_and_non_numbers() {
        let rules = Rules::compile(&[
            rule("battery.level", "<=", json!(10)),
            rule("mode", "==", json!("eco")),
            rule("mode", "!=", json!("off")),
        ])
        .unwrap();
        let state = reported(json!({"battery": {"level": 10.0}, "mode": "eco"}));
        assert_eq!(rules.triggered("thermo", &Map::new(), &state).count(), 3);
    }

    #[test]
    fn names_the_rule_and_the_problem() {
        let problems = Rules::compile(&[
            rule("temperature", "~", json!(1)),
            rule("temperature", ">", json!("hot")),
            rule("", ">", json!(1)),
            RuleConfig {
                cooldown: Some(std::time::Duration::ZERO),
                ..rule("temperature", ">", json!(1))
            },
        ])
        .unwrap_err()
        .problems;
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[3].contains("cooldown"), "{problems:?}");
        assert!(problems[0].contains("receiver.rules[0]") && problems[0].contains("\"~\""));
        assert!(problems[1].contains("compares numbers"));
        assert!(problems[2].contains("is not a field name"));
    }

    #[test]
    fn refuses_duplicate_names() {
        let mut a = rule("temperature", ">", json!(1));
        a.name = Some("hot".into());
        let problems = Rules::compile(&[a.clone(), a]).unwrap_err().problems;
        assert!(problems[0].contains("another rule has this name"));
    }
}
