//! What every Wharf binary needs around its service: configuration loaded
//! from TOML plus `WHARF_` environment overrides and validated up front,
//! `tracing` set-up, an operations HTTP endpoint (`/healthz`, `/readyz`,
//! `/metrics`), and a shutdown signal handed to services as a
//! [`CancellationToken`](tokio_util::sync::CancellationToken).
//!
//! # Layout
//! - [`config`]: [`load_config`], [`Validate`] (a configuration's check
//!   hands back what it parsed, [`Checked`]), [`exit_on_bad_config`],
//!   [`exit_on_error`].
//! - [`backoff`]: how every service waits out an outage, [`Backoff`].
//! - [`telemetry`]: [`LogConfig`], [`init_tracing`].
//! - [`otlp`]: spans of published events to an OpenTelemetry collector,
//!   when configured.
//! - [`http_client`]: one-request HTTP/1.1 for the tools (probe, trace
//!   export, `wharf sim --api`).
//! - [`ops`]: [`Readiness`], [`OpsEndpoint`], [`serve_ops`] (`/healthz`,
//!   `/readyz`, `/metrics` with `wharf_ready{component}`).
//! - [`process`]: a process's resident memory and CPU time (Linux).
//! - [`service`]: [`service_main`], the whole `main` of a service binary.
//! - [`shutdown`]: the signal that stops everything, [`shutdown_on_signal`],
//!   and reload requests (SIGHUP), [`reload_on_hangup`].
//!
//! # Invariants
//! - Libraries never read signals or the environment: binaries do, here, and
//!   pass values down.

pub mod backoff;
pub mod config;
pub mod http_client;
pub mod ops;
pub mod otlp;
pub mod process;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use backoff::Backoff;
pub use config::{
    Checked, ConfigError, EXIT_CONFIG, Validate, both, config_is_good, config_path,
    exit_on_bad_config, exit_on_error, load_config, load_config_from, no_problems, with_part,
};
pub use ops::{OpsEndpoint, Readiness, ReadyFlag, Reporting, serve_ops};
pub use service::{Settings, service_main};
pub use shutdown::{Reload, ReloadTrigger, reload_on_hangup, shutdown_on_signal};
pub use telemetry::{LogConfig, LogFormat, init_tracing};

/// The Prometheus registry every service registers its metrics in.
pub use prometheus_client::registry::Registry;
