//! `wharf up` killed with SIGKILL while devices stream, three times, then
//! started again on the same data directory (its default, durable bus):
//!
//! - MQTT devices publish QoS 1 as fast as a 16-message window allows:
//!   every message they got a PUBACK for is applied, exactly once;
//! - a WebSocket and a TCP device stream frames (those transports have no
//!   per-frame acknowledgement): every frame the Receiver had applied before
//!   a kill is still applied after it (nothing rolls back), and no frame is
//!   applied twice.
//!
//! Each message sets its own key in the device's reported state
//! (`{"m<n>": 1}`), so the stored state names exactly which messages were
//! applied; `message_count` equal to the number of keys means none twice.
//!
//! And across a SIGKILL and restart, a deleted device stays refused and a
//! command queued for an offline device is delivered when it connects.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wharf_auth::TokenIssuer;
use wharf_store::Store;
use wharf_tests::api::ApiClient;
use wharf_tests::mqtt::raw;
use wharf_tests::socket::SocketPorts;
use wharf_tests::up::{UpPorts, UpProcess};
use wharf_tests::{WsDevice, temp_dir, wait_until};

const PATIENCE: Duration = Duration::from_secs(90);
const MQTT_DEVICES: usize = 4;
const WINDOW: usize = 16;

/// What one device sent and what was confirmed to it.
#[derive(Default)]
struct Ledger {
    sent: BTreeSet<u64>,
    /// MQTT: PUBACKed. WebSocket and TCP: seen applied in the store before a kill.
    confirmed: BTreeSet<u64>,
}

type Shared = Arc<Mutex<Ledger>>;

/// What every `wharf up` of these scenarios runs with: no rate limit in the
/// way of a device publishing as fast as it can, quick write-backs.
const UP_ENV: &[(&str, &str)] = &[
    ("WHARF_SOCKET__RATE_LIMIT__PER_SECOND", "1000000"),
    ("WHARF_SOCKET__RATE_LIMIT__BURST", "1000000"),
    ("WHARF_RECEIVER__FLUSH_INTERVAL", "200ms"),
    // A key per message: the twins here grow far past the default limits.
    ("WHARF_RECEIVER__TWIN__MAX_KEYS", "10000000"),
    ("WHARF_RECEIVER__TWIN__MAX_BYTES", "1000000000"),
];

