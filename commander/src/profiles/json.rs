//! JSON templates: the frame for JSON-speaking devices (WebSocket, TCP
//! lines, MQTT payloads). `{{name}}` stands for the JSON value of the
//! argument `name` (unquoted), `{{args}}` for all arguments as one object,
//! `{{id}}` for the command id, `{{command}}` for the command name and
//! `{{device}}` for the device id. Inside a JSON string (or an object key)
//! a placeholder is replaced by the value's text: a string as it is,
//! anything else as JSON (`"topic": "dev/{{device}}"`, `"text": "set to
//! {{celsius}}"`); an argument the request left out is `null` as a value
//! and empty inside a string.
//!
//! Rendering is structural: the template is parsed once, at load, with a
//! marker in place of each placeholder, and a command's values are put into
//! the parsed document, never pasted into text. So a template that loads
//! renders every command, whatever its values.

use serde_json::{Map, Value};
use uuid::Uuid;

/// A parsed template: the document, with markers where placeholders go.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonTemplate {
    document: Value,
    /// The placeholders, by marker number.
    placeholders: Vec<Placeholder>,
}

#[derive(Debug, Clone, PartialEq)]
enum Placeholder {
    Id,
    Command,
    Device,
    AllArgs,
    Arg(String),
}

/// Markers are NUL-delimited numbers: a NUL cannot stand in a template's
/// own strings unescaped, and no profile writes `\u0000` on purpose.
const MARK: char = '\u{0}';

impl JsonTemplate {
    /// Parses `text`; refuses what is not JSON once placeholders are values.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut marked = String::with_capacity(text.len());
        let mut placeholders = Vec::new();
        let mut rest = text;
        let mut in_string = false;
        let mut escaped = false;
        while !rest.is_empty() {
            if rest.starts_with("{{") {
                let after = &rest[2..];
                let end = after
                    .find("}}")
                    .ok_or_else(|| "a {{ is never closed".to_owned())?;
                let name = after[..end].trim();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!("{{{{{name}}}}} is not a placeholder name"));
                }
                let n = placeholders.len();
                placeholders.push(match name {
                    "id" => Placeholder::Id,
                    "command" => Placeholder::Command,
                    "device" => Placeholder::Device,
                    "args" => Placeholder::AllArgs,
                    _ => Placeholder::Arg(name.to_owned()),
                });
                // Inside a string the marker is part of it; outside, a
                // string of its own stands for the whole value.
                if in_string {
                    marked.push_str(&format!("\\u0000{n}\\u0000"));
                } else {
                    marked.push_str(&format!("\"\\u0000{n}\\u0000\""));
                }
                rest = &after[end + 2..];
                continue;
            }
            let c = rest.chars().next().expect("rest is not empty");
            if in_string {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => in_string = false,
                    _ => escaped = false,
                }
            } else if c == '"' {
                in_string = true;
            }
            marked.push(c);
            rest = &rest[c.len_utf8()..];
        }
        let document: Value = serde_json::from_str(&marked)
            .map_err(|error| format!("not valid JSON once filled in: {error}"))?;
        Ok(JsonTemplate {
            document,
            placeholders,
        })
    }

    /// The arguments the template names.
    pub(crate) fn arguments(&self) -> impl Iterator<Item = &str> {
        self.placeholders
            .iter()
            .filter_map(|placeholder| match placeholder {
                Placeholder::Arg(name) => Some(name.as_str()),
                _ => None,
            })
    }

    /// The frame for `args`; an argument the request left out is `null`.
    pub(crate) fn render(
        &self,
        device: &str,
        command: &str,
        args: &Map<String, Value>,
        id: Uuid,
    ) -> Value {
        let value = |n: usize| -> Value {
            match self.placeholders.get(n) {
                Some(Placeholder::Id) => Value::String(id.to_string()),
                Some(Placeholder::Command) => Value::String(command.to_owned()),
                Some(Placeholder::Device) => Value::String(device.to_owned()),
                Some(Placeholder::AllArgs) => Value::Object(args.clone()),
                Some(Placeholder::Arg(name)) => args.get(name).cloned().unwrap_or(Value::Null),
                None => Value::Null,
            }
        };
        fill(&self.document, &value)
    }
}

