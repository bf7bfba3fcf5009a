//! No secret reaches a log line at any level: `wharf up` runs with
//! `RUST_LOG=trace` while devices and an API client present their secrets in
//! every way they can (an MQTT CONNECT sent twice on one connection, a
//! WebSocket token in the header and in the query, a TCP token frame, a bad
//! token, an API key), and the log is searched for each secret.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wharf_auth::TokenIssuer;
use wharf_tests::api::ApiClient;
use wharf_tests::mqtt::raw;
use wharf_tests::up::{UpPorts, UpProcess};
use wharf_tests::{WsDevice, temp_dir};

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_at_trace_level() {
    let data = temp_dir("wharf-trace");
    let secret = wharf_auth::generate_secret();
    let all = UpPorts::free();
    let (ports, api) = (all.socket, all.api);
    let log_path = data.join("wharf-up.log");
    let mut up = UpProcess::start(&data, all, &secret, &[("RUST_LOG", "trace")]);
    up.ready(PATIENCE).await;
    let token = TokenIssuer::new(&secret)
        .issue(
            "thermo-secret",
            "demo-thermostat",
            Duration::from_secs(3600),
        )
        .unwrap();
    let forged = TokenIssuer::new("a-secret-wharf-never-configured")
        .issue(
            "thermo-secret",
            "demo-thermostat",
            Duration::from_secs(3600),
        )
        .unwrap();

    // MQTT: CONNECT, then CONNECT again on the same connection.
    let mut mqtt = raw::open_v5(ports.mqtt, "thermo-secret", &token).await;
    let mut connack = [0u8; 64];
    let _ = mqtt.read(&mut connack).await;
    let _ = mqtt
        .write_all(&raw::connect_v5("thermo-secret", &token))
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), mqtt.read(&mut connack)).await;
    let mut refused = raw::open_v5(ports.mqtt, "thermo-secret", &forged).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), refused.read(&mut connack)).await;

    // WebSocket: token in the header, in the query, and a forged one.
    let ws = format!("ws://{}/v1/ws", ports.websocket);
    drop(WsDevice::connect(&ws, &token).await.unwrap());
    drop(
        WsDevice::connect_url(&format!("{ws}?token={token}"))
            .await
            .unwrap(),
    );
    assert_eq!(WsDevice::refused_status(&ws, &forged).await, 401);

    // TCP: the token frame.
    let mut tcp = TcpStream::connect(ports.tcp).await.unwrap();
    tcp.write_u32(token.len() as u32).await.unwrap();
    tcp.write_all(token.as_bytes()).await.unwrap();
    let mut status = [0u8; 5];
    tcp.read_exact(&mut status).await.unwrap();

    // The API: the kept key, and a wrong one.
    let key = std::fs::read_to_string(data.join("api-key")).unwrap();
    let client = ApiClient::new(api, key.trim());
    assert_eq!(client.get("/v1/devices").await.status, 200);
    let wrong = "wharf_0000000000000000000000000000000000000000000000";
    assert_eq!(client.with_key(wrong).get("/v1/devices").await.status, 401);

    tokio::time::sleep(Duration::from_millis(500)).await;
    up.kill();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log is at trace level"
    );
    // A token's signature is what makes it a secret; its header and claims
    // are not (they name the device), so the check looks for the signature.
    let signature = |token: &str| token.rsplit('.').next().unwrap().to_owned();
    for (what, needle) in [
        ("the token secret", secret.clone()),
        ("a device token", signature(&token)),
        ("a forged device token", signature(&forged)),
        ("the API key", key.trim().to_owned()),
        ("a wrong API key", wrong.to_owned()),
    ] {
        assert!(
            !log.contains(&needle),
            "{what} appears in the trace log ({})",
            log_path.display()
        );
    }
}
