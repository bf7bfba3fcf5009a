//! Write-behind bookkeeping: which device states changed since the last
//! flush, the consumed positions that produced them, and the positions
//! already stored.

use std::collections::HashSet;

use wharf_bus::{CommitOffset, Message, PartitionId};
use wharf_store::{PartitionClaim, StoredOffset};

/// Dirty devices and positions between flushes. Positions live in small
/// vectors: a Receiver owns a handful of partitions, and a linear scan
/// spares an allocation per event.
#[derive(Debug, Default)]
pub(crate) struct WriteBehind {
    dirty: HashSet<String>,
    /// Next offset to read per partition, consumed since the last flush.
    consumed: Vec<(PartitionId, i64)>,
    /// Next offset per partition as stored in the database: an event below
    /// it was applied and stored before, and must not be applied again.
    stored: Vec<(PartitionId, i64)>,
    /// This member's claim on each owned partition: a flush holds only
    /// while they do.
    claims: Vec<PartitionClaim>,
}

/// What one flush writes.
pub(crate) struct FlushBatch {
    pub(crate) devices: Vec<String>,
    pub(crate) offsets: Vec<StoredOffset>,
    /// The claims of the offsets' partitions.
    pub(crate) claims: Vec<PartitionClaim>,
}

fn position_mut<'a>(
    positions: &'a mut [(PartitionId, i64)],
    message: &Message,
) -> Option<&'a mut i64> {
    positions
        .iter_mut()
        .find(|(p, _)| p.partition == message.partition && p.topic == message.topic)
        .map(|(_, next)| next)
}

impl WriteBehind {
    /// Records where the database says `partitions` stopped.
    pub(crate) fn set_stored(&mut self, positions: impl IntoIterator<Item = (PartitionId, i64)>) {
        for (partition, next) in positions {
            self.stored.retain(|(p, _)| *p != partition);
            self.stored.push((partition, next));
        }
    }

    /// Records this member's claims on newly owned partitions.
    pub(crate) fn set_claims(&mut self, claims: impl IntoIterator<Item = PartitionClaim>) {
        for claim in claims {
            self.claims
                .retain(|c| !(c.topic == claim.topic && c.partition == claim.partition));
            self.claims.push(claim);
        }
    }

    /// Events between the stored positions of the owned partitions and
    /// `ends` (where each partition's log ends): the Receiver's lag.
    pub(crate) fn behind(&self, ends: &[CommitOffset]) -> i64 {
        ends.iter()
            .filter_map(|end| {
                let (_, stored) = self
                    .stored
                    .iter()
                    .find(|(p, _)| p.partition == end.partition && p.topic == end.topic)?;
                Some((end.next_offset - stored).max(0))
            })
            .sum()
    }

    /// Whether `message` was already applied and stored.
    pub(crate) fn already_stored(&self, message: &Message) -> bool {
        self.stored
            .iter()
            .find(|(p, _)| p.partition == message.partition && p.topic == message.topic)
            .is_some_and(|(_, next)| message.offset < *next)
    }

    /// Records that `message` has been handled.
    pub(crate) fn consumed(&mut self, message: &Message) {
        match position_mut(&mut self.consumed, message) {
            Some(next) => *next = message.offset + 1,
            None => self
                .consumed
                .push((PartitionId::of(message), message.offset + 1)),
        }
    }

    /// Marks a device's state as changed.
    pub(crate) fn dirty(&mut self, device: &str) {
        if !self.dirty.contains(device) {
            self.dirty.insert(device.to_owned());
        }
    }

    pub(crate) fn is_dirty(&self, device: &str) -> bool {
        self.dirty.contains(device)
    }

