//! Write-behind bookkeeping: which device states changed since the last
//! flush, the consumed positions that produced them, and the positions
//! already stored. Positions are [`CommitOffset`]s throughout (the next
//! offset to read of a topic's partition); the store's own type is met only
//! at the store's door (`crate::positions`).

use std::collections::HashSet;

use wharf_bus::{CommitOffset, Message, PartitionId};
use wharf_store::PartitionClaim;

/// Dirty devices and positions between flushes. Positions live in small
/// vectors: a Receiver owns a handful of partitions, and a linear scan
/// spares an allocation per event.
#[derive(Debug, Default)]
pub(crate) struct WriteBehind {
    dirty: HashSet<String>,
    /// Next offset to read per partition, consumed since the last flush.
    consumed: Vec<CommitOffset>,
    /// Next offset per partition as stored in the database: an event below
    /// it was applied and stored before, and must not be applied again.
    stored: Vec<CommitOffset>,
    /// This member's claim on each owned partition: a flush holds only
    /// while they do.
    claims: Vec<PartitionClaim>,
}

/// What one flush writes.
pub(crate) struct FlushBatch {
    pub(crate) devices: Vec<String>,
    pub(crate) offsets: Vec<CommitOffset>,
    /// The claims of the offsets' partitions.
    pub(crate) claims: Vec<PartitionClaim>,
}

fn position_of<'a>(
    positions: &'a [CommitOffset],
    topic: &str,
    partition: i32,
) -> Option<&'a CommitOffset> {
    positions
        .iter()
        .find(|p| p.partition == partition && p.topic == topic)
}

fn is_of(position: &CommitOffset, partitions: &HashSet<PartitionId>) -> bool {
    partitions
        .iter()
        .any(|p| p.partition == position.partition && p.topic == position.topic)
}

impl WriteBehind {
    /// Records where the database says partitions stopped.
    pub(crate) fn set_stored(&mut self, positions: impl IntoIterator<Item = CommitOffset>) {
        for position in positions {
            self.stored
                .retain(|p| !(p.partition == position.partition && p.topic == position.topic));
            self.stored.push(position);
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
                let stored = position_of(&self.stored, &end.topic, end.partition)?;
                Some((end.next_offset - stored.next_offset).max(0))
            })
            .sum()
    }

    /// Whether `message` was already applied and stored.
    pub(crate) fn already_stored(&self, message: &Message) -> bool {
        position_of(&self.stored, &message.topic, message.partition)
            .is_some_and(|stored| message.offset < stored.next_offset)
    }

    /// Records that `message` has been handled.
    pub(crate) fn consumed(&mut self, message: &Message) {
        match self
            .consumed
            .iter_mut()
            .find(|p| p.partition == message.partition && p.topic == message.topic)
        {
            Some(position) => position.next_offset = message.offset + 1,
            None => self.consumed.push(message.next_position()),
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
            .filter(|claim| position_of(&self.consumed, &claim.topic, claim.partition).is_some())
            .cloned()
            .collect();
        FlushBatch {
            claims,
            devices: self.dirty.iter().cloned().collect(),
            offsets: self.consumed.clone(),
        }
    }

    /// Forgets what `batch` wrote; returns the positions to mirror to the bus.
    pub(crate) fn stored_batch(&mut self, batch: FlushBatch) -> Vec<CommitOffset> {
        for device in &batch.devices {
            self.dirty.remove(device);
        }
        // A partition consumed further while the batch was written keeps
        // its newer position for the next flush.
        self.consumed.retain(|p| !batch.offsets.contains(p));
        self.set_stored(batch.offsets.iter().cloned());
        batch.offsets
    }

    /// Forgets the positions and claims of partitions this member gave up,
    /// and the changes of `devices`, whose events came from them.
    pub(crate) fn forget(&mut self, partitions: &HashSet<PartitionId>, devices: &[String]) {
        self.consumed.retain(|p| !is_of(p, partitions));
        self.stored.retain(|p| !is_of(p, partitions));
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

    fn position(partition: i32, next_offset: i64) -> CommitOffset {
        CommitOffset {
            topic: "events".into(),
            partition,
            next_offset,
        }
    }

    #[test]
    fn skips_what_an_earlier_run_stored() {
        let mut write_behind = WriteBehind::default();
        write_behind.set_stored([position(0, 10)]);
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
        write_behind.set_stored([position(0, 10), position(1, 50)]);
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
        write_behind.set_stored([position(0, 3)]);
        write_behind.dirty("d");
        write_behind.forget(&HashSet::from([partition(0)]), &["d".to_owned()]);
        assert!(write_behind.is_empty());
        assert!(!write_behind.already_stored(&message(0, 0)));
    }
}
