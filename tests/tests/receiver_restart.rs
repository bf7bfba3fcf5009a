//! The Receiver counts every event exactly once across a crash: 1,000 events
//! for one device flow through Kafka while the Receiver process is killed
//! with SIGKILL part-way and started again; the stored message count ends
//! at exactly 1,000.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use wharf_bus::{Publisher as _, Record, TopicSpec};
use wharf_events::{Envelope, Event, FrameReceived, Payload, Topics};
use wharf_store::{Store, StoreConfig};
use wharf_tests::env::free_port;
use wharf_tests::kafka;
use wharf_tests::process::Service;
use wharf_tests::{http, temp_dir, unique, wait_until};

const EVENTS: i64 = 1_000;
const PATIENCE: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn receiver_counts_each_event_once_across_a_sigkill() {
    let dir = temp_dir("wharf-restart");
    let prefix = unique("restart");
    let ops: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config_path = dir.join("wharf.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"{bus}
[store]
url = "sqlite://{db}"

[receiver]
flush_interval = "100ms"
ops_listen = "{ops}"
"#,
            bus = kafka::bus_toml(&prefix, 4),
            db = dir.join("wharf.db").display(),
        ),
    )
    .unwrap();

    let topics = Topics::new(&prefix).unwrap();
    let bus = kafka::bus();
    bus.ensure_topics(&[TopicSpec::new(topics.device_events(), 4)])
        .await
        .unwrap();

    let mut receiver = Service::start("wharf-receiver", &config_path, &dir);
    wait_ready(ops).await;
    let store = Store::connect(&StoreConfig {
        url: format!("sqlite://{}", dir.join("wharf.db").display()),
        ..StoreConfig::default()
    })
    .await
    .unwrap();
    let device = unique("counter");

    // Events flow at a steady pace so the kill lands in the middle of them.
    let publisher = {
        let (bus, topic, device) = (bus.clone(), topics.device_events(), device.clone());
        tokio::spawn(async move {
            for i in 0..EVENTS {
                let envelope = Envelope::new(
                    &device,
                    "test",
                    Event::FrameReceived(FrameReceived {
                        model: "counter".into(),
                        channel: None,
                        payload: Payload::Json(json!({"i": i})),
                    }),
                );
                bus.publish(Record::event(&topic, &envelope)).await.unwrap();
                if i % 10 == 9 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
        })
    };

    let count = || async { stored_count(&store, &device).await };
    let at_kill = wait_until(PATIENCE, "some events to be stored", || async {
        count().await.filter(|n| *n >= 150)
    })
    .await;
    receiver.kill();
    assert!(
        at_kill < EVENTS,
        "the kill must land part-way, but {at_kill} of {EVENTS} were already stored"
    );

    let mut receiver = Service::start("wharf-receiver", &config_path, &dir);
    wait_ready(ops).await;
    publisher.await.unwrap();

    // Every event consumed and flushed: the stored position of the device's
    // partition reaches the end of it...
    wait_until(
        PATIENCE,
        "every event to be consumed and stored",
        || async {
            let offsets = store
                .load_offsets(&format!("{prefix}.receiver"))
                .await
                .unwrap();
            (offsets.iter().map(|o| o.next_offset).sum::<i64>() == EVENTS).then_some(())
        },
    )
    .await;
    // ...and the count is exact: nothing lost, nothing applied twice.
    assert_eq!(count().await, Some(EVENTS));
    assert!(receiver.is_running(), "{} exited", receiver.name());
    assert_log_free_of_errors(&dir.join("wharf-receiver.log"));
}

async fn stored_count(store: &Store, device: &str) -> Option<i64> {
    store
        .load_device_state(device)
        .await
        .unwrap()
        .map(|row| row.message_count)
}

async fn wait_ready(ops: SocketAddr) {
    wait_until(PATIENCE, "the receiver to be ready", || async {
        http::get(ops, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
}

fn assert_log_free_of_errors(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains("ERROR"),
        "the receiver logged errors:\n{text}"
    );
}
