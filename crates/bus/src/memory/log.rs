//! One partition's log: an offset-addressed window of records.

use std::collections::{HashSet, VecDeque};

use crate::record::Record;

/// Records freed per append (and at most per commit) once consumed.
///
/// Freeing is spread out: a commit that released a second's worth of
/// records (tens of thousands of allocations) at once held the worker
/// thread, and every connection on it, for ~20 ms.
const FREE_PER_STEP: usize = 8;

/// The retained records of one partition; offsets never repeat.
///
/// Offsets may have gaps: compaction removes records a newer one with the
/// same key replaces, as Kafka's compacted topics do.
#[derive(Default)]
pub(super) struct Partition {
    /// Records in offset order; those below `floor` are consumed and
    /// freed a few at a time.
    records: VecDeque<(i64, Record)>,
    /// Records below this offset are no longer retained.
    floor: i64,
    /// How many records at the front lie below `floor`, not yet freed.
    consumed: usize,
    /// The offset the next appended record gets.
    next: i64,
    /// Records below this offset are durable and may be read. Consumers never
    /// see a record that a crash could still take away: a consumer storing
    /// its position past it would skip the record written at that offset
    /// after a restart.
    durable: i64,
    /// Keep only the latest record per key (presence, revocations).
    pub(super) compacted: bool,
    /// Records retained right after the last compaction; the next one runs
    /// once the log has doubled since.
    compacted_len: usize,
}

impl Partition {
    /// A partition that resumes at `next` with `records` (in offset order,
    /// all below `next`), every one of them durable.
    pub(super) fn restored(records: VecDeque<(i64, Record)>, next: i64, compacted: bool) -> Self {
        let mut partition = Partition {
            floor: records.front().map_or(next, |(offset, _)| *offset),
            consumed: 0,
            records,
            next,
            durable: next,
            compacted,
            compacted_len: 0,
        };
        if compacted {
            partition.compact();
        }
        partition
    }

    /// The records retained (consumed ones not counted).
    pub(super) fn len(&self) -> usize {
        self.records.len() - self.consumed
    }

    /// Frees up to `n` consumed records.
    fn free_consumed(&mut self, n: usize) {
        let n = n.min(self.consumed);
        self.records.drain(..n);
        self.consumed -= n;
    }

    /// The offset the next appended record gets.
    pub(super) fn next_offset(&self) -> i64 {
        self.next
    }

    /// Appends a record and returns its offset. It is readable once
    /// [`mark_durable`](Self::mark_durable) covers it, or at once when
    /// `durable_now`.
    pub(super) fn push(&mut self, record: Record, durable_now: bool) -> i64 {
        self.free_consumed(FREE_PER_STEP);
        let offset = self.next;
        self.records.push_back((offset, record));
        self.next += 1;
        if durable_now {
            self.durable = self.next;
        }
        if self.compacted && self.records.len() > 2 * self.compacted_len + 64 {
            self.compact();
        }
        offset
    }

    /// The offset after the last record a consumer can read now.
    pub(super) fn readable_end(&self) -> i64 {
        self.durable
    }

    /// Makes every record below `end` readable.
    pub(super) fn mark_durable(&mut self, end: i64) {
        self.durable = self.durable.max(end.min(self.next));
    }

    /// Drops the oldest retained record.
    pub(super) fn drop_oldest(&mut self) {
        if let Some((offset, _)) = self.records.get(self.consumed) {
            self.floor = offset + 1;
            self.consumed += 1;
        }
        self.free_consumed(FREE_PER_STEP);
    }

    /// Drops every record below `floor` (freed a few at a time).
    pub(super) fn drop_before(&mut self, floor: i64) {
        if floor > self.floor {
            self.floor = floor;
            self.consumed = self.records.partition_point(|(offset, _)| *offset < floor);
        }
        self.free_consumed(FREE_PER_STEP);
    }

