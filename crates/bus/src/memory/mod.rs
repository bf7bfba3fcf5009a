//! The in-process bus: partitioned logs and consumer groups in memory, with
//! Kafka's semantics where the services rely on them (per-key order, group
//! offsets, redelivery of uncommitted records, partitions split between the
//! members of a group). It backs `wharf up` and is held to the same contract
//! tests as Kafka.
//!
//! Two modes. `memory://` ([`MemoryBus::new`]) acknowledges from memory:
//! fast, and whatever consumers had not committed is gone when the process
//! dies. `file://DIR` ([`MemoryBus::open`]) is durable: every record and
//! group commit goes to a [`journal`] under `DIR` first, a record is
//! acknowledged and readable only once it is on disk, and a restart resumes
//! with the same offsets, records and commits.
//!
//! Memory is bounded: a partition retains at most `capacity` records. Records
//! every committing group has consumed are dropped; when a lagging group holds
//! them, publishers wait (backpressure). A topic no group has committed on
//! keeps its latest `capacity` records, like a retention limit; a compacted
//! topic keeps the latest record of each key.
//!
//! Here: the bus and its shared state (topics, groups, the journal);
//! `log`: one partition's records; `group`: who owns which partition;
//! `consumer`: [`MemoryConsumer`], a group member reading its partitions;
//! [`journal`]: the durable mode's files.

mod consumer;
mod group;
pub mod journal;
mod log;

pub use consumer::MemoryConsumer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use std::path::Path;

use tokio::sync::{oneshot, watch};

use crate::error::Error;
use crate::record::{CommitOffset, Record, TopicSpec};
use crate::{Delivered, PendingAck, Publisher, Result, Subscriber};
use group::{Group, MemberId, TopicPartition};
use journal::{Item, Journal, JournalOptions, LiveState, Recovered, Tp};
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
    /// Unique per memory-only bus: offsets stored by consumers of another
    /// instance (an earlier run) point into logs that no longer exist.
    /// `None` for a durable bus, whose logs outlive the process.
    incarnation: Option<String>,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Partition>>,
    groups: HashMap<String, Group>,
    next_member: MemberId,
    /// Where a durable bus writes first; `None` for `memory://`.
    journal: Option<Journal>,
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
                incarnation: Some(new_incarnation()),
            }),
        }
    }

    /// The durable bus journaled under `dir`: reads back what an earlier run
    /// left (cutting a torn last write), then appends to it. Fails when the
    /// directory is damaged or used by another process.
    pub fn open(
        dir: &Path,
        partitions: usize,
        capacity: usize,
        options: JournalOptions,
    ) -> Result<Self> {
        let lock = Journal::lock(dir)?;
        let mut recovered = journal::recover(dir)?;
        if let Some(truncated) = &recovered.truncated {
            tracing::warn!(%truncated, "the bus journal ended in a torn write (a crash mid-write); it was cut, nothing acknowledged was in it");
        }
        let segments = std::mem::take(&mut recovered.segments);
        let state = State::restored(recovered, partitions.max(1));
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changes: watch::channel(0).0,
            default_partitions: partitions.max(1),
            capacity: capacity.max(1),
            incarnation: None,
        });
        let live: std::sync::Weak<dyn LiveState> = Arc::downgrade(&shared) as _;
        let journal = Journal::start(dir, lock, segments, options, live)?;
        shared.lock().journal = Some(journal);
        Ok(MemoryBus { shared })
    }

    /// Whether acknowledged records survive the process (`file://`).
    pub fn is_durable(&self) -> bool {
        self.shared.incarnation.is_none()
    }

    /// The number of records the bus holds for `topic` right now.
    pub fn retained(&self, topic: &str) -> usize {
        self.shared
            .lock()
            .topics
            .get(topic)
            .map_or(0, |parts| parts.iter().map(Partition::len).sum())
    }

    /// The names of the topics the bus holds, sorted.
    pub fn topic_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.shared.lock().topics.keys().cloned().collect();
        names.sort();
        names
    }
}

/// A name no other in-process bus of any run has: the clock and the
/// process id are enough for buses that live as long as a process.
fn new_incarnation() -> String {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("memory-{nanos:x}-{:x}-{count}", std::process::id())
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
    /// still needs; takes it out of `record` on success. On a durable bus,
    /// the receiver resolves once the record is on disk.
    fn try_append(
        &self,
        record: &mut Option<Record>,
    ) -> Option<(Delivered, Option<oneshot::Receiver<Result<()>>>)> {
        let mut state = self.lock();
        let pending = record.as_ref().expect("the record is appended once");
        let count = state
            .topic_mut(&pending.topic, self.default_partitions)
            .len();
        let tp = (pending.topic.clone(), partition_for(&pending.key, count));
        let group_holds_records = state.min_committed(&tp).is_some();
        let State {
            topics, journal, ..
        } = &mut *state;
        let partition = &mut topics.get_mut(&tp.0).expect("created above")[tp.1];
        if partition.len() >= self.capacity && partition.compacted {
            partition.compact();
        }
        if partition.len() >= self.capacity && !group_holds_records {
            // No group commits on this topic: behave like a retention limit.
            partition.drop_oldest();
        }
        if partition.len() >= self.capacity {
            return None;
        }
        let record = record.take().expect("the record is appended once");
        let durable = journal.as_ref().map(|journal| {
            let offset = partition.next_offset();
            let mut frame = Vec::with_capacity(record.payload.len() + record.key.len() + 96);
            journal::encode_record(&mut frame, tp.1 as u32, offset, &record);
            let (ack, acked) = oneshot::channel();
            journal.send(Item::Append {
                frame,
                tp: (tp.0.clone(), tp.1 as u32),
                offset,
                ack,
            });
            acked
        });
        let offset = partition.push(record, durable.is_none());
        Some((
            Delivered {
                partition: tp.1 as i32,
                offset,
            },
            durable,
        ))
    }

    fn notify(&self) {
        self.changes
            .send_modify(|version| *version = version.wrapping_add(1));
    }
}

