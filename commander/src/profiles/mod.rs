//! Device profiles: for each device model, the commands it understands,
//! their arguments, and how to render each for the transport the device is
//! on. One TOML file per model in the profiles directory:
//!
//! ```toml
//! model = "demo-thermostat"
//! ttl = "1h"                       # how long commands wait for an offline device
//!
//! [commands.set_target]
//! args.celsius = { type = "number", min = 5, max = 35 }
//! json = '{"cmd": "set_target", "id": {{id}}, "celsius": {{celsius}}}'
//! binary = [{ type = "u8", value = 2 }, { type = "i16be", arg = "celsius", scale = 10 }]
//! mqtt_topic = "devices/{{device}}/commands/set_target"   # the default
//! qos = 1                                                  # the default
//! firmware = ">=1.2"                                       # semver requirement
//!
//! [commands.reboot]
//! supported = false                # known, but never sent to this model
//! ```
//!
//! TCP and UDP devices get the `binary` frame when the command has one;
//! every other transport (and TCP/UDP without `binary`) gets the `json`
//! frame. A command without `args` takes any arguments unchecked.

mod args;
mod binary;
mod json;
mod live;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;
use wharf_runtime::ConfigError;

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;
use wharf_events::{Payload, RejectReason, Transport};

pub use args::{ArgSpec, ArgType};
use binary::BinaryTemplate;
pub use binary::{FieldSpec, FieldType};
use json::JsonTemplate;
pub use live::LiveProfiles;

/// Why a command is refused before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// The argument at fault, for `invalid_argument`.
    pub argument: Option<String>,
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: String) -> Self {
        Rejection {
            reason,
            argument: None,
            detail,
        }
    }
}

/// A command rendered for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub frame: Payload,
    /// The channel it goes out on: the MQTT topic a device receives it on
    /// (other transports have one channel). The profile names it
    /// `mqtt_topic`; from here on it is the command's `channel`.
    pub channel: String,
    /// The MQTT QoS it is published with.
    pub qos: u8,
}

/// How a command that expects the device's answer is answered
/// (`reply = true` in its profile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplySpec {
    /// How long after delivery the answer may take before the command ends
    /// `timed_out`.
    pub timeout: Duration,
    /// Concurrent identical API requests may share one command and its
    /// answer (reads, not actions).
    pub idempotent: bool,
    /// How long an answer keeps serving identical requests after it came
    /// (idempotent commands only; zero: only requests made while it was
    /// awaited share it).
    pub cache: Duration,
}

/// How long a device may take to answer when the profile does not say.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The MQTT topic of a command whose profile names none.
const DEFAULT_MQTT_TOPIC: &str = "devices/{{device}}/commands/{{command}}";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    model: String,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    #[serde(default)]
    commands: BTreeMap<String, CommandFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandFile {
    description: Option<String>,
    supported: Option<bool>,
    firmware: Option<String>,
    args: Option<BTreeMap<String, ArgSpec>>,
    json: Option<String>,
    binary: Option<Vec<FieldSpec>>,
    mqtt_topic: Option<String>,
    qos: Option<u8>,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    /// The device answers this command.
    reply: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    reply_timeout: Option<Duration>,
    idempotent: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    reply_cache: Option<Duration>,
}

/// One command of one model, checked when the profile loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandProfile {
    pub name: String,
    pub description: Option<String>,
    supported: bool,
    firmware: Option<semver::VersionReq>,
    args: Option<BTreeMap<String, ArgSpec>>,
    json: Option<JsonTemplate>,
    binary: Option<BinaryTemplate>,
    mqtt_topic: String,
    qos: u8,
    /// The command's time to live, else the model's.
    ttl: Option<Duration>,
    /// Set when the device answers the command.
    reply: Option<ReplySpec>,
}

/// Every loaded profile, by model.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    by_model: HashMap<String, BTreeMap<String, CommandProfile>>,
}

impl Profiles {
    /// Loads every `*.toml` file of `dir`; the errors name the file and the
    /// problem.
    pub fn load_dir(dir: &Path) -> Result<Self, ConfigError> {
        Self::load(&[], dir, false)
    }

