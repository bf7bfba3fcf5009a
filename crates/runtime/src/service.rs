//! The whole `main` of a service binary: arguments, configuration, logs,
//! signals, and a one-line error on failure.

use std::future::Future;
use std::path::PathBuf;

use clap::Parser;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::{LogConfig, Validate};

/// A service binary's configuration.
pub trait Settings: DeserializeOwned + Validate {
    /// Its `[log]` section.
    fn log(&self) -> &LogConfig;
}

/// The arguments every service binary takes.
#[derive(Parser)]
#[command(
    version,
    about = "A Wharf service. Configuration: a TOML file plus WHARF_<SECTION>__<KEY> variables."
)]
struct ServiceArgs {
    /// TOML configuration file (also WHARF_CONFIG); WHARF_* variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Load and validate the configuration (file and WHARF_* variables),
    /// say whether it is good, and exit (0, or 64 with one line per
    /// problem) without binding or connecting to anything.
    #[arg(long)]
    check_config: bool,
}

/// Parses the arguments, loads and validates the configuration (exit 64 on
/// a bad one; with `--check-config`, exit 0 here on a good one), starts logging, then runs the service until SIGINT or
/// SIGTERM; a failure is printed on one line and exits with status 1.
pub async fn service_main<S, F, Fut>(run: F)
where
    S: Settings,
    F: FnOnce(crate::Checked<S>, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let args = ServiceArgs::parse();
    let path = crate::config_path(args.config.as_deref());
    let checked: crate::Checked<S> = crate::exit_on_bad_config(crate::load_config(path.as_deref()));
    if args.check_config {
        crate::config_is_good(path.as_deref());
        return;
    }
    crate::init_tracing(checked.settings.log());
    crate::exit_on_error(run(checked, crate::shutdown_on_signal()).await);
}
