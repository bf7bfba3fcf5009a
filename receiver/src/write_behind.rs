//! Write-behind: which device states changed since the last flush, and the
//! consumed positions that produced them, written back in one transaction.

use std::collections::{HashMap, HashSet};

use wharf_bus::{CommitOffset, Message};
use wharf_store::StoredOffset;

/// A topic and partition.
type Partition = (String, i32);

/// Dirty devices and consumed positions since the last flush, plus the
/// positions already stored (the resume points after a restart).
#[derive(Debug, Default)]
pub(crate) struct WriteBehind {
    dirty: HashSet<String>,
    /// Next offset to read per partition, consumed since the last flush.
    consumed: HashMap<Partition, i64>,
    /// Next offset per partition as stored in the database: an event below
    /// it was applied and committed before, and must not be applied again.
    stored: HashMap<Partition, i64>,
}

/// What a flush must write.
pub(crate) struct FlushBatch {
    pub(crate) devices: Vec<String>,
    pub(crate) offsets: Vec<StoredOffset>,
}

impl WriteBehind {
    /// Starts from the positions stored in the database.
    pub(crate) fn new(stored: Vec<StoredOffset>) -> Self {
        WriteBehind {
            stored: stored
                .into_iter()
                .map(|o| ((o.topic, o.partition), o.next_offset))
                .collect(),
            ..WriteBehind::default()
        }
    }

    /// Whether `message` was already applied and stored by an earlier run.
    pub(crate) fn already_stored(&self, message: &Message) -> bool {
        self.stored
            .get(&(message.topic.clone(), message.partition))
            .is_some_and(|next| message.offset < *next)
    }

    /// Records that `message` has been handled.
    pub(crate) fn consumed(&mut self, message: &Message) {
        self.consumed.insert(
            (message.topic.clone(), message.partition),
            message.offset + 1,
        );
    }

    /// Marks a device's state as changed.
    pub(crate) fn dirty(&mut self, device: &str) {
        if !self.dirty.contains(device) {
            self.dirty.insert(device.to_owned());
        }
    }

    pub(crate) fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// Whether there is anything to flush.
    pub(crate) fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.consumed.is_empty()
    }

    /// What to write now; call [`stored_batch`](Self::stored_batch) once it
    /// is committed.
    pub(crate) fn batch(&self) -> FlushBatch {
        FlushBatch {
            devices: self.dirty.iter().cloned().collect(),
            offsets: self
                .consumed
                .iter()
                .map(|((topic, partition), next_offset)| StoredOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset: *next_offset,
                })
                .collect(),
        }
    }

    /// Forgets what `batch` wrote and returns the positions to mirror to
    /// the bus.
    pub(crate) fn stored_batch(&mut self, batch: &FlushBatch) -> Vec<CommitOffset> {
        for device in &batch.devices {
            self.dirty.remove(device);
        }
        batch
            .offsets
            .iter()
            .map(|offset| {
                let key = (offset.topic.clone(), offset.partition);
                if self.consumed.get(&key) == Some(&offset.next_offset) {
                    self.consumed.remove(&key);
                }
                self.stored.insert(key, offset.next_offset);
                CommitOffset {
                    topic: offset.topic.clone(),
                    partition: offset.partition,
                    next_offset: offset.next_offset,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> Message {
        Message {
            topic: "events".into(),
            partition,
            offset,
            key: Some("d".into()),
            payload: vec![],
            headers: vec![],
        }
    }

    #[test]
    fn skips_what_an_earlier_run_stored() {
        let write_behind = WriteBehind::new(vec![StoredOffset {
            topic: "events".into(),
            partition: 0,
            next_offset: 10,
        }]);
        assert!(write_behind.already_stored(&message(0, 9)));
        assert!(!write_behind.already_stored(&message(0, 10)));
        assert!(!write_behind.already_stored(&message(1, 0)));
    }

    #[test]
    fn a_flush_stores_positions_and_clears_what_it_wrote() {
        let mut write_behind = WriteBehind::default();
        write_behind.consumed(&message(0, 4));
        write_behind.dirty("d");
        let batch = write_behind.batch();
        assert_eq!(batch.devices, vec!["d".to_owned()]);
        let commits = write_behind.stored_batch(&batch);
        assert_eq!(commits[0].next_offset, 5);
        assert!(write_behind.is_empty());
        assert!(write_behind.already_stored(&message(0, 4)));
    }
}
