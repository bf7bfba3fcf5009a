//! The Receiver's lag: how many device events in the partitions it owns are
//! not written back yet (the log's end minus the stored position), measured
//! every [`INTERVAL`] off the consume loop, so a slow broker answer never
//! holds up consumption.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tracing::debug;
use wharf_bus::{Bus, PartitionId, Subscriber as _};

/// How often the lag is measured.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// The stored position of each owned partition; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Positions(Arc<Mutex<HashMap<PartitionId, i64>>>);

impl Positions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionId, i64>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records where `positions` stand now.
    pub(crate) fn set(&self, positions: impl IntoIterator<Item = (PartitionId, i64)>) {
        self.lock().extend(positions);
    }

    /// Forgets partitions this Receiver gave up.
    pub(crate) fn forget(&self, partitions: &HashSet<PartitionId>) {
        self.lock()
            .retain(|partition, _| !partitions.contains(partition));
    }

    /// Events between the stored positions and `ends`.
    fn behind(&self, ends: impl IntoIterator<Item = (PartitionId, i64)>) -> i64 {
        let positions = self.lock();
        ends.into_iter()
            .filter_map(|(partition, end)| Some((end - positions.get(&partition)?).max(0)))
            .sum()
    }
}

/// Measures the lag into `gauge` every [`INTERVAL`], until aborted.
pub(crate) async fn measure(bus: Bus, topic: String, positions: Positions, gauge: Gauge) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match bus.log_end(&topic).await {
            Ok(ends) => {
                gauge.set(positions.behind(ends.into_iter().map(|end| {
                    let partition = PartitionId {
                        topic: end.topic,
                        partition: end.partition,
                    };
                    (partition, end.next_offset)
                })));
            }
            Err(error) => debug!(%error, "cannot measure the lag now"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(n: i32) -> PartitionId {
        PartitionId {
            topic: "events".into(),
            partition: n,
        }
    }

    #[test]
    fn lag_counts_only_owned_partitions_behind_their_end() {
        let positions = Positions::default();
        positions.set([(partition(0), 10), (partition(1), 50)]);
        // Partition 2 is not owned; partition 1 is caught up.
        assert_eq!(
            positions.behind([(partition(0), 25), (partition(1), 50), (partition(2), 99)]),
            15
        );
        positions.forget(&HashSet::from([partition(0)]));
        assert_eq!(positions.behind([(partition(0), 25)]), 0);
    }
}
