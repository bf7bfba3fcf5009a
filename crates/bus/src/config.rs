//! The `[bus]` configuration section.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

/// How to reach the bus and how to lay out topics on it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `file://DIR` (in-process, durable under DIR), `memory://`
    /// (in-process, nothing kept) or `kafka://host:port[,host:port…]`.
    pub url: String,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// Partitions of topics created at start-up.
    pub partitions: i32,
    /// Replication factor of topics created at start-up (Kafka only).
    pub replication: i16,
    /// Records the in-process bus retains per partition before publishers
    /// wait for consumers to commit.
    pub memory_capacity: usize,
    /// Size at which the durable in-process bus (`file://`) starts a new
    /// journal segment, and may replace the old ones by a snapshot.
    pub segment_bytes: u64,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …). They
    /// override Wharf's tunable defaults, but not the settings its
    /// guarantees need (idempotence, `acks=all`, manual commits).
    pub kafka: BTreeMap<String, String>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "kafka://127.0.0.1:9092".into(),
            topic_prefix: "wharf".into(),
            partitions: 8,
            replication: 1,
            memory_capacity: 100_000,
            segment_bytes: 64 << 20,
            kafka: BTreeMap::new(),
        }
    }
}

/// A parsed bus URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusUrl {
    Memory,
    /// The durable in-process bus, journaled in this directory.
    File {
        dir: std::path::PathBuf,
    },
    Kafka {
        brokers: String,
    },
}

impl BusUrl {
    /// Parses `file://DIR`, `memory://` or `kafka://host:port[,host:port…]`.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(dir) = url.strip_prefix("file://") {
            if dir.is_empty() {
                return Err(invalid(
                    "file:// needs a directory, e.g. file://data/bus or file:///var/lib/wharf/bus",
                ));
            }
            return Ok(BusUrl::File { dir: dir.into() });
        }
        if let Some(rest) = url.strip_prefix("memory://") {
            if !rest.is_empty() {
                return Err(invalid("memory:// takes nothing after the scheme"));
            }
            return Ok(BusUrl::Memory);
        }
        let Some(rest) = url.strip_prefix("kafka://") else {
            return Err(invalid(
                "expected file://DIR, memory:// or kafka://host:port[,host:port]",
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(invalid("kafka:// needs at least one host:port"));
        }
        for broker in rest.split(',') {
            let Some((host, port)) = broker.rsplit_once(':') else {
                return Err(invalid(&format!("broker {broker:?} has no port")));
            };
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(invalid(&format!("broker {broker:?} is not host:port")));
            }
        }
        Ok(BusUrl::Kafka {
            brokers: rest.to_owned(),
        })
    }
}

impl BusConfig {
    /// The topic names under this configuration's prefix.
    ///
    /// Call after [`problems`](Self::problems) came back empty.
    pub fn topics(&self) -> wharf_events::Topics {
        wharf_events::Topics::new(&self.topic_prefix)
            .expect("the topic prefix was validated at start-up")
    }

    /// Every problem with this section, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = BusUrl::parse(&self.url) {
            problems.push(format!("bus.url: {error}"));
        }
        if let Err(error) = wharf_events::Topics::new(&self.topic_prefix) {
            problems.push(format!("bus.topic_prefix: {error}"));
        }
        if self.partitions < 1 {
            problems.push(format!(
                "bus.partitions: {} is not a partition count (expected at least 1)",
                self.partitions
            ));
        }
        if self.replication < 1 {
            problems.push(format!(
                "bus.replication: {} is not a replication factor (expected at least 1)",
                self.replication
            ));
        }
        if self.segment_bytes < 4096 {
            problems.push(format!(
                "bus.segment_bytes: {} is too small (expected at least 4096)",
                self.segment_bytes
            ));
        }
        if self.memory_capacity < 16 {
            problems.push(format!(
                "bus.memory_capacity: {} is too small (expected at least 16)",
                self.memory_capacity
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_memory_and_kafka_urls() {
        assert_eq!(BusUrl::parse("memory://").unwrap(), BusUrl::Memory);
        assert_eq!(
            BusUrl::parse("file://data/bus").unwrap(),
            BusUrl::File {
                dir: "data/bus".into()
            }
        );
        assert_eq!(
            BusUrl::parse("file:///var/lib/wharf/bus").unwrap(),
            BusUrl::File {
                dir: "/var/lib/wharf/bus".into()
            }
        );
        assert_eq!(
            BusUrl::parse("kafka://a:9092,b:9093").unwrap(),
            BusUrl::Kafka {
                brokers: "a:9092,b:9093".into()
            }
        );
    }

    #[test]
    fn explains_bad_urls() {
        let err = BusUrl::parse("redis://x").unwrap_err().to_string();
        assert!(
            err.contains("expected file://DIR, memory:// or kafka://"),
            "{err}"
        );
        let err = BusUrl::parse("file://").unwrap_err().to_string();
        assert!(err.contains("file:// needs a directory"), "{err}");
        let err = BusUrl::parse("kafka://broker").unwrap_err().to_string();
        assert!(err.contains("broker \"broker\" has no port"), "{err}");
        let err = BusUrl::parse("kafka://b:99999").unwrap_err().to_string();
        assert!(err.contains("is not host:port"), "{err}");
    }

    #[test]
    fn lists_every_problem() {
        let config = BusConfig {
            url: "nope".into(),
            partitions: 0,
            ..BusConfig::default()
        };
        let problems = config.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("bus.url:"));
        assert!(problems[1].starts_with("bus.partitions:"));
    }
}
