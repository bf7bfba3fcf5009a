//! Logs: `tracing` with plain or JSON output, filtered by `log.level` or
//! `RUST_LOG`.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Plain text for people, JSON for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// The `[log]` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `wharf_receiver=debug,info`, …
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Plain,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// Every problem with this section, one line each.
    pub fn problems(&self) -> Vec<String> {
        match EnvFilter::try_new(&self.level) {
            Ok(_) => Vec::new(),
            Err(error) => vec![format!(
                "log.level: {:?} is not a filter: {error}",
                self.level
            )],
        }
    }
}

/// Installs the global subscriber; `RUST_LOG`, when set, wins over the
/// configured level. Logs go to stderr so stdout stays for program output.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (several services in one process, tests) keeps the first.
    let _ = result;
}
