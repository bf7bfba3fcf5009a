//! What a consumer hands out: records, and changes to the partitions it owns.
//!
//! A consumer that keeps per-partition work (the Receiver's write-behind)
//! handles [`Assigned`] and [`Revoked`]; one that does not simply drops them.

use crate::record::{CommitOffset, Message};

/// A topic and one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    pub topic: String,
    pub partition: i32,
}

impl PartitionId {
    /// The partition a message came from.
    pub fn of(message: &Message) -> Self {
        PartitionId {
            topic: message.topic.clone(),
            partition: message.partition,
        }
    }
}

/// The next thing a consumer hands out, in order.
#[derive(Debug)]
pub enum Delivery {
    Message(Message),
    Assigned(Assigned),
    Revoked(Revoked),
}

/// What [`Consumer::next_batch`](crate::Consumer::next_batch) hands out:
/// records available together, or a change of partitions on its own.
#[derive(Debug)]
pub enum Batch {
    Messages(Vec<Message>),
    Assigned(Assigned),
    Revoked(Revoked),
}

type PositionsCallback = Box<dyn FnOnce(Vec<CommitOffset>) + Send>;
type ReleaseCallback = Box<dyn FnOnce() + Send>;

/// Partitions now owned by this member. [`start_at`](Self::start_at) chooses
/// where reading starts; dropping it starts at the group's committed offsets
/// (or the earliest record when there are none). Records of these
/// partitions are delivered only after it is answered or dropped.
pub struct Assigned {
    pub partitions: Vec<PartitionId>,
    answer: Option<PositionsCallback>,
}

/// Partitions taken from this member. No other member reads them until this
/// value is dropped: finish and commit their work first.
pub struct Revoked {
    pub partitions: Vec<PartitionId>,
    release: Option<ReleaseCallback>,
}

impl Assigned {
    pub(crate) fn new(
        partitions: Vec<PartitionId>,
        answer: impl FnOnce(Vec<CommitOffset>) + Send + 'static,
    ) -> Self {
        Assigned {
            partitions,
            answer: Some(Box::new(answer)),
        }
    }

    /// Starts reading each listed partition at its `next_offset`; partitions
    /// not listed start at the group's committed offset.
    pub fn start_at(mut self, positions: Vec<CommitOffset>) {
        if let Some(answer) = self.answer.take() {
            answer(positions);
        }
    }
}

impl Drop for Assigned {
    fn drop(&mut self) {
        if let Some(answer) = self.answer.take() {
            answer(Vec::new());
        }
    }
}

impl Revoked {
    pub(crate) fn new(
        partitions: Vec<PartitionId>,
        release: impl FnOnce() + Send + 'static,
    ) -> Self {
        Revoked {
            partitions,
            release: Some(Box::new(release)),
        }
    }
}

impl Drop for Revoked {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for Assigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assigned")
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl std::fmt::Debug for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revoked")
            .field("partitions", &self.partitions)
            .finish()
    }
}
