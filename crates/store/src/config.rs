//! The `[store]` configuration section.

use std::time::Duration;

use serde::Deserialize;

use crate::Backend;

/// Where the database is and how many connections to keep.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (created when missing) or `postgres://USER:PASS@HOST/DB`.
    pub url: String,
    pub max_connections: u32,
    /// How long to wait for a connection before giving up (`10s`, `500ms`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite://data/wharf.db".into(),
            max_connections: 4,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl StoreConfig {
    /// Every problem with this section, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = Backend::of_url(&self.url) {
            problems.push(format!("store.url: {error}"));
        }
        if self.max_connections == 0 {
            problems.push("store.max_connections: must be at least 1".into());
        }
        problems
    }
}
