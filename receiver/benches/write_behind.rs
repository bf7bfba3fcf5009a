//! Receiver benchmarks, recorded in docs/BENCHMARKS.md:
//!
//! 1. events/s per core with write-behind, on the in-process bus;
//! 2. the same workload with a database write per event (the naive design);
//! 3. database statements per 1,000 events at several rates across 10k devices;
//! 4. memory per resident device actor.
//!
//! `cargo bench -p wharf-receiver --bench write_behind [-- --store URL]`
//! (default store: SQLite in a temporary directory).

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use wharf_bus::{Bus, BusHandle, MemoryBus, Publisher as _, Record};
use wharf_events::{Envelope, Event, FrameReceived, Payload, Topics};
use wharf_receiver::{Receiver, ReceiverConfig, ReceiverParts, twin_logic};
use wharf_runtime::Reporting;
use wharf_store::{Store, StoreConfig};

const PARTITIONS: usize = 8;

fn main() {
    let store_url = std::env::args()
        .skip_while(|arg| arg != "--store")
        .nth(1)
        .unwrap_or_else(|| {
            let dir = std::env::temp_dir().join(format!("wharf-bench-{}", std::process::id()));
            format!("sqlite://{}/bench.db", dir.display())
        });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(store_url));
}

async fn run(store_url: String) {
    let store = Store::connect(&StoreConfig {
        url: store_url.clone(),
        max_connections: 4,
        ..StoreConfig::default()
    })
    .await
    .expect("the store");
    println!("store: {}", wharf_store::redact(&store_url));
    println!(
        "machine: {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let fast = throughput(&store, 1_000_000, 10_000, usize::MAX).await;
    let naive = throughput(&store, 5_000, 10_000, 1).await;
    println!();
    println!("| design | events | wall time | events/s | CPU time | events/s per core |");
    println!("|---|---|---|---|---|---|");
    for (name, run) in [
        ("write-behind (1 s flush)", &fast),
        ("write per event", &naive),
    ] {
        println!(
            "| {name} | {} | {:.2} s | {:.0} | {:.2} s | {:.0} |",
            run.events,
            run.wall.as_secs_f64(),
            run.events as f64 / run.wall.as_secs_f64(),
            run.cpu.as_secs_f64(),
            run.events as f64 / run.cpu.as_secs_f64(),
        );
    }
    println!(
        "\nwrite-behind vs write per event: {:.0}x events/s, {:.0}x events/s per core",
        (fast.events as f64 / fast.wall.as_secs_f64())
            / (naive.events as f64 / naive.wall.as_secs_f64()),
        (fast.events as f64 / fast.cpu.as_secs_f64())
            / (naive.events as f64 / naive.cpu.as_secs_f64()),
    );

    println!("\n| rate (events/s) | devices | events | statements | statements per 1,000 events |");
    println!("|---|---|---|---|---|");
    for (rate, seconds) in [(1_000, 10), (10_000, 10), (100_000, 5)] {
        let (events, statements) = statements_at(&store, rate, seconds, 10_000).await;
        println!(
            "| {rate} | 10,000 | {events} | {statements} | {:.1} |",
            statements as f64 * 1000.0 / events as f64
        );
    }

    let (actors, bytes) = memory_per_actor(&store, 100_000).await;
    println!(
        "\nmemory per resident actor: {:.0} bytes ({actors} actors, RSS grew {:.1} MiB)",
        bytes as f64 / actors as f64,
        bytes as f64 / (1024.0 * 1024.0)
    );
}

struct Run {
    events: usize,
    wall: Duration,
    cpu: Duration,
}

/// A fresh in-process bus holding `capacity` records per partition, and a
/// topic layout of its own.
fn bus(capacity: usize) -> (MemoryBus, Topics) {
    let memory = MemoryBus::new(PARTITIONS, capacity);
    let topics = Topics::new(&format!("bench{}", wharf_events::new_id().simple())).unwrap();
    (memory, topics)
}

/// Starts a Receiver on `memory`; it stops with the returned token.
async fn start(
    store: &Store,
    memory: &MemoryBus,
    topics: &Topics,
    flush_max_dirty: usize,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let config = ReceiverConfig {
        flush_max_dirty,
        // A write per event means one event per batch too.
        batch_size: if flush_max_dirty == 1 { 1 } else { 512 },
        ..ReceiverConfig::default()
    };
    let parts = ReceiverParts {
        logic: Box::new(twin_logic(&config, config.check().unwrap())),
        bus: BusHandle {
            connection: Bus::Memory(memory.clone()),
            topics: topics.clone(),
            partitions: PARTITIONS as i32,
        },
        store: store.clone(),
    };
    let receiver = Receiver::bind(config.clone(), parts, &mut Reporting::default())
        .await
        .expect("a receiver");
    let stop = CancellationToken::new();
    let task = tokio::spawn(receiver.run(stop.clone()));
    (stop, task)
}

/// Publishes a frame of `device` to `topic`.
async fn publish(memory: &MemoryBus, topic: &str, device: &str, n: usize) {
    let mut record = frame(device, n);
    record.topic = topic.to_owned();
    memory.publish(record).await.unwrap();
}

/// Waits until everything published to `topic` is consumed and committed:
/// the bus then retains nothing.
async fn drained(memory: &MemoryBus, topic: &str) {
    while memory.retained(topic) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn frame(device: &str, n: usize) -> Record {
    let envelope = Envelope::new(
        device,
        "bench",
        Event::FrameReceived(FrameReceived {
            model: "bench-sensor".into(),
            channel: None,
            payload: Payload::Json(json!({"temperature": 20 + n % 10, "n": n})),
        }),
    );
    Record::event("", &envelope)
}

/// Publishes `events` frames over `devices` devices, then lets a Receiver
/// consume them all and write them back.
async fn throughput(store: &Store, events: usize, devices: usize, flush_max_dirty: usize) -> Run {
    let (memory, topics) = bus(events);
    let topic = topics.device_events();
    let names: Vec<String> = (0..devices)
        .map(|i| format!("sensor-{i:05}-{}", topics.prefix()))
        .collect();
    for n in 0..events {
        publish(&memory, &topic, &names[n % devices], n).await;
    }
    let (wall_start, cpu_start) = (Instant::now(), wharf_runtime::process::cpu_time(None));
    let (stop, task) = start(store, &memory, &topics, flush_max_dirty).await;
    drained(&memory, &topic).await;
    let run = Run {
        events,
        wall: wall_start.elapsed(),
        cpu: wharf_runtime::process::cpu_time(None) - cpu_start,
    };
    stop.cancel();
    task.await.unwrap().unwrap();
    run
}

/// Publishes at `rate` events/s for `seconds` over `devices` devices while a
/// Receiver runs; returns the events and the statements the store received
/// meanwhile (and until they are all written back).
async fn statements_at(store: &Store, rate: usize, seconds: u64, devices: usize) -> (usize, u64) {
    let (memory, topics) = bus(1_000_000);
    let topic = topics.device_events();
    let names: Vec<String> = (0..devices)
        .map(|i| format!("s-{i:05}-{}", topics.prefix()))
        .collect();
    let (stop, task) = start(store, &memory, &topics, 10_000).await;
    // Every device's actor resident first: this measures the steady state,
    // not the one-off loads of devices seen for the first time.
    for (n, device) in names.iter().enumerate() {
        publish(&memory, &topic, device, n).await;
    }
    drained(&memory, &topic).await;
    let before = store.statements();
    let per_tick = rate / 100;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0;
    for _ in 0..seconds * 100 {
        interval.tick().await;
        for _ in 0..per_tick {
            // A cheap spread over the devices.
            publish(&memory, &topic, &names[(n * 7919) % devices], n).await;
            n += 1;
        }
    }
    drained(&memory, &topic).await;
    let statements = store.statements() - before;
    stop.cancel();
    task.await.unwrap().unwrap();
    (n, statements)
}

/// Makes `devices` actors resident and measures how much the process grew.
async fn memory_per_actor(store: &Store, devices: usize) -> (usize, u64) {
    let (memory, topics) = bus(devices);
    let topic = topics.device_events();
    let (stop, task) = start(store, &memory, &topics, 10_000).await;
    // Warm the allocator and the runtime with other devices first.
    for n in 0..1_000 {
        publish(&memory, &topic, &format!("warm-{n}-{}", topics.prefix()), n).await;
    }
    drained(&memory, &topic).await;
    let before = wharf_runtime::process::resident_bytes(None);
    for n in 0..devices {
        publish(
            &memory,
            &topic,
            &format!("resident-{n:06}-{}", topics.prefix()),
            n,
        )
        .await;
    }
    drained(&memory, &topic).await;
    let grown = wharf_runtime::process::resident_bytes(None).saturating_sub(before);
    stop.cancel();
    task.await.unwrap().unwrap();
    (devices, grown)
}
