//! Rebalances lose nothing and apply nothing twice. Receivers share the
//! device events of one group; while frames flow a Receiver joins, and one
//! leaves. Each partition's states and offsets are written before it moves,
//! and its next owner resumes there: every count is exact.
//!
//! On Apache Kafka (Receivers as processes) a third Receiver joins two
//! others, then one of the three leaves (SIGTERM: it flushes, commits and
//! leaves the group) and the two that stay take its partitions over. The
//! in-process bus, whose groups follow the same two-step hand-over, runs the
//! same join and leave with three Receivers in one process. Both variants
//! store in PostgreSQL.

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_bus::{Bus, BusHandle, MemoryBus, Publisher as _, TopicSpec};
use wharf_events::Topics;
use wharf_receiver::{Receiver, ReceiverConfig, ReceiverParts, twin_logic};
use wharf_runtime::Reporting;
use wharf_store::{Store, StoreConfig};
use wharf_tests::env::{free_port, postgres_url};
use wharf_tests::kafka;
use wharf_tests::process::Service;
use wharf_tests::receiver::owned_partitions;
use wharf_tests::workload::CounterWorkload;
use wharf_tests::{temp_dir, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(180);
const PARTITIONS: i32 = 6;

#[tokio::test(flavor = "multi_thread")]
async fn receivers_joining_and_leaving_on_kafka_keep_counts_exact() {
    let dir = temp_dir("wharf-rebalance");
    let prefix = unique("rebalance");
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[store]\nurl = \"{}\"\n\n[receiver]\nflush_interval = \"200ms\"\n",
            kafka::bus_toml(&prefix, PARTITIONS),
            postgres_url()
        ),
    )
    .unwrap();
    let ops: Vec<SocketAddr> = (0..3)
        .map(|_| ([127, 0, 0, 1], free_port()).into())
        .collect();
    let start = |i: usize| {
        Service::start_as(
            "wharf-receiver",
            &format!("receiver-{i}"),
            &config,
            &dir,
            &[("WHARF_RECEIVER__OPS_LISTEN", ops[i].to_string())],
        )
    };
    let topics = Topics::new(&prefix).unwrap();
    let bus = kafka::bus();
    bus.ensure_topics(&[TopicSpec::new(topics.device_events(), PARTITIONS)])
        .await
        .unwrap();
    let mut first = start(0);
    let _second = start(1);
    wait_sharing(&ops[..2], "two receivers to share the partitions").await;

    // About 20 s of frames at 4 ms a round: long enough that the join and
    // the leave both happen while frames flow.
    let workload = CounterWorkload::new(20, 4_000);
    let publishing = spawn_publisher(&workload, bus, topics.device_events());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _third = start(2);
    wait_sharing(&ops, "the third receiver to get partitions").await;

    let status = first.terminate();
    assert!(
        status.success(),
        "the leaving receiver stops cleanly: {status}"
    );
    wait_sharing(
        &ops[1..],
        "the two staying receivers to own every partition",
    )
    .await;
    let left_mid_stream = !publishing.is_finished();
    publishing.await.unwrap();
    assert!(
        left_mid_stream,
        "frames stopped flowing before the partitions moved: the scenario needs a longer workload"
    );

    workload
        .assert_exact(&store().await, &format!("{prefix}.receiver"), PATIENCE)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn receivers_joining_and_leaving_on_the_memory_bus_keep_counts_exact() {
    let memory = MemoryBus::new(PARTITIONS as usize, 100_000);
    let prefix = unique("rebalance-mem");
    let bus = BusHandle {
        connection: Bus::Memory(memory.clone()),
        topics: Topics::new(&prefix).unwrap(),
        partitions: PARTITIONS,
    };
    let store = store().await;
    let config = ReceiverConfig {
        flush_interval: Duration::from_millis(200),
        ..ReceiverConfig::default()
    };
    let start = |bus: BusHandle| {
        let (config, store) = (config.clone(), store.clone());
        async move {
            let logic = Box::new(twin_logic(&config, config.check().unwrap()));
            let parts = ReceiverParts { logic, bus, store };
            let receiver = Receiver::bind(config, parts, &mut Reporting::default())
                .await
                .unwrap();
            let stop = CancellationToken::new();
            let task = tokio::spawn(receiver.run(stop.clone()));
            (stop, task)
        }
    };
    let (first_stop, first) = start(bus.clone()).await;
    let (second_stop, second) = start(bus.clone()).await;

    let workload = CounterWorkload::new(20, 2_000);
    let publishing = spawn_publisher(&workload, memory, bus.topics.device_events());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (third_stop, third) = start(bus.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    first_stop.cancel();
    first
        .await
        .unwrap()
        .expect("the leaving receiver stops cleanly");
    publishing.await.unwrap();

    // In-process offsets are stored under the group and the bus's incarnation.
    let incarnation = wharf_bus::Subscriber::incarnation(&bus.connection)
        .unwrap()
        .to_owned();
    workload
        .assert_exact(
            &store,
            &format!("{prefix}.receiver@{incarnation}"),
            PATIENCE,
        )
        .await;
    for (stop, task) in [(second_stop, second), (third_stop, third)] {
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}

/// Waits until the Receivers at `ops` each own partitions and together own
/// all of them.
async fn wait_sharing(ops: &[SocketAddr], what: &str) {
    wait_until(PATIENCE, what, || async {
        let mut owned = Vec::with_capacity(ops.len());
        for addr in ops {
            owned.push(owned_partitions(*addr).await?);
        }
        (owned.iter().all(|n| *n > 0) && owned.iter().sum::<i64>() == i64::from(PARTITIONS))
            .then_some(())
    })
    .await;
}

fn spawn_publisher(
    workload: &CounterWorkload,
    bus: impl wharf_bus::Publisher + 'static,
    topic: String,
) -> tokio::task::JoinHandle<()> {
    let workload = CounterWorkload {
        devices: workload.devices.clone(),
        ..*workload
    };
    tokio::spawn(async move {
        workload
            .publish(&bus, &topic, Duration::from_millis(4))
            .await
    })
}

async fn store() -> Store {
    Store::connect(&StoreConfig {
        url: postgres_url(),
        ..StoreConfig::default()
    })
    .await
    .unwrap()
}
