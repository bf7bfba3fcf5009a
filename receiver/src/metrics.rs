//! Every metric the Receiver exports, registered once under `wharf_receiver_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// A single label, such as `reason="undecodable"`.
pub type Label = [(&'static str, &'static str); 1];

/// The Receiver's metrics; clones share the same series.
#[derive(Clone)]
pub struct ReceiverMetrics {
    /// Events applied to device actors.
    pub events_applied: Counter,
    /// Events not applied, by reason (`replayed`, `undecodable`).
    pub events_skipped: Family<Label, Counter>,
    /// Reply events published.
    pub replies: Counter,
    /// Device actors held in memory.
    pub actors: Gauge,
    /// Device states loaded from the store.
    pub state_loads: Counter,
    /// Write-behind flushes and the states they wrote.
    pub flushes: Counter,
    pub flushed_states: Counter,
    /// Time a flush took, from awaiting replies to the Kafka commit.
    pub flush_seconds: Histogram,
}

impl ReceiverMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ReceiverMetrics {
            events_applied: Counter::default(),
            events_skipped: Family::default(),
            replies: Counter::default(),
            actors: Gauge::default(),
            state_loads: Counter::default(),
            flushes: Counter::default(),
            flushed_states: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        let r = registry.sub_registry_with_prefix("wharf_receiver");
        r.register(
            "events_applied",
            "Events applied to device actors",
            metrics.events_applied.clone(),
        );
        r.register(
            "events_skipped",
            "Events not applied, by reason",
            metrics.events_skipped.clone(),
        );
        r.register("replies", "Reply events published", metrics.replies.clone());
        r.register(
            "actors",
            "Device actors held in memory",
            metrics.actors.clone(),
        );
        r.register(
            "state_loads",
            "Device states loaded from the store",
            metrics.state_loads.clone(),
        );
        r.register("flushes", "Write-behind flushes", metrics.flushes.clone());
        r.register(
            "flushed_states",
            "Device states written by flushes",
            metrics.flushed_states.clone(),
        );
        r.register_with_unit(
            "flush_duration",
            "Time a write-behind flush took",
            Unit::Seconds,
            metrics.flush_seconds.clone(),
        );
        metrics
    }
}
