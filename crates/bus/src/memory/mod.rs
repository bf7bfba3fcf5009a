//! The in-process bus: partitioned logs and consumer groups in memory, with
//! Kafka's semantics where the services rely on them (per-key order, group
//! offsets, redelivery of uncommitted records, partitions split between the
//! members of a group). It backs `wharf up` and is held to the same contract
//! tests as Kafka.
//!
//! Memory is bounded: a partition retains at most `capacity` records. Records
//! every committing group has consumed are dropped; when a lagging group holds
//! them, publishers wait (backpressure). A topic no group has committed on
//! keeps its latest `capacity` records, like a retention limit.

mod group;
mod log;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::record::{CommitOffset, Message, Record, TopicSpec};
use crate::{Consumer, Delivered, PendingAck, Publisher, Result, Subscriber};
use group::{Group, MemberId, TopicPartition};
use log::{Partition, partition_for};

/// The in-process bus. Clones share the same topics and groups.
#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped on every change a waiting publisher or consumer may care about.
    changes: watch::Sender<u64>,
    default_partitions: usize,
    capacity: usize,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Partition>>,
    groups: HashMap<String, Group>,
    next_member: MemberId,
}

impl MemoryBus {
    /// An empty bus; topics created on first use get `partitions` partitions.
    pub fn new(partitions: usize, capacity: usize) -> Self {
        MemoryBus {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                changes: watch::channel(0).0,
                default_partitions: partitions.max(1),
                capacity: capacity.max(1),
            }),
        }
    }

    /// The number of records the bus holds for `topic` right now.
    pub fn retained(&self, topic: &str) -> usize {
        self.shared
            .lock()
            .topics
            .get(topic)
            .map_or(0, |parts| parts.iter().map(Partition::len).sum())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, which is
        // still consistent at every await-free step; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends the record unless its partition is full of records a group
    /// still needs; takes it out of `record` on success.
    fn try_append(&self, record: &mut Option<Record>) -> Option<Delivered> {
        let mut state = self.lock();
        let pending = record.as_ref().expect("the record is appended once");
        let count = state
            .topic_mut(&pending.topic, self.default_partitions)
            .len();
        let tp = (pending.topic.clone(), partition_for(&pending.key, count));
        let group_holds_records = state.min_committed(&tp).is_some();
        let partition = &mut state.topic_mut(&tp.0, count)[tp.1];
        if partition.len() >= self.capacity && !group_holds_records {
            // No group commits on this topic: behave like a retention limit.
            partition.drop_oldest();
        }
        if partition.len() >= self.capacity {
            return None;
        }
        let offset = partition.push(record.take().expect("the record is appended once"));
        Some(Delivered {
            partition: tp.1 as i32,
            offset,
        })
    }

    fn notify(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }
}

impl State {
    fn topic_mut(&mut self, name: &str, partitions: usize) -> &mut Vec<Partition> {
        self.topics
            .entry(name.to_owned())
            .or_insert_with(|| (0..partitions).map(|_| Partition::default()).collect())
    }

    /// The lowest committed offset of `tp` over the groups that commit on
    /// its topic, or `None` when no group does.
    fn min_committed(&self, tp: &TopicPartition) -> Option<i64> {
        self.groups
            .values()
            .filter(|group| group.holds_topic(&tp.0))
            .map(|group| group.committed(tp).unwrap_or(i64::MIN))
            .min()
    }

    /// Drops what every committing group has consumed from `tp`.
    fn truncate(&mut self, tp: &TopicPartition) {
        let Some(floor) = self.min_committed(tp) else {
            return;
        };
        if let Some(partition) = self
            .topics
            .get_mut(&tp.0)
            .and_then(|parts| parts.get_mut(tp.1))
        {
            partition.drop_before(floor);
        }
    }
}

impl Publisher for MemoryBus {
    async fn enqueue(&self, record: Record) -> Result<PendingAck> {
        let shared = &self.shared;
        let mut changes = shared.changes.subscribe();
        let mut record = Some(record);
        loop {
            changes.borrow_and_update();
            if let Some(delivered) = shared.try_append(&mut record) {
                shared.notify();
                return Ok(PendingAck::ready(Ok(delivered)));
            }
            // Full, and a lagging group still needs the records: wait for a
            // commit to make room.
            if changes.changed().await.is_err() {
                return Err(crate::Error::Closed);
            }
        }
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let mut state = self.shared.lock();
        for spec in topics {
            state.topic_mut(&spec.name, spec.partitions.max(1) as usize);
        }
        Ok(())
    }
}

impl Subscriber for MemoryBus {
    type Consumer = MemoryConsumer;

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<MemoryConsumer> {
        let member = {
            let mut state = self.shared.lock();
            for topic in topics {
                state.topic_mut(topic, self.shared.default_partitions);
            }
            let member = state.next_member;
            state.next_member += 1;
            let partitions: HashMap<String, usize> = state
                .topics
                .iter()
                .map(|(name, parts)| (name.clone(), parts.len()))
                .collect();
            state
                .groups
                .entry(group.to_owned())
                .or_default()
                .join(member, topics, &partitions);
            member
        };
        self.shared.notify();
        Ok(MemoryConsumer {
            shared: self.shared.clone(),
            changes: self.shared.changes.subscribe(),
            group: group.to_owned(),
            member,
            generation: None,
            assigned: Vec::new(),
            positions: HashMap::new(),
            cursor: 0,
        })
    }

