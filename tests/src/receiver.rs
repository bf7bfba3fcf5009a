//! Watching a Receiver process through its operations endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use crate::{http, wait_until};

/// How many partitions the Receiver at `ops` owns, if it answers.
pub async fn owned_partitions(ops: SocketAddr) -> Option<i64> {
    let (_, metrics) = http::get(ops, "/metrics").await?;
    http::metric(&metrics, "wharf_receiver_partitions").map(|n| n as i64)
}

/// Waits until the Receiver at `ops` is ready and owns `partitions`.
pub async fn wait_owning(ops: SocketAddr, partitions: i64, patience: Duration) {
    wait_until(patience, "the receiver to own its partitions", || async {
        let (status, _) = http::get(ops, "/readyz").await?;
        (status == 200 && owned_partitions(ops).await == Some(partitions)).then_some(())
    })
    .await;
}
