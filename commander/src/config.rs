//! The Commander's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use wharf_bus::BusConfig;
use wharf_runtime::{LogConfig, Settings, Validate};

/// Everything `wharf-commander` reads: `[bus]`, `[log]`, `[commander]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CommanderSettings {
    pub bus: BusConfig,
    pub log: LogConfig,
    pub commander: CommanderConfig,
}

/// The `[commander]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommanderConfig {
    /// Consumer group of the command-requests topic;
    /// `<topic prefix>.commander` when not set.
    pub group: Option<String>,
    /// The `source` of the events the Commander emits.
    pub instance_id: String,
    /// Directory of device profiles, one `MODEL.toml` per model.
    pub profiles_dir: PathBuf,
    /// Command ids remembered to recognise replayed requests.
    pub dedupe_window: usize,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_listen: SocketAddr,
}

impl Default for CommanderConfig {
    fn default() -> Self {
        CommanderConfig {
            group: None,
            instance_id: "commander".into(),
            profiles_dir: "profiles".into(),
            dedupe_window: 100_000,
            ops_listen: ([0, 0, 0, 0], 9103).into(),
        }
    }
}

impl CommanderConfig {
    /// The consumer group: configured, or derived from the topic prefix so
    /// deployments sharing a broker never share a group.
    pub fn group_name(&self, topics: &wharf_events::Topics) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("{}.commander", topics.prefix()))
    }

    /// Every problem with this section, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.group.as_ref().is_some_and(String::is_empty) {
            problems.push("commander.group: must not be empty".into());
        }
        if self.dedupe_window == 0 {
            problems.push("commander.dedupe_window: must be at least 1".into());
        }
        problems
    }
}

impl Validate for CommanderSettings {
    fn problems(&self) -> Vec<String> {
        let mut problems = self.bus.problems();
        problems.extend(self.log.problems());
        problems.extend(self.commander.problems());
        if let Err(profile_problems) = crate::Profiles::load_dir(&self.commander.profiles_dir) {
            problems.extend(
                profile_problems
                    .into_iter()
                    .map(|problem| format!("commander.profiles_dir: {problem}")),
            );
        }
        problems
    }
}

impl Settings for CommanderSettings {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}
