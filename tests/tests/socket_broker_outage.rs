//! Acknowledged means durable, across a broker outage: an MQTT device
//! publishes QoS 1 messages while the broker becomes unreachable for eight
//! seconds and comes back. Every message the device got a PUBACK for is in
//! the device-events topic afterwards, and the Socket's memory stayed
//! bounded meanwhile (it stopped reading instead of buffering).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wharf_auth::TokenIssuer;
use wharf_bus::{BusConfig, Consumer as _, KafkaBus, Subscriber as _};
use wharf_events::{Envelope, Event, Topics};
use wharf_tests::broker::FlakyBroker;
use wharf_tests::mqtt::raw;
use wharf_tests::process::Service;
use wharf_tests::socket::SocketPorts;
use wharf_tests::{http, temp_dir, unique, wait_until};

const MESSAGES: u16 = 1_500;
const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_message_survives_a_broker_outage() {
    let mut broker = FlakyBroker::start().await;
    let dir = temp_dir("wharf-outage-socket");
    let prefix = unique("outage");
    let ports = SocketPorts::free();
    let secret = wharf_auth::generate_secret();
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\nurl = \"kafka://{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 2\n\n[auth]\nsecret = \"{secret}\"\n\n{}\n\
             # What piled up during the outage arrives at once: not a rate problem.\n\
             [socket.rate_limit]\nper_second = 100000\nburst = 100000\n",
            broker.brokers(),
            ports.toml("socket-outage")
        ),
    )
    .unwrap();
    let socket = Service::start("wharf-socket", &config, &dir);
    wait_until(PATIENCE, "the socket to be ready", || async {
        http::get(ports.ops, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;

    // A hand-made MQTT 3.1.1 client, so packet ids map one-to-one to messages.
    let device = unique("sensor");
    let token = TokenIssuer::new(&secret)
        .issue(&device, "sensor", Duration::from_secs(3600))
        .unwrap();
    let mut stream = TcpStream::connect(ports.mqtt).await.unwrap();
    stream
        .write_all(&raw::connect_v4(&device, &token, 60, None))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "connected");
    let (mut reader, mut writer) = stream.into_split();

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let reading = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut ack = [0u8; 4];
            while reader.read_exact(&mut ack).await.is_ok() {
                assert_eq!(ack[..2], [0x40, 2], "only PUBACKs come back");
                acked
                    .lock()
                    .unwrap()
                    .insert(u16::from_be_bytes([ack[2], ack[3]]));
            }
        })
    };
    let topic = format!("devices/{device}/telemetry");
    let writing = tokio::spawn(async move {
        for seq in 1..=MESSAGES {
            let payload = format!("{{\"seq\":{seq}}}");
            writer
                .write_all(&raw::publish_v4_qos1(&topic, seq, payload.as_bytes()))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        writer
    });

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = socket.rss_bytes();
    let acked_before = acked.lock().unwrap().len();
    broker.cut();
    let mut peak = before;
    for _ in 0..16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        peak = peak.max(socket.rss_bytes());
    }
    let acked_during = acked.lock().unwrap().len() - acked_before;
    broker.restore().await;

    let _writer = tokio::time::timeout(PATIENCE, writing)
        .await
        .expect("every message sent")
        .unwrap();
    wait_until(PATIENCE, "every message to be acknowledged", || async {
        (acked.lock().unwrap().len() == usize::from(MESSAGES)).then_some(())
    })
    .await;
    reading.abort();
    eprintln!(
        "acked before the outage {acked_before}, during it {acked_during}; RSS {} KiB before, peak {} KiB",
        before / 1024,
        peak / 1024
    );
    assert!(acked_before > 0, "messages flowed before the outage");
    assert!(
        acked_during < 100,
        "nothing is acknowledged while the broker is away ({acked_during})"
    );
    assert!(
        peak.saturating_sub(before) < 32 * 1024 * 1024,
        "memory stayed bounded: {before} → {peak}"
    );

    // Every acknowledged message is in the topic.
    let bus = KafkaBus::connect(&BusConfig {
        url: format!("kafka://{}", broker.brokers()),
        ..BusConfig::default()
    })
    .unwrap();
    let events = Topics::new(&prefix).unwrap().device_events();
    let mut consumer = bus.subscribe_from_start("verify", &[events]).await.unwrap();
    let mut stored = BTreeSet::new();
    while let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(10), consumer.recv()).await
    {
        let envelope = Envelope::from_json(&message.payload).unwrap();
        if let Event::FrameReceived(frame) = envelope.event {
            let seq = frame
                .payload
                .as_object()
                .and_then(|o| o.get("seq")?.as_u64());
            if let Some(seq) = seq {
                stored.insert(seq as u16);
            }
        }
    }
    let acked = acked.lock().unwrap().clone();
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert_eq!(stored.len(), usize::from(MESSAGES));
}