/// `template` with every marker replaced by its value.
fn fill(template: &Value, value: &impl Fn(usize) -> Value) -> Value {
    match template {
        Value::String(text) => match whole_marker(text) {
            Some(n) => value(n),
            None => Value::String(fill_text(text, value)),
        },
        Value::Array(items) => Value::Array(items.iter().map(|item| fill(item, value)).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| (fill_text(key, value), fill(item, value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The marker number when `text` is exactly one marker.
fn whole_marker(text: &str) -> Option<usize> {
    text.strip_prefix(MARK)?.strip_suffix(MARK)?.parse().ok()
}

/// `text` with each marker replaced by its value's text.
fn fill_text(text: &str, value: &impl Fn(usize) -> Value) -> String {
    if !text.contains(MARK) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut pieces = text.split(MARK);
    out.push_str(pieces.next().unwrap_or_default());
    while let Some(number) = pieces.next() {
        match number.parse::<usize>() {
            Ok(n) => match value(n) {
                Value::String(text) => out.push_str(&text),
                Value::Null => {}
                other => out.push_str(&other.to_string()),
            },
            Err(_) => out.push_str(number),
        }
        out.push_str(pieces.next().unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fills_values_unquoted_and_names_quoted() {
        let template =
            JsonTemplate::parse(r#"{"cmd": {{command}}, "to": {{device}}, "id": {{id}}, "on": {{on}}, "all": {{args}}}"#)
                .unwrap();
        let args = json!({"on": true}).as_object().cloned().unwrap();
        let frame = template.render("t-1", "fan", &args, Uuid::nil());
        assert_eq!(
            frame,
            json!({"cmd": "fan", "to": "t-1", "id": Uuid::nil().to_string(), "on": true, "all": {"on": true}})
        );
        assert_eq!(template.arguments().collect::<Vec<_>>(), ["on"]);
    }

    #[test]
    fn fills_placeholders_inside_strings_and_keys_structurally() {
        let template = JsonTemplate::parse(
            r#"{"text": "hi {{msg}}!", "topic": "dev/{{device}}", "n{{n}}": "{{n}} of {{missing}}"}"#,
        )
        .unwrap();
        let args = json!({"msg": "there \"you\"", "n": 5})
            .as_object()
            .cloned()
            .unwrap();
        let frame = template.render("t\"1", "fan", &args, Uuid::nil());
        assert_eq!(
            frame,
            json!({"text": "hi there \"you\"!", "topic": "dev/t\"1", "n5": "5 of "})
        );
    }

    #[test]
    fn any_values_render_without_panicking() {
        let template = JsonTemplate::parse(r#"["{{a}}", {{a}}, {"k": "x{{a}}y"}]"#).unwrap();
        for a in [
            json!(null),
            json!("\u{0}"),
            json!("\u{0}0\u{0}"),
            json!({"deep": [1, {"x": "}}{{"}]}),
            json!(1e300),
            json!("\"]}"),
        ] {
            let args = json!({ "a": a.clone() }).as_object().cloned().unwrap();
            let frame = template.render("d", "c", &args, Uuid::nil());
            assert_eq!(frame[1], a);
        }
    }

    #[test]
    fn refuses_templates_that_cannot_make_json() {
        assert!(
            JsonTemplate::parse(r#"{"on": {{on}"#)
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            JsonTemplate::parse(r#"{"on": {{o n}}}"#)
                .unwrap_err()
                .contains("placeholder name")
        );
        assert!(
            JsonTemplate::parse(r#"{"on": {{on}} "#)
                .unwrap_err()
                .contains("not valid JSON")
        );
    }
}
