//! Where the Receiver publishes the events its logic causes (replies:
//! `CommandRequested` today) and how it knows they are durable: each is
//! queued on the command-requests topic at once, and every queued one is
//! awaited before the flush that commits its cause, so a cause is never
//! stored as applied while its reply could still be lost.

use anyhow::Context as _;
use tracing::debug;
use wharf_bus::{BusHandle, PendingAck, Publisher as _, Record};
use wharf_events::Envelope;

use crate::metrics::ReceiverMetrics;

pub(crate) struct RepliesOut {
    bus: BusHandle,
    /// Replies queued on the bus, awaited before the next flush commits.
    pending: Vec<PendingAck>,
    metrics: ReceiverMetrics,
}

impl RepliesOut {
    pub(crate) fn new(bus: BusHandle, metrics: ReceiverMetrics) -> Self {
        RepliesOut {
            bus,
            pending: Vec::new(),
            metrics,
        }
    }

    /// Queues `reply`, caused by `cause`.
    pub(crate) async fn publish(
        &mut self,
        reply: &Envelope,
        cause: &Envelope,
    ) -> anyhow::Result<()> {
        debug!(device = %reply.device, kind = reply.kind(), id = %reply.id,
            trace_id = %reply.correlation.simple(), "reply");
        let record = Record::event(self.bus.topics.command_requests(), reply);
        let ack = self
            .bus
            .connection
            .enqueue(record)
            .await
            .context("failed to queue a reply")?;
        self.pending.push(ack);
        self.metrics.replies.inc();
        // From the event that caused it to the reply.
        wharf_runtime::otlp::export_event(reply, cause.time);
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Waits until every queued reply is durable.
    pub(crate) async fn durable(&mut self) -> anyhow::Result<()> {
        for ack in self.pending.drain(..) {
            ack.await.context("a reply did not reach the bus")?;
        }
        Ok(())
    }
}
