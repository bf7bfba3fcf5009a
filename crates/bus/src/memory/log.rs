//! One partition's log: an offset-addressed window of records.

use std::collections::VecDeque;

use crate::record::Record;

/// The retained records of one partition; offsets never repeat.
#[derive(Default)]
pub(super) struct Partition {
    /// Offset of the first retained record.
    base: i64,
    records: VecDeque<Record>,
}

impl Partition {
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Appends a record and returns its offset.
    pub(super) fn push(&mut self, record: Record) -> i64 {
        self.records.push_back(record);
        self.base + self.records.len() as i64 - 1
    }

    pub(super) fn drop_oldest(&mut self) {
        if self.records.pop_front().is_some() {
            self.base += 1;
        }
    }

    /// Drops every record below `floor`.
    pub(super) fn drop_before(&mut self, floor: i64) {
        while self.base < floor && self.records.pop_front().is_some() {
            self.base += 1;
        }
    }

    /// The first retained record at or after `position`, with its offset.
    pub(super) fn read_from(&self, position: i64) -> Option<(i64, &Record)> {
        let position = position.max(self.base);
        let index = usize::try_from(position - self.base).ok()?;
        self.records.get(index).map(|record| (position, record))
    }
}

/// The partition of `key` among `partitions` (FNV-1a, stable across runs).
pub(super) fn partition_for(key: &str, partitions: usize) -> usize {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as usize % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_keep_counting_after_records_are_dropped() {
        let mut partition = Partition::default();
        for i in 0..5 {
            assert_eq!(partition.push(Record::new("t", "k", vec![i])), i64::from(i));
        }
        partition.drop_before(3);
        assert_eq!(partition.len(), 2);
        assert_eq!(partition.read_from(0).unwrap().0, 3);
        assert_eq!(partition.read_from(4).unwrap().1.payload, vec![4]);
        assert!(partition.read_from(5).is_none());
        partition.drop_oldest();
        assert_eq!(partition.push(Record::new("t", "k", vec![5])), 5);
    }

    #[test]
    fn a_key_always_maps_to_the_same_partition() {
        assert_eq!(partition_for("thermo-42", 8), partition_for("thermo-42", 8));
        let spread: std::collections::HashSet<usize> = (0..100)
            .map(|i| partition_for(&format!("d{i}"), 8))
            .collect();
        assert_eq!(spread.len(), 8);
    }
}
