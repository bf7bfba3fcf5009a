//! A Socket starting on Kafka reads the revocations already written before it
//! accepts any device: from the moment it reports ready, a deleted device's
//! token is refused. (Accepting first, it let such devices in for the
//! seconds its revocations reader took to join its group.)

use std::time::{Duration, SystemTime};

use wharf_auth::TokenIssuer;
use wharf_bus::{Publisher as _, Record, TopicSpec};
use wharf_events::{DeviceRevoked, Envelope, Event, Topics};
use wharf_tests::kafka;
use wharf_tests::process::Service;
use wharf_tests::socket::SocketPorts;
use wharf_tests::{WsDevice, http, temp_dir, unique};

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_socket_refuses_revoked_devices_from_its_first_connection() {
    let dir = temp_dir("wharf-socket-revocations");
    let prefix = unique("revoked");
    let secret = "a-secret-for-this-scenario-only";
    let ports = SocketPorts::free();
    let topics = Topics::new(&prefix).unwrap();
    let bus = kafka::bus();
    bus.ensure_topics(&[TopicSpec::compacted(topics.revocations(), 4)])
        .await
        .unwrap();
    let device = unique("gone");
    // Deleted a moment from now: every token issued until then is revoked.
    let revoked = Envelope::new(
        device.clone(),
        "commander",
        Event::DeviceRevoked(DeviceRevoked {
            tokens_issued_before: SystemTime::now() + Duration::from_secs(2),
        }),
    );
    bus.publish(Record::event(topics.revocations(), &revoked))
        .await
        .unwrap();
    let token = TokenIssuer::new(secret)
        .issue(&device, "demo-thermostat", Duration::from_secs(3600))
        .unwrap();

    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n[auth]\nsecret = \"{secret}\"\n\n{}",
            kafka::bus_toml(&prefix, 4),
            ports.toml("socket-revocations")
        ),
    )
    .unwrap();
    let _socket = Service::start("wharf-socket", &config, &dir);
    // The first moment the Socket says it is ready.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if http::get(ports.ops, "/readyz")
            .await
            .is_some_and(|(status, _)| status == 200)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the socket never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("ws://{}/v1/ws", ports.websocket);
    assert_eq!(
        WsDevice::refused_status(&url, &token).await,
        401,
        "the revoked device is refused from the start"
    );
}
