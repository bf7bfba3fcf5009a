//! `wharf sim`: where the simulated devices connect (the configuration's
//! Socket addresses, or flags, or another broker), the live line on a
//! terminal, and the report. The simulation itself is the `wharf-sim`
//! crate's.

use std::io::IsTerminal as _;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use wharf_sim::report::live_line;
use wharf_sim::transport::tcp::Framing;
use wharf_sim::{Credentials, SimPlan, Snapshot, Targets, TransportChoice};
use wharf_socket::SocketConfig;

/// `wharf sim`'s options: simulate a fleet. N devices connect over MQTT,
/// WebSocket, TCP or UDP with tokens minted from the secret, send readings
/// at a rate, acknowledge commands, and report acks, round trips and
/// errors. Exits 1 when errors exceed --max-errors.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// How many devices.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// mqtt (3.1.1), mqtt5, ws, tcp, udp, or mix (all five in turn).
    #[arg(long, default_value = "mqtt")]
    pub transport: String,
    /// Frames per second across all devices (500 or 500/s); default: one
    /// per device per second.
    #[arg(long)]
    pub rate: Option<String>,
    /// How long devices send (10s, 5m).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Spread the devices' connects over this time.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// The devices' model (selects their command profile).
    #[arg(long, default_value = "demo-thermostat")]
    pub model: String,
    /// Frame template: {{rand A B}}, {{seq}}, {{device}}, {{time}}.
    #[arg(long, default_value = wharf_sim::template::DEFAULT)]
    pub payload: String,
    /// MQTT QoS of the frames: 1 (acknowledged once durable) or 0.
    #[arg(long, default_value_t = 1)]
    pub qos: u8,
    /// Device ids are PREFIX-0, PREFIX-1, …
    #[arg(long, default_value = "sim")]
    pub id_prefix: String,
    /// MQTT listener (host:port); default: the configured socket.mqtt.listen.
    #[arg(long)]
    pub mqtt: Option<String>,
    /// WebSocket listener (host:port); default: socket.websocket.listen.
    #[arg(long)]
    pub ws: Option<String>,
    /// TCP listener (host:port); default: socket.tcp.listen.
    #[arg(long)]
    pub tcp: Option<String>,
    /// UDP listener (host:port); default: socket.udp.listen.
    #[arg(long)]
    pub udp: Option<String>,
    /// Another broker for a side-by-side run: mosquitto://host:port
    /// (anonymous, MQTT only, the same topics).
    #[arg(long, conflicts_with = "api")]
    pub target: Option<String>,
    /// Register the devices through this REST API (http://host:8088) and
    /// use the tokens it answers with, instead of minting them from the
    /// secret. A device id already registered is deleted and registered
    /// again.
    #[arg(long, requires = "api_key")]
    pub api: Option<String>,
    /// The API key for --api.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Connecting and logging in must take less.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// After sending, how long to wait for outstanding PUBACKs.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when more errors than this happened.
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// The data directory of `wharf up`, for its secret when auth.secret is
    /// not set.
    #[arg(long, default_value = "data")]
    pub data_dir: std::path::PathBuf,
}

/// Runs the simulation; Err when it could not run or had more errors than
/// allowed.
pub async fn sim(
    args: SimArgs,
    socket: &SocketConfig,
    secret: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let rate = match &args.rate {
        None => args.devices as f64,
        Some(rate) => rate
            .trim_end_matches("/s")
            .parse::<f64>()
            .ok()
            .filter(|rate| *rate > 0.0)
            .with_context(|| {
                format!("--rate {rate}: expected frames per second, like 500 or 500/s")
            })?,
    };
    let per_device = rate / args.devices.max(1) as f64;
    if args.target.is_none() && per_device > f64::from(socket.rate_limit.per_second) {
        bail!(
            "--rate {rate} is {per_device:.0} frames/s per device, above the Socket's rate limit of {} (socket.rate_limit.per_second): add devices or lower the rate",
            socket.rate_limit.per_second
        );
    }
    let local = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        }
    };
    let resolve =
        |flag: &Option<String>, configured: SocketAddr, what: &str| -> anyhow::Result<SocketAddr> {
            match flag {
                None => Ok(local(configured)),
                Some(address) => address
                    .to_socket_addrs()
                    .with_context(|| format!("--{what} {address}: expected host:port"))?
                    .next()
                    .with_context(|| format!("--{what} {address}: no address")),
            }
        };
    let mut targets = Targets {
        mqtt: resolve(&args.mqtt, socket.mqtt.listen, "mqtt")?,
        ws: resolve(&args.ws, socket.websocket.listen, "ws")?,
        tcp: resolve(&args.tcp, socket.tcp.listen, "tcp")?,
        tcp_framing: match socket.tcp.framing {
            wharf_socket::config::Framing::Length => Framing::Length,
            wharf_socket::config::Framing::Lines => Framing::Lines,
        },
        udp: resolve(&args.udp, socket.udp.listen, "udp")?,
    };
    let credentials = match &args.target {
        Some(target) => {
            let address = target
                .strip_prefix("mosquitto://")
                .with_context(|| format!("--target {target}: expected mosquitto://host:port"))?;
            targets.mqtt = resolve(&Some(address.to_owned()), targets.mqtt, "target")?;
            Credentials::Anonymous
        }
        None => match &args.api {
            Some(api) => Credentials::Api(wharf_sim::register::Api::new(
                api,
                args.api_key.as_deref().unwrap_or(""),
            )?),
            None => Credentials::Secret(secret()?),
        },
    };
    let plan = SimPlan {
        devices: args.devices,
        transport: TransportChoice::parse(&args.transport)?,
        rate,
        duration: args.duration,
        ramp: args.ramp,
        model: args.model,
        id_prefix: args.id_prefix,
        payload: wharf_sim::template::Template::parse(&args.payload)?,
        qos: args.qos,
        targets,
        credentials,
        connect_timeout: args.connect_timeout,
        drain: args.drain,
    };
    let live = std::io::stderr().is_terminal();
    let mut previous: Option<Snapshot> = None;
    let report = wharf_sim::run(plan, |stats, elapsed| {
        if live {
            let snapshot = stats.snapshot();
            eprint!(
                "\r\x1b[2K{}",
                live_line(&snapshot, previous.as_ref(), elapsed)
            );
            previous = Some(snapshot);
        }
    })
    .await?;
    if live {
        eprintln!();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("the report encodes")?
        );
    } else {
        print!("{}", report.table());
    }
    report.verdict(args.max_errors).map_err(anyhow::Error::msg)
}
