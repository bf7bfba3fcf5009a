//! Every metric the Socket exports, registered once under `wharf_socket_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A single label, such as `transport="mqtt"`.
pub type Label = [(&'static str, &'static str); 1];
/// Two labels, such as `transport="tcp",reason="expired"`.
pub type Labels = [(&'static str, &'static str); 2];

/// The Socket's metrics; clones share the same series.
#[derive(Clone)]
pub struct SocketMetrics {
    /// Open device connections (UDP: sessions), by transport.
    pub connections: Family<Label, Gauge>,
    /// Connections turned away before authentication, by reason.
    pub connections_refused: Family<Label, Counter>,
    /// Frames received from devices, and their bytes, by transport.
    pub frames_received: Family<Label, Counter>,
    pub frame_bytes_received: Family<Label, Counter>,
    /// Command frames written to devices, and their bytes, by transport.
    pub frames_sent: Family<Label, Counter>,
    pub frame_bytes_sent: Family<Label, Counter>,
    /// Refused authentications, by transport and reason.
    pub auth_failures: Family<Labels, Counter>,
    /// Connections dropped during the handshake, by transport and reason.
    pub handshake_failures: Family<Labels, Counter>,
    /// MQTT publishes and subscriptions outside the device's own topics.
    pub acl_denied: Family<Label, Counter>,
    /// Frames that did not reach the bus, by reason.
    pub frames_dropped: Family<Label, Counter>,
    /// Connections closed by the Socket, by reason.
    pub closes: Family<Label, Counter>,
    /// Time from handing a frame to the bus to its acknowledgement.
    pub publish_ack_seconds: Histogram,
    /// Deliveries handled, by outcome (`delivered`, `failed`, `duplicate`:
    /// read again and skipped, `undecodable`, `unexpected`).
    pub deliveries: Family<Label, Counter>,
    /// Device answers to commands, by outcome (`published`; refused:
    /// `too_large`, `malformed`).
    pub replies: Family<Label, Counter>,
}

impl SocketMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = SocketMetrics {
            connections: Family::default(),
            connections_refused: Family::default(),
            frames_received: Family::default(),
            frame_bytes_received: Family::default(),
            frames_sent: Family::default(),
            frame_bytes_sent: Family::default(),
            auth_failures: Family::default(),
            handshake_failures: Family::default(),
            acl_denied: Family::default(),
            frames_dropped: Family::default(),
            closes: Family::default(),
            publish_ack_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            deliveries: Family::default(),
            replies: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("wharf_socket");
        r.register(
            "connections",
            "Open device connections by transport",
            metrics.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Connections turned away before authentication",
            metrics.connections_refused.clone(),
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
            "Authentications refused for a bad, expired or missing token",
            metrics.auth_failures.clone(),
        );
        r.register(
            "handshake_failures",
            "Connections dropped during the handshake",
            metrics.handshake_failures.clone(),
        );
        r.register(
            "acl_denied",
            "MQTT publishes and subscriptions outside the device's own topics",
            metrics.acl_denied.clone(),
        );
        r.register(
            "frames_dropped",
            "Frames that did not reach the bus",
            metrics.frames_dropped.clone(),
        );
        for outcome in ["published", "too_large", "malformed"] {
            let _ = metrics.replies.get_or_create(&[("outcome", outcome)]);
        }
        r.register(
            "replies",
            "Device answers to commands, by outcome (published, or refused: too_large, malformed)",
            metrics.replies.clone(),
        );
        r.register(
            "closes",
            "Connections closed by the Socket, by reason",
            metrics.closes.clone(),
        );
        r.register_with_unit(
            "publish_ack",
            "Time from handing a frame to the bus to its acknowledgement",
            Unit::Seconds,
            metrics.publish_ack_seconds.clone(),
        );
        // Known outcomes start at zero, so rates and alerts see them before
        // the first one happens.
        for outcome in [
            "delivered",
            "failed",
            "duplicate",
            "undecodable",
            "unexpected",
        ] {
            let _ = metrics.deliveries.get_or_create(&[("outcome", outcome)]);
        }
        r.register(
            "deliveries",
            "Command deliveries handled, by outcome",
            metrics.deliveries.clone(),
        );
        metrics
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.frames_dropped
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}
