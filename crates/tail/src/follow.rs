//! Reading topics for a tail: a consumer group of its own (`wharf-tail.<id>`)
//! that never commits, starting at the end of each partition or at its
//! beginning.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use wharf_bus::{Bus, CommitOffset, Consumer as _, Delivery, PartitionId, Subscriber as _};

use crate::record::TailedRecord;

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the end of every partition as it is when the tail starts: only
    /// records published from then on.
    End,
    /// At the oldest record the bus retains.
    Beginning,
}

/// What to read and until when.
#[derive(Debug, Clone)]
pub struct FollowPlan {
    /// Full topic names.
    pub topics: Vec<String>,
    /// Patterns of topics to follow as they appear (Kafka regular
    /// expressions, `^…`), beside `topics`: a Socket instance started after
    /// the tail has its deliveries topic followed too. Records of a topic
    /// that did not exist at the start are read from its beginning.
    pub patterns: Vec<String>,
    pub start: Start,
    /// Keep reading new records; otherwise stop once every partition has
    /// been read up to where it ended when the tail started.
    pub follow: bool,
}

/// Without `follow`, reading also stops after this long without a record
/// once partitions are assigned: a partition whose records were all removed
/// by retention ends above its first offset and is never "reached".
const QUIET_END: Duration = Duration::from_secs(5);

/// Reads `plan.topics` and sends every record to `out`, in order per
/// partition. Returns when the plan is done, or when `out` is closed.
pub async fn follow(
    bus: &Bus,
    plan: &FollowPlan,
    out: mpsc::Sender<TailedRecord>,
) -> anyhow::Result<()> {
    if plan.topics.is_empty() && plan.patterns.is_empty() {
        return Ok(());
    }
    let mut ends: HashMap<PartitionId, i64> = HashMap::new();
    for topic in &plan.topics {
        let log_end = bus
            .log_end(topic)
            .await
            .with_context(|| format!("cannot read where {topic} ends"))?;
        for position in log_end {
            ends.insert(
                PartitionId {
                    topic: position.topic,
                    partition: position.partition,
                },
                position.next_offset,
            );
        }
    }
    if !plan.follow && plan.start == Start::End {
        return Ok(()); // nothing was published after the start yet
    }
    let group = format!("wharf-tail.{}", wharf_events::new_id().simple());
    let mut subscription = plan.topics.clone();
    if plan.follow {
        subscription.extend(plan.patterns.iter().cloned());
    }
    let mut consumer = bus
        .subscribe(&group, &subscription)
        .await
        .context("cannot read the topics")?;
    // Partitions still to be read up to their end (without `follow`).
    let mut unread: HashMap<PartitionId, i64> = ends
        .iter()
        .filter(|(_, end)| **end > 0)
        .map(|(partition, end)| (partition.clone(), *end))
        .collect();
    let mut assigned = false;
    loop {
        if !plan.follow && unread.is_empty() {
            return Ok(());
        }
        let next = if plan.follow || !assigned {
            consumer.next().await
        } else {
            match tokio::time::timeout(QUIET_END, consumer.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            }
        };
        match next.context("reading the topics failed")? {
            Delivery::Assigned(assignment) => {
                assigned = true;
                let positions = match plan.start {
                    Start::Beginning => Vec::new(),
                    Start::End => assignment
                        .partitions
                        .iter()
                        .map(|partition| CommitOffset {
                            topic: partition.topic.clone(),
                            partition: partition.partition,
                            next_offset: ends.get(partition).copied().unwrap_or(0),
                        })
                        .collect(),
                };
                assignment.start_at(positions);
            }
            Delivery::Revoked(_) => {}
            Delivery::Message(message) => {
                let partition = PartitionId::of(&message);
                if unread
                    .get(&partition)
                    .is_some_and(|end| message.offset + 1 >= *end)
                {
                    unread.remove(&partition);
                }
                if out.send(message.into()).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
