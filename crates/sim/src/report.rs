//! The live line, the summary table and the verdict of a run.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::SimPlan;
use crate::stats::{Percentiles, Snapshot};

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub devices: usize,
    pub transport: &'static str,
    /// Frames per second asked for, across all devices.
    pub rate: f64,
    pub duration_s: f64,
    pub elapsed_s: f64,
    /// Frames sent per second of the sending time.
    pub sent_per_s: f64,
    #[serde(flatten)]
    pub snapshot: Snapshot,
}

impl Report {
    pub fn new(plan: &SimPlan, snapshot: Snapshot, elapsed: Duration) -> Self {
        let sending = plan.duration.as_secs_f64().max(f64::EPSILON);
        Report {
            devices: plan.devices,
            transport: plan.transport.describe(),
            rate: plan.rate,
            duration_s: plan.duration.as_secs_f64(),
            elapsed_s: elapsed.as_secs_f64(),
            sent_per_s: snapshot.total.sent as f64 / sending,
            snapshot,
        }
    }

    pub fn error_count(&self) -> u64 {
        self.snapshot.total.error_count()
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "wharf sim: {} devices ({}), {:.0} s at {:.0} frames/s asked, {:.0} sent/s",
            self.devices, self.transport, self.duration_s, self.rate, self.sent_per_s
        );
        let _ = writeln!(
            out,
            "{:<10} {:>10} {:>10} {:>10} {:>10} {:>9}",
            "transport", "connected", "sent", "acked", "commands", "errors"
        );
        let rows = self
            .snapshot
            .by_transport
            .iter()
            .map(|(name, totals)| (*name, totals))
            .chain(std::iter::once(("total", &self.snapshot.total)));
        for (name, totals) in rows {
            let acked = if totals.ack_expected > 0 {
                format!("{}/{}", totals.acked, totals.ack_expected)
            } else {
                "-".to_owned()
            };
            let _ = writeln!(
                out,
                "{name:<10} {:>10} {:>10} {:>10} {:>10} {:>9}",
                totals.connected,
                totals.sent,
                acked,
                totals.commands,
                totals.error_count()
            );
        }
        latency_line(
            &mut out,
            "ack latency (QoS 1 PUBACK)",
            &self.snapshot.ack_latency_ms,
        );
        latency_line(
            &mut out,
            "frame -> command",
            &self.snapshot.command_latency_ms,
        );
        for (kind, count) in &self.snapshot.total.errors {
            let first = self
                .snapshot
                .first_errors
                .get(kind)
                .map(String::as_str)
                .unwrap_or("");
            let _ = writeln!(out, "error {}: {count} (first: {first})", kind.as_str());
        }
        out
    }

    /// Ok when at most `max_errors` errors happened; otherwise why not.
    pub fn verdict(&self, max_errors: u64) -> Result<(), String> {
        let errors = self.error_count();
        if errors <= max_errors {
            return Ok(());
        }
        let total = &self.snapshot.total;
        if total.connected == 0 {
            let first = self
                .snapshot
                .first_errors
                .values()
                .next()
                .cloned()
                .unwrap_or_default();
            return Err(format!(
                "no device could connect ({first}): is Wharf running, and are the addresses and the secret its own?"
            ));
        }
        let kinds: Vec<String> = total
            .errors
            .iter()
            .map(|(kind, count)| format!("{} {count}", kind.as_str()))
            .collect();
        Err(format!(
            "{errors} errors, more than --max-errors {max_errors}: {}",
            kinds.join(", ")
        ))
    }
}

fn latency_line(out: &mut String, what: &str, p: &Percentiles) {
    if p.count == 0 {
        let _ = writeln!(out, "{what}: no samples");
    } else {
        let _ = writeln!(
            out,
            "{what}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
            p.p50, p.p90, p.p99, p.p999, p.max, p.count
        );
    }
}

/// One line of progress: counts, and rates since the previous line.
pub fn live_line(now: &Snapshot, previous: Option<&Snapshot>, elapsed_s: f64) -> String {
    let (sent_before, acked_before) = previous.map_or((0, 0), |p| (p.total.sent, p.total.acked));
    let total = &now.total;
    let mut line = format!(
        "{elapsed_s:>5.0} s  connected {}  sent {}/s  acked {}/s  commands {}",
        total.connected,
        total.sent - sent_before,
        total.acked - acked_before,
        total.commands
    );
    if now.ack_latency_ms.count > 0 {
        let _ = write!(
            line,
            "  ack p50 {:.1} ms p99 {:.1} ms",
            now.ack_latency_ms.p50, now.ack_latency_ms.p99
        );
    }
    if now.command_latency_ms.count > 0 {
        let _ = write!(
            line,
            "  frame->command p50 {:.1} ms p99 {:.1} ms",
            now.command_latency_ms.p50, now.command_latency_ms.p99
        );
    }
    if total.error_count() > 0 {
        let kinds: Vec<String> = total
            .errors
            .iter()
            .map(|(kind, count)| format!("{} {count}", kind.as_str()))
            .collect();
        let _ = write!(line, "  errors: {}", kinds.join(", "));
    }
    line
}
