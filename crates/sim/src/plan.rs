//! [`SimPlan`]: what to simulate, and where.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::bail;

use crate::TransportKind;
use crate::template::Template;
use crate::transport::tcp::Framing;

/// One transport for every device, or all five in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    One(TransportKind),
    /// Device `i` uses transport `i % 5`: mqtt, mqtt5, ws, tcp, udp.
    Mix,
}

impl TransportChoice {
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        if name == "mix" {
            return Ok(TransportChoice::Mix);
        }
        match TransportKind::parse(name) {
            Some(kind) => Ok(TransportChoice::One(kind)),
            None => bail!("unknown transport {name:?}: expected mqtt, mqtt5, ws, tcp, udp or mix"),
        }
    }

    pub fn of(self, index: usize) -> TransportKind {
        match self {
            TransportChoice::One(kind) => kind,
            TransportChoice::Mix => TransportKind::ALL[index % TransportKind::ALL.len()],
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TransportChoice::One(kind) => kind.as_str(),
            TransportChoice::Mix => "mix",
        }
    }
}

/// How devices prove who they are.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Tokens signed with Wharf's `auth.secret`.
    Secret(String),
    /// Tokens from registering each device through the REST API.
    Api(crate::register::Api),
    /// No authentication (another MQTT broker, for side-by-side runs).
    Anonymous,
}

/// Where each transport's listener is.
#[derive(Debug, Clone)]
pub struct Targets {
    pub mqtt: SocketAddr,
    pub ws: SocketAddr,
    pub tcp: SocketAddr,
    pub tcp_framing: Framing,
    pub udp: SocketAddr,
}

impl Targets {
    pub fn of(&self, kind: TransportKind) -> SocketAddr {
        match kind {
            TransportKind::Mqtt | TransportKind::Mqtt5 => self.mqtt,
            TransportKind::Ws => self.ws,
            TransportKind::Tcp => self.tcp,
            TransportKind::Udp => self.udp,
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimPlan {
    pub devices: usize,
    pub transport: TransportChoice,
    /// Frames per second across all devices.
    pub rate: f64,
    /// How long devices send, from the start (the ramp included).
    pub duration: Duration,
    /// Devices connect evenly spread over this time.
    pub ramp: Duration,
    pub model: String,
    /// Device ids are `<id_prefix>-<index>`.
    pub id_prefix: String,
    pub payload: Template,
    /// MQTT QoS of the frames (0 or 1).
    pub qos: u8,
    pub targets: Targets,
    pub credentials: Credentials,
    /// Connecting and logging in must take less.
    pub connect_timeout: Duration,
    /// After sending stops, how long devices wait for outstanding PUBACKs.
    pub drain: Duration,
}

/// A device may send at most this many frames per second by default
/// (`socket.rate_limit.per_second`).
pub const SOCKET_RATE_LIMIT: f64 = 100.0;

impl SimPlan {
    /// Refuses plans that cannot run.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.devices == 0 {
            bail!("--devices must be at least 1");
        }
        if !self.rate.is_finite() || self.rate <= 0.0 {
            bail!("--rate must be above 0 frames per second");
        }
        if self.qos > 1 {
            bail!("--qos must be 0 or 1 (Wharf refuses QoS 2)");
        }
        if self.ramp > self.duration {
            bail!(
                "--ramp ({:?}) is longer than --duration ({:?})",
                self.ramp,
                self.duration
            );
        }
        if matches!(self.credentials, Credentials::Anonymous)
            && !matches!(
                self.transport,
                TransportChoice::One(TransportKind::Mqtt | TransportKind::Mqtt5)
            )
        {
            bail!(
                "another broker (--target mosquitto://…) is reached over MQTT only: use --transport mqtt or mqtt5"
            );
        }
        Ok(())
    }

    /// Seconds between two frames of one device.
    pub fn period(&self) -> Duration {
        Duration::from_secs_f64(self.devices as f64 / self.rate)
    }

    /// The device id of device `index`.
    pub fn device_id(&self, index: usize) -> String {
        format!("{}-{index}", self.id_prefix)
    }
}
