//! Every metric the Commander exports, registered once under `wharf_commander_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A single label, such as `outcome="dispatched"`.
pub type Label = [(&'static str, &'static str); 1];
/// Two labels, such as `method="GET",status="200"`.
pub type Labels = [(&'static str, String); 2];

/// The Commander's metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct CommanderMetrics {
    /// Command requests handled, by outcome (`dispatched`, `queued`,
    /// `rejected`, `duplicate`, `undecodable`, `unexpected`).
    pub requests: Family<Label, Counter>,
    /// Queued commands settled, by outcome (`dispatched`, `rejected`,
    /// `expired`).
    pub queue: Family<Label, Counter>,
    /// Delivery outcomes reported by Sockets and recorded.
    pub outcomes_recorded: Counter,
    /// Dispatched commands failed because no Socket reported an outcome
    /// within `outcome_timeout`.
    pub outcomes_overdue: Counter,
    /// Devices the presence map holds as connected.
    pub connected_devices: Gauge,
    /// Events published from the outbox.
    pub outbox_published: Counter,
    /// Outbox publishing rounds that failed (bus or database down).
    pub outbox_failures: Counter,
    /// Profile reloads, by outcome (`ok`, `failed`).
    pub profile_reloads: Family<Label, Counter>,
    /// API responses, by method and status code.
    pub api_responses: Family<Labels, Counter>,
    /// Database reads made for API GETs (coalesced requests share one).
    pub api_store_reads: Counter,
    /// Device answers and missing answers, by outcome (`succeeded`,
    /// `device_error`, `timed_out`, `not_its_command`).
    pub replies: Family<Label, Counter>,
    /// API command requests that shared a command already asked for
    /// (idempotent commands).
    pub coalesced_commands: Counter,
    /// API requests waiting for a command's end right now.
    pub api_waiting: Gauge,
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
        // Known outcomes start at zero, so rates and alerts see them before
        // the first one happens.
        for outcome in ["dispatched", "rejected", "expired", "requeued"] {
            let _ = metrics.queue.get_or_create(&[("outcome", outcome)]);
        }
        r.register(
            "queue",
            "Queued commands settled, by outcome",
            metrics.queue.clone(),
        );
        r.register(
            "outcomes_recorded",
            "Delivery outcomes reported by Sockets and recorded",
            metrics.outcomes_recorded.clone(),
        );
        r.register(
            "outcomes_overdue",
            "Dispatched commands failed because no socket reported an outcome within outcome_timeout",
            metrics.outcomes_overdue.clone(),
        );
        r.register(
            "connected_devices",
            "Devices the presence map holds as connected",
            metrics.connected_devices.clone(),
        );
        r.register(
            "outbox_published",
            "Events published from the outbox",
            metrics.outbox_published.clone(),
        );
        r.register(
            "outbox_failures",
            "Outbox publishing rounds that failed",
            metrics.outbox_failures.clone(),
        );
        r.register(
            "profile_reloads",
            "Profile reloads, by outcome",
            metrics.profile_reloads.clone(),
        );
        r.register(
            "api_responses",
            "API responses, by method and status code",
            metrics.api_responses.clone(),
        );
        r.register(
            "api_store_reads",
            "Database reads made for API GETs; coalesced requests share one",
            metrics.api_store_reads.clone(),
        );
        for outcome in ["succeeded", "device_error", "timed_out", "not_its_command"] {
            let _ = metrics.replies.get_or_create(&[("outcome", outcome)]);
        }
        r.register(
            "replies",
            "Device answers to commands and missing answers, by outcome",
            metrics.replies.clone(),
        );
        r.register(
            "coalesced_commands",
            "API command requests that shared an identical idempotent command already asked for",
            metrics.coalesced_commands.clone(),
        );
        r.register(
            "api_waiting",
            "API requests waiting for a command's end (?wait=)",
            metrics.api_waiting.clone(),
        );
        metrics
    }

    pub(crate) fn count_reply(&self, outcome: &'static str, by: usize) {
        if by > 0 {
            self.replies
                .get_or_create(&[("outcome", outcome)])
                .inc_by(by as u64);
        }
    }

    pub(crate) fn count(&self, outcome: &'static str) {
        self.requests.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub(crate) fn count_queue(&self, outcome: &'static str, by: usize) {
        if by > 0 {
            self.queue
                .get_or_create(&[("outcome", outcome)])
                .inc_by(by as u64);
        }
    }
}
