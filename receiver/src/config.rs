//! The Receiver's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use wharf_bus::BusConfig;
use wharf_runtime::{LogConfig, Settings, Validate};
use wharf_store::StoreConfig;

use crate::rules::{RuleConfig, Rules};

/// Everything `wharf-receiver` reads: `[bus]`, `[store]`, `[log]`,
/// `[receiver]` and `[[receiver.rules]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReceiverSettings {
    pub bus: BusConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    pub receiver: ReceiverConfig,
}

/// The `[receiver]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Consumer group of the device-events topic, and the key of the offsets
    /// stored with the state; `<topic prefix>.receiver` when not set.
    pub group: Option<String>,
    /// The `source` of the events the Receiver emits.
    pub instance_id: String,
    /// How often dirty device states are written back.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Write back early once this many devices are dirty.
    pub flush_max_dirty: usize,
    /// A device's actor leaves memory after this long without events, once
    /// its state is written back.
    #[serde(with = "humantime_serde")]
    pub actor_idle: Duration,
    /// Events taken from the bus at once; the states of the devices among
    /// them that are not in memory are loaded with one query.
    pub batch_size: usize,
    /// The command that carries a twin's delta (desired minus reported).
    pub set_desired_command: String,
    /// How long the last write-back at shutdown may keep retrying while the
    /// store is down; what it could not write is replayed by the next start.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_listen: SocketAddr,
    /// How large one device's twin may grow.
    pub twin: crate::twin::TwinLimits,
    pub rules: Vec<RuleConfig>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            group: None,
            instance_id: "receiver".into(),
            flush_interval: Duration::from_secs(1),
            flush_max_dirty: 10_000,
            actor_idle: Duration::from_secs(600),
            batch_size: 512,
            set_desired_command: "set_desired".into(),
            shutdown_grace: Duration::from_secs(10),
            ops_listen: ([0, 0, 0, 0], 9102).into(),
            twin: crate::twin::TwinLimits::default(),
            rules: Vec::new(),
        }
    }
}

impl ReceiverConfig {
    /// The consumer group: configured, or derived from the topic prefix so
    /// deployments sharing a broker never share a group.
    pub fn group_name(&self, topics: &wharf_events::Topics) -> String {
        self.group
            .clone()
            .unwrap_or_else(|| format!("{}.receiver", topics.prefix()))
    }

    /// The rules, compiled, or every problem with this section, one line
    /// each.
    pub fn check(&self) -> Result<Rules, Vec<String>> {
        let mut problems = Vec::new();
        if self.group.as_ref().is_some_and(String::is_empty) {
            problems.push("receiver.group: must not be empty".into());
        }
        if self.flush_interval.is_zero() {
            problems.push("receiver.flush_interval: must be longer than 0s".into());
        }
        if self.flush_max_dirty == 0 {
            problems.push("receiver.flush_max_dirty: must be at least 1".into());
        }
        if self.shutdown_grace.is_zero() {
            problems.push("receiver.shutdown_grace: must be longer than 0s".into());
        }
        if self.actor_idle.is_zero() {
            problems.push("receiver.actor_idle: must be longer than 0s".into());
        }
        if self.batch_size == 0 {
            problems.push("receiver.batch_size: must be at least 1".into());
        }
        if self.twin.max_keys == 0 {
            problems.push("receiver.twin.max_keys: must be at least 1".into());
        }
        if self.twin.max_bytes < 1024 {
            problems.push("receiver.twin.max_bytes: must be at least 1024".into());
        }
        if self.set_desired_command.is_empty() {
            problems.push("receiver.set_desired_command: must not be empty".into());
        }
        let rules = Rules::compile(&self.rules).map_err(|found| found.problems);
        wharf_runtime::with_part(problems, rules)
    }
}

impl Validate for ReceiverSettings {
    /// The rules, compiled.
    type Parsed = Rules;

    fn check(&self) -> Result<Rules, Vec<String>> {
        let mut problems = self.bus.problems();
        problems.extend(self.store.problems());
        problems.extend(self.log.problems());
        wharf_runtime::with_part(problems, self.receiver.check())
    }
}

impl Settings for ReceiverSettings {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}
