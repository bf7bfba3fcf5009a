//! Revoked tokens: the Commander publishes `DeviceRevoked` on the compacted
//! revocations topic when a device is deleted. Every Socket instance reads
//! the whole topic (a group of its own that never commits), refuses tokens
//! of that device issued before the revocation at every handshake, and
//! closes the device's live connection when its token is older.
//!
//! A starting Socket accepts no device until it has read the topic up to
//! where it ended at start ([`CaughtUp`]): before that, a deleted device's
//! token would still be let in.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wharf_bus::{BusConsumer, CommitOffset, Consumer as _};
use wharf_events::{Envelope, Event};

use crate::close::CloseReason;
use crate::gateway::Gateway;

/// Per device, the issue time (seconds since the epoch) tokens must reach.
#[derive(Default)]
pub(crate) struct Revocations {
    tokens_issued_before: RwLock<HashMap<String, u64>>,
}

impl Revocations {
    /// Whether a token of `device` issued at `issued_at` was revoked.
    pub(crate) fn is_revoked(&self, device: &str, issued_at: u64) -> bool {
        self.read()
            .get(device)
            .is_some_and(|threshold| issued_at < *threshold)
    }

    /// Records a revocation; a later one of the same device replaces it.
    pub(crate) fn revoke(&self, device: &str, tokens_issued_before: u64) {
        self.tokens_issued_before
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(device.to_owned(), tokens_issued_before);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, u64>> {
        self.tokens_issued_before
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Whether the revocations written before the Socket started have all
/// been read.
#[derive(Clone)]
pub(crate) struct CaughtUp(watch::Receiver<bool>);

impl CaughtUp {
    /// Waits until they have; `false` if the reader stopped first.
    pub(crate) async fn wait(mut self) -> bool {
        self.0.wait_for(|done| *done).await.is_ok()
    }
}

/// What is left to read of the revocations topic: per partition, the
/// offset the reader must pass.
struct Backlog {
    remaining: HashMap<i32, i64>,
    done: watch::Sender<bool>,
}

impl Backlog {
    fn new(ends: &[CommitOffset]) -> (Backlog, CaughtUp) {
        let remaining: HashMap<i32, i64> = ends
            .iter()
            .filter(|end| end.next_offset > 0)
            .map(|end| (end.partition, end.next_offset))
            .collect();
        let (done, caught_up) = watch::channel(remaining.is_empty());
        (Backlog { remaining, done }, CaughtUp(caught_up))
    }

    /// Notes that `offset` of `partition` was read.
    fn read(&mut self, partition: i32, offset: i64) {
        if self.remaining.is_empty() {
            return;
        }
        if self
            .remaining
            .get(&partition)
            .is_some_and(|end| offset + 1 >= *end)
        {
            self.remaining.remove(&partition);
            if self.remaining.is_empty() {
                info!("revocations read up to where they ended at start");
                self.done.send_replace(true);
            }
        }
    }
}

/// The reader's side of [`CaughtUp`], for revocations ending at `ends`.
pub(crate) fn backlog(ends: &[CommitOffset]) -> (impl FnMut(i32, i64) + Send + use<>, CaughtUp) {
    let (mut backlog, caught_up) = Backlog::new(ends);
    (
        move |partition, offset| backlog.read(partition, offset),
        caught_up,
    )
}

/// Applies revocations until `stop`, closing the connections they revoke;
/// `read` is told of each record read.
pub(crate) async fn run(
    gateway: Arc<Gateway>,
    mut consumer: BusConsumer,
    mut read: impl FnMut(i32, i64) + Send,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            message = consumer.recv() => message.context("failed to read the revocations topic")?,
        };
        read(message.partition, message.offset);
        let envelope = match Envelope::from_json(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                warn!(%error, offset = message.offset, "skipping an undecodable revocation");
                continue;
            }
        };
        let Event::DeviceRevoked(revoked) = &envelope.event else {
            continue;
        };
        let threshold = revoked
            .tokens_issued_before
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        gateway.revocations.revoke(&envelope.device, threshold);
        if let Some(live) = gateway.live.get(&envelope.device)
            && live.issued_at < threshold
        {
            info!(device = %envelope.device, "device revoked; closing its connection");
            live.mailbox.close_for(CloseReason::Revoked);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(partition: i32, next_offset: i64) -> CommitOffset {
        CommitOffset {
            topic: "revocations".into(),
            partition,
            next_offset,
        }
    }

    #[tokio::test]
    async fn caught_up_once_every_partition_is_read_to_its_start_end() {
        let (mut read, caught_up) = backlog(&[end(0, 3), end(1, 0), end(2, 1)]);
        let waiting = tokio::spawn(caught_up.clone().wait());
        read(0, 1);
        read(2, 0);
        assert!(!*caught_up.0.borrow(), "partition 0 is not read to its end");
        read(0, 2);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn an_empty_topic_is_caught_up_at_once() {
        let (_read, caught_up) = backlog(&[end(0, 0), end(1, 0)]);
        assert!(caught_up.wait().await);
    }

    #[test]
    fn tokens_issued_before_the_revocation_are_refused() {
        let revocations = Revocations::default();
        assert!(!revocations.is_revoked("d", 100));
        revocations.revoke("d", 100);
        assert!(revocations.is_revoked("d", 99));
        assert!(!revocations.is_revoked("d", 100), "issued after: admitted");
        assert!(!revocations.is_revoked("other", 1));
    }
}
