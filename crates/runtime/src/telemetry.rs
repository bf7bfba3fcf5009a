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
    /// An OpenTelemetry collector (`http://host:4318`) to export the spans
    /// of published events to; empty: `OTEL_EXPORTER_OTLP_ENDPOINT`, or no
    /// export.
    pub otlp_endpoint: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Plain,
            level: "info".into(),
            otlp_endpoint: String::new(),
        }
    }
}

impl LogConfig {
    /// Every problem with this section, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = EnvFilter::try_new(&self.level) {
            problems.push(format!(
                "log.level: {:?} is not a filter: {error}",
                self.level
            ));
        }
        if !self.otlp_endpoint.is_empty()
            && let Err(problem) = crate::otlp::check_endpoint(&self.otlp_endpoint)
        {
            problems.push(format!("log.otlp_endpoint: {problem}"));
        }
        problems
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
    let endpoint = if config.otlp_endpoint.is_empty() {
        std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default()
    } else {
        config.otlp_endpoint.clone()
    };
    if !endpoint.is_empty() {
        // The service's name is its binary's: wharf-socket, wharf, …
        let service = std::env::args()
            .next()
            .and_then(|path| {
                std::path::Path::new(&path)
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "wharf".to_owned());
        match crate::otlp::start(&endpoint, &service) {
            Ok(()) => tracing::info!(collector = %endpoint, "exporting traces"),
            Err(problem) => tracing::warn!(%problem, "traces are not exported"),
        }
    }
}
