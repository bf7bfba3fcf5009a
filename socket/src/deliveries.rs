//! Deliveries: this instance's `deliveries.<instance>` topic carries the
//! `CommandDispatched` events for the devices it holds. Each frame is handed,
//! in order, to the device's session task; the outcomes (written, or
//! acknowledged over MQTT) are awaited concurrently, so one slow device does
//! not hold up the others. `CommandDelivered` or `CommandFailed` is published
//! for each, and offsets are committed up to the oldest delivery not settled.
//!
//! A delivery past the command's `expires_at` is never written: it fails
//! as `expired` (a late delivery, or one read again after a restart with
//! `auto.offset.reset = earliest`). A delivery this instance already handled
//! (the same dispatch event, read again after an uncommitted rebalance) is
//! skipped: the device gets each dispatch once. A command sent again after
//! its device reconnected is a new dispatch (its id names the connection).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wharf_bus::{BusConsumer, Consumer as _, InFlightOffsets, Message};
use wharf_events::{CommandDispatched, Envelope, Event, FailureReason};

use crate::gateway::Gateway;
use crate::live::{DeliveryFailure, Outbound, Outcome, Refused};

/// How long after a command's deadline its delivery stops waiting for the
/// session that holds it.
const BACKSTOP: Duration = Duration::from_secs(2);

/// Deliveries awaiting their outcome at once.
const MAX_IN_FLIGHT: usize = 4096;
/// Dispatch ids remembered to skip a delivery read twice: far more than a
/// rebalance can hand out again (what was not committed, at most a few
/// commit intervals of deliveries).
const REMEMBERED_DISPATCHES: usize = 65_536;
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// A delivery whose outcome is known: what to publish, and whose offset.
struct KnownOutcome {
    dispatch: Envelope,
    command: CommandDispatched,
    outcome: Outcome,
    topic: String,
    partition: i32,
    offset: i64,
}

type Pending = Pin<Box<dyn Future<Output = KnownOutcome> + Send>>;

/// Delivers until `stop`, then settles what is in flight and commits.
pub(crate) async fn run(
    gateway: Arc<Gateway>,
    mut consumer: BusConsumer,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut offsets = InFlightOffsets::default();
    let mut handled = RecentIds::new(REMEMBERED_DISPATCHES);
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(settled) = pending.next() => settle(&gateway, &mut offsets, settled).await?,
            _ = commit_tick.tick() => commit(&mut consumer, &mut offsets).await?,
            message = consumer.recv(), if pending.len() < MAX_IN_FLIGHT => {
                let message = message.context("failed to read the deliveries topic")?;
                offsets.start(&message);
                match start(&gateway, &message, &mut handled) {
                    Some(delivery) => pending.push(delivery),
                    None => offsets.finish(&message.topic, message.partition, message.offset),
                }
            }
        }
    }
    // Sessions are closing: their commands fail fast.
    while let Some(settled) = pending.next().await {
        settle(&gateway, &mut offsets, settled).await?;
    }
    commit(&mut consumer, &mut offsets).await
}

async fn commit(consumer: &mut BusConsumer, offsets: &mut InFlightOffsets) -> anyhow::Result<()> {
    let positions = offsets.committable();
    if positions.is_empty() {
        return Ok(());
    }
    match consumer.commit(&positions).await {
        // The group is rebalancing: the deliveries stay uncommitted and are
        // handed out again, to this instance or the next owner.
        Err(error) if error.is_retryable() => {
            warn!(%error, "deliveries not committed, the group is rebalancing");
            Ok(())
        }
        result => result.context("failed to commit deliveries"),
    }
}