    /// The one way profiles are loaded (at start and on every reload):
    /// `builtin` sources first, then every `*.toml` file of `dir` in name
    /// order, leaving out a file whose text is one of the built-in ones (a
    /// shipped copy). A missing `dir` is a problem unless `dir_optional`.
    pub fn load(
        builtin: &[(String, String)],
        dir: &Path,
        dir_optional: bool,
    ) -> Result<Self, ConfigError> {
        let mut sources = builtin.to_vec();
        if !dir_optional || dir.is_dir() {
            let files = read_dir_sources(dir).map_err(|problems| ConfigError { problems })?;
            sources.extend(
                files
                    .into_iter()
                    .filter(|(_, text)| builtin.iter().all(|(_, known)| known != text)),
            );
        }
        Self::from_sources(&sources)
    }

    /// Parses profiles from `(name, TOML text)` pairs.
    pub fn from_sources(sources: &[(String, String)]) -> Result<Self, ConfigError> {
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
                Err(found) => problems.extend(found.into_iter().map(|p| format!("{name}: {p}"))),
            }
        }
        if problems.is_empty() {
            Ok(profiles)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The models with a profile.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.by_model.keys().map(String::as_str)
    }

    /// The number of models with a profile.
    pub fn len(&self) -> usize {
        self.by_model.len()
    }

    /// Whether no profile is loaded.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// Whether `model` has a profile.
    pub fn knows_model(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }

    /// The profile of `command` for `model`.
    pub fn command(&self, model: &str, command: &str) -> Result<&CommandProfile, Rejection> {
        let commands = self.by_model.get(model).ok_or_else(|| {
            Rejection::new(
                RejectReason::UnknownModel,
                format!("no profile for device model {model:?}"),
            )
        })?;
        commands.get(command).ok_or_else(|| {
            let known: Vec<&str> = commands.keys().map(String::as_str).collect();
            Rejection::new(
                RejectReason::UnknownCommand,
                format!(
                    "model {model:?} has no command {command:?} (it has: {})",
                    known.join(", ")
                ),
            )
        })
    }
}

impl CommandProfile {
    /// Whether [`CommandProfile::check`] needs the device's firmware version.
    pub fn needs_firmware(&self) -> bool {
        self.firmware.is_some()
    }

    /// The time to live of a queued command, when the profile sets one.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// How the device answers, when it does.
    pub fn reply(&self) -> Option<ReplySpec> {
        self.reply
    }

    /// Checks that the command may go to a device of `model` running
    /// `firmware`, with `args`; the arguments with defaults filled in.
    pub fn check(
        &self,
        model: &str,
        args: &Map<String, Value>,
        firmware: Option<&str>,
    ) -> Result<Map<String, Value>, Rejection> {
        let name = &self.name;
        if !self.supported {
            return Err(Rejection::new(
                RejectReason::Unsupported,
                format!("model {model:?} does not support command {name:?}"),
            ));
        }
        if let Some(requirement) = &self.firmware {
            let unsupported = |detail| Rejection::new(RejectReason::Unsupported, detail);
            let firmware = firmware.ok_or_else(|| {
                unsupported(format!(
                    "command {name:?} needs firmware {requirement}, and the device's firmware is unknown (set metadata.firmware)"
                ))
            })?;
            let version = semver::Version::parse(firmware).map_err(|_| {
                unsupported(format!("firmware {firmware:?} is not a version like 1.2.3"))
            })?;
            if !requirement.matches(&version) {
                return Err(unsupported(format!(
                    "command {name:?} needs firmware {requirement}, the device runs {version}"
                )));
            }
        }
        match &self.args {
            Some(specs) => args::check(specs, args),
            None => Ok(args.clone()),
        }
    }

    /// Renders the command for `device` on `transport`, with arguments
    /// that passed [`CommandProfile::check`].
    pub fn render(
        &self,
        device: &str,
        args: &Map<String, Value>,
        id: Uuid,
        transport: Transport,
    ) -> Result<Rendered, Rejection> {
        let speaks_bytes = matches!(transport, Transport::Tcp | Transport::Udp);
        let frame = match (&self.json, &self.binary) {
            (Some(json), None) => Payload::Json(json.render(device, &self.name, args, id)),
            (Some(json), Some(_)) if !speaks_bytes => {
                Payload::Json(json.render(device, &self.name, args, id))
            }
            (_, Some(binary)) => Payload::Binary(binary.render(args, id)?),
            (None, None) => {
                return Err(Rejection::new(
                    RejectReason::Unsupported,
                    format!("command {:?} has no template", self.name),
                ));
            }
        };
        Ok(Rendered {
            frame,
            channel: self
                .mqtt_topic
                .replace("{{device}}", device)
                .replace("{{command}}", &self.name),
            qos: self.qos,
        })
    }
}