    pub(crate) fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// Whether there is anything to flush.
    pub(crate) fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.consumed.is_empty()
    }

    /// What to write now; [`stored_batch`](Self::stored_batch) once written.
    pub(crate) fn batch(&self) -> FlushBatch {
        let claims = self
            .claims
            .iter()
            .filter(|claim| {
                self.consumed
                    .iter()
                    .any(|(p, _)| p.partition == claim.partition && p.topic == claim.topic)
            })
            .cloned()
            .collect();
        FlushBatch {
            claims,
            devices: self.dirty.iter().cloned().collect(),
            offsets: self
                .consumed
                .iter()
                .map(|(p, next_offset)| StoredOffset {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    next_offset: *next_offset,
                })
                .collect(),
        }
    }

    /// Forgets what `batch` wrote; returns the positions to mirror to the bus.
    pub(crate) fn stored_batch(&mut self, batch: FlushBatch) -> Vec<CommitOffset> {
        for device in &batch.devices {
            self.dirty.remove(device);
        }
        batch
            .offsets
            .into_iter()
            .map(|offset| {
                let partition = PartitionId {
                    topic: offset.topic,
                    partition: offset.partition,
                };
                self.consumed
                    .retain(|(p, next)| !(*p == partition && *next == offset.next_offset));
                self.set_stored([(partition.clone(), offset.next_offset)]);
                CommitOffset {
                    topic: partition.topic,
                    partition: partition.partition,
                    next_offset: offset.next_offset,
                }
            })
            .collect()
    }

    /// Forgets the positions and claims of partitions this member gave up,
    /// and the changes of `devices`, whose events came from them.
    pub(crate) fn forget(&mut self, partitions: &HashSet<PartitionId>, devices: &[String]) {
        self.consumed.retain(|(p, _)| !partitions.contains(p));
        self.stored.retain(|(p, _)| !partitions.contains(p));
        self.claims.retain(|c| {
            !partitions.contains(&PartitionId {
                topic: c.topic.clone(),
                partition: c.partition,
            })
        });
        for device in devices {
            self.dirty.remove(device);
        }
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

    fn partition(n: i32) -> PartitionId {
        PartitionId {
            topic: "events".into(),
            partition: n,
        }
    }

    #[test]
    fn skips_what_an_earlier_run_stored() {
        let mut write_behind = WriteBehind::default();
        write_behind.set_stored([(partition(0), 10)]);
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
        let commits = write_behind.stored_batch(batch);
        assert_eq!(commits[0].next_offset, 5);
        assert!(write_behind.is_empty());
        assert!(write_behind.already_stored(&message(0, 4)));
    }

    #[test]
    fn a_batch_carries_the_claims_of_its_partitions() {
        let mut write_behind = WriteBehind::default();
        let claim = |partition, epoch| PartitionClaim {
            topic: "events".into(),
            partition,
            epoch,
        };
        write_behind.set_claims([claim(0, 1), claim(1, 4)]);
        write_behind.set_claims([claim(0, 2)]);
        write_behind.consumed(&message(0, 4));
        assert_eq!(write_behind.batch().claims, vec![claim(0, 2)]);
    }

    #[test]
    fn lag_counts_only_owned_partitions_behind_their_end() {
        let mut write_behind = WriteBehind::default();
        write_behind.set_stored([(partition(0), 10), (partition(1), 50)]);
        let end = |p, next_offset| CommitOffset {
            topic: "events".into(),
            partition: p,
            next_offset,
        };
        // Partition 2 is not owned; partition 1 is caught up.
        assert_eq!(
            write_behind.behind(&[end(0, 25), end(1, 50), end(2, 99)]),
            15
        );
        write_behind.forget(&HashSet::from([partition(0)]), &[]);
        assert_eq!(write_behind.behind(&[end(0, 25)]), 0);
    }

    #[test]
    fn forgetting_a_partition_drops_its_positions() {
        let mut write_behind = WriteBehind::default();
        write_behind.consumed(&message(0, 4));
        write_behind.set_stored([(partition(0), 3)]);
        write_behind.dirty("d");
        write_behind.forget(&HashSet::from([partition(0)]), &["d".to_owned()]);
        assert!(write_behind.is_empty());
        assert!(!write_behind.already_stored(&message(0, 0)));
    }
}
