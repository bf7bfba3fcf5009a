//! The bus contract, written once and run against every implementation:
//! the in-process bus in memory (`memory://`) and durable on disk
//! (`file://`), and Kafka (Apache Kafka at `KAFKA_BROKERS`; `scripts/test`
//! starts one).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use wharf_bus::{
    BusConfig, CommitOffset, Consumer, Delivery, KafkaBus, MemoryBus, Message, PartitionId,
    Publisher, Record, Subscriber, TopicSpec,
};

/// Long enough for a Kafka rebalance; a healthy run never waits this long.
const PATIENCE: Duration = Duration::from_secs(60);

fn unique(name: &str) -> String {
    format!("contract-{name}-{}", uuid::Uuid::now_v7().simple())
}

async fn publish_numbered<B: Publisher>(bus: &B, topic: &str, keys: &[&str], per_key: usize) {
    let mut acks = Vec::new();
    for i in 0..per_key {
        for key in keys {
            let payload = format!("{key}:{i}").into_bytes();
            let record = Record::new(topic, *key, payload).with_header("type", "Test");
            acks.push(bus.enqueue(record).await.expect("enqueue"));
        }
    }
    for ack in acks {
        ack.await.expect("record acknowledged");
    }
}

async fn recv_n<C: Consumer>(consumer: &mut C, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived", out.len()))
            .expect("recv");
        out.push(message);
    }
    out
}

/// Asserts that nothing more arrives within a short wait.
async fn assert_quiet<C: Consumer>(consumer: &mut C) {
    if let Ok(message) = tokio::time::timeout(Duration::from_secs(3), consumer.recv()).await {
        panic!("unexpected record {message:?}");
    }
}

fn sequence(message: &Message) -> (String, usize) {
    let text = String::from_utf8(message.payload.clone()).unwrap();
    let (key, i) = text.split_once(':').unwrap();
    (key.to_owned(), i.parse().unwrap())
}

pub async fn ordered_per_key<B: Publisher + Subscriber>(bus: B) {
    let topic = unique("order");
    bus.ensure_topics(&[TopicSpec::new(&topic, 4)])
        .await
        .unwrap();
    let keys = ["a", "b", "c", "d", "e"];
    publish_numbered(&bus, &topic, &keys, 100).await;

    let mut consumer = bus.subscribe(&unique("g"), &[topic]).await.unwrap();
    let messages = recv_n(&mut consumer, 500).await;
    let mut next: HashMap<String, usize> = HashMap::new();
    for message in &messages {
        assert_eq!(message.key.as_deref(), Some(sequence(message).0.as_str()));
        assert!(message.headers.contains(&("type".into(), "Test".into())));
        assert_eq!(message.header("type"), Some("Test"));
        assert_eq!(message.header("absent"), None);
        let (key, i) = sequence(message);
        let expected = next.entry(key.clone()).or_default();
        assert_eq!(i, *expected, "key {key} out of order");
        *expected += 1;
    }
    assert!(next.values().all(|n| *n == 100), "{next:?}");
}

