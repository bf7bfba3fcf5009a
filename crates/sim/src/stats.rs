//! What the devices did, counted as they do it, and the report made of it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::TransportKind;

/// Why something a device did failed: the keys of the report's `errors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Nothing listens at the address.
    ConnectRefused,
    /// The connection or handshake took longer than the connect timeout.
    ConnectTimeout,
    /// The server refused the device's credentials.
    AuthRefused,
    /// The server closed the connection while the device ran.
    Closed,
    /// A QoS 1 message the server never acknowledged.
    Unacked,
    /// Anything else on the connection (I/O, protocol).
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::AuthRefused,
        ErrorKind::Closed,
        ErrorKind::Unacked,
        ErrorKind::Io,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::AuthRefused => "auth_refused",
            ErrorKind::Closed => "closed",
            ErrorKind::Unacked => "unacked",
            ErrorKind::Io => "io",
        }
    }
}

/// Counters of one transport.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub sent: AtomicU64,
    /// Frames the server acknowledged (MQTT QoS 1 PUBACKs).
    pub acked: AtomicU64,
    /// Frames sent that expect an acknowledgement.
    pub ack_expected: AtomicU64,
    pub commands: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
}

impl Counters {
    pub fn error(&self, kind: ErrorKind) {
        self.errors_of(kind, 1);
    }

    pub fn errors_of(&self, kind: ErrorKind, count: u64) {
        self.errors[kind as usize].fetch_add(count, Ordering::Relaxed);
    }

    fn errors(&self) -> BTreeMap<ErrorKind, u64> {
        ErrorKind::ALL
            .iter()
            .map(|kind| (*kind, self.errors[*kind as usize].load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

/// Everything the run counts; shared by every device.
#[derive(Default)]
pub struct Stats {
    by_transport: [Counters; TransportKind::ALL.len()],
    /// Send → PUBACK, microseconds.
    ack_latency: Mutex<Vec<u32>>,
    /// Frame → command, microseconds.
    command_latency: Mutex<Vec<u32>>,
    /// What the first error of each kind said.
    first_errors: Mutex<BTreeMap<ErrorKind, String>>,
}

/// At most this many latency samples are kept per histogram (at the rates a
/// simulation runs on one machine, a minute's worth).
const MAX_SAMPLES: usize = 4_000_000;

impl Stats {
    pub fn of(&self, transport: TransportKind) -> &Counters {
        &self.by_transport[transport as usize]
    }

    /// Counts an error of `transport` and keeps what the first of its
    /// kind said.
    pub fn error(
        &self,
        transport: TransportKind,
        kind: ErrorKind,
        detail: impl FnOnce() -> String,
    ) {
        self.of(transport).error(kind);
        let mut first = self
            .first_errors
            .lock()
            .expect("no panics while holding it");
        first.entry(kind).or_insert_with(detail);
    }

    pub fn ack_latency(&self, latency: Duration) {
        push(&self.ack_latency, latency);
    }

    pub fn command_latency(&self, latency: Duration) {
        push(&self.command_latency, latency);
    }

    /// The counts now, for the live line and the report.
    pub fn snapshot(&self) -> Snapshot {
        let mut by_transport = BTreeMap::new();
        let mut total = TransportTotals::default();
        for kind in TransportKind::ALL {
            let counters = self.of(kind);
            let totals = TransportTotals {
                connected: counters.connected.load(Ordering::Relaxed),
                sent: counters.sent.load(Ordering::Relaxed),
                acked: counters.acked.load(Ordering::Relaxed),
                ack_expected: counters.ack_expected.load(Ordering::Relaxed),
                commands: counters.commands.load(Ordering::Relaxed),
                errors: counters.errors(),
            };
            total.add(&totals);
            if totals != TransportTotals::default() {
                by_transport.insert(kind.as_str(), totals);
            }
        }
        Snapshot {
            total,
            by_transport,
            ack_latency_ms: Percentiles::of(&self.ack_latency),
            command_latency_ms: Percentiles::of(&self.command_latency),
            first_errors: self
                .first_errors
                .lock()
                .expect("no panics while holding it")
                .clone(),
        }
    }
}

fn push(samples: &Mutex<Vec<u32>>, latency: Duration) {
    let micros = latency.as_micros().min(u128::from(u32::MAX)) as u32;
    let mut samples = samples.lock().expect("no panics while holding the samples");
    if samples.len() < MAX_SAMPLES {
        samples.push(micros);
    }
}

/// Counts of one transport, or of all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransportTotals {
    pub connected: u64,
    pub sent: u64,
    pub acked: u64,
    pub ack_expected: u64,
    pub commands: u64,
    pub errors: BTreeMap<ErrorKind, u64>,
}

impl TransportTotals {
    fn add(&mut self, other: &TransportTotals) {
        self.connected += other.connected;
        self.sent += other.sent;
        self.acked += other.acked;
        self.ack_expected += other.ack_expected;
        self.commands += other.commands;
        for (kind, count) in &other.errors {
            *self.errors.entry(*kind).or_default() += count;
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(samples: &Mutex<Vec<u32>>) -> Self {
        let mut sorted = samples
            .lock()
            .expect("no panics while holding the samples")
            .clone();
        sorted.sort_unstable();
        Self::of_sorted(&sorted)
    }

    pub fn of_sorted(sorted: &[u32]) -> Self {
        if sorted.is_empty() {
            return Percentiles::default();
        }
        let at = |q: f64| {
            let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
            f64::from(sorted[index]) / 1000.0
        };
        Percentiles {
            count: sorted.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: f64::from(*sorted.last().expect("not empty")) / 1000.0,
        }
    }
}

/// The counts at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub total: TransportTotals,
    pub by_transport: BTreeMap<&'static str, TransportTotals>,
    pub ack_latency_ms: Percentiles,
    pub command_latency_ms: Percentiles,
    pub first_errors: BTreeMap<ErrorKind, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_from_the_sorted_samples() {
        let samples: Vec<u32> = (1..=1000).map(|ms| ms * 1000).collect();
        let p = Percentiles::of_sorted(&samples);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(Percentiles::of_sorted(&[]), Percentiles::default());
    }

    #[test]
    fn totals_add_up_over_transports() {
        let stats = Stats::default();
        stats
            .of(TransportKind::Mqtt)
            .sent
            .fetch_add(3, Ordering::Relaxed);
        stats
            .of(TransportKind::Tcp)
            .sent
            .fetch_add(2, Ordering::Relaxed);
        stats.of(TransportKind::Tcp).error(ErrorKind::Closed);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.total.sent, 5);
        assert_eq!(snapshot.total.errors[&ErrorKind::Closed], 1);
        assert_eq!(snapshot.by_transport.len(), 2);
    }
}
