//! JSON templates: the frame for JSON-speaking devices (WebSocket, TCP
//! lines, MQTT payloads). `{{name}}` stands for the JSON value of the
//! argument `name` (unquoted), `{{args}}` for all arguments as one object,
//! `{{id}}` for the command id, `{{command}}` for the command name and
//! `{{device}}` for the device id; the rendered text must be valid JSON.

use serde_json::{Map, Value};
use uuid::Uuid;

/// A parsed template: literal text and placeholders, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Id,
    Command,
    Device,
    AllArgs,
    Arg(String),
}

impl JsonTemplate {
    /// Parses `text` and checks it is valid JSON whatever fills it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| "a {{ is never closed".to_owned())?;
            let name = after[..end].trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("{{{{{name}}}}} is not a placeholder name"));
            }
            parts.push(match name {
                "id" => Part::Id,
                "command" => Part::Command,
                "device" => Part::Device,
                "args" => Part::AllArgs,
                _ => Part::Arg(name.to_owned()),
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        let template = JsonTemplate { parts };
        template.check()?;
        Ok(template)
    }

    /// The arguments the template names.
    pub(crate) fn arguments(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Arg(name) => Some(name.as_str()),
            _ => None,
        })
    }

    fn check(&self) -> Result<(), String> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(literal) => text.push_str(literal),
                _ => text.push_str("null"),
            }
        }
        serde_json::from_str::<Value>(&text)
            .map(drop)
            .map_err(|error| format!("not valid JSON once filled in: {error}"))
    }

    /// The frame for `args`; an argument the request left out is `null`.
    pub(crate) fn render(
        &self,
        device: &str,
        command: &str,
        args: &Map<String, Value>,
        id: Uuid,
    ) -> Value {
        let quoted = |text: &str| Value::String(text.to_owned()).to_string();
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(literal) => text.push_str(literal),
                Part::Id => text.push_str(&quoted(&id.to_string())),
                Part::Command => text.push_str(&quoted(command)),
                Part::Device => text.push_str(&quoted(device)),
                Part::AllArgs => text.push_str(&Value::Object(args.clone()).to_string()),
                Part::Arg(name) => text.push_str(
                    &args
                        .get(name)
                        .map_or_else(|| "null".to_owned(), Value::to_string),
                ),
            }
        }
        serde_json::from_str(&text)
            .expect("a template valid with null placeholders stays valid with JSON values")
    }
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
