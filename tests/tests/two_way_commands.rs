//! Two-way commands on the `wharf up` wiring (in-process bus, SQLite), with
//! devices played by real clients: the demo's `read_config` expects an
//! answer, and `POST …/commands/read_config?wait=5s` returns it.
//!
//! - an MQTT 5 device (rumqttc) answers on the command's Response Topic with
//!   its Correlation Data; an MQTT 3.1.1 device on
//!   `devices/{id}/replies/{command id}`; a WebSocket device with a
//!   `{"reply": …}` frame: each caller gets the device's `result`;
//! - `ok: false` comes back as 424 `device_error` with the device's error;
//! - a silent device's command ends `timed_out` after `reply_timeout`, and
//!   the command-status topic carries `CommandReplied` and `CommandTimedOut`;
//! - a device cannot answer another device's command (MQTT ACL, and the
//!   Commander's check of who answered);
//! - 50 identical requests at once reach the device as one command and all
//!   get its one answer.
//! - the README's round trip, with `mosquitto_sub` and `mosquitto_pub` as
//!   the device.
//!
//! (On Kafka, with the services as separate processes: commander_kafka.rs.)

use std::time::Duration;

use serde_json::{Value, json};
use wharf_events::Event;
use wharf_tests::api::{Answer, ApiClient};
use wharf_tests::mqtt::{Flavor, MqttDevice, Seen, mosquitto_sub_once};
use wharf_tests::wharf::TestWharf;
use wharf_tests::{WsDevice, http, unique};

const PATIENCE: Duration = Duration::from_secs(30);

fn ws_url(wharf: &TestWharf) -> String {
    format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap())
}

/// Asks `device` for its configuration and waits up to 5 s for the answer.
async fn read_config(api: &ApiClient, device: &str) -> Answer {
    api.post(
        &format!("/v1/devices/{device}/commands/read_config?wait=5s"),
        &json!({}),
    )
    .await
}

async fn mqtt_device(wharf: &TestWharf, flavor: Flavor, id: &str, token: &str) -> MqttDevice {
    let mut device = MqttDevice::connect(flavor, wharf.addresses.mqtt.unwrap(), id, token)
        .await
        .unwrap();
    device.subscribe(&format!("devices/{id}/commands/#")).await;
    device
        .next(PATIENCE, |seen| {
            matches!(seen, Seen::SubAck(_)).then_some(())
        })
        .await;
    device
}

/// `device` answers command `id` with `result`: the command ends
/// `succeeded`, with `result` as its reply.
async fn answers_and_succeeds(api: &ApiClient, device: &mut WsDevice, id: &str, result: Value) {
    device
        .send_text(&json!({"reply": id, "ok": true, "result": result}).to_string())
        .await;
    let row = api
        .get(&format!("/v1/commands/{id}?wait=10s"))
        .await
        .result();
    assert_eq!(
        (&row["status"], &row["reply"]),
        (&json!("succeeded"), &result)
    );
}

/// A Wharf with one registered WebSocket device connected: the Wharf, its
/// API, the device's id and the device.
async fn with_a_websocket_device(name: &str) -> (TestWharf, ApiClient, String, WsDevice) {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let id = unique(name);
    let token = api.register(&id, json!({})).await;
    let device = WsDevice::connect(&ws_url(&wharf), &token).await.unwrap();
    (wharf, api, id, device)
}

