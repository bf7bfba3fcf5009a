//! Every transport carries a device's frame to the Receiver's state and the
//! demo `fan` command back, with real clients over real sockets: rumqttc for
//! MQTT 3.1.1, 5 and MQTT over WebSocket; the Debian mosquitto clients;
//! plain TCP (both framings) and UDP sockets. (WebSocket: round_trip.rs;
//! here, what RFC 6455 lets a WebSocket client do besides one frame per
//! message, and the upgrade itself.)

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use wharf_socket::config::Framing;
use wharf_tests::mqtt::{Flavor, MqttDevice, Seen};
use wharf_tests::wharf::TestWharf;
use wharf_tests::{WsDevice, unique};

const PATIENCE: Duration = Duration::from_secs(30);

fn assert_fan(frame: &[u8]) {
    let command: Value = serde_json::from_slice(frame).expect("the command is JSON");
    assert_eq!(command["cmd"], json!("fan"), "{command}");
    assert_eq!(command["on"], json!(true), "{command}");
}

async fn mqtt_round_trip(flavor: Flavor) {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let addr = match flavor {
        Flavor::V4OverWebsocket => wharf.addresses.websocket.unwrap(),
        _ => wharf.addresses.mqtt.unwrap(),
    };
    let mut thermostat = MqttDevice::connect(flavor, addr, &device, &wharf.token(&device))
        .await
        .expect("a valid token connects");
    thermostat
        .subscribe(&format!("devices/{device}/commands/#"))
        .await;
    let granted = thermostat
        .next(PATIENCE, |seen| match seen {
            Seen::SubAck(codes) => Some(codes),
            _ => None,
        })
        .await;
    assert_eq!(granted, vec![1]);

    thermostat
        .publish(
            &format!("devices/{device}/telemetry"),
            br#"{"temperature": 35}"#,
            1,
        )
        .await;
    let (topic, frame) = thermostat.next_publish(PATIENCE).await;
    assert_eq!(topic, format!("devices/{device}/commands/fan"));
    assert_fan(&frame);

    let state = wharf.state_after(&device, 1).await;
    assert_eq!(state.reported["temperature"], json!(35));
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_3_1_1_round_trip() {
    mqtt_round_trip(Flavor::V4).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_5_round_trip() {
    mqtt_round_trip(Flavor::V5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_over_websocket_round_trip() {
    mqtt_round_trip(Flavor::V4OverWebsocket).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_clients_round_trip() {
    let wharf = TestWharf::start(|_| {}).await;
    let mqtt = wharf.addresses.mqtt.unwrap();
    for version in ["5", "311"] {
        let device = unique("thermo");
        let output = tokio::process::Command::new("mosquitto_rr")
            .args([
                "-V",
                version,
                "-h",
                "127.0.0.1",
                "-p",
                &mqtt.port().to_string(),
            ])
            .args(["-u", &device, "-P", &wharf.token(&device)])
            .args(["-t", &format!("devices/{device}/telemetry")])
            .args(["-e", &format!("devices/{device}/commands/fan")])
            .args(["-m", r#"{"temperature": 35}"#, "-W", "20"])
            .output()
            .await
            .expect("mosquitto_rr is installed (mosquitto-clients; .ci/run installs it)");
        assert!(output.status.success(), "MQTT {version}: {output:?}");
        assert_fan(&output.stdout);
        assert_eq!(
            wharf.state_after(&device, 1).await.reported["temperature"],
            json!(35)
        );
    }
    // mosquitto_pub at QoS 1: it exits 0 only after the PUBACK, which the
    // Socket sends once the bus holds the frame.
    let device = unique("thermo");
    let published = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt.port().to_string(), "-q", "1"])
        .args(["-u", &device, "-P", &wharf.token(&device)])
        .args(["-t", &format!("devices/{device}/telemetry")])
        .args(["-m", r#"{"temperature": 21}"#])
        .output()
        .await
        .unwrap();
    assert!(published.status.success(), "{published:?}");
    assert_eq!(
        wharf.state_after(&device, 1).await.reported["temperature"],
        json!(21)
    );
    let refused = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &mqtt.port().to_string()])
        .args(["-u", "thermo-x", "-P", &wharf.forged_token("thermo-x")])
        .args(["-t", "devices/thermo-x/telemetry", "-m", "{}"])
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not authorised"),
        "{refused:?}"
    );
    wharf.stop().await;
}

async fn read_length_frame(stream: &mut TcpStream) -> Vec<u8> {
    let length = stream.read_u32().await.expect("a frame header");
    let mut frame = vec![0; length as usize];
    stream.read_exact(&mut frame).await.expect("a whole frame");
    frame
}

async fn write_length_frame(stream: &mut TcpStream, frame: &[u8]) {
    stream.write_u32(frame.len() as u32).await.unwrap();
    stream.write_all(frame).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_length_prefixed_round_trip() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let mut stream = TcpStream::connect(wharf.addresses.tcp.unwrap())
        .await
        .unwrap();
    write_length_frame(&mut stream, wharf.token(&device).as_bytes()).await;
    assert_eq!(read_length_frame(&mut stream).await, vec![0], "status ok");
    write_length_frame(&mut stream, br#"{"temperature": 35}"#).await;
    let frame = tokio::time::timeout(PATIENCE, read_length_frame(&mut stream))
        .await
        .unwrap();
    assert_fan(&frame);
    assert_eq!(
        wharf.state_after(&device, 1).await.reported["temperature"],
        json!(35)
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_lines_round_trip() {
    let wharf = TestWharf::start(|settings| settings.socket.tcp.framing = Framing::Lines).await;
    let device = unique("thermo");
    let stream = TcpStream::connect(wharf.addresses.tcp.unwrap())
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read);
    let mut line = String::new();
    write
        .write_all(format!("{}\n", wharf.token(&device)).as_bytes())
        .await
        .unwrap();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
        .await
        .unwrap();
    assert_eq!(line, "0\n", "status ok");
    write.write_all(b"{\"temperature\": 35}\r\n").await.unwrap();
    line.clear();
    tokio::time::timeout(
        PATIENCE,
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
    )
    .await
    .unwrap()
    .unwrap();
    assert_fan(line.trim_end().as_bytes());
    assert_eq!(
        wharf.state_after(&device, 1).await.reported["temperature"],
        json!(35)
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn udp_round_trip() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(wharf.addresses.udp.unwrap()).await.unwrap();
    socket
        .send(format!("HELLO {}", wharf.token(&device)).as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0; 2048];
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 8, "the session id");
    let session: Vec<u8> = buf[..8].to_vec();
    let mut datagram = session.clone();
    datagram.extend_from_slice(br#"{"temperature": 35}"#);
    socket.send(&datagram).await.unwrap();
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_fan(&buf[..n]);
    assert_eq!(
        wharf.state_after(&device, 1).await.reported["temperature"],
        json!(35)
    );

    // A datagram for a session the Socket does not know is answered, not published.
    let mut stranger = vec![0xff; 8];
    stranger.extend_from_slice(b"{}");
    socket.send(&stranger).await.unwrap();
    let n = tokio::time::timeout(PATIENCE, socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"UNKNOWN_SESSION");
    wharf.stop().await;
}

/// The Socket reads `/v1/ws` frames with its own decoder: a tungstenite
/// client's pings are answered, a message sent in fragments arrives whole
/// (and the rule it triggers sends the command back), and the close
/// handshake is answered with the device's own code.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_pings_fragments_and_the_close_handshake() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("thermo");
    let url = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    let mut thermostat = WsDevice::connect(&url, &wharf.token(&device))
        .await
        .expect("a valid token connects");
    assert_eq!(
        thermostat.ping(b"are you there", PATIENCE).await,
        b"are you there"
    );
    thermostat
        .send_fragmented_text(r#"{"temperature": 35, "note": "sent in pieces"}"#, 7)
        .await;
    assert_fan(thermostat.next_text(PATIENCE).await.as_bytes());
    let state = wharf.state_after(&device, 1).await;
    assert_eq!(state.reported["temperature"], json!(35));
    assert_eq!(state.reported["note"], json!("sent in pieces"));
    // The device closes: the Socket answers with the same code.
    assert_eq!(thermostat.close_with(4000, PATIENCE).await, 4000);
    wharf.stop().await;
}

/// Reads an HTTP answer's head (up to its blank line) from `stream`.
async fn http_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(PATIENCE, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A client that sends its first frame together with the upgrade request
/// (RFC 6455 4.1 says to wait for the answer) loses nothing: the frame is
/// read as the connection's first. A request that is not an upgrade is
/// answered 400 with what is missing.
#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_keep_early_frames_and_refuse_what_is_not_one() {
    let wharf = TestWharf::start(|_| {}).await;
    let addr = wharf.addresses.websocket.unwrap();
    let device = unique("eager");
    let token = wharf.token(&device);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut bytes = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
    .into_bytes();
    // One masked text frame, as a client writes it.
    let payload = br#"{"temperature": 21}"#;
    let mask = [7u8, 1, 9, 3];
    bytes.extend([0x81, 0x80 | payload.len() as u8]);
    bytes.extend(mask);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&bytes).await.unwrap();
    let head = http_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    let state = wharf.state_after(&device, 1).await;
    assert_eq!(state.reported["temperature"], json!(21));

    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(format!("GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    let _ = tokio::time::timeout(PATIENCE, plain.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with("no Upgrade: websocket header\n"),
        "{answer}"
    );
    wharf.stop().await;
}
