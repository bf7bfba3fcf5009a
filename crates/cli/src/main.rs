//! `wharf`: run everything in one process, mint device tokens.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use wharf_auth::{AuthConfig, TokenIssuer};
use wharf_bus::BusConfig;
use wharf_cli::embedded::{self, UpSettings};
use wharf_cli::sim::{SimArgs, sim};
use wharf_cli::tail::{TailArgs, TailSource, tail};
use wharf_cli::{demo, secret};
use wharf_runtime::Validate;
use wharf_tail::{Filter, TopicSelection};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "Connect fleets of devices to business logic"
)]
struct Cli {
    /// TOML configuration file (also WHARF_CONFIG); WHARF_* variables override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Socket, the Receiver and the Commander in one process, on the
    /// in-process bus and SQLite, with a demo device model and rule.
    Up {
        /// Where the database and the generated token secret live.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Load and validate the configuration, say whether it is good, and
        /// exit (0, or 64 with one line per problem) without starting.
        #[arg(long)]
        check_config: bool,
    },
    /// Follow Wharf's topics and print one line per event: on Kafka (the
    /// configured bus, or --bus), or from a running `wharf up` (its
    /// operations port, or --from). Never commits offsets.
    Tail {
        /// Topic without the prefix: device-events, command-requests,
        /// command-status, presence, revocations, deliveries.* or
        /// deliveries.<instance>. Repeatable; default: all.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Only events about this device. Repeatable.
        #[arg(long)]
        device: Vec<String>,
        /// Only events of this type (FrameReceived, CommandDelivered, …).
        /// Repeatable.
        #[arg(long = "type")]
        types: Vec<String>,
        /// Every event of one story: a command id (its request, lifecycle
        /// and the frame that caused it), or an event's id or correlation id.
        #[arg(long, value_parser = parse_uuid)]
        correlation: Option<uuid::Uuid>,
        /// Start at the oldest retained record instead of the newest.
        #[arg(long)]
        from_beginning: bool,
        /// Events of this last stretch of time (10m, 2h): reads from the
        /// beginning and skips older events.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Keep printing new events (the default on a terminal).
        #[arg(long, conflicts_with = "no_follow")]
        follow: bool,
        /// Stop at the end of what is there now (the default in a pipe).
        #[arg(long)]
        no_follow: bool,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<u64>,
        /// pretty (default) or json: each envelope as it is on the bus.
        #[arg(long, default_value = "pretty", value_parser = ["pretty", "json"])]
        output: String,
        /// Read this Kafka bus (kafka://host:port) instead of the configured one.
        #[arg(long, conflicts_with = "from")]
        bus: Option<String>,
        /// Read the event stream of the `wharf up` whose operations port is
        /// at this URL (http://127.0.0.1:9100).
        #[arg(long)]
        from: Option<String>,
    },
    /// Simulate a fleet: N devices connect over MQTT, WebSocket, TCP or UDP
    /// with tokens minted from the secret, send readings at a rate,
    /// acknowledge commands, and report acks, round trips and errors.
    /// Exits 1 when errors exceed --max-errors.
    Sim(Box<SimArgs>),
    /// Device tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Keys for the Commander's REST API.
    ApiKey {
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// GET an operations endpoint (`http://127.0.0.1:9100/readyz`) and exit
    /// 0 if it answers 200, 1 otherwise: a container health check that
    /// needs no shell or curl in the image.
    Probe {
        /// `http://host:port/path`
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Print a new random API key and the hash to put in
    /// `commander.api.keys` (the Commander stores only hashes).
    New,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a token for a device, signed with auth.secret (or the secret
    /// `wharf up` keeps in its data directory).
    Issue {
        /// The device id (the token's `sub`).
        #[arg(long)]
        device: String,
        /// The device model, which selects its command profile.
        #[arg(long)]
        model: String,
        /// How long the token is valid: 30d, 12h, 90m…
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The data directory of `wharf up`, used when auth.secret is not set.
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Print a fresh random secret for auth.secret.
    Secret,
}

/// What `wharf token issue` reads from the configuration.
#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenSettings {
    auth: AuthConfig,
}

impl Validate for TokenSettings {
    type Parsed = ();

    fn check(&self) -> Result<(), Vec<String>> {
        if self.auth.secret.is_empty() {
            Ok(())
        } else {
            wharf_runtime::no_problems(self.auth.problems())
        }
    }
}

/// The secret device tokens are signed with: auth.secret, or the one
/// `wharf up` keeps in its data directory.
fn token_secret(auth: &AuthConfig, data_dir: &std::path::Path) -> anyhow::Result<String> {
    if !auth.secret.is_empty() {
        return Ok(auth.secret.clone());
    }
    secret::load_kept(data_dir)?.with_context(|| {
        format!(
            "no secret: set auth.secret (WHARF_AUTH__SECRET) or run `wharf up` once to create {}",
            secret::secret_file(data_dir).display()
        )
    })
}

fn parse_uuid(text: &str) -> Result<uuid::Uuid, String> {
    text.parse()
        .map_err(|error| format!("{text:?} is not an id: {error}"))
}

#[tokio::main]
async fn main() {
    wharf_runtime::exit_on_error(run(Cli::parse()).await);
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let path = wharf_runtime::config_path(cli.config.as_deref());
    match cli.command {
        Command::Up {
            data_dir,
            check_config,
        } => {
            let mut checked: wharf_runtime::Checked<UpSettings> =
                wharf_runtime::exit_on_bad_config(wharf_runtime::load_config(path.as_deref()));
            if check_config {
                wharf_runtime::config_is_good(path.as_deref());
                return Ok(());
            }
            checked.settings.use_data_dir(data_dir);
            wharf_runtime::init_tracing(&checked.settings.log);
            up(checked).await
        }
        Command::Tail {
            topics,
            device,
            types,
            correlation,
            from_beginning,
            since,
            follow,
            no_follow,
            limit,
            output,
            bus,
            from,
        } => {
            let settings: UpSettings =
                wharf_runtime::exit_on_bad_config(wharf_runtime::load_config(path.as_deref()))
                    .settings;
            let source = match (from, bus) {
                (Some(url), _) => TailSource::Stream {
                    url,
                    topics: settings.bus.topics(),
                },
                (None, Some(url)) => TailSource::Bus(BusConfig {
                    url,
                    ..settings.bus
                }),
                (None, None) => TailSource::of(settings.bus, settings.up.ops_listen),
            };
            let args = TailArgs {
                topics: TopicSelection(topics),
                filter: Filter {
                    devices: device,
                    types,
                    since: None,
                },
                correlation,
                from_beginning,
                since,
                follow: match (follow, no_follow) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                limit,
                json: output == "json",
            };
            tail(source, args).await
        }
        Command::Sim(args) => {
            let settings: UpSettings =
                wharf_runtime::exit_on_bad_config(wharf_runtime::load_config(path.as_deref()))
                    .settings;
            let (auth, data_dir) = (settings.auth.clone(), args.data_dir.clone());
            sim(*args, &settings.socket, || token_secret(&auth, &data_dir)).await
        }
        Command::Probe { url, timeout } => wharf_cli::probe::probe(&url, timeout).await,
        Command::ApiKey {
            command: ApiKeyCommand::New,
        } => {
            let key = wharf_auth::generate_api_key();
            println!("key:  {key}");
            println!("hash: {}", wharf_auth::hash_api_key(&key));
            println!(
                "Give the key to API clients (Authorization: Bearer <key>) and add the hash to commander.api.keys."
            );
            Ok(())
        }
        Command::Token { command } => match command {
            TokenCommand::Secret => {
                println!("{}", wharf_auth::generate_secret());
                Ok(())
            }
            TokenCommand::Issue {
                device,
                model,
                ttl,
                data_dir,
            } => {
                let settings: TokenSettings =
                    wharf_runtime::exit_on_bad_config(wharf_runtime::load_config(path.as_deref()))
                        .settings;
                let secret = token_secret(&settings.auth, &data_dir)?;
                println!("{}", TokenIssuer::new(&secret).issue(&device, &model, ttl)?);
                Ok(())
            }
        },
    }
}

/// One line on what an acknowledgement means on this bus.
fn bus_mode(url: &str) -> &'static str {
    if url.starts_with("file://") {
        "durable in-process bus: a message is acknowledged once it is on disk, and survives a crash"
    } else if url.starts_with("memory://") {
        "in-memory bus: fast, but what the services had not yet written back is lost on a crash"
    } else {
        "kafka bus: a message is acknowledged once Kafka has it (acks=all)"
    }
}

async fn up(checked: wharf_runtime::Checked<UpSettings>) -> anyhow::Result<()> {
    let settings = &checked.settings;
    let demo_enabled = settings.up.demo;
    let bus_url = settings.bus.url.clone();
    let store_url = wharf_store::redact(&settings.store.url);
    let shutdown = wharf_runtime::shutdown_on_signal();
    let wharf =
        embedded::start_with_reload(checked, shutdown, wharf_runtime::reload_on_hangup()).await?;
    let host = |addr: std::net::SocketAddr| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    };
    println!("Wharf is up (bus {bus_url}, store {store_url})");
    println!("  {}", bus_mode(&bus_url));
    let addresses = wharf.addresses;
    let ws = addresses
        .websocket
        .map(|addr| format!("ws://{}", host(addr)));
    if let Some(ws) = &ws {
        println!("  websocket devices   {ws}{}", wharf_socket::WS_PATH);
    }
    if let Some(addr) = addresses.mqtt {
        let over_ws = ws
            .as_ref()
            .map(|ws| format!(" (over WebSocket: {ws}{})", wharf_socket::MQTT_PATH))
            .unwrap_or_default();
        println!("  mqtt devices        mqtt://{}{over_ws}", host(addr));
    }
    if let Some(addr) = addresses.tcp {
        println!("  tcp devices         {}", host(addr));
    }
    if let Some(addr) = addresses.udp {
        println!("  udp devices         {}", host(addr));
    }
    println!(
        "  health and metrics  http://{}/metrics",
        host(wharf.ops_addr)
    );
    let api = format!("http://{}", host(wharf.api_addr));
    println!("  rest api            {api}/v1 (OpenAPI: {api}/openapi.json)");
    if let Some(key) = &wharf.api_key {
        println!("  api key: {key}");
    }
    if demo_enabled {
        let token = TokenIssuer::new(&wharf.secret).issue(
            demo::DEVICE,
            demo::MODEL,
            Duration::from_secs(30 * 24 * 3600),
        )?;
        println!(
            "  demo device token   ({} of model {}, valid 30 days):",
            demo::DEVICE,
            demo::MODEL
        );
        println!("{token}");
        println!("  try it: send {{\"temperature\": 35}} and the fan command comes back:");
        if let Some(ws) = &ws {
            println!(
                "    websocat -H 'Authorization: Bearer {token}' {ws}{}",
                wharf_socket::WS_PATH
            );
        }
        if let Some(addr) = addresses.mqtt {
            let (host, port) = (addr.ip(), addr.port());
            let host = if host.is_unspecified() {
                "127.0.0.1".to_owned()
            } else {
                host.to_string()
            };
            println!(
                "    mosquitto_rr -h {host} -p {port} -u {device} -P {token} -t devices/{device}/telemetry -e devices/{device}/commands/fan -m '{{\"temperature\": 35}}'",
                device = demo::DEVICE
            );
        }
    }
    if demo_enabled && let Some(key) = &wharf.api_key {
        println!("  or send a command through the API:");
        println!(
            "    curl -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{{\"args\":{{\"on\":true}}}}' {api}/v1/devices/{}/commands/fan",
            demo::DEVICE
        );
    }
    println!("Press Ctrl-C to stop.");
    wharf.wait().await
}