#[tokio::test(flavor = "multi_thread")]
async fn wharf_up_killed_mid_stream_keeps_every_acknowledged_message() {
    let data = temp_dir("wharf-up-crash");
    let secret = wharf_auth::generate_secret();
    let issuer = TokenIssuer::new(&secret);
    let token = |device: &str| {
        issuer
            .issue(device, "demo-thermostat", Duration::from_secs(3600))
            .unwrap()
    };
    let all = UpPorts::free();
    let ports = all.socket;
    let mqtt: Vec<(String, Shared)> = (0..MQTT_DEVICES)
        .map(|i| (format!("mqtt-{i}"), Shared::default()))
        .collect();
    let (ws, tcp) = (
        ("ws-0".to_owned(), Shared::default()),
        ("tcp-0".to_owned(), Shared::default()),
    );
    let mut random = wharf_tests::workload::Xorshift::from_clock();
    let mut next_seq = 0u64;

    let store =
        wharf_tests::store_at(&format!("sqlite://{}", data.join("wharf.db").display())).await;
    for kill in 1..=3 {
        let mut up = UpProcess::start(&data, all, &secret, UP_ENV);
        up.ready(PATIENCE).await;
        let mut devices = tokio::task::JoinSet::new();
        for (device, ledger) in &mqtt {
            let (device, token, ledger) = (device.clone(), token(device), ledger.clone());
            let first = next_seq;
            devices.spawn(async move {
                publish_mqtt(ports.mqtt, &device, &token, first, &ledger).await
            });
            next_seq += 1_000_000;
        }
        for (device, ledger, transport) in [(&ws.0, &ws.1, "ws"), (&tcp.0, &tcp.1, "tcp")] {
            let (device, token, ledger) = (device.clone(), token(device), ledger.clone());
            let (first, store) = (next_seq, store.clone());
            next_seq += 1_000_000;
            devices.spawn(async move {
                stream_frames(transport, ports, &device, &token, first, &ledger, &store).await
            });
        }

        let wait = Duration::from_millis(1_500 + random.below(2_500));
        tokio::time::sleep(wait).await;
        up.kill();
        while devices.join_next().await.is_some() {}
        let acked: usize = mqtt
            .iter()
            .map(|(_, l)| l.lock().unwrap().confirmed.len())
            .sum();
        eprintln!("kill {kill} after {wait:?}: {acked} PUBACKs so far");
        assert!(
            acked > 0,
            "no MQTT message was acknowledged before kill {kill}"
        );
    }

    let up = UpProcess::start(&data, all, &secret, UP_ENV);
    up.ready(PATIENCE).await;
    for (device, ledger) in mqtt.iter().chain([&ws, &tcp]) {
        let confirmed = ledger.lock().unwrap().confirmed.clone();
        let applied = wait_until(
            PATIENCE,
            &format!("{device}'s confirmed messages to be applied"),
            || async {
                let row = store.load_device_state(device).await.unwrap()?;
                let applied: BTreeSet<u64> = row
                    .reported
                    .keys()
                    .filter_map(|key| key.strip_prefix('m')?.parse().ok())
                    .collect();
                applied
                    .is_superset(&confirmed)
                    .then_some((applied, row.message_count))
            },
        )
        .await;
        let (applied, count) = applied;
        let ledger = ledger.lock().unwrap();
        assert!(
            applied.is_subset(&ledger.sent),
            "{device}: applied messages it never sent"
        );
        assert_eq!(
            count,
            applied.len() as i64,
            "{device}: {count} frames applied for {} distinct messages: some were applied twice",
            applied.len()
        );
        eprintln!(
            "{device}: sent {}, confirmed {}, applied {} (each once)",
            ledger.sent.len(),
            ledger.confirmed.len(),
            applied.len()
        );
    }
}

/// An MQTT 3.1.1 device publishing QoS 1 with up to [`WINDOW`] messages in
/// flight until its connection breaks; each PUBACK confirms one message.
async fn publish_mqtt(addr: SocketAddr, device: &str, token: &str, first: u64, ledger: &Shared) {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return;
    };
    let topic = format!("devices/{device}/telemetry");
    if stream
        .write_all(&raw::connect_v4(device, token, 60, None))
        .await
        .is_err()
    {
        return;
    }
    let mut connack = [0u8; 4];
    if stream.read_exact(&mut connack).await.is_err() {
        return;
    }
    assert_eq!(connack, [0x20, 2, 0, 0], "{device} is accepted");
    let mut in_flight = std::collections::HashMap::new();
    let mut seq = first;
    loop {
        while in_flight.len() < WINDOW {
            let pkid = (seq % 60_000) as u16 + 1;
            let payload = format!("{{\"m{seq}\":1}}");
            ledger.lock().unwrap().sent.insert(seq);
            if stream
                .write_all(&raw::publish_v4_qos1(&topic, pkid, payload.as_bytes()))
                .await
                .is_err()
            {
                return;
            }
            in_flight.insert(pkid, seq);
            seq += 1;
        }
        let mut puback = [0u8; 4];
        if stream.read_exact(&mut puback).await.is_err() {
            return;
        }
        assert_eq!(puback[..2], [0x40, 2], "{device} reads a PUBACK");
        let pkid = u16::from_be_bytes([puback[2], puback[3]]);
        let acked = in_flight
            .remove(&pkid)
            .expect("a PUBACK for a message in flight");
        ledger.lock().unwrap().confirmed.insert(acked);
    }
}