pub async fn redelivers_uncommitted_after_restart<B: Publisher + Subscriber>(bus: B) {
    let topic = unique("redeliver");
    let group = unique("g");
    bus.ensure_topics(&[TopicSpec::new(&topic, 2)])
        .await
        .unwrap();
    publish_numbered(&bus, &topic, &["a", "b"], 5).await;

    let mut first = bus
        .subscribe(&group, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let seen = recv_n(&mut first, 10).await;
    drop(first); // crashed before committing

    let mut second = bus.subscribe(&group, &[topic]).await.unwrap();
    let again = recv_n(&mut second, 10).await;
    let ids = |messages: &[Message]| -> HashSet<(i32, i64)> {
        messages.iter().map(|m| (m.partition, m.offset)).collect()
    };
    assert_eq!(
        ids(&seen),
        ids(&again),
        "every uncommitted record comes back"
    );
}

pub async fn no_redelivery_after_commit<B: Publisher + Subscriber>(bus: B) {
    let topic = unique("commit");
    let group = unique("g");
    bus.ensure_topics(&[TopicSpec::new(&topic, 2)])
        .await
        .unwrap();
    publish_numbered(&bus, &topic, &["a", "b"], 5).await;

    let mut first = bus
        .subscribe(&group, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let mut tracker = wharf_bus::OffsetTracker::default();
    for message in recv_n(&mut first, 10).await {
        tracker.consumed(&message);
    }
    first.commit(&tracker.take()).await.unwrap();
    drop(first);

    publish_numbered(&bus, &topic, &["late"], 3).await;
    let mut second = bus.subscribe(&group, &[topic]).await.unwrap();
    let after = recv_n(&mut second, 3).await;
    for message in &after {
        assert_eq!(sequence(message).0, "late", "a committed record came back");
    }
    assert_quiet(&mut second).await;
}

pub async fn group_members_split_partitions<B: Publisher + Subscriber>(bus: B) {
    let topic = unique("split");
    let group = unique("g");
    bus.ensure_topics(&[TopicSpec::new(&topic, 4)])
        .await
        .unwrap();
    let topics = [topic.clone()];
    let mut a = bus.subscribe(&group, &topics).await.unwrap();
    let mut b = bus.subscribe(&group, &topics).await.unwrap();

    // Poll both until the group has settled with the partitions split.
    let settled = tokio::time::timeout(PATIENCE, async {
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(100), a.recv()).await;
            let _ = tokio::time::timeout(Duration::from_millis(100), b.recv()).await;
            let (left, right) = (a.assignment().unwrap(), b.assignment().unwrap());
            if !left.is_empty() && !right.is_empty() && left.len() + right.len() == 4 {
                return (left, right);
            }
        }
    })
    .await
    .expect("the group never split its partitions between two members");
    let (left, right): (HashSet<_>, HashSet<_>) = (
        settled.0.into_iter().collect(),
        settled.1.into_iter().collect(),
    );
    assert!(left.is_disjoint(&right), "{left:?} / {right:?}");

    let keys: Vec<String> = (0..40).map(|i| format!("device-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    publish_numbered(&bus, &topic, &key_refs, 5).await;

    let mut received_a = Vec::new();
    let mut received_b = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while received_a.len() + received_b.len() < 200 {
            tokio::select! {
                m = a.recv() => received_a.push(m.unwrap()),
                m = b.recv() => received_b.push(m.unwrap()),
            }
        }
    })
    .await
    .expect("not every record arrived");
    assert!(!received_a.is_empty() && !received_b.is_empty());
    for m in &received_a {
        assert!(
            left.contains(&PartitionId::of(m)),
            "{m:?} went to the wrong member"
        );
    }
    for m in &received_b {
        assert!(
            right.contains(&PartitionId::of(m)),
            "{m:?} went to the wrong member"
        );
    }
}

pub async fn assigned_partitions_start_where_asked<B: Publisher + Subscriber>(bus: B) {
    let topic = unique("start");
    bus.ensure_topics(&[TopicSpec::new(&topic, 1)])
        .await
        .unwrap();
    publish_numbered(&bus, &topic, &["k"], 10).await;

    let mut consumer = bus
        .subscribe(&unique("g"), std::slice::from_ref(&topic))
        .await
        .unwrap();
    let assigned = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Delivery::Assigned(assigned) = consumer.next().await.unwrap() {
                return assigned;
            }
        }
    })
    .await
    .expect("the partition was assigned");
    assert_eq!(
        assigned.partitions,
        vec![PartitionId {
            topic: topic.clone(),
            partition: 0
        }]
    );
    assigned.start_at(vec![CommitOffset {
        topic: topic.clone(),
        partition: 0,
        next_offset: 7,
    }]);
    let rest = recv_n(&mut consumer, 3).await;
    let offsets: Vec<i64> = rest.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, vec![7, 8, 9]);
}

