//! Every metric the Commander exports, registered once under `wharf_commander_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A single label, such as `outcome="dispatched"`.
pub type Label = [(&'static str, &'static str); 1];

/// The Commander's metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct CommanderMetrics {
    /// Command requests handled, by outcome (`dispatched`, `failed`,
    /// `duplicate`, `undecodable`).
    pub requests: Family<Label, Counter>,
    /// Devices the presence map holds as connected.
    pub connected_devices: Gauge,
}

impl CommanderMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = CommanderMetrics::default();
        let r = registry.sub_registry_with_prefix("wharf_commander");
        r.register(
            "requests",
            "Command requests handled, by outcome",
            metrics.requests.clone(),
        );
        r.register(
            "connected_devices",
            "Devices the presence map holds as connected",
            metrics.connected_devices.clone(),
        );
        metrics
    }

    pub(crate) fn count(&self, outcome: &'static str) {
        self.requests.get_or_create(&[("outcome", outcome)]).inc();
    }
}
