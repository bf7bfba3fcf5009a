//! The outbox relay: publishes the events this instance committed to its
//! outbox, in order, and deletes them once the bus acknowledged them. While
//! the bus or the database is down it retries with backoff (the API keeps
//! accepting work meanwhile); nothing committed is lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wharf_bus::{Bus, Publisher as _, Record};
use wharf_store::Store;

use crate::metrics::CommanderMetrics;

/// Rows published per round.
const BATCH: u32 = 500;
/// How often the outbox is looked at without being woken.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long shutdown waits for the last events to reach the bus.
const DRAIN_ON_SHUTDOWN: Duration = Duration::from_secs(5);

/// Wakes the relay after a transaction wrote to the outbox.
#[derive(Clone, Default)]
pub(crate) struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    pub(crate) fn wake(&self) {
        // A stored permit: a wake while the relay is busy is not lost.
        self.0.notify_one();
    }
}

/// Publishes one instance's outbox.
pub(crate) struct OutboxRelay {
    pub(crate) store: Store,
    pub(crate) bus: Bus,
    pub(crate) instance: String,
    pub(crate) waker: OutboxWaker,
    pub(crate) metrics: CommanderMetrics,
}

impl OutboxRelay {
    /// Publishes until `shutdown`, then makes a last bounded attempt.
    pub(crate) async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = wharf_runtime::Backoff::default();
        loop {
            let pause = match self.drain().await {
                Ok(()) => {
                    if backoff.succeeded() > 0 {
                        info!("outbox publishing again");
                    }
                    IDLE_POLL
                }
                Err(error) => {
                    self.metrics.outbox_failures.inc();
                    warn!(
                        error = format!("{error:#}"),
                        failures = backoff.failures() + 1,
                        "failed to publish the outbox; retrying"
                    );
                    backoff.failed()
                }
            };
            let failing = backoff.failures() > 0;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.waker.0.notified(), if !failing => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        match tokio::time::timeout(DRAIN_ON_SHUTDOWN, self.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(
                    error = format!("{error:#}"),
                    "outbox left unpublished at shutdown; published at the next start"
                );
            }
            Err(_) => warn!(
                "outbox still publishing at shutdown; the rest is published at the next start"
            ),
        }
        Ok(())
    }

    /// Publishes everything in the outbox.
    async fn drain(&self) -> anyhow::Result<()> {
        loop {
            let rows = self.store.outbox_batch(&self.instance, BATCH).await?;
            if rows.is_empty() {
                return Ok(());
            }
            let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
            let mut acks = Vec::with_capacity(rows.len());
            // An event the outbox publishes on two topics (a dispatch: the
            // Socket's deliveries and command-status) is one span.
            let mut spanned = std::collections::HashSet::new();
            for row in rows {
                if wharf_runtime::otlp::enabled()
                    && let Ok(envelope) = wharf_events::Envelope::from_json(row.payload.as_bytes())
                    && spanned.insert(envelope.id)
                {
                    wharf_runtime::otlp::export_event(&envelope, envelope.time);
                }
                let record = Record::encoded_event(
                    row.topic,
                    &row.key,
                    &row.event_type,
                    row.payload.into_bytes(),
                );
                acks.push(self.bus.enqueue(record).await?);
            }
            let published = acks.len();
            for ack in acks {
                ack.await?;
            }
            self.store.outbox_published(&self.instance, &seqs).await?;
            self.metrics.outbox_published.inc_by(published as u64);
        }
    }
}