pub async fn revoked_partitions_move_only_after_release<B: Publisher + Subscriber>(bus: B)
where
    B::Consumer: 'static,
{
    let topic = unique("handover");
    let group = unique("g");
    bus.ensure_topics(&[TopicSpec::new(&topic, 2)])
        .await
        .unwrap();
    let topics = [topic.clone()];
    let keys: Vec<String> = (0..20).map(|i| format!("device-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();

    // A reads and commits 20 records, then reads 20 more without committing.
    publish_numbered(&bus, &topic, &key_refs, 1).await;
    let mut a = bus.subscribe(&group, &topics).await.unwrap();
    let mut tracker = wharf_bus::OffsetTracker::default();
    for message in recv_n(&mut a, 20).await {
        tracker.consumed(&message);
    }
    a.commit(&tracker.take()).await.unwrap();
    publish_numbered(&bus, &topic, &key_refs, 1).await;
    let uncommitted = recv_n(&mut a, 20).await;

    // B joins; it reports its partitions and records from a background task.
    let mut b = bus.subscribe(&group, &topics).await.unwrap();
    let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel();
    let b_task = tokio::spawn(async move {
        while let Ok(delivery) = b.next().await {
            let report = match delivery {
                Delivery::Message(message) => Ok(message),
                Delivery::Assigned(assigned) => Err(assigned.partitions.clone()),
                Delivery::Revoked(_) => continue,
            };
            if b_tx.send((report, std::time::Instant::now())).is_err() {
                return;
            }
        }
    });

    // A's partitions are revoked; while A holds on, B reads nothing, though
    // uncommitted records wait on them.
    let revoked = tokio::time::timeout(PATIENCE, async {
        loop {
            match a.next().await.unwrap() {
                Delivery::Revoked(revoked) => return revoked,
                Delivery::Message(message) => panic!("A read {message:?} twice"),
                Delivery::Assigned(_) => {}
            }
        }
    })
    .await
    .expect("A lost partitions to B");
    tokio::time::sleep(Duration::from_secs(2)).await;
    while let Ok((report, _)) = b_rx.try_recv() {
        assert!(
            report.is_err(),
            "B read a partition A still held: {report:?}"
        );
    }
    let released = std::time::Instant::now();
    drop(revoked);

    // Then B reads the uncommitted records of the partitions it got.
    let mut owned: HashSet<PartitionId> = HashSet::new();
    let mut read = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let expected = uncommitted
                .iter()
                .filter(|m| owned.contains(&PartitionId::of(m)))
                .count();
            if !owned.is_empty() && read.len() == expected {
                return;
            }
            let (report, at) = b_rx.recv().await.expect("B keeps reading");
            match report {
                Ok(message) => {
                    assert!(at >= released, "B read before A released");
                    read.push(message);
                }
                Err(partitions) => owned.extend(partitions),
            }
        }
    })
    .await
    .expect("B got partitions and read their uncommitted records");
    let mut redelivered: Vec<(i32, i64)> = read.iter().map(|m| (m.partition, m.offset)).collect();
    let mut expected: Vec<(i32, i64)> = uncommitted
        .iter()
        .filter(|m| owned.contains(&PartitionId::of(m)))
        .map(|m| (m.partition, m.offset))
        .collect();
    redelivered.sort();
    expected.sort();
    assert_eq!(redelivered, expected);
    b_task.abort();
}

/// The log end counts every acknowledged record, partition by partition.
pub async fn log_end_counts_what_was_written<B: Publisher + Subscriber>(bus: B) {
    let topic = unique("end");
    bus.ensure_topics(&[TopicSpec::new(&topic, 2)])
        .await
        .unwrap();
    let empty = bus.log_end(&topic).await.unwrap();
    assert_eq!(empty.len(), 2, "{empty:?}");
    assert!(empty.iter().all(|end| end.next_offset == 0), "{empty:?}");
    publish_numbered(&bus, &topic, &["a", "b", "c"], 4).await;
    let ends = bus.log_end(&topic).await.unwrap();
    assert_eq!(
        ends.iter().map(|end| end.next_offset).sum::<i64>(),
        12,
        "{ends:?}"
    );
}

fn durable_bus() -> MemoryBus {
    let dir = std::env::temp_dir().join(unique("journal"));
    MemoryBus::open(&dir, 4, 10_000, Default::default()).expect("a durable bus")
}

fn kafka_bus() -> KafkaBus {
    let brokers = std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS is not set: run scripts/test, which starts Apache Kafka");
    KafkaBus::connect(&BusConfig {
        url: format!("kafka://{brokers}"),
        ..BusConfig::default()
    })
    .expect("kafka bus")
}

macro_rules! contract {
    ($name:ident, $bus:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            async fn log_end_counts_what_was_written() {
                super::log_end_counts_what_was_written($bus).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn ordered_per_key() {
                super::ordered_per_key($bus).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn redelivers_uncommitted_after_restart() {
                super::redelivers_uncommitted_after_restart($bus).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn no_redelivery_after_commit() {
                super::no_redelivery_after_commit($bus).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn group_members_split_partitions() {
                super::group_members_split_partitions($bus).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn assigned_partitions_start_where_asked() {
                super::assigned_partitions_start_where_asked($bus).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn revoked_partitions_move_only_after_release() {
                super::revoked_partitions_move_only_after_release($bus).await;
            }
        }
    };
}

contract!(memory, MemoryBus::new(4, 10_000));
contract!(durable, durable_bus());
contract!(kafka, kafka_bus());
