//! `wharf-socket`: the device gateway as its own process.

use std::path::PathBuf;

use clap::Parser;
use wharf_socket::SocketSettings;

/// Holds device connections and bridges them to the bus.
#[derive(Parser)]
#[command(name = "wharf-socket", version)]
struct Args {
    /// TOML configuration file (also WHARF_CONFIG); WHARF_* variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let path = wharf_runtime::config_path(args.config.as_deref());
    let settings: SocketSettings =
        wharf_runtime::exit_on_bad_config(wharf_runtime::load_config(path.as_deref()));
    wharf_runtime::init_tracing(&settings.log);
    wharf_runtime::exit_on_error(
        wharf_socket::run(settings, wharf_runtime::shutdown_on_signal()).await,
    );
}
