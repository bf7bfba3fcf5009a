//! The Commander's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use wharf_auth::{ApiKeys, AuthConfig};
use wharf_bus::BusConfig;
use wharf_runtime::{LogConfig, Settings, Validate};
use wharf_store::StoreConfig;

/// Everything `wharf-commander` reads: `[bus]`, `[store]`, `[auth]`,
/// `[log]`, `[commander]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CommanderSettings {
    pub bus: BusConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
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
    /// The `source` of the events the Commander emits, and the owner of
    /// its outbox rows: stable across restarts (a StatefulSet pod name).
    pub instance_id: String,
    /// Directory of device profiles, one `MODEL.toml` per model; reloaded
    /// on SIGHUP.
    pub profiles_dir: PathBuf,
    /// Commands a device's offline queue holds; the oldest expire first.
    pub queue_limit: usize,
    /// How long a command waits for an offline device when neither the
    /// request nor the profile says.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// The longest time to live a request may ask for.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How often queued commands are checked for expiry, and dispatched
    /// ones for an overdue outcome.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// How long a dispatched command waits for its Socket to report
    /// delivered or failed; then it fails with reason `no_outcome` (the
    /// Socket instance went away, or its report was lost). Keep it well
    /// above `socket.delivery_timeout`.
    #[serde(with = "humantime_serde")]
    pub outcome_timeout: Duration,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_listen: SocketAddr,
    pub api: ApiConfig,
}

/// The `[commander.api]` section: the REST API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Accepted API keys, as `sha256:<hex>` hashes (`wharf api-key new`).
    pub keys: Vec<String>,
    /// The largest request body accepted.
    pub max_body_bytes: usize,
    /// API connections held at once; past it, new ones wait in the
    /// listen backlog until one closes.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (and how long
    /// an idle keep-alive connection stays open).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body; then 408.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a read answers identical reads that follow it (0s: only
    /// reads in flight are shared).
    #[serde(with = "humantime_serde")]
    pub read_cache: Duration,
    /// How long device tokens the API issues are valid.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Requests waiting for a command's end (`?wait=`) at once; past it,
    /// 503 `too_many_waiting`.
    pub max_waiting: usize,
    /// The longest `?wait=` honoured (a longer one waits this long).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for CommanderConfig {
    fn default() -> Self {
        CommanderConfig {
            group: None,
            instance_id: "commander".into(),
            profiles_dir: "profiles".into(),
            queue_limit: 100,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(1),
            outcome_timeout: Duration::from_secs(60),
            ops_listen: ([0, 0, 0, 0], 9103).into(),
            api: ApiConfig::default(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: ([0, 0, 0, 0], 8088).into(),
            keys: Vec::new(),
            max_body_bytes: 64 * 1024,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            read_cache: Duration::from_millis(250),
            token_ttl: Duration::from_secs(365 * 24 * 3600),
            max_waiting: 1024,
            max_wait: Duration::from_secs(60),
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

    /// The API keys, decoded, or every problem with this section, one line
    /// each.
    pub fn check(&self) -> Result<ApiKeys, Vec<String>> {
        let mut problems = Vec::new();
        if self.group.as_ref().is_some_and(String::is_empty) {
            problems.push("commander.group: must not be empty".into());
        }
        if self.instance_id.is_empty() {
            problems.push("commander.instance_id: must not be empty".into());
        }
        if self.queue_limit == 0 {
            problems.push("commander.queue_limit: must be at least 1".into());
        }
        for (name, value) in [
            ("default_ttl", self.default_ttl),
            ("max_ttl", self.max_ttl),
            ("sweep_interval", self.sweep_interval),
            ("outcome_timeout", self.outcome_timeout),
            ("api.token_ttl", self.api.token_ttl),
            ("api.header_timeout", self.api.header_timeout),
            ("api.body_timeout", self.api.body_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("commander.{name}: must be more than 0s"));
            }
        }
        if self.default_ttl > self.max_ttl {
            problems.push("commander.default_ttl: must not exceed commander.max_ttl".into());
        }
        if self.api.max_connections == 0 {
            problems.push("commander.api.max_connections: must be at least 1".into());
        }
        if self.api.max_body_bytes < 1024 {
            problems.push("commander.api.max_body_bytes: must be at least 1024".into());
        }
        let keys = ApiKeys::from_hashes(&self.api.keys)
            .map_err(|problem| vec![format!("commander.api.keys: {problem}")]);
        wharf_runtime::with_part(problems, keys)
    }
}

/// What checking the Commander's configuration parsed.
#[derive(Debug, Clone)]
pub struct CommanderParsed {
    pub profiles: crate::Profiles,
    pub api_keys: ApiKeys,
}

impl Validate for CommanderSettings {
    type Parsed = CommanderParsed;

    fn check(&self) -> Result<CommanderParsed, Vec<String>> {
        let mut problems = self.bus.problems();
        problems.extend(self.store.problems());
        problems.extend(self.auth.problems());
        problems.extend(self.log.problems());
        if self.commander.api.keys.is_empty() {
            problems.push(
                "commander.api.keys: at least one key hash is required (`wharf api-key new` prints a key and its hash)"
                    .into(),
            );
        }
        let profiles = crate::Profiles::load_dir(&self.commander.profiles_dir).map_err(|found| {
            let name = |problem| format!("commander.profiles_dir: {problem}");
            found.problems.into_iter().map(name).collect()
        });
        let parts = wharf_runtime::both(self.commander.check(), profiles);
        wharf_runtime::with_part(problems, parts)
            .map(|(api_keys, profiles)| CommanderParsed { profiles, api_keys })
    }
}

impl Settings for CommanderSettings {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deployments pass API key hashes as a secret variable: a comma-separated
    /// list in one `WHARF_COMMANDER__API__KEYS`.
    #[test]
    fn api_keys_come_from_one_variable_as_a_list() {
        let (first, second) = (
            format!("sha256:{}", "ab".repeat(32)),
            format!("sha256:{}", "cd".repeat(32)),
        );
        let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");
        let vars = [
            ("WHARF_AUTH__SECRET", "a-secret-of-enough-length"),
            ("WHARF_COMMANDER__PROFILES_DIR", profiles),
            ("WHARF_COMMANDER__API__KEYS", &format!("{first},{second}")),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned()));
        let settings: CommanderSettings = wharf_runtime::load_config_from(None, vars)
            .expect("a valid configuration")
            .settings;
        assert_eq!(settings.commander.api.keys, vec![first, second]);
    }
}
