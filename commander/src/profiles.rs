//! Device profiles: for each device model, the commands it understands and
//! how to render each into the bytes the device expects. One TOML file per
//! model in the profiles directory:
//!
//! ```toml
//! model = "demo-thermostat"
//!
//! [commands.fan]
//! json = '{"cmd": "fan", "id": {{id}}, "on": {{on}}}'
//! ```
//!
//! `mqtt_topic` (optional, default `devices/{{device}}/commands/{{command}}`)
//! names the topic an MQTT device receives the command on. In a `json` template, `{{name}}` stands for the JSON value of the argument
//! `name` (unquoted), `{{args}}` for all arguments as one object, `{{id}}` for
//! the command id and `{{command}}` for the command name; the rendered text
//! must be valid JSON.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;
use wharf_events::{FailureReason, Payload};

/// One model's profile file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    model: String,
    #[serde(default)]
    commands: BTreeMap<String, CommandSpec>,
}

/// How one command is rendered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    /// The frame for JSON-speaking devices.
    json: String,
    /// The topic an MQTT device receives it on; `{{device}}` and
    /// `{{command}}` are filled in.
    #[serde(default)]
    mqtt_topic: Option<String>,
}

/// The MQTT topic of a command whose profile names none.
const DEFAULT_MQTT_TOPIC: &str = "devices/{{device}}/commands/{{command}}";

/// A command rendered for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub frame: Payload,
    /// The MQTT topic it goes out on.
    pub mqtt_topic: String,
}

/// A profile's command: its frame template and its MQTT topic template.
#[derive(Debug, Clone, PartialEq)]
struct CommandTemplate {
    frame: Template,
    mqtt_topic: String,
}

/// Every loaded profile, by model.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    by_model: HashMap<String, BTreeMap<String, CommandTemplate>>,
}

/// A parsed template: literal text and placeholders, in order.
#[derive(Debug, Clone, PartialEq)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Id,
    Command,
    AllArgs,
    Arg(String),
}

impl Profiles {
    /// Loads every `*.toml` file of `dir`; the errors name the file and the
    /// problem.
    pub fn load_dir(dir: &Path) -> Result<Self, Vec<String>> {
        let entries = std::fs::read_dir(dir).map_err(|error| {
            vec![format!(
                "cannot read profiles directory {}: {error}",
                dir.display()
            )]
        })?;
        let mut files = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                match std::fs::read_to_string(&path) {
                    Ok(text) => files.push((path.display().to_string(), text)),
                    Err(error) => {
                        return Err(vec![format!("cannot read {}: {error}", path.display())]);
                    }
                }
            }
        }
        files.sort();
        Self::from_sources(&files)
    }

    /// Parses profiles from `(name, TOML text)` pairs.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, Vec<String>> {
        let mut profiles = Profiles::default();
        let mut problems = Vec::new();
        for (name, text) in sources {
            match parse_profile(text) {
                Ok((model, _)) if profiles.by_model.contains_key(&model) => {
                    problems.push(format!("{name}: model {model:?} has another profile"));
                }
                Ok((model, commands)) => {
                    profiles.by_model.insert(model, commands);
                }
                Err(problem) => problems.push(format!("{name}: {problem}")),
            }
        }
        if problems.is_empty() {
            Ok(profiles)
        } else {
            Err(problems)
        }
    }

    /// The number of models with a profile.
    pub fn len(&self) -> usize {
        self.by_model.len()
    }

    /// Whether no profile is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// Renders `command` for `device` of `model`.
    pub fn render(
        &self,
        device: &str,
        model: &str,
        command: &str,
        args: &Map<String, Value>,
        id: Uuid,
    ) -> Result<Rendered, (FailureReason, String)> {
        let commands = self.by_model.get(model).ok_or_else(|| {
            (
                FailureReason::UnknownModel,
                format!("no profile for device model {model:?}"),
            )
        })?;
        let template = commands.get(command).ok_or_else(|| {
            let known: Vec<&str> = commands.keys().map(String::as_str).collect();
            (
                FailureReason::UnknownCommand,
                format!(
                    "model {model:?} has no command {command:?} (it has: {})",
                    known.join(", ")
                ),
            )
        })?;
        let frame = template
            .frame
            .render(command, args, id)
            .map_err(|problem| (FailureReason::RenderFailed, problem))?;
        let mqtt_topic = template
            .mqtt_topic
            .replace("{{device}}", device)
            .replace("{{command}}", command);
        Ok(Rendered { frame, mqtt_topic })
    }
}

