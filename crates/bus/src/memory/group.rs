//! Consumer groups of the in-process bus: members, the partitions each
//! should own, who owns each partition now, and committed offsets.
//!
//! Ownership moves in two steps, as with Kafka: a member gives a partition
//! up (its consumer hands out a `Revoked` and the application drops it),
//! and only then can the partition's new target take it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::record::CommitOffset;

pub(super) type MemberId = u64;
/// A topic name and a partition index.
pub(super) type TopicPartition = (String, usize);

/// One consumer group.
#[derive(Default)]
pub(super) struct Group {
    /// Each member and the topics it subscribed to.
    members: BTreeMap<MemberId, Vec<String>>,
    /// The partitions each member should own.
    targets: HashMap<MemberId, Vec<TopicPartition>>,
    /// The member that owns each partition now.
    owners: HashMap<TopicPartition, MemberId>,
    /// Where members asked newly owned partitions to start.
    start_positions: HashMap<MemberId, Vec<CommitOffset>>,
    committed: HashMap<TopicPartition, i64>,
    /// Topics this group has committed on: their records are kept for it.
    committed_topics: HashSet<String>,
    /// Bumped on every change of members or owners; members recompute
    /// what they own when it moves.
    version: u64,
}

impl Group {
    /// A group known only by its commits, as the journal recorded them.
    pub(super) fn restored(committed: HashMap<TopicPartition, i64>) -> Self {
        Group {
            committed_topics: committed.keys().map(|(topic, _)| topic.clone()).collect(),
            committed,
            ..Group::default()
        }
    }

    /// Every committed offset of this group.
    pub(super) fn commits(&self) -> impl Iterator<Item = (&TopicPartition, i64)> {
        self.committed.iter().map(|(tp, offset)| (tp, *offset))
    }

    pub(super) fn join(
        &mut self,
        member: MemberId,
        topics: &[String],
        partitions: &HashMap<String, usize>,
    ) {
        self.members.insert(member, topics.to_vec());
        self.rebalance(partitions);
    }

    pub(super) fn leave(&mut self, member: MemberId, partitions: &HashMap<String, usize>) {
        if self.members.remove(&member).is_some() {
            self.owners.retain(|_, owner| *owner != member);
            self.start_positions.remove(&member);
            self.rebalance(partitions);
        }
    }

    pub(super) fn version(&self) -> u64 {
        self.version
    }

    /// The partitions `member` should own.
    pub(super) fn target(&self, member: MemberId) -> Vec<TopicPartition> {
        self.targets.get(&member).cloned().unwrap_or_default()
    }

    /// Whether no member owns `tp` now.
    pub(super) fn is_free(&self, tp: &TopicPartition) -> bool {
        !self.owners.contains_key(tp)
    }

    pub(super) fn take(&mut self, tp: TopicPartition, member: MemberId) {
        self.owners.insert(tp, member);
    }

    /// `member` gives up `partitions`; their new targets may now take them.
    pub(super) fn release(&mut self, member: MemberId, partitions: &[TopicPartition]) {
        for tp in partitions {
            if self.owners.get(tp) == Some(&member) {
                self.owners.remove(tp);
            }
        }
        self.version += 1;
    }

    pub(super) fn owned_by(&self, member: MemberId) -> Vec<TopicPartition> {
        let mut owned: Vec<TopicPartition> = self
            .owners
            .iter()
            .filter(|(_, owner)| **owner == member)
            .map(|(tp, _)| tp.clone())
            .collect();
        owned.sort();
        owned
    }

    pub(super) fn set_start_positions(&mut self, member: MemberId, positions: Vec<CommitOffset>) {
        if self.members.contains_key(&member) && !positions.is_empty() {
            self.start_positions
                .entry(member)
                .or_default()
                .extend(positions);
        }
    }

    pub(super) fn take_start_positions(&mut self, member: MemberId) -> Vec<CommitOffset> {
        self.start_positions.remove(&member).unwrap_or_default()
    }

    pub(super) fn committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.committed.get(tp).copied()
    }

    pub(super) fn commit(&mut self, tp: TopicPartition, next_offset: i64) {
        self.committed_topics.insert(tp.0.clone());
        self.committed.insert(tp, next_offset);
    }

    /// Whether this group's progress on `topic` decides what may be dropped.
    pub(super) fn holds_topic(&self, topic: &str) -> bool {
        self.committed_topics.contains(topic)
    }

    /// Deals each topic's partitions round-robin to the members subscribed to it.
    fn rebalance(&mut self, partitions: &HashMap<String, usize>) {
        self.version += 1;
        self.targets.clear();
        let topics: BTreeSet<&String> = self.members.values().flatten().collect();
        for topic in topics {
            let subscribers: Vec<MemberId> = self
                .members
                .iter()
                .filter(|(_, topics)| topics.contains(topic))
                .map(|(member, _)| *member)
                .collect();
            let count = partitions.get(topic.as_str()).copied().unwrap_or(0);
            for partition in 0..count {
                let member = subscribers[partition % subscribers.len()];
                self.targets
                    .entry(member)
                    .or_default()
                    .push((topic.clone(), partition));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_targets_between_members_and_takes_them_back_on_leave() {
        let partitions = HashMap::from([("t".to_owned(), 4)]);
        let mut group = Group::default();
        group.join(1, &["t".into()], &partitions);
        assert_eq!(group.target(1).len(), 4);
        group.join(2, &["t".into()], &partitions);
        assert_eq!(group.target(1).len(), 2);
        assert_eq!(group.target(2).len(), 2);
        let version = group.version();
        group.leave(2, &partitions);
        assert_eq!(group.target(1).len(), 4);
        assert!(group.version() > version);
    }

    #[test]
    fn a_partition_is_free_only_once_its_owner_released_it() {
        let partitions = HashMap::from([("t".to_owned(), 2)]);
        let mut group = Group::default();
        group.join(1, &["t".into()], &partitions);
        let tp = ("t".to_owned(), 1);
        group.take(tp.clone(), 1);
        group.join(2, &["t".into()], &partitions);
        assert!(group.target(2).contains(&tp));
        assert!(!group.is_free(&tp), "the old owner has not released it yet");
        group.release(1, std::slice::from_ref(&tp));
        assert!(group.is_free(&tp));
    }
}
