//! [`MemoryConsumer`]: a member of a consumer group on the in-process bus,
//! reading the partitions the group assigns it, round-robin.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::group::{Group, MemberId, TopicPartition};
use super::journal::{self, Item};
use super::log::Partition;
use super::{Shared, State};
use crate::delivery::{Assigned, Delivery, PartitionId, Revoked};
use crate::error::Error;
use crate::record::{CommitOffset, Message};
use crate::{Consumer, Result};

/// A member of a consumer group on the in-process bus; leaves on drop.
pub struct MemoryConsumer {
    shared: Arc<Shared>,
    changes: watch::Receiver<u64>,
    group: String,
    member: MemberId,
    /// The group version `owned` was computed at.
    seen_version: Option<u64>,
    /// The partitions this member owns and reads.
    owned: Vec<TopicPartition>,
    positions: HashMap<TopicPartition, i64>,
    /// Changes of ownership not handed out yet.
    pending: VecDeque<Delivery>,
    /// Round-robin start, so one busy partition cannot starve the others.
    cursor: usize,
}

impl MemoryConsumer {
    /// `member` of `group`, which has just joined it.
    pub(super) fn new(shared: Arc<Shared>, group: &str, member: MemberId) -> Self {
        MemoryConsumer {
            changes: shared.changes.subscribe(),
            shared,
            group: group.to_owned(),
            member,
            seen_version: None,
            owned: Vec::new(),
            positions: HashMap::new(),
            pending: VecDeque::new(),
            cursor: 0,
        }
    }

    /// The next delivery available now, if any.
    fn poll(&mut self, messages_only: bool) -> Option<Delivery> {
        if let Some(delivery) = self.pending.pop_front() {
            if messages_only {
                self.pending.push_front(delivery);
                return None;
            }
            return Some(delivery);
        }
        let shared = self.shared.clone();
        let mut state = shared.lock();
        let group = state
            .groups
            .get_mut(&self.group)
            .expect("a group exists while it has members");
        if self.seen_version != Some(group.version()) {
            self.seen_version = Some(group.version());
            self.reconcile(group);
            if let Some(delivery) = self.pending.pop_front() {
                if messages_only {
                    self.pending.push_front(delivery);
                    return None;
                }
                return Some(delivery);
            }
        }
        for position in group.take_start_positions(self.member) {
            let tp = (position.topic, position.partition.max(0) as usize);
            let log_end = state
                .topics
                .get(&tp.0)
                .and_then(|parts| parts.get(tp.1))
                .map_or(0, Partition::next_offset);
            if let Some(current) = self.positions.get_mut(&tp) {
                *current = if position.next_offset > log_end {
                    // Out of range, as Kafka says with auto.offset.reset =
                    // earliest: the log was removed or replaced since the
                    // position was stored. Reading it again from its start
                    // skips nothing.
                    tracing::warn!(topic = %tp.0, partition = tp.1, position = position.next_offset, log_end,
                        "a stored position lies past the end of the log; reading the partition from its start");
                    i64::MIN
                } else {
                    position.next_offset
                };
            }
        }
        let count = self.owned.len();
        for step in 0..count {
            let index = (self.cursor + step) % count;
            let tp = &self.owned[index];
            let Some(partition) = state.topics.get(&tp.0).and_then(|parts| parts.get(tp.1)) else {
                continue;
            };
            let position = self
                .positions
                .get_mut(tp)
                .expect("every owned partition has a position");
            if let Some((offset, record)) = partition.read_from(*position) {
                *position = offset + 1;
                self.cursor = index + 1;
                return Some(Delivery::Message(Message {
                    topic: tp.0.clone(),
                    partition: tp.1 as i32,
                    offset,
                    key: Some(record.key.clone()),
                    payload: record.payload.clone(),
                    headers: record.headers.clone(),
                }));
            }
        }
        None
    }