fn parse_profile(text: &str) -> Result<(String, BTreeMap<String, CommandTemplate>), String> {
    let file: ProfileFile = toml::from_str(text).map_err(|error| error.to_string())?;
    if file.model.is_empty() {
        return Err("model must not be empty".into());
    }
    let mut commands = BTreeMap::new();
    for (name, spec) in file.commands {
        let frame = Template::parse(&spec.json)
            .and_then(|template| template.check().map(|()| template))
            .map_err(|problem| format!("commands.{name}.json: {problem}"))?;
        let mqtt_topic = spec
            .mqtt_topic
            .unwrap_or_else(|| DEFAULT_MQTT_TOPIC.to_owned());
        if mqtt_topic.contains(['+', '#']) || mqtt_topic.is_empty() {
            return Err(format!(
                "commands.{name}.mqtt_topic: {mqtt_topic:?} is not a topic name (no wildcards)"
            ));
        }
        commands.insert(name, CommandTemplate { frame, mqtt_topic });
    }
    Ok((file.model, commands))
}

impl Template {
    fn parse(text: &str) -> Result<Self, String> {
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
                "args" => Part::AllArgs,
                _ => Part::Arg(name.to_owned()),
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// Checks the template is valid JSON whatever values fill it.
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

    fn render(
        &self,
        command: &str,
        args: &Map<String, Value>,
        id: Uuid,
    ) -> Result<Payload, String> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(literal) => text.push_str(literal),
                Part::Id => text.push_str(&Value::String(id.to_string()).to_string()),
                Part::Command => text.push_str(&Value::String(command.to_owned()).to_string()),
                Part::AllArgs => text.push_str(&Value::Object(args.clone()).to_string()),
                Part::Arg(name) => {
                    let value = args
                        .get(name)
                        .ok_or_else(|| format!("argument {name:?} is missing"))?;
                    text.push_str(&value.to_string());
                }
            }
        }
        serde_json::from_str(&text)
            .map(Payload::Json)
            .map_err(|error| format!("rendered frame is not valid JSON: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn demo() -> Profiles {
        let text = include_str!("../profiles/demo-thermostat.toml");
        Profiles::from_sources(&[("demo".into(), text.into())]).unwrap()
    }

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn renders_arguments_as_json_values() {
        let id = Uuid::nil();
        let rendered = demo()
            .render(
                "t-1",
                "demo-thermostat",
                "fan",
                &args(json!({"on": true})),
                id,
            )
            .unwrap();
        assert_eq!(
            rendered.frame,
            Payload::Json(json!({"cmd": "fan", "id": id.to_string(), "on": true}))
        );
        assert_eq!(rendered.mqtt_topic, "devices/t-1/commands/fan");
    }

    #[test]
    fn args_stands_for_every_argument() {
        let desired = args(json!({"target": 21, "mode": "eco"}));
        let rendered = demo()
            .render(
                "t-1",
                "demo-thermostat",
                "set_desired",
                &desired,
                Uuid::nil(),
            )
            .unwrap();
        let Payload::Json(frame) = rendered.frame else {
            panic!("a JSON template renders JSON");
        };
        assert_eq!(frame["desired"], json!({"target": 21, "mode": "eco"}));
    }

    #[test]
    fn says_what_is_missing() {
        let profiles = demo();
        let id = Uuid::nil();
        let (reason, _) = profiles
            .render("t-1", "toaster", "fan", &Map::new(), id)
            .unwrap_err();
        assert_eq!(reason, FailureReason::UnknownModel);
        let (reason, detail) = profiles
            .render("t-1", "demo-thermostat", "explode", &Map::new(), id)
            .unwrap_err();
        assert_eq!(reason, FailureReason::UnknownCommand);
        assert!(detail.contains("fan, set_desired, set_target"), "{detail}");
        let (reason, detail) = profiles
            .render("t-1", "demo-thermostat", "fan", &Map::new(), id)
            .unwrap_err();
        assert_eq!(reason, FailureReason::RenderFailed);
        assert!(detail.contains("\"on\" is missing"), "{detail}");
    }

    #[test]
    fn refuses_broken_profiles_at_load() {
        let broken = [
            (
                "a.toml".to_owned(),
                "model = \"m\"\n[commands.x]\njson = '{\"on\": {{on}'\n".to_owned(),
            ),
            (
                "b.toml".to_owned(),
                "model = \"n\"\n[commands.x]\njson = '{\"on\": {{on}} '\n".to_owned(),
            ),
            ("c.toml".to_owned(), "modle = \"m\"\n".to_owned()),
        ];
        let problems = Profiles::from_sources(&broken).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("a.toml: commands.x.json"),
            "{problems:?}"
        );
        assert!(problems[1].contains("not valid JSON"), "{problems:?}");
        assert!(problems[2].starts_with("c.toml"), "{problems:?}");
    }

    #[test]
    fn loads_the_shipped_profiles_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let profiles = Profiles::load_dir(&dir).unwrap();
        let on = args(json!({"on": true}));
        assert!(
            profiles
                .render("t-1", "demo-thermostat", "fan", &on, Uuid::nil())
                .is_ok()
        );
    }
}