    /// Keeps only the latest record of each key.
    pub(super) fn compact(&mut self) {
        self.records.drain(..self.consumed);
        self.consumed = 0;
        let mut seen = HashSet::with_capacity(self.records.len());
        let mut kept: VecDeque<(i64, Record)> = self
            .records
            .drain(..)
            .rev()
            .filter(|(_, record)| seen.insert(record.key.clone()))
            .collect();
        kept.make_contiguous().reverse();
        self.compacted_len = kept.len();
        self.records = kept;
    }

    /// The first retained durable record at or after `position`, with its offset.
    pub(super) fn read_from(&self, position: i64) -> Option<(i64, &Record)> {
        let position = position.max(self.floor);
        let index = self
            .records
            .partition_point(|(offset, _)| *offset < position);
        self.records
            .get(index)
            .filter(|(offset, _)| *offset < self.durable)
            .map(|(offset, record)| (*offset, record))
    }

    /// Every retained record, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &(i64, Record)> {
        self.records.iter().skip(self.consumed)
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
            assert_eq!(
                partition.push(Record::new("t", "k", vec![i]), true),
                i64::from(i)
            );
        }
        partition.drop_before(3);
        assert_eq!(partition.len(), 2);
        assert_eq!(partition.read_from(0).unwrap().0, 3);
        assert_eq!(partition.read_from(4).unwrap().1.payload, vec![4]);
        assert!(partition.read_from(5).is_none());
        partition.drop_oldest();
        assert_eq!(partition.push(Record::new("t", "k", vec![5]), true), 5);
    }

    #[test]
    fn consumed_records_are_freed_a_few_at_a_time() {
        let mut partition = Partition::default();
        for i in 0..1_000 {
            partition.push(Record::new("t", "k", vec![]), true);
            assert_eq!(partition.len(), i + 1);
        }
        partition.drop_before(1_000);
        assert_eq!(partition.len(), 0, "consumed records no longer count");
        assert!(partition.records.len() > 900, "but are not freed at once");
        assert!(partition.read_from(0).is_none());
        for _ in 0..200 {
            partition.push(Record::new("t", "k", vec![]), true);
        }
        assert_eq!(partition.len(), 200);
        assert_eq!(partition.records.len(), 200, "appends freed the rest");
        assert_eq!(partition.read_from(0).unwrap().0, 1_000);
    }

    #[test]
    fn records_are_readable_only_once_durable() {
        let mut partition = Partition::default();
        partition.push(Record::new("t", "k", vec![0]), false);
        partition.push(Record::new("t", "k", vec![1]), false);
        assert!(partition.read_from(0).is_none());
        partition.mark_durable(1);
        assert_eq!(partition.read_from(0).unwrap().0, 0);
        assert!(partition.read_from(1).is_none());
        partition.mark_durable(2);
        assert_eq!(partition.read_from(1).unwrap().0, 1);
    }

    #[test]
    fn compaction_keeps_the_latest_record_per_key_and_its_offset() {
        let mut partition = Partition {
            compacted: true,
            ..Partition::default()
        };
        for (i, key) in ["a", "b", "a", "c", "b"].iter().enumerate() {
            partition.push(Record::new("t", *key, vec![i as u8]), true);
        }
        partition.compact();
        let kept: Vec<(i64, &str)> = partition
            .iter()
            .map(|(offset, record)| (*offset, record.key.as_str()))
            .collect();
        assert_eq!(kept, [(2, "a"), (3, "c"), (4, "b")]);
        // A reader between retained offsets gets the next retained record.
        assert_eq!(partition.read_from(0).unwrap().0, 2);
        assert_eq!(partition.push(Record::new("t", "d", vec![]), true), 5);
    }

    #[test]
    fn a_compacted_partition_stays_near_its_key_count() {
        let mut partition = Partition {
            compacted: true,
            ..Partition::default()
        };
        for i in 0..10_000u32 {
            partition.push(Record::new("t", format!("k{}", i % 10), vec![]), true);
        }
        assert!(partition.len() <= 2 * 10 + 64 + 1, "{}", partition.len());
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
