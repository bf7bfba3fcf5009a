//! [`Db`]: the store as the Receiver uses it, every operation retried
//! through outages.

use std::future::Future;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use wharf_runtime::{Backoff, ReadyFlag};
use wharf_store::Store;

use crate::metrics::ReceiverMetrics;

/// The store, as the Receiver uses it: every operation retried with backoff
/// while the store is unavailable, the Receiver not ready meanwhile.
pub(crate) struct Db {
    pub(crate) store: Store,
    pub(crate) metrics: ReceiverMetrics,
    pub(crate) ready: ReadyFlag,
}

impl Db {
    /// Runs `operation` until it succeeds; gives up when its error is not
    /// retryable, or at `shutdown`.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        shutdown: &CancellationToken,
        mut operation: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = wharf_store::Result<T>>,
    {
        let mut backoff = Backoff::default();
        loop {
            let before = self.store.statements();
            let result = operation().await;
            self.metrics
                .db_statements
                .inc_by(self.store.statements() - before);
            match result {
                Ok(value) => {
                    self.ready.set(true);
                    return Ok(value);
                }
                Err(error) if error.is_retryable() && !shutdown.is_cancelled() => {
                    self.ready.set(false);
                    self.metrics.store_failures.inc();
                    warn!(%error, failures = backoff.failures() + 1, "failed to {what}; consumption paused");
                    backoff.wait(shutdown).await;
                }
                Err(error) => return Err(error).with_context(|| format!("failed to {what}")),
            }
        }
    }
}
