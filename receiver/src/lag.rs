//! The Receiver's lag: how many device events in the partitions it owns are
//! not written back yet. This task only asks the bus where each partition's
//! log ends, every [`INTERVAL`], off the consume loop (a slow broker answer
//! never holds consumption up); the loop subtracts the positions its
//! write-behind stored.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;
use wharf_bus::{Bus, CommitOffset, Subscriber as _};

/// How often the lag is measured.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Sends where `topic`'s partitions end to `ends` every [`INTERVAL`], until
/// the receiving loop is gone (or the task is aborted).
pub(crate) async fn log_ends(bus: Bus, topic: String, ends: mpsc::Sender<Vec<CommitOffset>>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match bus.log_end(&topic).await {
            // A full channel: the loop has not taken the last answer yet.
            Ok(now) => {
                if let Err(mpsc::error::TrySendError::Closed(_)) = ends.try_send(now) {
                    return;
                }
            }
            Err(error) => debug!(%error, "cannot measure the lag now"),
        }
    }
}
