//! Wharf's event bus: [`Publisher`] publishes records keyed by device and
//! acknowledges them only once they are durable; [`Subscriber`] consumes as a
//! consumer group with explicit offset commits. Implementations, chosen by
//! URL through [`Bus::connect`]: `file://DIR` (in-process and durable, the
//! default of `wharf up`), `memory://` (in-process, kept in memory only) and
//! `kafka://host:port[,…]` (rdkafka). rdkafka is used only in this crate.
//!
//! # Layout
//! - [`record`]: [`Record`] (outgoing), [`Message`] (incoming), offsets.
//! - [`delivery`]: [`Delivery`]: records and changes of partition ownership.
//! - [`config`]: [`BusConfig`], the `[bus]` configuration section.
//! - [`memory`]: [`MemoryBus`], the in-process bus, in memory or durable
//!   (its [`memory::journal`] on disk).
//! - [`kafka`]: [`KafkaBus`], the Kafka bus.
//! - [`any`]: [`Bus`], either of the two, chosen by URL; [`BusHandle`], a
//!   bus with its topic layout.
//! - [`offsets`]: [`OffsetTracker`], consumed positions awaiting commit.
//!
//! # Invariants
//! - Records with the same key go to the same partition and are delivered in
//!   the order they were enqueued.
//! - A consumer that restarts without committing sees the uncommitted
//!   records again (at-least-once); after a commit it does not.
//! - A partition moves to another member only after its previous owner has
//!   dropped the [`Revoked`] for it.
//! - Every queue is bounded: publishers wait when the bus cannot keep up.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub mod any;
pub mod config;
pub mod delivery;
mod error;
pub mod kafka;
pub mod memory;
pub mod offsets;
pub mod record;

pub use any::{Bus, BusConsumer, BusHandle};
pub use config::BusConfig;
pub use delivery::{Assigned, Batch, Delivery, PartitionId, Revoked};
pub use error::{Error, Result};
pub use kafka::KafkaBus;
pub use memory::MemoryBus;
pub use memory::journal::JournalOptions;
pub use offsets::{InFlightOffsets, OffsetTracker};
pub use record::{CommitOffset, Delivered, Message, Record, TopicSpec};

/// Publishes records; each is acknowledged once durable.
pub trait Publisher: Send + Sync {
    /// Queues `record` behind every record queued before it, waiting while the
    /// bus's queue is full (backpressure). The returned [`PendingAck`]
    /// resolves once the record is durable.
    fn enqueue(&self, record: Record) -> impl Future<Output = Result<PendingAck>> + Send;

    /// Queues `record` and waits until it is durable.
    fn publish(&self, record: Record) -> impl Future<Output = Result<Delivered>> + Send {
        async move { self.enqueue(record).await?.await }
    }

    /// Creates the topics that do not exist yet.
    fn ensure_topics(&self, topics: &[TopicSpec]) -> impl Future<Output = Result<()>> + Send;
}

/// Consumes topics as a member of a consumer group.
pub trait Subscriber: Send + Sync {
    /// The consumer this subscriber hands out.
    type Consumer: Consumer;

    /// Joins `group` and consumes `topics`, starting at the group's committed
    /// offsets, or at the earliest retained record when there are none.
    fn subscribe(
        &self,
        group: &str,
        topics: &[String],
    ) -> impl Future<Output = Result<Self::Consumer>> + Send;

    /// Reads `topics` whole, from their beginning, at every start: for
    /// compacted topics that hold current state (presence, revocations). The
    /// group is `<group>.<fresh id>`, used by this consumer alone; it must
    /// never commit.
    fn subscribe_from_start(
        &self,
        group: &str,
        topics: &[String],
    ) -> impl Future<Output = Result<Self::Consumer>> + Send {
        let group = format!("{group}.{}", wharf_events::new_id().simple());
        async move { self.subscribe(&group, topics).await }
    }

    /// Names this bus's lifetime when it is shorter than the data's: the
    /// in-process bus starts empty on every start, so offsets a consumer
    /// stored elsewhere during another run do not apply to it. `None` for a
    /// bus whose records and offsets persist (Kafka).
    fn incarnation(&self) -> Option<&str>;

    /// Where each partition of `topic` ends now: the offset the next record
    /// will get (Kafka's high watermark), for readers that must have read
    /// everything written so far before they act (a Socket's revocations).
    fn log_end(&self, topic: &str) -> impl Future<Output = Result<Vec<CommitOffset>>> + Send;
}

/// One member of a consumer group.
pub trait Consumer: Send {
    /// The next record, or a change of the partitions this member owns.
    fn next(&mut self) -> impl Future<Output = Result<Delivery>> + Send;

    /// The next record if one is available now and no change of partitions
    /// comes before it.
    fn try_next_message(&mut self) -> Result<Option<Message>>;

    /// Commits positions: each offset is the next record to read. Positions
    /// of partitions this member no longer owns are left out. A commit the
    /// group refuses because it is rebalancing fails with a retryable error
    /// ([`Error::is_retryable`]): the records stay uncommitted and are
    /// delivered again to the partition's next owner.
    fn commit(&mut self, offsets: &[CommitOffset]) -> impl Future<Output = Result<()>> + Send;

    /// The partitions this member owns now.
    fn assignment(&self) -> Result<Vec<PartitionId>>;

    /// The next record, letting changes of partitions take their defaults
    /// (for consumers that keep no per-partition work).
    fn recv(&mut self) -> impl Future<Output = Result<Message>> + Send {
        async move {
            loop {
                if let Delivery::Message(message) = self.next().await? {
                    return Ok(message);
                }
            }
        }
    }

    /// Waits for the next delivery; a record comes with up to `max - 1`
    /// more records available now, a change of partitions comes alone.
    fn next_batch(&mut self, max: usize) -> impl Future<Output = Result<Batch>> + Send {
        async move {
            Ok(match self.next().await? {
                Delivery::Assigned(assigned) => Batch::Assigned(assigned),
                Delivery::Revoked(revoked) => Batch::Revoked(revoked),
                Delivery::Message(first) => {
                    let mut messages = vec![first];
                    while messages.len() < max {
                        match self.try_next_message()? {
                            Some(message) => messages.push(message),
                            None => break,
                        }
                    }
                    Batch::Messages(messages)
                }
            })
        }
    }
}

/// Resolves once an enqueued record is durable.
pub struct PendingAck(Pin<Box<dyn Future<Output = Result<Delivered>> + Send>>);

impl PendingAck {
    /// An acknowledgement that is already known.
    pub fn ready(result: Result<Delivered>) -> Self {
        PendingAck(Box::pin(std::future::ready(result)))
    }

    /// An acknowledgement that `future` will deliver.
    pub fn from_future(future: impl Future<Output = Result<Delivered>> + Send + 'static) -> Self {
        PendingAck(Box::pin(future))
    }
}

impl Future for PendingAck {
    type Output = Result<Delivered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for PendingAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingAck")
    }
}