/// Waits until the metrics at `ops` hold `line`.
async fn metric_shows(ops: std::net::SocketAddr, line: &str) {
    wharf_tests::wait_until(PATIENCE, line, || async {
        let (_, metrics) = http::get(ops, "/metrics").await?;
        metrics.contains(line).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_answer_over_mqtt5_mqtt311_and_websocket() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let mut status = wharf.command_status().await;

    // MQTT 5: the command carries where to answer and the id to answer with.
    let v5_id = unique("v5");
    let token = api.register(&v5_id, json!({})).await;
    let mut v5 = mqtt_device(&wharf, Flavor::V5, &v5_id, &token).await;
    let asked = tokio::spawn({
        let (api, id) = (api.clone(), v5_id.clone());
        async move { read_config(&api, &id).await }
    });
    let (topic, payload, response_topic, correlation) = v5
        .next(PATIENCE, |seen| match seen {
            Seen::Request {
                topic,
                payload,
                response_topic,
                correlation,
            } => Some((topic, payload, response_topic, correlation)),
            Seen::Publish(topic, _) => panic!("{topic}: a reply command without a Response Topic"),
            _ => None,
        })
        .await;
    assert_eq!(topic, format!("devices/{v5_id}/commands/read_config"));
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    let command_id = frame["id"].as_str().unwrap().to_owned();
    assert_eq!(
        response_topic,
        format!("devices/{v5_id}/replies/{command_id}")
    );
    assert_eq!(correlation, command_id.as_bytes());
    v5.answer(
        &response_topic,
        &correlation,
        br#"{"ok": true, "result": {"interval_s": 30}}"#,
    )
    .await;
    let answer = asked.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let result = answer.result();
    assert_eq!(result["id"], json!(command_id));
    assert_eq!(result["status"], json!("succeeded"));
    assert_eq!(result["reply"], json!({"interval_s": 30}));

    // MQTT 3.1.1: the device answers on its reply topic for the command.
    let v4_id = unique("v4");
    let token = api.register(&v4_id, json!({})).await;
    let mut v4 = mqtt_device(&wharf, Flavor::V4, &v4_id, &token).await;
    let asked = tokio::spawn({
        let (api, id) = (api.clone(), v4_id.clone());
        async move { read_config(&api, &id).await }
    });
    let (_, payload) = v4.next_publish(PATIENCE).await;
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    let v4_command = frame["id"].as_str().unwrap().to_owned();
    v4.publish(
        &format!("devices/{v4_id}/replies/{v4_command}"),
        br#"{"ok": true, "result": {"unit": "celsius"}}"#,
        1,
    )
    .await;
    let answer = asked.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.result()["reply"], json!({"unit": "celsius"}));

    // WebSocket: a JSON frame naming the command; then one that says no.
    let ws_id = unique("ws");
    let token = api.register(&ws_id, json!({})).await;
    let mut ws = WsDevice::connect(&ws_url(&wharf), &token).await.unwrap();
    for (answer_with, expected) in [
        (json!({"ok": true, "result": [1, 2, 3]}), 200),
        (
            json!({"ok": false, "error": {"code": "busy", "message": "calibrating"}}),
            424,
        ),
    ] {
        let asked = tokio::spawn({
            let (api, id) = (api.clone(), ws_id.clone());
            async move { read_config(&api, &id).await }
        });
        let frame: Value = serde_json::from_str(&ws.next_text(PATIENCE).await).unwrap();
        assert_eq!(frame["cmd"], json!("read_config"));
        let mut reply = answer_with.clone();
        reply["reply"] = frame["id"].clone();
        ws.send_text(&reply.to_string()).await;
        let answer = asked.await.unwrap();
        assert_eq!(answer.status, expected, "{}", answer.body);
        if expected == 200 {
            assert_eq!(answer.result()["reply"], json!([1, 2, 3]));
        } else {
            // The device refused, not the API: its own error comes back.
            assert_eq!(answer.error_code(), "device_error");
            let error = &answer.json()["error"];
            assert_eq!(error["command_id"], frame["id"]);
            assert_eq!(error["reply"], answer_with["error"]);
            assert!(
                error["message"].as_str().unwrap().contains("calibrating"),
                "{error}"
            );
            let row = api
                .get(&format!("/v1/commands/{}", frame["id"].as_str().unwrap()))
                .await
                .result();
            assert_eq!(
                (&row["status"], &row["reason"]),
                (&json!("failed"), &json!("device_error"))
            );
        }
    }

    // Silent: the command ends timed_out after the profile's 10 s; a long
    // poll on it returns then.
    let silent = api
        .post(
            &format!("/v1/devices/{ws_id}/commands/read_config"),
            &json!({}),
        )
        .await;
    assert_eq!(silent.status, 202, "{}", silent.body);
    let silent_id = silent.result()["id"].as_str().unwrap().to_owned();
    ws.next_text(PATIENCE).await;
    let polled = api.get(&format!("/v1/commands/{silent_id}?wait=30s")).await;
    assert_eq!(polled.status, 200, "{}", polled.body);
    assert_eq!(
        polled.result()["status"],
        json!("timed_out"),
        "{}",
        polled.body
    );

    // The command-status topic tells each story to its end.
    let mut replied = 0;
    loop {
        let envelope = tokio::time::timeout(PATIENCE, status.recv())
            .await
            .expect("the timeout is on the command-status topic")
            .unwrap();
        match envelope.event {
            Event::CommandReplied(_) => replied += 1,
            Event::CommandTimedOut(timed_out) => {
                assert_eq!(timed_out.command_id.to_string(), silent_id);
                assert_eq!(timed_out.reply_timeout_ms, 10_000);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(replied, 4, "four answers before the timeout");
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_cannot_answer_another_devices_command() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let (owner_id, other_id, other_mqtt_id) = (unique("owner"), unique("other"), unique("rogue"));
    let owner_token = api.register(&owner_id, json!({})).await;
    let other_token = api.register(&other_id, json!({})).await;
    let rogue_token = api.register(&other_mqtt_id, json!({})).await;
    let mut owner = WsDevice::connect(&ws_url(&wharf), &owner_token)
        .await
        .unwrap();
    let mut other = WsDevice::connect(&ws_url(&wharf), &other_token)
        .await
        .unwrap();
    let mut rogue = mqtt_device(&wharf, Flavor::V5, &other_mqtt_id, &rogue_token).await;

    let sent = api
        .post(
            &format!("/v1/devices/{owner_id}/commands/read_config"),
            &json!({}),
        )
        .await;
    let id = sent.result()["id"].as_str().unwrap().to_owned();
    owner.next_text(PATIENCE).await;
    api.command_with_status(&id, "awaiting_reply", PATIENCE)
        .await;

    // Over MQTT the ACL refuses the owner's reply topic outright.
    rogue
        .publish(
            &format!("devices/{owner_id}/replies/{id}"),
            br#"{"ok": true}"#,
            1,
        )
        .await;
    let refused = rogue
        .next(PATIENCE, |seen| match seen {
            Seen::PubAck(_, code) => Some(code),
            _ => None,
        })
        .await;
    assert_eq!(refused, 0x87, "not authorized");
    // Over WebSocket the frame names the command; the Commander checks who
    // sent it, and it changes nothing.
    other
        .send_text(&json!({"reply": id, "ok": true, "result": "forged"}).to_string())
        .await;
    metric_shows(
        wharf.ops(),
        "wharf_commander_replies_total{outcome=\"not_its_command\"} 1",
    )
    .await;
    let row = api.get(&format!("/v1/commands/{id}")).await.result();
    assert_eq!(row["status"], json!("awaiting_reply"), "{row}");

    // The owner's own answer settles it.
    answers_and_succeeds(&api, &mut owner, &id, json!("genuine")).await;
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_identical_requests_share_one_command_and_its_answer() {
    let (wharf, api, id, mut device) = with_a_websocket_device("shared").await;

    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (api, id) = (api.clone(), id.clone());
            tokio::spawn(async move { read_config(&api, &id).await })
        })
        .collect();
    // The device answers what it gets, a little later, as a slow device
    // would: every caller is waiting by then.
    let frame: Value = serde_json::from_str(&device.next_text(PATIENCE).await).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    device
        .send_text(&json!({"reply": frame["id"], "ok": true, "result": {"n": 1}}).to_string())
        .await;
    let mut answered = Vec::new();
    for caller in callers {
        let answer = caller.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        answered.push(answer.result());
    }
    for result in &answered {
        assert_eq!(result["id"], frame["id"], "one command for all");
        assert_eq!(result["reply"], json!({"n": 1}));
    }
    // The device got that one command and no other.
    let more = tokio::time::timeout(Duration::from_millis(500), device.next_text(PATIENCE)).await;
    assert!(
        more.is_err(),
        "a second command reached the device: {more:?}"
    );
    let (_, metrics) = http::get(wharf.ops(), "/metrics").await.unwrap();
    assert!(
        metrics.contains("wharf_commander_coalesced_commands_total 49"),
        "{}",
        metrics
            .lines()
            .filter(|line| line.contains("coalesced"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let listed = api
        .get(&format!("/v1/devices/{id}/commands"))
        .await
        .result();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    wharf.stop().await;
}

/// The README's round trip, with the Mosquitto clients as the device.
#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_clients_answer_as_the_readme_shows() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let id = unique("thermo");
    let token = api.register(&id, json!({})).await;
    let port = wharf.addresses.mqtt.unwrap().port();
    let device = mosquitto_sub_once(
        port,
        &id,
        &token,
        &format!("devices/{id}/commands/#"),
        false,
    );
    let asked = tokio::spawn({
        let (api, id) = (api.clone(), id.clone());
        async move {
            api.post(
                &format!("/v1/devices/{id}/commands/read_config?wait=30s"),
                &json!({}),
            )
            .await
        }
    });
    let output = device.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let command: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(command["cmd"], json!("read_config"));
    let command_id = command["id"].as_str().unwrap();
    let answered = tokio::process::Command::new("mosquitto_pub")
        .args(["-V", "5", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", &id, "-P", &token, "-q", "1"])
        .args(["-t", &format!("devices/{id}/replies/{command_id}")])
        .args(["-m", r#"{"ok":true,"result":{"interval_s":30}}"#])
        .status()
        .await
        .unwrap();
    assert!(answered.success());
    let answer = asked.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let result = answer.result();
    assert_eq!(result["status"], json!("succeeded"));
    assert_eq!(result["reply"], json!({"interval_s": 30}));
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_requests_and_answers_are_bounded() {
    let wharf = TestWharf::start(|settings| {
        settings.commander.api.max_waiting = 1;
        settings.socket.max_reply_bytes = 256;
    })
    .await;
    let api = wharf.api();
    let (offline, online) = (unique("offline"), unique("online"));
    api.register(&offline, json!({})).await;
    let token = api.register(&online, json!({})).await;

    // One request waits (its device is offline: the command is queued);
    // the next one that would wait is refused at once, and sends nothing.
    let waiting = tokio::spawn({
        let (api, id) = (api.clone(), offline.clone());
        async move {
            api.post(
                &format!("/v1/devices/{id}/commands/fan?wait=5s"),
                &json!({"args": {"on": true}}),
            )
            .await
        }
    });
    metric_shows(wharf.ops(), "wharf_commander_api_waiting 1").await;
    let refused = api
        .post(
            &format!("/v1/devices/{offline}/commands/fan?wait=5s"),
            &json!({"args": {"on": false}}),
        )
        .await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.error_code(), "too_many_waiting");
    let waited = waiting.await.unwrap();
    assert_eq!(
        waited.status, 202,
        "the wait ran out first: {}",
        waited.body
    );
    assert_eq!(waited.result()["status"], json!("queued"));
    let listed = api
        .get(&format!("/v1/devices/{offline}/commands"))
        .await
        .result();
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // An answer above socket.max_reply_bytes is refused and counted; the
    // command goes on waiting for one that fits.
    let mut device = WsDevice::connect(&ws_url(&wharf), &token).await.unwrap();
    let sent = api
        .post(
            &format!("/v1/devices/{online}/commands/read_config"),
            &json!({}),
        )
        .await;
    let id = sent.result()["id"].as_str().unwrap().to_owned();
    device.next_text(PATIENCE).await;
    let large = json!({"reply": id, "ok": true, "result": "x".repeat(300)});
    device.send_text(&large.to_string()).await;
    metric_shows(
        wharf.ops(),
        "wharf_socket_replies_total{outcome=\"too_large\"} 1",
    )
    .await;
    // Refused: the command is still awaiting an answer (had the large one
    // been taken, it would have ended succeeded).
    api.command_with_status(&id, "awaiting_reply", PATIENCE)
        .await;
    answers_and_succeeds(&api, &mut device, &id, json!("fits")).await;
    wharf.stop().await;
}

/// An idempotent command asked for without `wait` ends unseen by the API;
/// a later identical request still gets a command of its own, and a fresh
/// answer, not the old one.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_nobody_waited_for_is_not_shared_later() {
    let (wharf, api, id, mut device) = with_a_websocket_device("late").await;
    let first = api
        .post(
            &format!("/v1/devices/{id}/commands/read_config"),
            &json!({}),
        )
        .await;
    assert_eq!(first.status, 202, "{}", first.body);
    let first_id = first.result()["id"].as_str().unwrap().to_owned();
    device.next_text(PATIENCE).await;
    answers_and_succeeds(&api, &mut device, &first_id, json!("old")).await;

    let asked = tokio::spawn({
        let (api, id) = (api.clone(), id.clone());
        async move { read_config(&api, &id).await }
    });
    let frame: Value = serde_json::from_str(&device.next_text(PATIENCE).await).unwrap();
    assert_ne!(frame["id"], json!(first_id), "a command of its own");
    device
        .send_text(&json!({"reply": frame["id"], "ok": true, "result": "new"}).to_string())
        .await;
    let answer = asked.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.result()["reply"], json!("new"));
    wharf.stop().await;
}