fn read_dir_sources(dir: &Path) -> Result<Vec<(String, String)>, Vec<String>> {
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
            let text = std::fs::read_to_string(&path)
                .map_err(|error| vec![format!("cannot read {}: {error}", path.display())])?;
            files.push((path.display().to_string(), text));
        }
    }
    files.sort();
    Ok(files)
}

fn parse_profile(text: &str) -> Result<(String, BTreeMap<String, CommandProfile>), Vec<String>> {
    let file: ProfileFile = toml::from_str(text).map_err(|error| vec![error.to_string()])?;
    let mut problems = Vec::new();
    if file.model.is_empty() {
        problems.push("model must not be empty".into());
    }
    if file.ttl == Some(Duration::ZERO) {
        problems.push("ttl must be more than 0s".into());
    }
    let mut commands = BTreeMap::new();
    for (name, spec) in file.commands {
        match parse_command(&name, spec, file.ttl) {
            Ok(command) => {
                commands.insert(name, command);
            }
            Err(found) => {
                problems.extend(found.into_iter().map(|p| format!("commands.{name}.{p}")));
            }
        }
    }
    if problems.is_empty() {
        Ok((file.model, commands))
    } else {
        Err(problems)
    }
}

fn parse_command(
    name: &str,
    spec: CommandFile,
    model_ttl: Option<Duration>,
) -> Result<CommandProfile, Vec<String>> {
    let mut problems = Vec::new();
    for (arg, declared) in spec.args.iter().flatten() {
        problems.extend(
            declared
                .problems()
                .into_iter()
                .map(|p| format!("args.{arg}: {p}")),
        );
    }
    let json = match spec.json.as_deref().map(JsonTemplate::parse).transpose() {
        Ok(json) => json,
        Err(problem) => {
            problems.push(format!("json: {problem}"));
            None
        }
    };
    if let (Some(json), Some(declared)) = (&json, &spec.args) {
        for arg in json.arguments() {
            if !declared.contains_key(arg) {
                problems.push(format!("json: {{{{{arg}}}}} is not declared under args"));
            }
        }
    }
    let binary = match spec
        .binary
        .as_deref()
        .map(|fields| BinaryTemplate::parse(fields, spec.args.as_ref()))
    {
        Some(Ok(binary)) => Some(binary),
        Some(Err(found)) => {
            problems.extend(found);
            None
        }
        None => None,
    };
    let supported = spec.supported.unwrap_or(true);
    if supported && spec.json.is_none() && spec.binary.is_none() {
        problems.push("json: a supported command needs a json or a binary template".into());
    }
    let firmware = match spec
        .firmware
        .as_deref()
        .map(semver::VersionReq::parse)
        .transpose()
    {
        Ok(firmware) => firmware,
        Err(error) => {
            problems.push(format!(
                "firmware: {error} (expected a requirement like \">=1.2\")"
            ));
            None
        }
    };
    let mqtt_topic = spec
        .mqtt_topic
        .unwrap_or_else(|| DEFAULT_MQTT_TOPIC.to_owned());
    if mqtt_topic.contains(['+', '#']) || mqtt_topic.is_empty() {
        problems.push(format!(
            "mqtt_topic: {mqtt_topic:?} is not a topic name (no wildcards)"
        ));
    }
    let qos = spec.qos.unwrap_or(1);
    if qos > 1 {
        problems.push(format!("qos: {qos} is not supported (0 or 1)"));
    }
    if spec.ttl == Some(Duration::ZERO) {
        problems.push("ttl: must be more than 0s".into());
    }
    let reply = match spec.reply.unwrap_or(false) {
        true => Some(ReplySpec {
            timeout: spec.reply_timeout.unwrap_or(DEFAULT_REPLY_TIMEOUT),
            idempotent: spec.idempotent.unwrap_or(false),
            cache: spec.reply_cache.unwrap_or(Duration::ZERO),
        }),
        false => {
            for (key, set) in [
                ("reply_timeout", spec.reply_timeout.is_some()),
                ("idempotent", spec.idempotent.is_some()),
                ("reply_cache", spec.reply_cache.is_some()),
            ] {
                if set {
                    problems.push(format!("{key}: only a command with reply = true has it"));
                }
            }
            None
        }
    };
    if spec.reply_timeout == Some(Duration::ZERO) {
        problems.push("reply_timeout: must be more than 0s".into());
    }
    if spec.reply_cache.is_some_and(|cache| !cache.is_zero()) && spec.idempotent != Some(true) {
        problems.push("reply_cache: only an idempotent command's answer may be reused".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(CommandProfile {
        name: name.to_owned(),
        description: spec.description,
        supported,
        firmware,
        args: spec.args,
        json,
        binary,
        mqtt_topic,
        qos,
        ttl: spec.ttl.or(model_ttl),
        reply,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn demo() -> Profiles {
        let text = include_str!("../../profiles/demo-thermostat.toml");
        Profiles::from_sources(&[("demo".into(), text.into())]).unwrap()
    }

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn renders_json_for_websocket_and_bytes_for_tcp() {
        let profiles = demo();
        let set_target = profiles.command("demo-thermostat", "set_target").unwrap();
        let checked = set_target
            .check("demo-thermostat", &args(json!({"celsius": 21.5})), None)
            .unwrap();
        let id = Uuid::nil();
        let ws = set_target
            .render("t-1", &checked, id, Transport::Websocket)
            .unwrap();
        assert_eq!(
            ws.frame,
            Payload::Json(json!({"cmd": "set_target", "id": id.to_string(), "celsius": 21.5}))
        );
        assert_eq!(ws.channel, "devices/t-1/commands/set_target");
        assert_eq!(ws.qos, 1);
        let tcp = set_target
            .render("t-1", &checked, id, Transport::Tcp)
            .unwrap();
        assert_eq!(tcp.frame, Payload::Binary(vec![0x02, 0x00, 0xd7]));
    }

    #[test]
    fn says_what_is_wrong_with_a_request() {
        let profiles = demo();
        let unknown = profiles.command("toaster", "fan").unwrap_err();
        assert_eq!(unknown.reason, RejectReason::UnknownModel);
        let unknown = profiles.command("demo-thermostat", "explode").unwrap_err();
        assert_eq!(unknown.reason, RejectReason::UnknownCommand);
        assert!(
            unknown.detail.contains(
                "(it has: blink, fan, read_config, reboot, schedule, set_desired, set_target)"
            ),
            "{}",
            unknown.detail
        );

        let reboot = profiles.command("demo-thermostat", "reboot").unwrap();
        let refused = reboot
            .check("demo-thermostat", &Map::new(), None)
            .unwrap_err();
        assert_eq!(refused.reason, RejectReason::Unsupported);

        let set_target = profiles.command("demo-thermostat", "set_target").unwrap();
        let refused = set_target
            .check("demo-thermostat", &args(json!({"celsius": 99})), None)
            .unwrap_err();
        assert_eq!(refused.reason, RejectReason::InvalidArgument);
        assert_eq!(refused.argument.as_deref(), Some("celsius"));
    }

    #[test]
    fn firmware_requirements_need_a_matching_version() {
        let profiles = demo();
        let schedule = profiles.command("demo-thermostat", "schedule").unwrap();
        let on = args(json!({"at": "07:00", "celsius": 20}));
        assert!(schedule.needs_firmware());
        assert!(
            schedule
                .check("demo-thermostat", &on, Some("2.3.0"))
                .is_ok()
        );
        for firmware in [None, Some("1.9.9"), Some("latest")] {
            let refused = schedule
                .check("demo-thermostat", &on, firmware)
                .unwrap_err();
            assert_eq!(refused.reason, RejectReason::Unsupported, "{firmware:?}");
        }
    }

    #[test]
    fn reply_commands_carry_their_timeout_and_sharing() {
        let read = demo()
            .command("demo-thermostat", "read_config")
            .unwrap()
            .reply()
            .expect("read_config expects an answer");
        assert_eq!(read.timeout, Duration::from_secs(10));
        assert!(read.idempotent);
        assert_eq!(read.cache, Duration::ZERO);
        let fan = demo().command("demo-thermostat", "fan").unwrap().reply();
        assert_eq!(fan, None, "commands expect no answer unless they say so");

        let source = |body: &str| {
            vec![(
                "r.toml".to_owned(),
                format!("model = \"r\"\n[commands.x]\njson = '{{}}'\n{body}"),
            )]
        };
        let defaults = Profiles::from_sources(&source("reply = true\n")).unwrap();
        let reply = defaults.command("r", "x").unwrap().reply().unwrap();
        assert_eq!(reply.timeout, DEFAULT_REPLY_TIMEOUT);
        assert!(!reply.idempotent);
        for (body, problem) in [
            (
                "reply_timeout = \"5s\"\n",
                "r.toml: commands.x.reply_timeout: only a command with reply = true has it",
            ),
            (
                "idempotent = true\n",
                "r.toml: commands.x.idempotent: only a command with reply = true has it",
            ),
            (
                "reply = true\nreply_timeout = \"0s\"\n",
                "r.toml: commands.x.reply_timeout: must be more than 0s",
            ),
            (
                "reply = true\nreply_cache = \"5s\"\n",
                "r.toml: commands.x.reply_cache: only an idempotent command's answer may be reused",
            ),
        ] {
            let problems = Profiles::from_sources(&source(body)).unwrap_err().problems;
            assert!(
                problems.contains(&problem.to_owned()),
                "{body}: {problems:?}"
            );
        }
    }

    #[test]
    fn refuses_broken_profiles_at_load_naming_file_and_field() {
        let broken = [
            ("a.toml".to_owned(), "model = \"m\"\n[commands.x]\njson = '{\"on\": {{on}'\n".to_owned()),
            ("b.toml".to_owned(), "model = \"n\"\n[commands.x]\nargs.on = { type = \"bool\" }\njson = '{\"on\": {{off}}}'\nqos = 2\n".to_owned()),
            ("c.toml".to_owned(), "modle = \"m\"\n".to_owned()),
            ("d.toml".to_owned(), "model = \"o\"\n[commands.x]\nfirmware = \"one\"\n".to_owned()),
        ];
        let problems = Profiles::from_sources(&broken).unwrap_err().problems;
        assert!(
            problems[0].starts_with("a.toml: commands.x.json: a {{ is never closed"),
            "{problems:?}"
        );
        assert!(
            problems.contains(
                &"b.toml: commands.x.json: {{off}} is not declared under args".to_owned()
            ),
            "{problems:?}"
        );
        assert!(
            problems.contains(&"b.toml: commands.x.qos: 2 is not supported (0 or 1)".to_owned()),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("c.toml: ")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("d.toml: commands.x.firmware")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("needs a json or a binary template")),
            "{problems:?}"
        );
    }

    #[test]
    fn loads_the_shipped_profiles_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let profiles = Profiles::load_dir(&dir).unwrap();
        assert!(profiles.knows_model("demo-thermostat"));
        let fan = profiles.command("demo-thermostat", "fan").unwrap();
        assert_eq!(fan.ttl(), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn built_in_sources_come_first_and_their_shipped_copies_are_left_out() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let shipped: Vec<(String, String)> = read_dir_sources(&dir).unwrap();
        // The shipped demo profile, given as built in: loading the directory
        // beside it does not count the same model twice.
        let builtin = vec![("built in".to_owned(), shipped[0].1.clone())];
        let profiles = Profiles::load(&builtin, &dir, false).unwrap();
        assert_eq!(profiles.len(), Profiles::load_dir(&dir).unwrap().len());
        // A second, different profile of the same model is still refused.
        let other = vec![(
            "built in".to_owned(),
            format!("{}\n# changed", shipped[0].1),
        )];
        let problems = Profiles::load(&other, &dir, false).unwrap_err().problems;
        assert!(
            problems.iter().any(|p| p.contains("has another profile")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_missing_directory_is_a_problem_unless_optional() {
        let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-profiles");
        let problems = Profiles::load(&[], &missing, false).unwrap_err().problems;
        assert!(
            problems[0].contains("cannot read profiles directory"),
            "{problems:?}"
        );
        assert_eq!(Profiles::load(&[], &missing, true).unwrap().len(), 0);
    }
}
