//! The Commander on Kafka, as separate processes: two Socket instances and
//! one Commander. An app POSTs a command for an offline MQTT device, which
//! connects 5 s later and receives it; a command with a 2 s time to live
//! for a device that stays offline expires; each Socket instance delivers
//! only to the devices it holds; a deleted device's connection closes and
//! its token is refused; an MQTT 5 device answers a two-way command and the
//! API caller gets its answer. The command-status topic tells the same story.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wharf_events::{Event, Topics};
use wharf_tests::api::ApiClient;
use wharf_tests::commander::CommanderPorts;
use wharf_tests::kafka::{self, TopicReader};
use wharf_tests::mqtt::{Flavor, MqttDevice, Seen};
use wharf_tests::process::Service;
use wharf_tests::socket::SocketPorts;
use wharf_tests::{WsDevice, http, temp_dir, unique, wait_until};

/// Long enough for Kafka consumer groups to form; a healthy run is faster.
const PATIENCE: Duration = Duration::from_secs(120);

async fn send(api: &ApiClient, device: &str, command: &str, body: Value) -> String {
    let sent = api
        .post(&format!("/v1/devices/{device}/commands/{command}"), &body)
        .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    sent.result()["id"].as_str().unwrap().to_owned()
}

async fn ready(addr: std::net::SocketAddr) {
    wait_until(PATIENCE, &format!("{addr} to be ready"), || async {
        http::get(addr, "/readyz")
            .await
            .filter(|(status, _)| *status == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_queue_ttl_routing_and_revocation_on_kafka() {
    let dir = temp_dir("wharf-commander-kafka");
    let prefix = unique("cmd");
    let (socket_a, socket_b) = (SocketPorts::free(), SocketPorts::free());
    let commander = CommanderPorts::free();
    let config = |socket: &SocketPorts, instance: &str| {
        let path = dir.join(format!("{instance}.toml"));
        let text = format!(
            "{bus}\n[store]\nurl = \"sqlite://{db}\"\n\n[auth]\nsecret = \"{secret}\"\n\n{socket}\n{commander}",
            bus = kafka::bus_toml(&prefix, 4),
            db = dir.join("wharf.db").display(),
            secret = "a-shared-secret-for-this-scenario",
            socket = socket.toml(instance),
            commander = commander.toml(),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let config_a = config(&socket_a, "socket-a");
    let config_b = config(&socket_b, "socket-b");
    let _services = [
        Service::start("wharf-commander", &config_a, &dir),
        Service::start_as("wharf-socket", "socket-a", &config_a, &dir, &[]),
        Service::start_as("wharf-socket", "socket-b", &config_b, &dir, &[]),
    ];
    for addr in [commander.ops, socket_a.ops, socket_b.ops] {
        ready(addr).await;
    }
    let api = commander.client();
    // Created once the Commander has made the topic: an operator's tail.
    let mut status = TopicReader::new(Topics::new(&prefix).unwrap().command_status()).await;

    // Offline: queued, then sent when the device connects 5 s later.
    let (sleeper, lost, roaming) = (unique("sleeper"), unique("lost"), unique("roaming"));
    let sleeper_token = api.register(&sleeper, json!({})).await;
    api.register(&lost, json!({})).await;
    let roaming_token = api.register(&roaming, json!({})).await;
    let queued = send(&api, &sleeper, "fan", json!({"args": {"on": true}})).await;
    let expiring = send(
        &api,
        &lost,
        "fan",
        json!({"args": {"on": true}, "ttl": "2s"}),
    )
    .await;
    let queued_row = api.command_with_status(&queued, "queued", PATIENCE).await;
    assert!(queued_row["expires_at"].is_string(), "{queued_row}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut device = MqttDevice::connect(Flavor::V5, socket_a.mqtt, &sleeper, &sleeper_token)
        .await
        .expect("the API's token connects");
    device
        .subscribe(&format!("devices/{sleeper}/commands/#"))
        .await;
    let (topic, payload) = device.next_publish(PATIENCE).await;
    assert_eq!(topic, format!("devices/{sleeper}/commands/fan"));
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!((&frame["id"], &frame["on"]), (&json!(queued), &json!(true)));
    let delivered = api
        .command_with_status(&queued, "delivered", PATIENCE)
        .await;
    assert_eq!(delivered["instance"], json!("socket-a"));

    // Never connected: expired once its 2 s pass.
    let expired = api
        .command_with_status(&expiring, "expired", PATIENCE)
        .await;
    assert_eq!(expired["reason"], json!("ttl"));

    // A device on the other instance gets its commands through that one.
    let mut ws = WsDevice::connect(
        &format!("ws://{}/v1/ws", socket_b.websocket),
        &roaming_token,
    )
    .await
    .unwrap();
    wait_until(
        PATIENCE,
        "the Commander to see the device connected",
        || async {
            let (_, metrics) = http::get(commander.ops, "/metrics").await?;
            (http::metric(&metrics, "wharf_commander_connected_devices")? >= 2.0).then_some(())
        },
    )
    .await;
    let routed = send(
        &api,
        &roaming,
        "set_target",
        json!({"args": {"celsius": 19}}),
    )
    .await;
    let frame: Value = serde_json::from_str(&ws.next_text(PATIENCE).await).unwrap();
    assert_eq!(
        (&frame["id"], &frame["celsius"]),
        (&json!(routed), &json!(19))
    );
    let delivered = api
        .command_with_status(&routed, "delivered", PATIENCE)
        .await;
    assert_eq!(delivered["instance"], json!("socket-b"));
    let again = send(&api, &sleeper, "fan", json!({"args": {"on": false}})).await;
    let (_, payload) = device.next_publish(PATIENCE).await;
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(frame["id"], json!(again), "socket-a's device gets its own");
    api.command_with_status(&again, "delivered", PATIENCE).await;

    // Two-way through Kafka: the MQTT 5 device answers on the command's
    // Response Topic; the caller waiting on the API gets the answer.
    let asked = tokio::spawn({
        let (api, id) = (api.clone(), sleeper.clone());
        async move {
            api.post(
                &format!("/v1/devices/{id}/commands/read_config?wait=60s"),
                &json!({}),
            )
            .await
        }
    });
    let (response_topic, correlation) = device
        .next(PATIENCE, |seen| match seen {
            Seen::Request {
                response_topic,
                correlation,
                ..
            } => Some((response_topic, correlation)),
            _ => None,
        })
        .await;
    device
        .answer(
            &response_topic,
            &correlation,
            br#"{"ok": true, "result": {"via": "kafka"}}"#,
        )
        .await;
    let answer = asked.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.result()["status"], json!("succeeded"));
    assert_eq!(answer.result()["reply"], json!({"via": "kafka"}));

    // Deleted: the connection on socket-b closes, the token is refused.
    assert_eq!(
        api.delete(&format!("/v1/devices/{roaming}")).await.status,
        200
    );
    assert_eq!(
        ws.closed(PATIENCE).await,
        (1008, "device revoked".to_owned())
    );
    assert_eq!(
        WsDevice::refused_status(
            &format!("ws://{}/v1/ws", socket_b.websocket),
            &roaming_token
        )
        .await,
        401
    );
    // Every instance learns the revocation, within moments.
    let elsewhere = format!("ws://{}/v1/ws", socket_a.websocket);
    wait_until(PATIENCE, "socket-a to refuse the revoked token", || async {
        WsDevice::connect(&elsewhere, &roaming_token)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert_eq!(
        WsDevice::refused_status(&elsewhere, &roaming_token).await,
        401
    );
    let last = send(&api, &sleeper, "fan", json!({"args": {"on": true}})).await;
    let (_, payload) = device.next_publish(PATIENCE).await;
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(frame["id"], json!(last), "the other device stays connected");

    // The command-status topic tells each command's story in order.
    let mut stories: HashMap<Uuid, Vec<&'static str>> = HashMap::new();
    let ours = [&queued, &expiring, &routed, &again];
    while let Some(envelope) = status.next(Duration::from_secs(10)).await {
        let (id, step) = match &envelope.event {
            Event::CommandQueued(e) => (e.command_id, "queued"),
            Event::CommandDispatched(e) => (e.command_id, "dispatched"),
            Event::CommandDelivered(e) => (e.command_id, "delivered"),
            Event::CommandExpired(e) => (e.command_id, "expired"),
            Event::CommandFailed(e) => (e.command_id, "failed"),
            Event::CommandRejected(e) => (e.command_id, "rejected"),
            _ => continue,
        };
        stories.entry(id).or_default().push(step);
        let told = |id: &String, end| {
            stories
                .get(&id.parse().unwrap())
                .is_some_and(|story| story.last() == Some(&end))
        };
        if told(&queued, "delivered")
            && told(&expiring, "expired")
            && told(&routed, "delivered")
            && told(&again, "delivered")
        {
            break;
        }
    }
    let story = |id: &String| {
        stories
            .get(&id.parse::<Uuid>().unwrap())
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(story(ours[0]), ["queued", "dispatched", "delivered"]);
    assert_eq!(story(ours[1]), ["queued", "expired"]);
    assert_eq!(story(ours[2]), ["dispatched", "delivered"]);
    assert_eq!(story(ours[3]), ["dispatched", "delivered"]);
}
