//! Effectively-once under crashes: 20 devices × 5,000 counter frames flow
//! through Kafka while the Receiver is killed with SIGKILL three times at
//! random moments and restarted. Every device's count ends at exactly 5,000,
//! and the Commander handled each requested command once: replayed requests
//! carry the same ids and are recognised. Run on SQLite and on PostgreSQL.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use wharf_events::{Event, Topics};
use wharf_tests::commander::CommanderPorts;
use wharf_tests::env::{free_port, postgres_url};
use wharf_tests::kafka::{self, TopicReader};
use wharf_tests::process::Service;
use wharf_tests::receiver::wait_owning;
use wharf_tests::workload::{CounterWorkload, Xorshift};
use wharf_tests::{http, temp_dir, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread")]
async fn exact_counts_across_three_sigkills_on_sqlite() {
    let dir = temp_dir("wharf-crash-sqlite");
    let url = format!("sqlite://{}", dir.join("wharf.db").display());
    crash_scenario(&dir, &url).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_counts_across_three_sigkills_on_postgres() {
    let dir = temp_dir("wharf-crash-postgres");
    crash_scenario(&dir, &postgres_url()).await;
}

async fn crash_scenario(dir: &Path, store_url: &str) {
    let prefix = unique("crash");
    let ops: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let commander = CommanderPorts::free();
    let commander_ops = commander.ops;
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            r#"{bus}
[store]
url = "{store_url}"

[auth]
secret = "{secret}"

[receiver]
flush_interval = "200ms"
ops_listen = "{ops}"

[[receiver.rules]]
name = "milestone"
model = "demo-thermostat"
when = {{ field = "milestone", op = "==", value = true }}
command = "fan"
args = {{ on = true }}

{commander}
"#,
            bus = kafka::bus_toml(&prefix, 4),
            commander = commander.toml(),
            secret = wharf_auth::generate_secret(),
        ),
    )
    .unwrap();

    let topics = Topics::new(&prefix).unwrap();
    let bus = kafka::bus();
    let _commander = Service::start("wharf-commander", &config, dir);
    let mut receiver = Service::start("wharf-receiver", &config, dir);
    wait_owning(ops, 4, PATIENCE).await;
    wait_until(PATIENCE, "the commander to be ready", || async {
        http::get(commander_ops, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
    // Subscribed once the Commander created the topic.
    let mut status = TopicReader::new(topics.command_status()).await;

    let workload = CounterWorkload::new(20, 5_000);
    let publishing = {
        let (bus, topic) = (bus.clone(), topics.device_events());
        let workload = CounterWorkload {
            devices: workload.devices.clone(),
            ..workload
        };
        tokio::spawn(async move { workload.publish(&bus, &topic, Duration::ZERO).await })
    };

    // Three SIGKILLs at random moments while the frames flow.
    let mut random = Xorshift::from_clock();
    for kill in 1..=3 {
        let wait = Duration::from_millis(1_500 + random.below(4_000));
        tokio::time::sleep(wait).await;
        receiver.kill();
        eprintln!("kill {kill} after {wait:?}");
        receiver = Service::start("wharf-receiver", &config, dir);
        // Each kill hits a Receiver that owns every partition and is working,
        // not one still joining the group.
        wait_owning(ops, 4, PATIENCE).await;
    }
    publishing.await.unwrap();

    let store = wharf_tests::store_at(store_url).await;
    workload
        .assert_exact(&store, &format!("{prefix}.receiver"), PATIENCE)
        .await;
    assert!(receiver.is_running());

    // Each milestone asked for one command; the Commander handled each once
    // (no device is connected: each is queued for it).
    let mut settled: std::collections::HashMap<uuid::Uuid, usize> = Default::default();
    let expected = workload.milestones() as usize;
    while let Some(envelope) = status
        .next(Duration::from_secs(if settled.len() < expected {
            60
        } else {
            5
        }))
        .await
    {
        let command = match &envelope.event {
            Event::CommandDispatched(e) => e.command_id,
            Event::CommandQueued(e) => e.command_id,
            Event::CommandRejected(e) => e.command_id,
            _ => continue,
        };
        *settled.entry(command).or_default() += 1;
    }
    assert_eq!(settled.len(), expected, "distinct commands");
    let twice: Vec<_> = settled.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "commands handled more than once: {twice:?}"
    );
}
