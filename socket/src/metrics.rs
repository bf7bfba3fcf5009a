//! Every metric the Socket exports, registered once under `wharf_socket_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// A single label, such as `transport="websocket"`.
pub type Label = [(&'static str, &'static str); 1];

/// The Socket's metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct SocketMetrics {
    /// Open device connections, by transport.
    pub connections: Family<Label, Gauge>,
    /// Frames received from devices, by transport.
    pub frames_received: Family<Label, Counter>,
    pub frame_bytes_received: Family<Label, Counter>,
    /// Command frames written to devices, by transport.
    pub frames_sent: Family<Label, Counter>,
    pub frame_bytes_sent: Family<Label, Counter>,
    /// Refused handshakes, by reason (`expired`, `bad_signature`, …).
    pub auth_failures: Family<Label, Counter>,
    /// Connections dropped before or during the handshake, by reason.
    pub handshake_failures: Family<Label, Counter>,
    /// Inbound frames that did not reach the bus, by reason.
    pub frames_dropped: Family<Label, Counter>,
    /// Deliveries handled, by outcome (`delivered`, `failed`).
    pub deliveries: Family<Label, Counter>,
    /// Connections replaced by a newer connection of the same device.
    pub takeovers: Counter,
}

impl SocketMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = SocketMetrics::default();
        let r = registry.sub_registry_with_prefix("wharf_socket");
        r.register(
            "connections",
            "Open device connections",
            metrics.connections.clone(),
        );
        r.register(
            "frames_received",
            "Frames received from devices",
            metrics.frames_received.clone(),
        );
        r.register_with_unit(
            "frame_received",
            "Bytes of frames received from devices",
            Unit::Bytes,
            metrics.frame_bytes_received.clone(),
        );
        r.register(
            "frames_sent",
            "Command frames written to devices",
            metrics.frames_sent.clone(),
        );
        r.register_with_unit(
            "frame_sent",
            "Bytes of command frames written to devices",
            Unit::Bytes,
            metrics.frame_bytes_sent.clone(),
        );
        r.register(
            "auth_failures",
            "Handshakes refused for a bad, expired or missing token",
            metrics.auth_failures.clone(),
        );
        r.register(
            "handshake_failures",
            "Connections that failed before completing the handshake",
            metrics.handshake_failures.clone(),
        );
        r.register(
            "frames_dropped",
            "Inbound frames that did not reach the bus",
            metrics.frames_dropped.clone(),
        );
        r.register(
            "deliveries",
            "Command deliveries handled, by outcome",
            metrics.deliveries.clone(),
        );
        r.register(
            "takeovers",
            "Connections replaced by a newer connection of the same device",
            metrics.takeovers.clone(),
        );
        metrics
    }
}
