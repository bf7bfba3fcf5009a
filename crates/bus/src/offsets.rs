//! Consumed positions awaiting commit.

use std::collections::HashMap;

use crate::record::{CommitOffset, Message};

/// Tracks the next offset to commit per partition of a consumer.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    next: HashMap<(String, i32), i64>,
    /// Set by `consumed`, cleared by `take`: whether a commit is due.
    pending: bool,
}

impl OffsetTracker {
    /// Records that `message` has been handled.
    pub fn consumed(&mut self, message: &Message) {
        self.next.insert(
            (message.topic.clone(), message.partition),
            message.offset + 1,
        );
        self.pending = true;
    }

    /// Whether anything was consumed since the last [`take`](Self::take).
    pub fn has_pending(&self) -> bool {
        self.pending
    }

    /// The positions to commit: every partition this consumer has handled.
    pub fn take(&mut self) -> Vec<CommitOffset> {
        self.pending = false;
        self.next
            .iter()
            .map(|((topic, partition), next_offset)| CommitOffset {
                topic: topic.clone(),
                partition: *partition,
                next_offset: *next_offset,
            })
            .collect()
    }
}

/// Positions of records handled out of order (concurrently): a partition's
/// committable position is its oldest record still in flight, so nothing
/// unfinished is ever committed.
#[derive(Debug, Default)]
pub struct InFlightOffsets {
    partitions: HashMap<(String, i32), InFlightPartition>,
}

#[derive(Debug, Default)]
struct InFlightPartition {
    in_flight: std::collections::BTreeSet<i64>,
    /// One past the highest offset started.
    end: i64,
    /// The position last handed out by `committable`.
    committed: Option<i64>,
}

impl InFlightOffsets {
    /// Records that work on `message` started.
    pub fn start(&mut self, message: &Message) {
        let partition = self
            .partitions
            .entry((message.topic.clone(), message.partition))
            .or_default();
        partition.in_flight.insert(message.offset);
        partition.end = partition.end.max(message.offset + 1);
    }

    /// Records that work on `offset` of `topic`/`partition` finished.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            state.in_flight.remove(&offset);
        }
    }

    /// How many records are in flight.
    pub fn len(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }

    /// Whether no record is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The positions that moved since the last call.
    pub fn committable(&mut self) -> Vec<CommitOffset> {
        let mut offsets = Vec::new();
        for ((topic, partition), state) in &mut self.partitions {
            let position = state.in_flight.first().copied().unwrap_or(state.end);
            if state.committed != Some(position) {
                state.committed = Some(position);
                offsets.push(CommitOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset: position,
                });
            }
        }
        offsets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> Message {
        Message {
            topic: "t".into(),
            partition,
            offset,
            key: None,
            payload: vec![],
            headers: vec![],
        }
    }

    #[test]
    fn commits_stop_at_the_oldest_record_in_flight() {
        let mut offsets = InFlightOffsets::default();
        for offset in 0..4 {
            offsets.start(&message(0, offset));
        }
        offsets.finish("t", 0, 1);
        offsets.finish("t", 0, 2);
        assert_eq!(offsets.committable()[0].next_offset, 0);
        offsets.finish("t", 0, 0);
        assert_eq!(offsets.committable()[0].next_offset, 3);
        assert!(offsets.committable().is_empty(), "nothing moved since");
        offsets.finish("t", 0, 3);
        assert_eq!(offsets.committable()[0].next_offset, 4);
        assert!(offsets.is_empty());
    }

    #[test]
    fn keeps_the_latest_position_per_partition() {
        let mut tracker = OffsetTracker::default();
        assert!(!tracker.has_pending());
        tracker.consumed(&message(0, 4));
        tracker.consumed(&message(0, 5));
        tracker.consumed(&message(1, 9));
        let mut offsets = tracker.take();
        offsets.sort_by_key(|o| o.partition);
        assert_eq!(offsets[0].next_offset, 6);
        assert_eq!(offsets[1].next_offset, 10);
        assert!(!tracker.has_pending());
    }
}
