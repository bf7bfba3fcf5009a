//! A database outage stalls the Receiver but loses nothing: PostgreSQL is
//! stopped for 10 s while frames flow. The Receiver reports not ready, keeps
//! running, and once PostgreSQL is back it catches up with exact counts.
//! Stopped during an outage, it gives up its last write-back after
//! `shutdown_grace` instead of hanging, and the next start replays what it
//! could not write.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wharf_events::Topics;
use wharf_tests::env::free_port;
use wharf_tests::kafka;
use wharf_tests::postgres::PgCluster;
use wharf_tests::process::Service;
use wharf_tests::receiver::wait_owning;
use wharf_tests::workload::CounterWorkload;
use wharf_tests::{http, temp_dir, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn a_ten_second_postgres_outage_loses_nothing() {
    let postgres = PgCluster::start();
    let (dir, prefix, ops, config) = outage_setup(&postgres, "flush_interval = \"200ms\"");
    let topics = Topics::new(&prefix).unwrap();
    let mut receiver = Service::start("wharf-receiver", &config, &dir);
    wait_owning(ops, 4, PATIENCE).await;

    // About 20 s of frames, so they flow before, during and after the outage.
    let workload = CounterWorkload::new(20, 1_000);
    let publishing = {
        let (bus, topic) = (kafka::bus(), topics.device_events());
        let workload = CounterWorkload {
            devices: workload.devices.clone(),
            ..workload
        };
        tokio::spawn(async move {
            workload
                .publish(&bus, &topic, Duration::from_millis(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;

    postgres.stop();
    let stopped = Instant::now();
    let (status, body) = wait_until(
        Duration::from_secs(30),
        "the receiver to report not ready",
        || async {
            http::get(ops, "/readyz")
                .await
                .filter(|(status, _)| *status == 503)
        },
    )
    .await;
    assert_eq!(status, 503);
    assert!(body.contains("receiver"), "{body}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
    assert!(
        receiver.is_running(),
        "the receiver must ride out the outage"
    );
    postgres.resume();

    wait_until(PATIENCE, "the receiver to be ready again", || async {
        http::get(ops, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    publishing.await.unwrap();
    let store = wharf_tests::store_at(&postgres.url()).await;
    workload
        .assert_exact(&store, &format!("{prefix}.receiver"), PATIENCE)
        .await;

    let (_, metrics) = http::get(ops, "/metrics").await.unwrap();
    let failures = http::metric(&metrics, "wharf_receiver_store_failures_total").unwrap_or(0.0);
    assert!(failures > 0.0, "the outage was noticed and retried");
    assert!(receiver.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_stopped_during_an_outage_stops_within_its_grace_and_loses_nothing() {
    let postgres = PgCluster::start();
    // Nothing is written back before the stop: it all rides on the last
    // write-back.
    let (dir, prefix, ops, config) = outage_setup(
        &postgres,
        "flush_interval = \"1h\"\nshutdown_grace = \"2s\"",
    );
    let topics = Topics::new(&prefix).unwrap();
    let mut receiver = Service::start("wharf-receiver", &config, &dir);
    wait_owning(ops, 4, PATIENCE).await;
    let workload = CounterWorkload::new(5, 40);
    workload
        .publish(&kafka::bus(), &topics.device_events(), Duration::ZERO)
        .await;
    wait_until(PATIENCE, "every frame to be applied in memory", || async {
        let (_, metrics) = http::get(ops, "/metrics").await?;
        let applied = http::metric(&metrics, "wharf_receiver_events_applied_total")?;
        (applied >= workload.total() as f64).then_some(())
    })
    .await;

    postgres.stop();
    receiver.signal_stop();
    let status = receiver
        .exited_within(Duration::from_secs(30))
        .expect("the receiver stops within its grace, store or not");
    assert!(
        status.success(),
        "nothing was lost, so the stop is clean: {status}"
    );
    let log = std::fs::read_to_string(dir.join("wharf-receiver.log")).unwrap();
    assert!(
        log.contains("replays the events since the stored offsets"),
        "{log}"
    );

    postgres.resume();
    let _restarted = Service::start_as(
        "wharf-receiver",
        "wharf-receiver-restarted",
        &config,
        &dir,
        &[("WHARF_RECEIVER__FLUSH_INTERVAL", "200ms".into())],
    );
    let store = wharf_tests::store_at(&postgres.url()).await;
    workload
        .assert_exact(&store, &format!("{prefix}.receiver"), PATIENCE)
        .await;
}

/// A directory, topic prefix, ops address and configuration for a Receiver
/// on Kafka storing in `postgres`, with `receiver` settings added.
fn outage_setup(
    postgres: &PgCluster,
    receiver: &str,
) -> (std::path::PathBuf, String, SocketAddr, std::path::PathBuf) {
    let dir = temp_dir("wharf-outage");
    let prefix = unique("outage");
    let ops: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "{bus}\n[store]\nurl = \"{url}\"\nconnect_timeout = \"1s\"\n\n\
             [receiver]\n{receiver}\nops_listen = \"{ops}\"\n",
            bus = kafka::bus_toml(&prefix, 4),
            url = postgres.url(),
        ),
    )
    .unwrap();
    (dir, prefix, ops, config)
}