/// A WebSocket or TCP device streaming frames until its connection breaks.
/// After its first 50 frames it waits until the store shows them applied:
/// those are confirmed, and must survive every later crash.
async fn stream_frames(
    transport: &str,
    ports: SocketPorts,
    device: &str,
    token: &str,
    first: u64,
    ledger: &Shared,
    store: &Store,
) {
    let mut sink = match transport {
        "ws" => {
            let Ok(device) =
                WsDevice::connect(&format!("ws://{}/v1/ws", ports.websocket), token).await
            else {
                return;
            };
            FrameSink::Ws(Box::new(device))
        }
        _ => {
            let Ok(mut stream) = TcpStream::connect(ports.tcp).await else {
                return;
            };
            let mut status = [0u8; 5];
            if write_tcp_frame(&mut stream, token.as_bytes())
                .await
                .is_err()
                || stream.read_exact(&mut status).await.is_err()
            {
                return;
            }
            assert_eq!(status, [0, 0, 0, 1, 0], "{device} is accepted");
            FrameSink::Tcp(stream)
        }
    };
    for seq in first.. {
        let frame = format!("{{\"m{seq}\":1}}");
        ledger.lock().unwrap().sent.insert(seq);
        if sink.send(&frame).await.is_err() {
            return;
        }
        if seq == first + 49 {
            let applied = wait_until(PATIENCE, "the first frames to be applied", || async {
                let row = store.load_device_state(device).await.ok()??;
                row.reported.contains_key(&format!("m{seq}")).then_some(())
            });
            if tokio::time::timeout(Duration::from_secs(20), applied)
                .await
                .is_err()
            {
                return;
            }
            ledger.lock().unwrap().confirmed.extend(first..=seq);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

enum FrameSink {
    Ws(Box<WsDevice>),
    Tcp(TcpStream),
}

impl FrameSink {
    async fn send(&mut self, frame: &str) -> Result<(), ()> {
        match self {
            FrameSink::Ws(device) => device.try_send_text(frame).await.map_err(drop),
            FrameSink::Tcp(stream) => write_tcp_frame(stream, frame.as_bytes())
                .await
                .map_err(drop),
        }
    }
}

async fn write_tcp_frame(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(&(frame.len() as u32).to_be_bytes())
        .await?;
    stream.write_all(frame).await
}

#[tokio::test(flavor = "multi_thread")]
async fn revocations_and_queued_commands_survive_a_crash() {
    let data = temp_dir("wharf-up-restart");
    let secret = wharf_auth::generate_secret();
    let ports = UpPorts::free();
    let mut up = UpProcess::start(&data, ports, &secret, UP_ENV);
    up.ready(PATIENCE).await;
    let key = std::fs::read_to_string(data.join("api-key")).expect("wharf up keeps its API key");
    let api = ApiClient::new(ports.api, key.trim());

    let gone_token = api.register("gone", serde_json::json!({})).await;
    assert_eq!(api.delete("/v1/devices/gone").await.status, 200);
    let later_token = api.register("later", serde_json::json!({})).await;
    let queued = api
        .post(
            "/v1/devices/later/commands/fan",
            &serde_json::json!({"args": {"on": true}}),
        )
        .await;
    assert_eq!(queued.status, 202, "{}", queued.body);
    let command_id = queued.result()["id"].as_str().unwrap().to_owned();
    api.command_with_status(&command_id, "queued", PATIENCE)
        .await;

    up.kill();
    let up = UpProcess::start(&data, ports, &secret, UP_ENV);
    up.ready(PATIENCE).await;

    let ws = format!("ws://{}/v1/ws", ports.socket.websocket);
    assert_eq!(
        WsDevice::refused_status(&ws, &gone_token).await,
        401,
        "a deleted device stays refused after the restart"
    );
    let mut later = WsDevice::connect(&ws, &later_token).await.unwrap();
    let frame: serde_json::Value = serde_json::from_str(&later.next_text(PATIENCE).await).unwrap();
    assert_eq!(frame["cmd"], "fan", "{frame}");
    assert_eq!(frame["id"], command_id.as_str(), "{frame}");
    api.command_with_status(&command_id, "delivered", PATIENCE)
        .await;
    drop(up);
}
