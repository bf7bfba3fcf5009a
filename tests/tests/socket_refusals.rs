//! What a device sees when the Socket refuses it, per transport: bad tokens,
//! publishing or subscribing outside its topics, oversized frames, a
//! handshake that never completes, the rate limit, and a second connection
//! taking over the first.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use wharf_tests::mqtt::{Flavor, MqttDevice, Seen, raw};
use wharf_tests::wharf::TestWharf;
use wharf_tests::{WsDevice, http, unique};

const PATIENCE: Duration = Duration::from_secs(30);

async fn tcp_status_after(stream: &mut TcpStream, first_frame: &[u8]) -> Vec<u8> {
    stream.write_u32(first_frame.len() as u32).await.unwrap();
    stream.write_all(first_frame).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest))
        .await
        .expect("the socket answered and closed")
        .unwrap();
    rest
}

async fn metric(wharf: &TestWharf, series: &str) -> f64 {
    let (_, metrics) = http::get(wharf.ops(), "/metrics").await.unwrap();
    metrics
        .lines()
        .filter(|line| line.starts_with(series))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_tokens_are_refused_on_every_transport() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let forged = wharf.forged_token(&device);

    let ws = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    assert_eq!(WsDevice::refused_status(&ws, &forged).await, 401);

    for flavor in [Flavor::V4, Flavor::V5] {
        let refused =
            MqttDevice::connect(flavor, wharf.addresses.mqtt.unwrap(), &device, &forged).await;
        let error = refused.err().expect("a forged token is refused");
        assert!(error.contains("NotAuthorized"), "{flavor:?}: {error}");
    }
    // A valid token of another device is refused too.
    let other = wharf.token("someone-else");
    let refused =
        MqttDevice::connect(Flavor::V5, wharf.addresses.mqtt.unwrap(), &device, &other).await;
    assert!(refused.err().unwrap().contains("NotAuthorized"));

    let mut stream = TcpStream::connect(wharf.addresses.tcp.unwrap())
        .await
        .unwrap();
    assert_eq!(
        tcp_status_after(&mut stream, forged.as_bytes()).await,
        vec![0, 0, 0, 1, 1],
        "status 1 then close"
    );

    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(wharf.addresses.udp.unwrap()).await.unwrap();
    udp.send(format!("HELLO {forged}").as_bytes())
        .await
        .unwrap();
    let mut buf = [0; 64];
    let n = tokio::time::timeout(PATIENCE, udp.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"UNAUTHORIZED");

    assert!(metric(&wharf, "wharf_socket_auth_failures_total").await >= 6.0);
    wharf.stop().await;
}

