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

/// The `[socket]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketConfig {
    /// Stable id of this instance (the pod name in a StatefulSet); names the
    /// deliveries topic it reads.
    pub instance_id: String,
    /// Where devices connect over WebSocket (`ws://HOST:PORT/v1/ws`).
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub ops_listen: SocketAddr,
    /// A device that has not finished the handshake by then is dropped.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Frames larger than this close the connection (WebSocket code 1009).
    pub max_frame_bytes: usize,
    /// How long writing a command frame to a device may take.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Frames queued for one device before deliveries wait.
    pub outbound_queue: usize,
    /// Inbound frames of one connection awaiting the bus's acknowledgement
    /// before the Socket stops reading from it.
    pub max_in_flight: usize,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            instance_id: "socket-0".into(),
            listen: ([0, 0, 0, 0], 8080).into(),
            ops_listen: ([0, 0, 0, 0], 9101).into(),
            handshake_timeout: Duration::from_secs(10),
            max_frame_bytes: 256 * 1024,
            delivery_timeout: Duration::from_secs(10),
            outbound_queue: 32,
            max_in_flight: 64,
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
            ("socket.delivery_timeout", self.delivery_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{key}: must be longer than 0s"));
            }
        }
        for (key, value) in [
            ("socket.outbound_queue", self.outbound_queue),
            ("socket.max_in_flight", self.max_in_flight),
        ] {
            if value == 0 {
                problems.push(format!("{key}: must be at least 1"));
            }
        }
        problems
    }
}

impl Validate for SocketSettings {
    fn problems(&self) -> Vec<String> {
        let mut problems = self.bus.problems();
        problems.extend(self.auth.problems());
        problems.extend(self.log.problems());
        problems.extend(self.socket.problems());
        problems
    }
}

impl Settings for SocketSettings {
    fn log(&self) -> &LogConfig {
        &self.log
    }
}
