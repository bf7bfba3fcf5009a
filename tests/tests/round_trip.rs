//! The walking skeleton's round trip, run twice: in one process on the
//! in-process bus (the `wharf up` wiring) and as three separate processes on
//! Kafka. A WebSocket device with a valid token sends `{"temperature": 35}`
//! and receives the demo `fan` command; the device's state row then holds
//! the temperature and the message count; bad tokens get HTTP 401.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wharf_auth::TokenIssuer;
use wharf_bus::kafka::KafkaConsumer;
use wharf_bus::{BusConfig, Consumer as _, KafkaBus, Subscriber as _};
use wharf_cli::embedded::{self, UpSettings};
use wharf_events::{Envelope, Event, Topics};
use wharf_store::{Store, StoreConfig};
use wharf_tests::commander::CommanderPorts;
use wharf_tests::env::{free_port, kafka_brokers};
use wharf_tests::kafka;
use wharf_tests::process::Service;
use wharf_tests::socket::SocketPorts;
use wharf_tests::{WsDevice, http, temp_dir, unique, wait_until};

/// Long enough for a Kafka consumer group to form under a loaded test run;
/// a healthy run is much faster.
const PATIENCE: Duration = Duration::from_secs(120);
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_in_one_process_on_the_memory_bus() {
    let data = temp_dir("wharf-up");
    let mut settings = UpSettings::default();
    settings.use_data_dir(data.clone());
    wharf_tests::socket::on_free_ports(&mut settings.socket);
    settings.up.ops_listen = "127.0.0.1:0".parse().unwrap();
    let shutdown = CancellationToken::new();
    let checked = wharf_runtime::Checked::new(settings).expect("valid settings");
    let wharf = embedded::start(checked, shutdown.clone()).await.unwrap();

    let url = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    round_trip(&url, &wharf.secret, &data.join("wharf.db")).await;
    assert_ops_endpoint(
        wharf.ops_addr,
        &["wharf_socket_", "wharf_receiver_", "wharf_commander_"],
    )
    .await;

    shutdown.cancel();
    wharf.wait().await.expect("wharf up stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trip_as_three_processes_on_kafka() {
    let dir = temp_dir("wharf-processes");
    let secret = wharf_auth::generate_secret();
    let socket = SocketPorts::free();
    let ws = socket.websocket;
    let commander = CommanderPorts::free();
    let ops: Vec<SocketAddr> = vec![socket.ops, free_addr(), commander.ops];
    let prefix = unique("e2e");
    let config = format!(
        r#"{bus}
[store]
url = "sqlite://{db}"

[auth]
secret = "{secret}"

{socket}
[receiver]
flush_interval = "200ms"
ops_listen = "{receiver_ops}"

[[receiver.rules]]
model = "demo-thermostat"
when = {{ field = "temperature", op = ">", value = 30 }}
command = "fan"
args = {{ on = true }}

{commander}
"#,
        bus = kafka::bus_toml(&prefix, 4),
        db = dir.join("wharf.db").display(),
        socket = socket.toml("socket-a"),
        receiver_ops = ops[1],
        commander = commander.toml(),
    );
    let config_path = dir.join("wharf.toml");
    std::fs::write(&config_path, config).unwrap();
    let _services: Vec<Service> = ["wharf-socket", "wharf-receiver", "wharf-commander"]
        .iter()
        .map(|name| Service::start(name, &config_path, &dir))
        .collect();
    for addr in &ops {
        wait_until(PATIENCE, "every service to be ready", || async {
            http::get(*addr, "/readyz")
                .await
                .filter(|(status, _)| *status == 200)
        })
        .await;
    }

    let status = status_reader(&prefix).await;
    let (device, command_id) =
        round_trip(&format!("ws://{ws}/v1/ws"), &secret, &dir.join("wharf.db")).await;
    assert_delivered(status, &command_id).await;
    assert_visible_to_kafka_console_consumer(&prefix, &device, &command_id).await;
    assert_one_trace(&prefix, "socket-a", &device, &command_id).await;
    assert_tail_tells_the_story(&config_path, &command_id).await;
    assert_ops_endpoint(ops[0], &["wharf_socket_frames_received_total"]).await;
    assert_ops_endpoint(ops[1], &["wharf_receiver_events_applied_total"]).await;
    assert_ops_endpoint(ops[2], &["wharf_commander_requests_total"]).await;
}

fn free_addr() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// Runs the round trip; returns the device and the id of the command it received.
async fn round_trip(url: &str, secret: &str, db: &Path) -> (String, String) {
    let device = unique("thermo");
    let issuer = TokenIssuer::new(secret);
    let token = issuer.issue(&device, "demo-thermostat", HOUR).unwrap();

    let mut thermostat = WsDevice::connect(url, &token)
        .await
        .expect("a valid token connects");
    thermostat.send_text(r#"{"temperature": 35}"#).await;
    let command: Value = serde_json::from_str(&thermostat.next_text(PATIENCE).await).unwrap();
    assert_eq!(command["cmd"], json!("fan"), "{command}");
    assert_eq!(command["on"], json!(true), "{command}");
    assert!(
        command["id"].is_string(),
        "the frame carries the command id: {command}"
    );

    let store = Store::connect(&StoreConfig {
        url: format!("sqlite://{}", db.display()),
        ..StoreConfig::default()
    })
    .await
    .unwrap();
    let row = wait_until(
        PATIENCE,
        "the device's state row with its frame",
        || async {
            let row = store.load_device_state(&device).await.unwrap()?;
            (row.message_count > 0).then_some(row)
        },
    )
    .await;
    assert_eq!(row.reported["temperature"], json!(35));
    assert_eq!(row.message_count, 1);
    assert_eq!(row.model, "demo-thermostat");
    thermostat.close().await;

    let forged = TokenIssuer::new("a-secret-wharf-never-configured")
        .issue(&device, "demo-thermostat", HOUR)
        .unwrap();
    assert_eq!(WsDevice::refused_status(url, &forged).await, 401);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expired = issuer
        .issue_at(&device, "demo-thermostat", now - 7200, now - 3600)
        .unwrap();
    assert_eq!(WsDevice::refused_status(url, &expired).await, 401);
    assert_eq!(WsDevice::refused_status(url, "").await, 401);

    // The token may also travel in the query, for clients that cannot set headers.
    let query = WsDevice::connect_url(&format!("{url}?token={token}")).await;
    assert!(query.is_ok(), "?token= is refused: {:?}", query.err());
    (device, command["id"].as_str().unwrap().to_owned())
}

/// An operator tailing the topics with Kafka's own console consumer sees the
/// device's frame and its command's story as JSON envelopes keyed by device.
async fn assert_visible_to_kafka_console_consumer(prefix: &str, device: &str, command_id: &str) {
    let topics = Topics::new(prefix).unwrap();
    let envelopes = |records: Vec<kafka::ConsoleRecord>| -> Vec<Value> {
        records
            .into_iter()
            .filter(|record| record.key == device)
            .map(|record| serde_json::from_str(&record.value).expect("a JSON envelope"))
            .collect()
    };

    let events = envelopes(kafka::console_consume(&topics.device_events(), 5_000).await);
    let frame = events
        .iter()
        .find(|e| e["type"] == "FrameReceived")
        .unwrap_or_else(|| panic!("no FrameReceived of {device} on device-events: {events:?}"));
    assert_eq!(frame["device"], json!(device), "{frame}");
    assert_eq!(
        frame["data"]["payload"]["temperature"],
        json!(35),
        "{frame}"
    );
    assert!(
        frame["id"].is_string() && frame["time"].is_string(),
        "{frame}"
    );

    let statuses = envelopes(kafka::console_consume(&topics.command_status(), 5_000).await);
    let story: Vec<&str> = statuses
        .iter()
        .filter(|e| e["data"]["command_id"] == json!(command_id))
        .filter_map(|e| e["type"].as_str())
        .collect();
    // Queued first when the Commander had not yet seen the device's
    // presence; dispatched and delivered in every case.
    assert!(
        story.ends_with(&["CommandDispatched", "CommandDelivered"])
            && story[..story.len() - 2]
                .iter()
                .all(|t| *t == "CommandQueued"),
        "{story:?} in {statuses:?}"
    );
}

/// The frame, the command the rule asked for, its dispatch and its delivery
/// carry one W3C trace id in their `traceparent` Kafka headers, each event
/// its own span.
async fn assert_one_trace(prefix: &str, socket: &str, device: &str, command_id: &str) {
    let topics = Topics::new(prefix).unwrap();
    let bus = kafka::bus();
    let mut spans = Vec::new();
    for topic in [
        topics.device_events(),
        topics.command_requests(),
        topics.deliveries(socket),
        topics.command_status(),
    ] {
        let mut reader = bus.subscribe_from_start("trace", &[topic]).await.unwrap();
        while let Ok(message) = tokio::time::timeout(Duration::from_secs(3), reader.recv()).await {
            let message = message.unwrap();
            if message.key.as_deref() != Some(device) {
                continue;
            }
            let envelope = Envelope::from_json(&message.payload).unwrap();
            let ours = match &envelope.event {
                Event::FrameReceived(_) => true,
                Event::CommandRequested(_) => envelope.id.to_string() == command_id,
                Event::CommandDispatched(e) => e.command_id.to_string() == command_id,
                Event::CommandDelivered(e) => e.command_id.to_string() == command_id,
                _ => false,
            };
            if ours {
                let header = message
                    .header("traceparent")
                    .unwrap_or_else(|| panic!("{} has no traceparent", envelope.kind()));
                spans.push((envelope.kind(), header.to_owned()));
            }
        }
    }
    let kinds: Vec<&str> = spans.iter().map(|(kind, _)| *kind).collect();
    for kind in [
        "FrameReceived",
        "CommandRequested",
        "CommandDispatched",
        "CommandDelivered",
    ] {
        assert!(kinds.contains(&kind), "no {kind} read: {spans:?}");
    }
    let traces: std::collections::BTreeSet<&str> = spans
        .iter()
        .map(|(_, header)| {
            wharf_events::trace::trace_id(header)
                .unwrap_or_else(|| panic!("{header:?} is not a W3C traceparent"))
        })
        .collect();
    assert_eq!(traces.len(), 1, "one trace across the story: {spans:?}");
    // The dispatch is on the deliveries topic and on command-status: the
    // same event, the same span; every other event a span of its own.
    let span_ids: std::collections::BTreeSet<&str> =
        spans.iter().map(|(_, header)| &header[36..52]).collect();
    assert!(span_ids.len() >= 4, "{spans:?}");
}

/// `wharf tail --correlation <command id>` prints the command's whole story,
/// from the frame that caused it to its delivery.
async fn assert_tail_tells_the_story(config: &Path, command_id: &str) {
    let mut command = std::process::Command::new(wharf_tests::process::binary("wharf"));
    command.args(["tail", "--config"]).arg(config).args([
        "--from-beginning",
        "--no-follow",
        "--output",
        "json",
        "--correlation",
        command_id,
    ]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let kinds: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            Envelope::from_json(line.as_bytes())
                .unwrap()
                .kind()
                .to_owned()
        })
        .collect();
    // In the order it happened (the dispatch is on two topics; queued first
    // when the Commander had not seen the device's presence yet).
    let mut steps = kinds.clone();
    steps.retain(|kind| kind != "CommandQueued");
    steps.dedup();
    assert_eq!(
        steps,
        [
            "FrameReceived",
            "CommandRequested",
            "CommandDispatched",
            "CommandDelivered"
        ],
        "{kinds:?}"
    );
}

/// A consumer of the command-status topic, as an operator tailing it.
async fn status_reader(prefix: &str) -> KafkaConsumer {
    let bus = KafkaBus::connect(&BusConfig {
        url: format!("kafka://{}", kafka_brokers()),
        ..BusConfig::default()
    })
    .unwrap();
    let topic = Topics::new(prefix).unwrap().command_status();
    bus.subscribe_from_start("tail", &[topic]).await.unwrap()
}

/// The command-status topic shows the command dispatched, then delivered.
async fn assert_delivered(mut status: KafkaConsumer, command_id: &str) {
    let mut seen = Vec::new();
    let delivered = tokio::time::timeout(PATIENCE, async {
        loop {
            let message = status.recv().await.unwrap();
            let envelope = Envelope::from_json(&message.payload).unwrap();
            let about_ours = match &envelope.event {
                Event::CommandDispatched(e) => e.command_id.to_string() == command_id,
                Event::CommandDelivered(e) => e.command_id.to_string() == command_id,
                Event::CommandFailed(e) => e.command_id.to_string() == command_id,
                _ => false,
            };
            if about_ours {
                seen.push(envelope.kind());
                if envelope.kind() == "CommandDelivered" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        delivered.is_ok(),
        "no CommandDelivered for {command_id}; saw {seen:?}"
    );
    assert_eq!(seen, ["CommandDispatched", "CommandDelivered"]);
}

async fn assert_ops_endpoint(addr: SocketAddr, expected: &[&str]) {
    let (status, _) = http::get(addr, "/healthz").await.expect("healthz answers");
    assert_eq!(status, 200);
    let (status, body) = http::get(addr, "/readyz").await.expect("readyz answers");
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = http::get(addr, "/metrics").await.expect("metrics answer");
    assert_eq!(status, 200);
    for name in expected {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
}