    fn is_persistent(&self) -> bool {
        false
    }
}

/// A member of a consumer group on the in-process bus; leaves on drop.
pub struct MemoryConsumer {
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
    group: String,
    member: MemberId,
    /// The group generation `assigned` belongs to; a rebalance bumps it.
    generation: Option<u64>,
    assigned: Vec<TopicPartition>,
    positions: HashMap<TopicPartition, i64>,
    /// Round-robin start, so one busy partition cannot starve the others.
    cursor: usize,
}

impl MemoryConsumer {
    /// Takes the next record available to this member, if any.
    fn poll_next(&mut self) -> Option<Message> {
        let state = self.shared.lock();
        let group = state
            .groups
            .get(&self.group)
            .expect("a group exists while it has members");
        if self.generation != Some(group.generation()) {
            // Rebalanced: resume every assigned partition at the committed offset.
            self.generation = Some(group.generation());
            self.assigned = group.assignment(self.member);
            self.positions = self
                .assigned
                .iter()
                .map(|tp| (tp.clone(), group.committed(tp).unwrap_or(i64::MIN)))
                .collect();
        }
        let count = self.assigned.len();
        for step in 0..count {
            let index = (self.cursor + step) % count;
            let tp = &self.assigned[index];
            let Some(partition) = state.topics.get(&tp.0).and_then(|parts| parts.get(tp.1)) else {
                continue;
            };
            let position = self
                .positions
                .get_mut(tp)
                .expect("every assigned partition has a position");
            if let Some((offset, record)) = partition.read_from(*position) {
                *position = offset + 1;
                self.cursor = index + 1;
                return Some(Message {
                    topic: tp.0.clone(),
                    partition: tp.1 as i32,
                    offset,
                    key: Some(record.key.clone()),
                    payload: record.payload.clone(),
                    headers: record.headers.clone(),
                });
            }
        }
        None
    }
}

impl Consumer for MemoryConsumer {
    async fn recv(&mut self) -> Result<Message> {
        loop {
            self.changes.borrow_and_update();
            if let Some(message) = self.poll_next() {
                return Ok(message);
            }
            if self.changes.changed().await.is_err() {
                return Err(crate::Error::Closed);
            }
        }
    }

    async fn commit(&mut self, offsets: &[CommitOffset]) -> Result<()> {
        {
            let mut state = self.shared.lock();
            let group = state
                .groups
                .get_mut(&self.group)
                .expect("a group exists while it has members");
            let mut touched = Vec::with_capacity(offsets.len());
            for offset in offsets {
                let tp = (offset.topic.clone(), offset.partition.max(0) as usize);
                group.commit(tp.clone(), offset.next_offset);
                touched.push(tp);
            }
            for tp in &touched {
                state.truncate(tp);
            }
        }
        self.shared.notify();
        Ok(())
    }

    fn assignment(&self) -> Result<Vec<(String, i32)>> {
        let state = self.shared.lock();
        let group = state
            .groups
            .get(&self.group)
            .expect("a group exists while it has members");
        Ok(group
            .assignment(self.member)
            .into_iter()
            .map(|(topic, partition)| (topic, partition as i32))
            .collect())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            let partitions: HashMap<String, usize> = state
                .topics
                .iter()
                .map(|(name, parts)| (name.clone(), parts.len()))
                .collect();
            if let Some(group) = state.groups.get_mut(&self.group) {
                group.leave(self.member, &partitions);
            }
        }
        self.shared.notify();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn publishers_wait_while_a_lagging_group_holds_a_full_partition() {
        let bus = MemoryBus::new(1, 16);
        let mut consumer = bus.subscribe("g", &["t".to_owned()]).await.unwrap();
        // The group commits once, so its progress now bounds the topic.
        bus.publish(Record::new("t", "k", vec![0])).await.unwrap();
        let first = consumer.recv().await.unwrap();
        consumer.commit(&[first.next_position()]).await.unwrap();

        for i in 0..16u8 {
            bus.publish(Record::new("t", "k", vec![i])).await.unwrap();
        }
        let blocked = tokio::time::timeout(
            Duration::from_millis(200),
            bus.publish(Record::new("t", "k", vec![99])),
        )
        .await;
        assert!(
            blocked.is_err(),
            "a full partition must make publishers wait"
        );
        assert_eq!(bus.retained("t"), 16);

        let next = consumer.recv().await.unwrap();
        consumer.commit(&[next.next_position()]).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(1),
            bus.publish(Record::new("t", "k", vec![99])),
        )
        .await
        .expect("a commit makes room")
        .unwrap();
    }

    #[tokio::test]
    async fn a_topic_nobody_commits_on_keeps_only_its_latest_records() {
        let bus = MemoryBus::new(1, 16);
        for i in 0..100u8 {
            bus.publish(Record::new("status", "k", vec![i]))
                .await
                .unwrap();
        }
        assert_eq!(bus.retained("status"), 16);
        let mut reader = bus
            .subscribe("reader", &["status".to_owned()])
            .await
            .unwrap();
        let oldest = reader.recv().await.unwrap();
        assert_eq!((oldest.offset, oldest.payload.clone()), (84, vec![84]));
    }
}
