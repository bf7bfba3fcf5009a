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