    /// Gives up the partitions no longer targeted at this member and takes
    /// the targeted ones that are free, queueing a `Revoked` and an
    /// `Assigned` for the application.
    fn reconcile(&mut self, group: &mut Group) {
        let target = group.target(self.member);
        let revoked: Vec<TopicPartition> = self
            .owned
            .iter()
            .filter(|tp| !target.contains(tp))
            .cloned()
            .collect();
        self.owned.retain(|tp| target.contains(tp));
        for tp in &revoked {
            self.positions.remove(tp);
        }
        let mut taken = Vec::new();
        for tp in target {
            if !self.owned.contains(&tp) && group.is_free(&tp) {
                group.take(tp.clone(), self.member);
                self.positions
                    .insert(tp.clone(), group.committed(&tp).unwrap_or(i64::MIN));
                self.owned.push(tp.clone());
                taken.push(tp);
            }
        }
        if !revoked.is_empty() {
            let (shared, group_name, member) =
                (self.shared.clone(), self.group.clone(), self.member);
            let ids = partition_ids(&revoked);
            self.pending
                .push_back(Delivery::Revoked(Revoked::new(ids, move || {
                    if let Some(group) = shared.lock().groups.get_mut(&group_name) {
                        group.release(member, &revoked);
                    }
                    shared.notify();
                })));
        }
        if !taken.is_empty() {
            let (shared, group_name, member) =
                (self.shared.clone(), self.group.clone(), self.member);
            self.pending.push_back(Delivery::Assigned(Assigned::new(
                partition_ids(&taken),
                move |positions| {
                    if let Some(group) = shared.lock().groups.get_mut(&group_name) {
                        group.set_start_positions(member, positions);
                    }
                },
            )));
        }
    }
}

fn partition_ids(partitions: &[TopicPartition]) -> Vec<PartitionId> {
    partitions
        .iter()
        .map(|(topic, partition)| PartitionId {
            topic: topic.clone(),
            partition: *partition as i32,
        })
        .collect()
}

impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            self.changes.borrow_and_update();
            if let Some(delivery) = self.poll(false) {
                return Ok(delivery);
            }
            if self.changes.changed().await.is_err() {
                return Err(crate::Error::Closed);
            }
        }
    }

    fn try_next_message(&mut self) -> Result<Option<Message>> {
        Ok(match self.poll(true) {
            Some(Delivery::Message(message)) => Some(message),
            Some(other) => {
                self.pending.push_front(other);
                None
            }
            None => None,
        })
    }

    async fn commit(&mut self, offsets: &[CommitOffset]) -> Result<()> {
        let on_disk = {
            let mut state = self.shared.lock();
            let State {
                groups, journal, ..
            } = &mut *state;
            let group = groups
                .get_mut(&self.group)
                .expect("a group exists while it has members");
            let mut touched = Vec::with_capacity(offsets.len());
            let mut frame = Vec::new();
            for offset in offsets {
                let tp = (offset.topic.clone(), offset.partition.max(0) as usize);
                group.commit(tp.clone(), offset.next_offset);
                if journal.is_some() {
                    journal::encode_commit(
                        &mut frame,
                        &self.group,
                        &tp.0,
                        tp.1 as u32,
                        offset.next_offset,
                    );
                }
                touched.push(tp);
            }
            let on_disk = journal
                .as_ref()
                .filter(|_| !frame.is_empty())
                .map(|journal| {
                    let (done, on_disk) = oneshot::channel();
                    journal.send(Item::Meta {
                        frame,
                        done: Some(done),
                    });
                    on_disk
                });
            for tp in &touched {
                state.truncate(tp);
            }
            on_disk
        };
        self.shared.notify();
        if let Some(on_disk) = on_disk {
            on_disk.await.map_err(|_| Error::Closed)??;
        }
        Ok(())
    }

    fn assignment(&self) -> Result<Vec<PartitionId>> {
        let state = self.shared.lock();
        let group = state
            .groups
            .get(&self.group)
            .expect("a group exists while it has members");
        Ok(partition_ids(&group.owned_by(self.member)))
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            let partitions = state.partition_counts();
            if let Some(group) = state.groups.get_mut(&self.group) {
                group.leave(self.member, &partitions);
            }
        }
        // Undelivered ownership changes call back into the group: only
        // outside the lock, and after leaving, when they change nothing.
        self.pending.clear();
        self.shared.notify();
    }
}