/// A session holds at most `socket.mqtt.max_subscriptions` (8) filters: a
/// filter subscribed again counts once, one more is refused "quota exceeded".
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_subscriptions_are_deduplicated_and_capped() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let mut v5 = MqttDevice::connect(
        Flavor::V5,
        wharf.addresses.mqtt.unwrap(),
        &device,
        &wharf.token(&device),
    )
    .await
    .unwrap();
    let mut subscribe = async |filter: String| {
        v5.subscribe(&filter).await;
        v5.next(PATIENCE, |seen| match seen {
            Seen::SubAck(codes) => Some(codes),
            _ => None,
        })
        .await
    };
    for _ in 0..3 {
        let codes = subscribe(format!("devices/{device}/commands/#")).await;
        assert_eq!(codes, vec![0x01], "the same filter again is granted");
    }
    for i in 0..7 {
        let codes = subscribe(format!("devices/{device}/commands/c{i}")).await;
        assert_eq!(codes, vec![0x01], "filter {} of 8", i + 2);
    }
    let codes = subscribe(format!("devices/{device}/commands/c7")).await;
    assert_eq!(codes, vec![0x97], "the 9th filter exceeds the quota");
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_cannot_use_other_devices_topics() {
    let wharf = TestWharf::start(|_| {}).await;
    let mqtt = wharf.addresses.mqtt.unwrap();

    // MQTT 5: refused with 0x87, the connection stays.
    let device = unique("thermo");
    let mut v5 = MqttDevice::connect(Flavor::V5, mqtt, &device, &wharf.token(&device))
        .await
        .unwrap();
    v5.subscribe("devices/someone-else/commands/#").await;
    let codes = v5
        .next(PATIENCE, |seen| match seen {
            Seen::SubAck(codes) => Some(codes),
            _ => None,
        })
        .await;
    assert_eq!(codes, vec![0x87]);
    v5.publish(
        "devices/someone-else/telemetry",
        br#"{"temperature": 99}"#,
        1,
    )
    .await;
    let reason = v5
        .next(PATIENCE, |seen| match seen {
            Seen::PubAck(_, reason) => Some(reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, 0x87);
    v5.publish(
        &format!("devices/{device}/telemetry"),
        br#"{"temperature": 21}"#,
        1,
    )
    .await;
    assert_eq!(
        v5.next(PATIENCE, |seen| match seen {
            Seen::PubAck(_, reason) => Some(reason),
            _ => None,
        })
        .await,
        0
    );
    let state = wharf.state_after(&device, 1).await;
    assert_eq!(
        state.message_count, 1,
        "the refused publish was not applied"
    );
    assert_eq!(state.reported["temperature"], 21);

    // MQTT 3.1.1: SUBACK failure 0x80; a publish outside closes the connection.
    let device = unique("thermo");
    let mut v4 = MqttDevice::connect(Flavor::V4, mqtt, &device, &wharf.token(&device))
        .await
        .unwrap();
    v4.subscribe("devices/someone-else/commands/#").await;
    let codes = v4
        .next(PATIENCE, |seen| match seen {
            Seen::SubAck(codes) => Some(codes),
            _ => None,
        })
        .await;
    assert_eq!(codes, vec![0x80]);
    v4.publish("devices/someone-else/telemetry", b"{}", 1).await;
    v4.next(PATIENCE, |seen| {
        matches!(seen, Seen::Closed(_)).then_some(())
    })
    .await;

    assert_eq!(metric(&wharf, "wharf_socket_acl_denied_total").await, 4.0);
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_frames_close_the_connection_with_a_reason() {
    let wharf = TestWharf::start(|settings| settings.socket.max_frame_bytes = 1024).await;
    let big = vec![b'x'; 4096];

    let device = unique("thermo");
    let ws = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    let mut client = WsDevice::connect(&ws, &wharf.token(&device)).await.unwrap();
    client.send_binary(big.clone()).await;
    let (code, reason) = client.closed(PATIENCE).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("max_frame_bytes (1024)"), "{reason}");

    // The CONNACK tells MQTT 5 clients the maximum packet size, so rumqttc
    // would refuse to send this; a hand-made client sends it anyway.
    let device = unique("thermo");
    let mut raw = raw::open_v5(
        wharf.addresses.mqtt.unwrap(),
        &device,
        &wharf.token(&device),
    )
    .await;
    raw.write_all(&raw::publish_v5(
        &format!("devices/{device}/telemetry"),
        0,
        0,
        &big,
    ))
    .await
    .unwrap();
    assert_eq!(
        raw::disconnect_reason(&mut raw, PATIENCE).await,
        0x95,
        "packet too large"
    );

    let device = unique("thermo");
    let mut stream = TcpStream::connect(wharf.addresses.tcp.unwrap())
        .await
        .unwrap();
    stream
        .write_u32(wharf.token(&device).len() as u32)
        .await
        .unwrap();
    stream
        .write_all(wharf.token(&device).as_bytes())
        .await
        .unwrap();
    assert_eq!(
        tcp_status_after(&mut stream, &big).await,
        vec![0, 0, 0, 1, 0, 0, 0, 0, 1, 2],
        "ok, then status 2"
    );

    assert_eq!(
        metric(
            &wharf,
            "wharf_socket_frames_dropped_total{reason=\"oversized\"}"
        )
        .await,
        3.0
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_that_never_completes_is_dropped() {
    let wharf =
        TestWharf::start(|settings| settings.socket.handshake_timeout = Duration::from_millis(500))
            .await;
    for addr in [
        wharf.addresses.websocket,
        wharf.addresses.mqtt,
        wharf.addresses.tcp,
    ] {
        // Connect, then say nothing (or, slowloris-style, very little).
        let mut stream = TcpStream::connect(addr.unwrap()).await.unwrap();
        stream.write_all(b"G").await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "{addr:?} kept a silent connection open");
    }
    let timeouts = metric(&wharf, "wharf_socket_handshake_failures_total").await;
    assert_eq!(timeouts, 3.0);
    wharf.stop().await;
}

/// Before authenticating, a peer may send at most 8 KiB: a TCP token frame
/// or an MQTT CONNECT announcing more is refused at once, before its bytes
/// arrive (and nothing is reserved for them), however large
/// `max_frame_bytes` is.
#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_peer_cannot_announce_a_large_frame() {
    let wharf = TestWharf::start(|settings| {
        settings.socket.max_frame_bytes = 1 << 20;
        settings.socket.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    // TCP: a token frame of 100 KB announced, 10 bytes sent.
    let mut tcp = TcpStream::connect(wharf.addresses.tcp.unwrap())
        .await
        .unwrap();
    tcp.write_u32(100_000).await.unwrap();
    tcp.write_all(b"0123456789").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("refused at once, not at the handshake timeout")
        .unwrap();
    assert_eq!(answer, [0, 0, 0, 1, 2], "status 2: frame too large");

    // MQTT: a CONNECT whose remaining length says 100 KB.
    let mut mqtt = TcpStream::connect(wharf.addresses.mqtt.unwrap())
        .await
        .unwrap();
    let mut connect = vec![0x10, 0xa0, 0x8d, 0x06]; // remaining length 100,000
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60]);
    mqtt.write_all(&connect).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), mqtt.read_to_end(&mut rest))
        .await
        .expect("refused at once, not at the handshake timeout")
        .ok();

    assert_eq!(
        metric(
            &wharf,
            "wharf_socket_handshake_failures_total{transport=\"tcp\",reason=\"too_large\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &wharf,
            "wharf_socket_handshake_failures_total{transport=\"mqtt\",reason=\"too_large\"}"
        )
        .await,
        1.0
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_over_the_rate_limit_are_cut_off() {
    let wharf = TestWharf::start(|settings| {
        settings.socket.rate_limit.per_second = 5;
        settings.socket.rate_limit.burst = 5;
    })
    .await;

    let device = unique("thermo");
    let ws = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    let mut client = WsDevice::connect(&ws, &wharf.token(&device)).await.unwrap();
    for _ in 0..20 {
        client.send_text(r#"{"temperature": 20}"#).await;
    }
    let (code, reason) = client.closed(PATIENCE).await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded"));

    let device = unique("thermo");
    let mut raw = raw::open_v5(
        wharf.addresses.mqtt.unwrap(),
        &device,
        &wharf.token(&device),
    )
    .await;
    for _ in 0..20 {
        raw.write_all(&raw::publish_v5(
            &format!("devices/{device}/telemetry"),
            0,
            0,
            b"{}",
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        raw::disconnect_reason(&mut raw, PATIENCE).await,
        0x96,
        "message rate too high"
    );

    // UDP drops what is over the rate, and the session lives on.
    let device = unique("thermo");
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(wharf.addresses.udp.unwrap()).await.unwrap();
    udp.send(format!("HELLO {}", wharf.token(&device)).as_bytes())
        .await
        .unwrap();
    let mut session = [0; 8];
    tokio::time::timeout(PATIENCE, udp.recv(&mut session))
        .await
        .unwrap()
        .unwrap();
    for _ in 0..20 {
        let mut datagram = session.to_vec();
        datagram.extend_from_slice(br#"{"temperature": 20}"#);
        udp.send(&datagram).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = wharf.state_after(&device, 1).await.message_count;
    assert!(
        (5..=8).contains(&stored),
        "about the burst of 5 was applied, not {stored}"
    );

    let dropped = metric(
        &wharf,
        "wharf_socket_frames_dropped_total{reason=\"rate_limited\"}",
    )
    .await;
    assert!(dropped >= 2.0 + 12.0, "{dropped}");
    wharf.stop().await;
}

/// UDP answers nothing that could start a loop or an amplification: its
/// own reply words go unanswered, a session id sent from another address
/// is refused and not published, refusals are rate-limited, and a device
/// opens at most one session a second.
#[tokio::test(flavor = "multi_thread")]
async fn udp_never_answers_its_own_words_and_keeps_sessions_to_their_address() {
    let wharf = TestWharf::start(|_| {}).await;
    let server = wharf.addresses.udp.unwrap();
    let quiet = Duration::from_millis(500);
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.connect(server).await.unwrap();
    let mut buf = [0u8; 64];

    // What a second Socket would send back: no answer, or they loop forever.
    stranger.send(b"UNKNOWN_SESSION").await.unwrap();
    assert!(
        tokio::time::timeout(quiet, stranger.recv(&mut buf))
            .await
            .is_err(),
        "a reply word was answered"
    );

    // A session, and its id replayed from another address.
    let device = unique("thermo");
    let owner = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    owner.connect(server).await.unwrap();
    owner
        .send(format!("HELLO {}", wharf.token(&device)).as_bytes())
        .await
        .unwrap();
    let mut session = [0; 8];
    tokio::time::timeout(PATIENCE, owner.recv(&mut session))
        .await
        .unwrap()
        .unwrap();
    let mut spoofed = session.to_vec();
    spoofed.extend_from_slice(br#"{"from": "stranger"}"#);
    stranger.send(&spoofed).await.unwrap();
    let n = tokio::time::timeout(PATIENCE, stranger.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"UNKNOWN_SESSION");
    let mut genuine = session.to_vec();
    genuine.extend_from_slice(br#"{"from": "owner"}"#);
    owner.send(&genuine).await.unwrap();
    let state = wharf.state_after(&device, 1).await;
    tokio::time::sleep(quiet).await;
    let state = wharf.state_after(&device, state.message_count).await;
    assert_eq!(state.message_count, 1, "only the owner's datagram counts");
    assert_eq!(state.reported["from"], "owner");

    // A second HELLO of the device within a second opens nothing.
    owner
        .send(format!("HELLO {}", wharf.token(&device)).as_bytes())
        .await
        .unwrap();
    let n = tokio::time::timeout(PATIENCE, owner.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"SLOW_DOWN");

    // A flood of unknown sessions gets at most the refusal budget back.
    for i in 0..400u32 {
        let mut junk = i.to_be_bytes().repeat(2);
        junk.extend_from_slice(b"x");
        stranger.send(&junk).await.unwrap();
    }
    let mut answers = 0;
    while tokio::time::timeout(quiet, stranger.recv(&mut buf))
        .await
        .is_ok()
    {
        answers += 1;
    }
    assert!(
        answers <= 200,
        "{answers} refusals for 400 forged datagrams"
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_connection_takes_over_the_first() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let ws = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    let mut first = WsDevice::connect(&ws, &wharf.token(&device)).await.unwrap();
    let mut second = WsDevice::connect(&ws, &wharf.token(&device)).await.unwrap();
    let (_, reason) = first.closed(PATIENCE).await;
    assert_eq!(reason, "session taken over");
    // Commands follow the newer connection.
    second.send_text(r#"{"temperature": 35}"#).await;
    let command: serde_json::Value =
        serde_json::from_str(&second.next_text(PATIENCE).await).unwrap();
    assert_eq!(command["cmd"], "fan");

    let device = unique("thermo");
    let mqtt = wharf.addresses.mqtt.unwrap();
    let mut older = raw::open_v5(mqtt, &device, &wharf.token(&device)).await;
    let mut newer = MqttDevice::connect(Flavor::V5, mqtt, &device, &wharf.token(&device))
        .await
        .unwrap();
    assert_eq!(
        raw::disconnect_reason(&mut older, PATIENCE).await,
        0x8e,
        "session taken over"
    );
    newer
        .subscribe(&format!("devices/{device}/commands/#"))
        .await;
    newer
        .next(PATIENCE, |seen| {
            matches!(seen, Seen::SubAck(_)).then_some(())
        })
        .await;
    newer
        .publish(&format!("devices/{device}/t"), br#"{"temperature": 35}"#, 1)
        .await;
    let (_, command) = newer.next_publish(PATIENCE).await;
    assert!(String::from_utf8_lossy(&command).contains("fan"));
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_says_going_away_to_every_device() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let ws = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    let mut client = WsDevice::connect(&ws, &wharf.token(&device)).await.unwrap();
    let mqtt_device = unique("thermo");
    let mut raw = raw::open_v5(
        wharf.addresses.mqtt.unwrap(),
        &mqtt_device,
        &wharf.token(&mqtt_device),
    )
    .await;
    wharf.state_after(&mqtt_device, 0).await; // connected and announced
    let stopping = tokio::spawn(wharf.stop());
    let (code, reason) = client.closed(PATIENCE).await;
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    assert_eq!(
        raw::disconnect_reason(&mut raw, PATIENCE).await,
        0x8b,
        "server shutting down"
    );
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn qos_2_is_refused_clearly() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let mut raw = raw::open_v5(
        wharf.addresses.mqtt.unwrap(),
        &device,
        &wharf.token(&device),
    )
    .await;
    raw.write_all(&raw::publish_v5(
        &format!("devices/{device}/t"),
        2,
        1,
        b"{}",
    ))
    .await
    .unwrap();
    assert_eq!(
        raw::disconnect_reason(&mut raw, PATIENCE).await,
        0x9b,
        "QoS not supported"
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_last_will_is_published_when_a_device_vanishes() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let will_topic = format!("devices/{device}/status");
    let mut raw = TcpStream::connect(wharf.addresses.mqtt.unwrap())
        .await
        .unwrap();
    let connect = raw::connect_v4(
        &device,
        &wharf.token(&device),
        60,
        Some((&will_topic, br#"{"online": false}"#)),
    );
    raw.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    drop(raw); // gone without DISCONNECT
    let state = wharf.state_after(&device, 1).await;
    assert_eq!(
        state.reported["online"], false,
        "the will reached the device's state"
    );

    // A will outside the device's topics is refused at CONNECT.
    let other = unique("thermo");
    let mut raw = TcpStream::connect(wharf.addresses.mqtt.unwrap())
        .await
        .unwrap();
    let connect = raw::connect_v4(
        &other,
        &wharf.token(&other),
        60,
        Some(("devices/someone-else/status", b"x")),
    );
    raw.write_all(&connect).await.unwrap();
    let mut connack = [0u8; 4];
    raw.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 5], "not authorized");
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_the_device_does_not_acknowledge_fails_with_no_ack() {
    let wharf =
        TestWharf::start(|settings| settings.socket.delivery_timeout = Duration::from_secs(1))
            .await;
    let mut status = wharf.command_status().await;
    let device = unique("thermo");
    let mut raw = raw::open_v5(
        wharf.addresses.mqtt.unwrap(),
        &device,
        &wharf.token(&device),
    )
    .await;
    raw.write_all(&raw::subscribe_v5(&format!("devices/{device}/commands/#")))
        .await
        .unwrap();
    // A reading that makes the demo rule ask for `fan`; the device never PUBACKs.
    raw.write_all(&raw::publish_v5(
        &format!("devices/{device}/t"),
        0,
        0,
        br#"{"temperature": 35}"#,
    ))
    .await
    .unwrap();
    let failure = tokio::time::timeout(PATIENCE, async {
        loop {
            let envelope = status.recv().await.expect("the tail runs");
            match envelope.event {
                wharf_events::Event::CommandFailed(failed) if envelope.device == device => {
                    return failed;
                }
                wharf_events::Event::CommandDelivered(_) if envelope.device == device => {
                    panic!("delivered without an ack")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("the command failed in time");
    assert_eq!(failure.reason, wharf_events::FailureReason::NoAck);
    assert_eq!(failure.detail, "no ack");
    drop(raw);
    wharf.stop().await;
}
