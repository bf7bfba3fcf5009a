//! Revoked tokens: the Commander publishes `DeviceRevoked` on the compacted
//! revocations topic when a device is deleted. Every Socket instance reads
//! the whole topic (a group of its own that never commits), refuses tokens
//! of that device issued before the revocation at every handshake, and
//! closes the device's live connection when its token is older.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::UNIX_EPOCH;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wharf_bus::{BusConsumer, Consumer as _};
use wharf_events::{Envelope, Event};

use crate::Shared;
use crate::session::CloseReason;

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

/// Applies revocations until `stop`, closing the connections they revoke.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut consumer: BusConsumer,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            message = consumer.recv() => message.context("failed to read the revocations topic")?,
        };
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
        shared.revocations.revoke(&envelope.device, threshold);
        if let Some(live) = shared.live.get(&envelope.device)
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