impl State {
    /// The state a journal describes: its topics with their retained
    /// records and log ends, and its groups' commits.
    fn restored(mut recovered: Recovered, default_partitions: usize) -> State {
        // Records of a topic whose creation frame is missing (written by a
        // version that did not journal topics) still come back.
        let mut layouts = recovered.topics.clone();
        for ((topic, partition), _) in recovered.records.iter() {
            let layout = layouts
                .entry(topic.clone())
                .or_insert((default_partitions as u32, false));
            layout.0 = layout.0.max(partition + 1);
        }
        let mut state = State::default();
        for (topic, (count, compacted)) in layouts {
            let partitions = (0..count)
                .map(|partition| {
                    let tp = (topic.clone(), partition);
                    let records = recovered
                        .records
                        .remove(&tp)
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    let next = recovered.ends.get(&tp).copied().unwrap_or(0);
                    Partition::restored(records, next, compacted)
                })
                .collect();
            state.topics.insert(topic, partitions);
        }
        for (name, commits) in recovered.commits {
            let commits = commits
                .into_iter()
                .map(|((topic, partition), offset)| ((topic, partition as usize), offset))
                .collect();
            state.groups.insert(name, Group::restored(commits));
        }
        let tps: Vec<TopicPartition> = state
            .topics
            .iter()
            .flat_map(|(topic, parts)| (0..parts.len()).map(|p| (topic.clone(), p)))
            .collect();
        for tp in &tps {
            state.truncate(tp);
        }
        state
    }

    fn topic_mut(&mut self, name: &str, partitions: usize) -> &mut Vec<Partition> {
        let State {
            topics, journal, ..
        } = self;
        topics.entry(name.to_owned()).or_insert_with(|| {
            if let Some(journal) = journal {
                let mut frame = Vec::new();
                journal::encode_topic(&mut frame, name, partitions as u32, false);
                journal.send(Item::Meta { frame, done: None });
            }
            (0..partitions).map(|_| Partition::default()).collect()
        })
    }

    /// Marks `name` compacted (journaled once, when it changes).
    fn set_compacted(&mut self, name: &str) {
        let Some(partitions) = self.topics.get_mut(name) else {
            return;
        };
        if partitions.iter().all(|partition| partition.compacted) {
            return;
        }
        for partition in partitions.iter_mut() {
            partition.compacted = true;
        }
        if let Some(journal) = &self.journal {
            let mut frame = Vec::new();
            journal::encode_topic(&mut frame, name, partitions.len() as u32, true);
            journal.send(Item::Meta { frame, done: None });
        }
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

impl LiveState for Shared {
    fn made_durable(&self, ends: &HashMap<Tp, i64>) {
        {
            let mut state = self.lock();
            for ((topic, partition), end) in ends {
                if let Some(partition) = state
                    .topics
                    .get_mut(topic)
                    .and_then(|parts| parts.get_mut(*partition as usize))
                {
                    partition.mark_durable(*end);
                }
            }
        }
        self.notify();
    }

    fn encode_live(&self, out: &mut Vec<u8>) {
        let mut state = self.lock();
        for (topic, partitions) in state.topics.iter_mut() {
            let compacted = partitions.iter().any(|partition| partition.compacted);
            journal::encode_topic(out, topic, partitions.len() as u32, compacted);
            for (index, partition) in partitions.iter_mut().enumerate() {
                if partition.compacted {
                    partition.compact();
                }
                journal::encode_partition_end(out, topic, index as u32, partition.next_offset());
                for (offset, record) in partition.iter() {
                    journal::encode_record(out, index as u32, *offset, record);
                }
            }
        }
        for (name, group) in &state.groups {
            for ((topic, partition), offset) in group.commits() {
                journal::encode_commit(out, name, topic, *partition as u32, offset);
            }
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
            if let Some((delivered, durable)) = shared.try_append(&mut record) {
                return Ok(match durable {
                    None => {
                        shared.notify();
                        PendingAck::ready(Ok(delivered))
                    }
                    // Readers are woken once the journal has it on disk.
                    Some(on_disk) => PendingAck::from_future(async move {
                        on_disk.await.map_err(|_| Error::Closed)??;
                        Ok(delivered)
                    }),
                });
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
            if spec.compacted {
                state.set_compacted(&spec.name);
            }
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
            let partitions = state.partition_counts();
            state
                .groups
                .entry(group.to_owned())
                .or_default()
                .join(member, topics, &partitions);
            member
        };
        self.shared.notify();
        Ok(MemoryConsumer::new(self.shared.clone(), group, member))
    }

    fn incarnation(&self) -> Option<&str> {
        self.shared.incarnation.as_deref()
    }

    async fn log_end(&self, topic: &str) -> Result<Vec<CommitOffset>> {
        let state = self.shared.lock();
        Ok(state
            .topics
            .get(topic)
            .map(|partitions| {
                partitions
                    .iter()
                    .enumerate()
                    .map(|(index, partition)| CommitOffset {
                        topic: topic.to_owned(),
                        partition: index as i32,
                        next_offset: partition.readable_end(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl State {
    fn partition_counts(&self) -> HashMap<String, usize> {
        self.topics
            .iter()
            .map(|(name, parts)| (name.clone(), parts.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Consumer as _;

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
