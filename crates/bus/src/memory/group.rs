//! Consumer groups of the in-process bus: members, partition assignment and
//! committed offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub(super) type MemberId = u64;
/// A topic name and a partition index.
pub(super) type TopicPartition = (String, usize);

/// One consumer group.
#[derive(Default)]
pub(super) struct Group {
    /// Each member and the topics it subscribed to.
    members: BTreeMap<MemberId, Vec<String>>,
    assignment: HashMap<MemberId, Vec<TopicPartition>>,
    committed: HashMap<TopicPartition, i64>,
    /// Topics this group has committed on: their records are kept for it.
    committed_topics: HashSet<String>,
    /// Bumped on every rebalance; members reload their assignment when it moves.
    generation: u64,
}

impl Group {
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
            self.rebalance(partitions);
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn assignment(&self, member: MemberId) -> Vec<TopicPartition> {
        self.assignment.get(&member).cloned().unwrap_or_default()
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
        self.generation += 1;
        self.assignment.clear();
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
                self.assignment
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
    fn splits_partitions_between_members_and_takes_them_back_on_leave() {
        let partitions = HashMap::from([("t".to_owned(), 4)]);
        let mut group = Group::default();
        group.join(1, &["t".into()], &partitions);
        assert_eq!(group.assignment(1).len(), 4);
        group.join(2, &["t".into()], &partitions);
        assert_eq!(group.assignment(1).len(), 2);
        assert_eq!(group.assignment(2).len(), 2);
        let generation = group.generation();
        group.leave(2, &partitions);
        assert_eq!(group.assignment(1).len(), 4);
        assert!(group.generation() > generation);
    }
}
