//! A Receiver that lost its partition while stalled cannot write over the
//! Receiver that took it over.
//!
//! Receiver A's connection to PostgreSQL goes through a proxy the test cuts:
//! A holds unwritten changes and retries its flush, stuck. Receiver B joins
//! the group; A does not answer the rebalance within the group's timeout,
//! so Kafka gives the partition to B, which replays from the stored offsets
//! and stores newer states and offsets. When A's database comes back, its
//! pending flush is stale: the store refuses it (A's claim on the partition
//! was superseded by B's), A drops the partition's actors, and the stored
//! counts and offsets never go back.

use std::net::SocketAddr;
use std::time::Duration;

use wharf_bus::{Publisher as _, TopicSpec};
use wharf_events::Topics;
use wharf_store::Store;
use wharf_tests::env::{free_port, postgres_url};
use wharf_tests::process::Service;
use wharf_tests::proxy::CuttableProxy;
use wharf_tests::receiver::wait_owning;
use wharf_tests::workload::CounterWorkload;
use wharf_tests::{http, kafka, store_at, temp_dir, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_stalled_past_the_group_timeout_cannot_overwrite_its_successor() {
    let dir = temp_dir("wharf-fencing");
    let prefix = unique("fencing");
    let url = postgres_url();
    let mut proxy = CuttableProxy::start(port_of(&url)).await;
    let config = dir.join("wharf.toml");
    // A member that does not answer a rebalance within max.poll.interval.ms
    // is removed from the group (8 s here instead of 5 min).
    std::fs::write(
        &config,
        format!(
            "{}\"max.poll.interval.ms\" = \"8000\"\n\n[store]\nurl = \"{url}\"\n\n\
             [receiver]\nflush_interval = \"100ms\"\n",
            kafka::bus_toml(&prefix, 1),
        ),
    )
    .unwrap();
    let topics = Topics::new(&prefix).unwrap();
    let bus = kafka::bus();
    bus.ensure_topics(&[TopicSpec::new(topics.device_events(), 1)])
        .await
        .unwrap();
    let store = store_at(&url).await;
    let group = format!("{prefix}.receiver");
    let device = unique("fenced");
    let frames = |count| CounterWorkload {
        devices: vec![device.clone()],
        per_device: count,
        milestone_every: 1_000_000,
    };

    let (a_ops, b_ops): (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], free_port()).into(),
        ([127, 0, 0, 1], free_port()).into(),
    );
    let _a = Service::start_as(
        "wharf-receiver",
        "receiver-a",
        &config,
        &dir,
        &[
            ("WHARF_RECEIVER__OPS_LISTEN", a_ops.to_string()),
            ("WHARF_STORE__URL", with_port(&url, proxy.port())),
        ],
    );
    wait_owning(a_ops, 1, PATIENCE).await;
    frames(100)
        .publish(&bus, &topics.device_events(), Duration::ZERO)
        .await;
    wait_stored(&store, &group, &device, 100).await;

    // A loses its database with changes in hand, and stalls in its flush.
    proxy.cut();
    frames(50)
        .publish(&bus, &topics.device_events(), Duration::ZERO)
        .await;
    wait_until(PATIENCE, "receiver A to stall on its flush", || async {
        let (status, _) = http::get(a_ops, "/readyz").await?;
        (status == 503).then_some(())
    })
    .await;

    // B joins; A cannot answer the rebalance and is removed from the group;
    // B takes the partition over and stores past A.
    let _b = Service::start_as(
        "wharf-receiver",
        "receiver-b",
        &config,
        &dir,
        &[("WHARF_RECEIVER__OPS_LISTEN", b_ops.to_string())],
    );
    wait_owning(b_ops, 1, PATIENCE).await;
    wait_stored(&store, &group, &device, 150).await;
    frames(10)
        .publish(&bus, &topics.device_events(), Duration::ZERO)
        .await;
    wait_stored(&store, &group, &device, 160).await;

    // A's database comes back: its stale flush must not land.
    proxy.restore().await;
    wait_until(PATIENCE, "receiver A's flush to be answered", || async {
        let (status, _) = http::get(a_ops, "/readyz").await?;
        (status == 200).then_some(())
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            stored(&store, &group, &device).await,
            (160, 160),
            "receiver A wrote its stale count and offset over receiver B's"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (_, metrics) = http::get(a_ops, "/metrics").await.unwrap();
    assert_eq!(
        http::metric(&metrics, "wharf_receiver_fenced_partitions_total"),
        Some(1.0),
        "receiver A says its write-back was refused"
    );
    let log = std::fs::read_to_string(dir.join("receiver-a.log")).unwrap();
    assert!(
        log.contains("another receiver claimed these partitions"),
        "receiver A says why it drops the partition:\n{log}"
    );

    // Whichever of the two owns the partition now, counting stays exact.
    frames(10)
        .publish(&bus, &topics.device_events(), Duration::ZERO)
        .await;
    wait_stored(&store, &group, &device, 170).await;
}

/// The device's stored count and the group's stored next offset.
async fn stored(store: &Store, group: &str, device: &str) -> (i64, i64) {
    let count = store
        .load_device_state(device)
        .await
        .unwrap()
        .map_or(0, |row| row.message_count);
    let offset = store
        .load_offsets(group)
        .await
        .unwrap()
        .first()
        .map_or(0, |o| o.next_offset);
    (count, offset)
}

/// Waits until the device's count and the group's offset are both `n`.
async fn wait_stored(store: &Store, group: &str, device: &str, n: i64) {
    wait_until(PATIENCE, &format!("{n} frames stored"), || async {
        (stored(store, group, device).await == (n, n)).then_some(())
    })
    .await;
}

/// The port of a `postgres://user@host:port/db` URL.
fn port_of(url: &str) -> u16 {
    let authority = url.split('/').nth(2).expect("a URL with an authority");
    authority
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{url} names its port"))
}

/// `url` with its port replaced by `port`.
fn with_port(url: &str, port: u16) -> String {
    let authority = url.split('/').nth(2).expect("a URL with an authority");
    let (host, _) = authority.rsplit_once(':').expect("a port");
    url.replacen(authority, &format!("{host}:{port}"), 1)
}
