//! `wharf sim`: a fleet of simulated devices. Each device connects over its
//! transport with a token minted from the secret (or anonymously to another
//! MQTT broker), sends readings from a payload template at its share of the
//! rate, acknowledges the commands it gets, and counts everything; the run
//! ends with a report.
//!
//! # Layout
//! - [`plan`]: [`SimPlan`], what to simulate and where.
//! - [`template`]: payload templates (`{{rand 15 40}}`).
//! - [`register`]: devices registered through the REST API (`--api`).
//! - [`transport`]: [`transport::Link`], one connection per device, for
//!   MQTT 3.1.1 and 5, WebSocket, TCP and UDP.
//! - [`device`]: one device's life: connect, send on schedule, read acks
//!   and commands, drain, close.
//! - [`stats`]: counters, errors by kind, latency percentiles.
//! - [`report`]: the live line, the summary table, the verdict.
//!
//! # Measures
//! - **ack latency**: MQTT QoS 1 PUBLISH written → its PUBACK read. A
//!   PUBACK from Wharf means the frame is durable on the bus.
//! - **frame → command**: from a device's latest frame to the command it
//!   receives next (each frame counted once). With a rule that answers a
//!   reading with a command, and frames further apart than the round trip
//!   (one a second by default), that is the round trip through the Socket,
//!   the bus, the Receiver, the Commander and back.

pub mod device;
pub mod plan;
pub mod register;
pub mod report;
pub mod stats;
pub mod template;
pub mod transport;

pub use plan::{Credentials, SimPlan, Targets, TransportChoice};
pub use report::Report;
pub use stats::{ErrorKind, Snapshot, Stats};

/// The transports a device can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransportKind {
    /// MQTT 3.1.1.
    Mqtt,
    Mqtt5,
    Ws,
    Tcp,
    Udp,
}

impl TransportKind {
    pub const ALL: [TransportKind; 5] = [
        TransportKind::Mqtt,
        TransportKind::Mqtt5,
        TransportKind::Ws,
        TransportKind::Tcp,
        TransportKind::Udp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Mqtt => "mqtt",
            TransportKind::Mqtt5 => "mqtt5",
            TransportKind::Ws => "ws",
            TransportKind::Tcp => "tcp",
            TransportKind::Udp => "udp",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        TransportKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Whether the server acknowledges each frame (MQTT at QoS 1).
    pub fn is_mqtt(self) -> bool {
        matches!(self, TransportKind::Mqtt | TransportKind::Mqtt5)
    }
}

/// Runs `plan` to its end; `progress` is called about once a second with
/// the counts so far and the seconds elapsed. (A snapshot sorts every
/// latency sample: take one only when it is shown.)
pub async fn run(plan: SimPlan, mut progress: impl FnMut(&Stats, f64)) -> anyhow::Result<Report> {
    plan.check()?;
    let plan = std::sync::Arc::new(plan);
    let stats = std::sync::Arc::new(Stats::default());
    let issuer = match &plan.credentials {
        Credentials::Secret(secret) => Some(wharf_auth::TokenIssuer::new(secret)),
        Credentials::Api(_) | Credentials::Anonymous => None,
    };
    let mut specs = Vec::with_capacity(plan.devices);
    for index in 0..plan.devices {
        let mut device = device::DeviceSpec::new(&plan, index, issuer.as_ref())?;
        if let Credentials::Api(api) = &plan.credentials {
            device.token = Some(api.register(&device.id, &plan.model).await?);
        }
        specs.push(device);
    }
    let started = tokio::time::Instant::now();
    let mut devices = tokio::task::JoinSet::new();
    for device in specs {
        let (plan, stats) = (plan.clone(), stats.clone());
        devices.spawn(async move { device::run(device, &plan, &stats, started).await });
    }
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    ticker.tick().await;
    loop {
        tokio::select! {
            done = devices.join_next() => {
                match done {
                    None => break,
                    Some(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                    Some(_) => {}
                }
            }
            _ = ticker.tick() => progress(&stats, started.elapsed().as_secs_f64()),
        }
    }
    Ok(Report::new(&plan, stats.snapshot(), started.elapsed()))
}
