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
    /// Events not applied, by reason (`replayed`, `undecodable`, `fenced`).
    pub events_skipped: Family<Label, Counter>,
    /// Reply events published.
    pub replies: Counter,
    /// Device actors held in memory.
    pub actors: Gauge,
    /// Actors dropped after `actor_idle` without events.
    pub passivated: Counter,
    /// Partitions of the device events this Receiver owns.
    pub partitions: Gauge,
    /// Device states loaded from the store.
    pub state_loads: Counter,
    /// SQL statements sent to the store.
    pub db_statements: Counter,
    /// Write-behind flushes and the states they wrote.
    pub flushes: Counter,
    pub flushed_states: Counter,
    /// Store operations that failed and will be retried.
    pub store_failures: Counter,
    /// Partitions whose write-back was refused because another Receiver
    /// had claimed them since.
    pub fenced: Counter,
    /// Time a flush took, from awaiting replies to the Kafka commit.
    pub flush_seconds: Histogram,
    /// Device events in the owned partitions not written back yet.
    pub lag: Gauge,
}

impl ReceiverMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = ReceiverMetrics {
            events_applied: Counter::default(),
            events_skipped: Family::default(),
            replies: Counter::default(),
            actors: Gauge::default(),
            passivated: Counter::default(),
            partitions: Gauge::default(),
            state_loads: Counter::default(),
            db_statements: Counter::default(),
            flushes: Counter::default(),
            flushed_states: Counter::default(),
            store_failures: Counter::default(),
            fenced: Counter::default(),
            flush_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            lag: Gauge::default(),
        };
        let r = registry.sub_registry_with_prefix("wharf_receiver");
        let counters = [
            (
                "events_applied",
                "Events applied to device actors",
                &metrics.events_applied,
            ),
            ("replies", "Reply events published", &metrics.replies),
            (
                "passivated",
                "Actors dropped after actor_idle without events",
                &metrics.passivated,
            ),
            (
                "state_loads",
                "Device states loaded from the store",
                &metrics.state_loads,
            ),
            (
                "db_statements",
                "SQL statements sent to the store",
                &metrics.db_statements,
            ),
            ("flushes", "Write-behind flushes", &metrics.flushes),
            (
                "flushed_states",
                "Device states written by flushes",
                &metrics.flushed_states,
            ),
            (
                "store_failures",
                "Store operations that failed and are retried",
                &metrics.store_failures,
            ),
            (
                "fenced_partitions",
                "Partitions whose write-back was refused because another receiver claimed them since",
                &metrics.fenced,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        // Known reasons start at zero, so rates and alerts see them before
        // the first one happens.
        for reason in ["replayed", "undecodable", "fenced"] {
            let _ = metrics.events_skipped.get_or_create(&[("reason", reason)]);
        }
        r.register(
            "events_skipped",
            "Events not applied, by reason",
            metrics.events_skipped.clone(),
        );
        r.register(
            "actors",
            "Device actors held in memory",
            metrics.actors.clone(),
        );
        r.register(
            "partitions",
            "Partitions of the device events owned",
            metrics.partitions.clone(),
        );
        r.register(
            "lag_events",
            "Device events in the owned partitions not written back yet (log end minus stored offset), every 10 s",
            metrics.lag.clone(),
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