/// Hands the delivery in `message` to its device's session; `None` for a
/// record that is not a delivery or was handled before (skipped, counted
/// and logged).
fn start(gateway: &Arc<Gateway>, message: &Message, handled: &mut RecentIds) -> Option<Pending> {
    let dispatch = match Envelope::from_json(&message.payload) {
        Ok(envelope) => envelope,
        Err(error) => {
            count(gateway, "undecodable");
            warn!(%error, partition = message.partition, offset = message.offset, "skipping an undecodable delivery");
            return None;
        }
    };
    let Event::CommandDispatched(command) = &dispatch.event else {
        count(gateway, "unexpected");
        warn!(
            kind = dispatch.kind(),
            offset = message.offset,
            "skipping an event that is not a delivery"
        );
        return None;
    };
    debug!(trace_id = %dispatch.correlation.simple(), command_id = %command.command_id,
        device = %dispatch.device, topic = %message.topic, partition = message.partition,
        offset = message.offset, "delivery");
    if !handled.insert(dispatch.id) {
        count(gateway, "duplicate");
        debug!(id = %dispatch.id, command = %command.command_id, offset = message.offset, "skipping a delivery handled before");
        return None;
    }
    let deadline = tokio::time::Instant::now() + gateway.config.delivery_timeout;
    let outcome = match command.expires_at {
        Some(expires_at) if expires_at <= SystemTime::now() => Err(DeliveryFailure::new(
            FailureReason::Expired,
            format!(
                "its time to live ended at {} before socket instance {} could write it",
                humantime::format_rfc3339_millis(expires_at),
                gateway.config.instance_id
            ),
        )),
        _ => hand_over(gateway, &dispatch.device, command, deadline),
    };
    let command = command.clone();
    let timeout = gateway.config.delivery_timeout;
    let (topic, partition, offset) = (message.topic.clone(), message.partition, message.offset);
    Some(Box::pin(async move {
        let outcome = match outcome {
            Err(failure) => Err(failure),
            // The session answers by the deadline; this wait is the backstop
            // for a session stuck writing to a device that does not read.
            Ok(receiver) => match tokio::time::timeout_at(deadline + BACKSTOP, receiver).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Err(DeliveryFailure::new(
                    FailureReason::WriteFailed,
                    "the connection closed",
                )),
                Err(_) => Err(DeliveryFailure::new(
                    FailureReason::WriteFailed,
                    format!(
                        "not delivered within delivery_timeout ({})",
                        humantime::format_duration(timeout)
                    ),
                )),
            },
        };
        KnownOutcome {
            dispatch,
            command,
            outcome,
            topic,
            partition,
            offset,
        }
    }))
}

/// Queues the command on the device's connection, in order.
fn hand_over(
    gateway: &Gateway,
    device: &str,
    command: &CommandDispatched,
    deadline: tokio::time::Instant,
) -> Result<oneshot::Receiver<Outcome>, DeliveryFailure> {
    let instance = &gateway.config.instance_id;
    let Some(connection) = gateway.live.get(device) else {
        return Err(DeliveryFailure::new(
            FailureReason::DeviceNotConnected,
            format!("{device} is not connected to socket instance {instance}"),
        ));
    };
    let (outcome, receiver) = oneshot::channel();
    let outbound = Outbound {
        payload: command.frame.clone(),
        channel: command.channel.clone(),
        qos: command.qos,
        outcome,
        deadline,
        reply_to: command.reply.then_some(command.command_id),
    };
    match connection.mailbox.push(outbound) {
        Ok(()) => Ok(receiver),
        Err(Refused::Full) => Err(DeliveryFailure::new(
            FailureReason::QueueFull,
            format!(
                "{device} already has outbound_queue ({}) commands waiting",
                gateway.config.outbound_queue
            ),
        )),
        Err(Refused::Closed) => Err(DeliveryFailure::new(
            FailureReason::WriteFailed,
            "the connection closed",
        )),
    }
}

async fn settle(
    gateway: &Gateway,
    offsets: &mut InFlightOffsets,
    settled: KnownOutcome,
) -> anyhow::Result<()> {
    count(
        gateway,
        if settled.outcome.is_ok() {
            "delivered"
        } else {
            "failed"
        },
    );
    gateway
        .events
        .delivery_outcome(&settled.dispatch, &settled.command, settled.outcome)
        .await
        .context("failed to publish a delivery outcome")?;
    offsets.finish(&settled.topic, settled.partition, settled.offset);
    Ok(())
}

/// The last `capacity` ids seen, oldest forgotten first.
struct RecentIds {
    ids: HashSet<uuid::Uuid>,
    order: VecDeque<uuid::Uuid>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        RecentIds {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Remembers `id`; whether it was new.
    fn insert(&mut self, id: uuid::Uuid) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

fn count(gateway: &Gateway, outcome: &'static str) {
    gateway
        .metrics
        .deliveries
        .get_or_create(&[("outcome", outcome)])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::RecentIds;

    #[test]
    fn remembers_the_last_ids_only() {
        let mut recent = RecentIds::new(2);
        let [a, b, c] = [1u128, 2, 3].map(uuid::Uuid::from_u128);
        assert!(recent.insert(a) && recent.insert(b));
        assert!(!recent.insert(a), "a is remembered");
        assert!(recent.insert(c));
        assert!(recent.insert(a), "a was forgotten to make room for c");
    }
}
