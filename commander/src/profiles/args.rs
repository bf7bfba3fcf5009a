//! Command arguments: their declared types, ranges and defaults, and the
//! check every request passes before anything is rendered.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use wharf_events::RejectReason;

use super::Rejection;

/// An argument's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgType {
    Bool,
    /// A whole number (`21`, not `21.5`).
    Integer,
    /// Any number.
    Number,
    String,
}

impl ArgType {
    fn name(self) -> &'static str {
        match self {
            ArgType::Bool => "a boolean",
            ArgType::Integer => "an integer",
            ArgType::Number => "a number",
            ArgType::String => "a string",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match self {
            ArgType::Bool => value.is_boolean(),
            ArgType::Integer => value.is_i64() || value.is_u64(),
            ArgType::Number => value.is_number(),
            ArgType::String => value.is_string(),
        }
    }
}

/// One declared argument, as a profile writes it:
/// `celsius = { type = "number", min = 5, max = 35 }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgSpec {
    #[serde(rename = "type")]
    pub kind: ArgType,
    /// Inclusive bounds, for numbers.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The longest string, in characters.
    pub max_length: Option<usize>,
    /// The only values allowed.
    pub one_of: Option<Vec<Value>>,
    /// Whether a request may leave it out.
    #[serde(default)]
    pub optional: bool,
    /// The value used when a request leaves it out.
    pub default: Option<Value>,
}

impl ArgSpec {
    /// Problems with the declaration itself, found when the profile loads.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let numeric = matches!(self.kind, ArgType::Integer | ArgType::Number);
        if !numeric && (self.min.is_some() || self.max.is_some()) {
            problems.push("min and max apply to integer and number arguments only".into());
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            problems.push(format!("min {min} is above max {max}"));
        }
        if self.max_length.is_some() && self.kind != ArgType::String {
            problems.push("max_length applies to string arguments only".into());
        }
        for value in self.one_of.iter().flatten() {
            if !self.kind.admits(value) {
                problems.push(format!("one_of value {value} is not {}", self.kind.name()));
            }
        }
        if let Some(default) = &self.default
            && let Err(problem) = self.check_value(default)
        {
            problems.push(format!("default {default}: {problem}"));
        }
        problems
    }

    /// Whether `value` is acceptable; the reason otherwise.
    fn check_value(&self, value: &Value) -> Result<(), String> {
        if !self.kind.admits(value) {
            return Err(format!("must be {}, not {value}", self.kind.name()));
        }
        if let Some(number) = value.as_f64() {
            if let Some(min) = self.min
                && number < min
            {
                return Err(format!("{value} is below the minimum {min}"));
            }
            if let Some(max) = self.max
                && number > max
            {
                return Err(format!("{value} is above the maximum {max}"));
            }
        }
        if let (Some(text), Some(max_length)) = (value.as_str(), self.max_length)
            && text.chars().count() > max_length
        {
            return Err(format!(
                "is {} characters long, more than max_length {max_length}",
                text.chars().count()
            ));
        }
        if let Some(allowed) = &self.one_of
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("{value} is not one of {}", list.join(", ")));
        }
        Ok(())
    }

    /// Whether a value is always present once checked.
    pub(crate) fn always_present(&self) -> bool {
        !self.optional || self.default.is_some()
    }
}

/// Checks `args` against `specs`; the arguments with defaults filled in.
pub(crate) fn check(
    specs: &BTreeMap<String, ArgSpec>,
    args: &Map<String, Value>,
) -> Result<Map<String, Value>, Rejection> {
    let invalid = |argument: &str, detail: String| Rejection {
        reason: RejectReason::InvalidArgument,
        argument: Some(argument.to_owned()),
        detail,
    };
    if let Some(unknown) = args.keys().find(|name| !specs.contains_key(*name)) {
        let known: Vec<&str> = specs.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "it takes none".to_owned()
        } else {
            format!("known: {}", known.join(", "))
        };
        return Err(invalid(
            unknown,
            format!("unknown argument {unknown} ({known})"),
        ));
    }
    let mut checked = Map::new();
    for (name, spec) in specs {
        match (args.get(name), &spec.default) {
            (Some(value), _) => {
                spec.check_value(value)
                    .map_err(|problem| invalid(name, format!("argument {name}: {problem}")))?;
                checked.insert(name.clone(), value.clone());
            }
            (None, Some(default)) => {
                checked.insert(name.clone(), default.clone());
            }
            (None, None) if spec.optional => {}
            (None, None) => {
                return Err(invalid(name, format!("argument {name} is missing")));
            }
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn specs(toml_text: &str) -> BTreeMap<String, ArgSpec> {
        toml::from_str(toml_text).unwrap()
    }

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn checks_types_ranges_and_fills_defaults() {
        let specs = specs(
            r#"
            celsius = { type = "number", min = 5, max = 35 }
            mode = { type = "string", one_of = ["eco", "comfort"], default = "eco" }
            label = { type = "string", optional = true, max_length = 4 }
            "#,
        );
        let checked = check(&specs, &args(json!({"celsius": 21.5}))).unwrap();
        assert_eq!(
            Value::Object(checked),
            json!({"celsius": 21.5, "mode": "eco"})
        );

        let cases = [
            (
                json!({"celsius": 99}),
                "celsius",
                "argument celsius: 99 is above the maximum 35",
            ),
            (
                json!({"celsius": 1}),
                "celsius",
                "argument celsius: 1 is below the minimum 5",
            ),
            (
                json!({"celsius": "hot"}),
                "celsius",
                "argument celsius: must be a number, not \"hot\"",
            ),
            (json!({}), "celsius", "argument celsius is missing"),
            (
                json!({"celsius": 20, "fan": true}),
                "fan",
                "unknown argument fan (known: celsius, label, mode)",
            ),
            (
                json!({"celsius": 20, "mode": "boost"}),
                "mode",
                "argument mode: \"boost\" is not one of \"eco\", \"comfort\"",
            ),
            (
                json!({"celsius": 20, "label": "kitchen"}),
                "label",
                "argument label: is 7 characters long, more than max_length 4",
            ),
        ];
        for (request, argument, detail) in cases {
            let rejection = check(&specs, &args(request.clone())).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::InvalidArgument, "{request}");
            assert_eq!(rejection.argument.as_deref(), Some(argument), "{request}");
            assert_eq!(rejection.detail, detail, "{request}");
        }
    }

    #[test]
    fn integers_refuse_fractions() {
        let specs = specs(r#"level = { type = "integer", min = 0, max = 3 }"#);
        assert!(check(&specs, &args(json!({"level": 2}))).is_ok());
        let rejection = check(&specs, &args(json!({"level": 2.5}))).unwrap_err();
        assert_eq!(
            rejection.detail,
            "argument level: must be an integer, not 2.5"
        );
    }

    #[test]
    fn finds_mistakes_in_declarations() {
        let bad = specs(
            r#"
            a = { type = "bool", min = 1 }
            b = { type = "integer", min = 5, max = 1 }
            c = { type = "integer", one_of = ["x"] }
            d = { type = "integer", max = 3, default = 9 }
            "#,
        );
        let problems: Vec<String> = bad.values().flat_map(ArgSpec::problems).collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[3].contains("default 9: 9 is above the maximum 3"),
            "{problems:?}"
        );
    }
}
