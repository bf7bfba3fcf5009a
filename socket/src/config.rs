//! The Socket's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use wharf_auth::AuthConfig;
use wharf_bus::BusConfig;
use wharf_runtime::{LogConfig, Settings, Validate};

/// Everything `wharf-socket` reads: `[bus]`, `[auth]`, `[log]`, `[socket]`.
/// Other sections are ignored, so one file can serve every service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SocketSettings {
    pub bus: BusConfig,
    pub auth: AuthConfig,
    pub log: LogConfig,
    pub socket: SocketConfig,
}

/// The `[socket]` section: limits common to every transport, and one
/// sub-section per transport.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketConfig {
    /// Stable id of this instance (the pod name in a StatefulSet); names the
    /// deliveries topic it reads.
    pub instance_id: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_listen: SocketAddr,
    /// Device connections held at once, over all transports.
    pub max_connections: usize,
    /// Frames larger than this close the connection with a reason.
    pub max_frame_bytes: usize,
    /// A device's answer to a command larger than this is refused (counted
    /// as `wharf_socket_replies_total{outcome="too_large"}`); the command
    /// then ends `timed_out`.
    pub max_reply_bytes: usize,
    /// A device that has not authenticated by then is dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A connection that sends nothing (not even a ping) this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a command may take to be written (and, over MQTT, acknowledged).
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Commands queued for one device before more are refused.
    pub outbound_queue: usize,
    /// Frames of one connection awaiting the bus's acknowledgement before
    /// the Socket stops reading from it (backpressure).
    pub max_in_flight: usize,
    /// Frames per second each device may send, and the burst above it.
    pub rate_limit: RateLimit,
    /// How long shutdown waits for connections to close and the bus to flush.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub websocket: WebsocketConfig,
    pub mqtt: MqttConfig,
    pub tcp: TcpConfig,
    pub udp: UdpConfig,
}

/// A token bucket: `per_second` frames on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// `[socket.websocket]`: devices at `/v1/ws`, MQTT over WebSocket at `/mqtt`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebsocketConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
}

/// `[socket.mqtt]`: MQTT 3.1.1 and 5 over TCP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Subscription filters one session may hold; more are refused
    /// (SUBACK "quota exceeded", MQTT 3.1.1 "failure"). A device needs one
    /// or two (`devices/{id}/commands/#`); the cap bounds what a session
    /// keeps and what every command is matched against.
    pub max_subscriptions: usize,
}

/// `[socket.tcp]`: raw TCP with length-prefixed or newline-delimited frames.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TcpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub framing: Framing,
}

/// How TCP frames are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framing {
    /// A u32 big-endian length, then that many bytes.
    Length,
    /// One frame per line, ended by `\n` (a `\r` before it is dropped).
    Lines,
}

/// `[socket.udp]`: datagrams with an 8-byte session id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UdpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// A session without datagrams this long ends (`DeviceDisconnected`).
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    /// Datagrams waiting for the bus; beyond it they are dropped and counted.
    pub queue: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            instance_id: "socket-0".into(),
            ops_listen: ([0, 0, 0, 0], 9101).into(),
            max_connections: 200_000,
            max_frame_bytes: 256 * 1024,
            max_reply_bytes: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            delivery_timeout: Duration::from_secs(10),
            outbound_queue: 32,
            max_in_flight: 64,
            rate_limit: RateLimit {
                per_second: 100,
                burst: 200,
            },
            shutdown_grace: Duration::from_secs(10),
            websocket: WebsocketConfig::default(),
            mqtt: MqttConfig::default(),
            tcp: TcpConfig::default(),
            udp: UdpConfig::default(),
        }
    }
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        WebsocketConfig {
            enabled: true,
            listen: ([0, 0, 0, 0], 8080).into(),
        }
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: true,
            listen: ([0, 0, 0, 0], 1883).into(),
            max_subscriptions: 8,
        }
    }
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            enabled: true,
            listen: ([0, 0, 0, 0], 7000).into(),
            framing: Framing::Length,
        }
    }
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            enabled: true,
            listen: ([0, 0, 0, 0], 7001).into(),
            session_idle: Duration::from_secs(120),
            queue: 1024,
        }
    }
}

impl SocketConfig {
    /// Every problem with this section, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = wharf_events::Topics::check_instance_id(&self.instance_id) {
            problems.push(format!("socket.instance_id: {error}"));
        }
        if self.max_frame_bytes < 64 {
            problems.push(format!(
                "socket.max_frame_bytes: {} is too small (expected at least 64)",
                self.max_frame_bytes
            ));
        }
        for (key, value) in [
            ("socket.handshake_timeout", self.handshake_timeout),
            ("socket.idle_timeout", self.idle_timeout),
            ("socket.delivery_timeout", self.delivery_timeout),
            ("socket.shutdown_grace", self.shutdown_grace),
            ("socket.udp.session_idle", self.udp.session_idle),
        ] {
            if value.is_zero() {
                problems.push(format!("{key}: must be longer than 0s"));
            }
        }
        for (key, value) in [
            ("socket.max_connections", self.max_connections),
            ("socket.outbound_queue", self.outbound_queue),
            ("socket.max_in_flight", self.max_in_flight),
            ("socket.udp.queue", self.udp.queue),
            ("socket.mqtt.max_subscriptions", self.mqtt.max_subscriptions),
            (
                "socket.rate_limit.per_second",
                self.rate_limit.per_second as usize,
            ),
            ("socket.rate_limit.burst", self.rate_limit.burst as usize),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        let enabled = [
            self.websocket.enabled,
            self.mqtt.enabled,
            self.tcp.enabled,
            self.udp.enabled,
        ];
        if !enabled.contains(&true) {
            problems.push("socket: every transport is disabled; enable at least one".into());
        }
        problems
    }
}

impl Validate for SocketSettings {
    type Parsed = ();

    fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = self.bus.problems();
        problems.extend(self.auth.problems());
        problems.extend(self.log.problems());
        problems.extend(self.socket.problems());
        wharf_runtime::no_problems(problems)
    }
}

impl Settings for SocketSettings {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}
