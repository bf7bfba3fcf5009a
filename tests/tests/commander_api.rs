//! The Commander's REST API as an app meets it, on the `wharf up` wiring
//! (in-process bus, SQLite) with devices played by real clients: every
//! error path in the envelope, devices and their tokens, twins, commands
//! rendered per transport, rejections that never reach a device, the
//! offline queue's cap, revocation, coalesced reads, profile reloads and
//! the OpenAPI document. (Kafka and two Socket instances: commander_kafka.rs.)

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use wharf_events::Event;
use wharf_tests::http;
use wharf_tests::mqtt::{Flavor, MqttDevice, Seen, mosquitto_sub_once, raw};
use wharf_tests::wharf::TestWharf;
use wharf_tests::{WsDevice, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(30);

fn ws_url(wharf: &TestWharf) -> String {
    format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_api_error_answers_in_the_envelope_with_its_status() {
    let wharf = TestWharf::start(|settings| settings.commander.api.max_body_bytes = 4096).await;
    let api = wharf.api();
    let id = unique("thermo");
    api.register(&id, json!({})).await;
    let device = format!("/v1/devices/{id}");
    let commands = format!("{device}/commands");

    // (answer, status, code): each case as a user would hit it.
    let cases = [
        (
            api.anonymous().get("/v1/devices").await,
            401,
            "unauthorized",
        ),
        (
            api.with_key("wharf_0123456789abcdef").get(&device).await,
            401,
            "unauthorized",
        ),
        (api.get("/v1/devices/nobody").await, 404, "not_found"),
        (api.get("/v1/devices/nobody/twin").await, 404, "not_found"),
        (
            api.post(
                "/v1/devices/nobody/commands/fan",
                &json!({"args": {"on": true}}),
            )
            .await,
            404,
            "not_found",
        ),
        (
            api.get(&format!("/v1/commands/{}", uuid::Uuid::now_v7()))
                .await,
            404,
            "not_found",
        ),
        (api.get("/v2/nothing-here").await, 404, "not_found"),
        (
            api.get("/v1/commands/not-a-uuid").await,
            400,
            "invalid_path",
        ),
        (
            api.send("PATCH", &device, None).await,
            405,
            "method_not_allowed",
        ),
        (
            api.post(
                "/v1/devices",
                &json!({"id": "x", "model": "demo-thermostat", "colour": "red"}),
            )
            .await,
            400,
            "invalid_body",
        ),
        (
            api.post("/v1/devices", &json!({"id": 7, "model": "demo-thermostat"}))
                .await,
            400,
            "invalid_body",
        ),
        (
            api.post("/v1/devices", &json!({"model": "demo-thermostat"}))
                .await,
            400,
            "invalid_body",
        ),
        (
            api.send(
                "POST",
                "/v1/devices",
                Some(("application/json", b"{\"id\": ")),
            )
            .await,
            400,
            "malformed_json",
        ),
        (
            api.post(
                "/v1/devices",
                &json!({"id": "has space", "model": "demo-thermostat"}),
            )
            .await,
            400,
            "invalid_device_id",
        ),
        (
            api.post(
                "/v1/devices",
                &json!({"id": "a/b", "model": "demo-thermostat"}),
            )
            .await,
            400,
            "invalid_device_id",
        ),
        (
            api.post(
                "/v1/devices",
                &json!({"id": "fw", "model": "demo-thermostat", "metadata": {"firmware": 2}}),
            )
            .await,
            400,
            "invalid_body",
        ),
        (api.get("/v1/devices?limit=abc").await, 400, "invalid_query"),
        (api.get("/v1/devices?limit=0").await, 400, "invalid_query"),
        (
            api.get("/v1/devices?cursor=%21%21").await,
            400,
            "invalid_query",
        ),
        (
            api.get("/v1/devices?colour=red").await,
            400,
            "invalid_query",
        ),
        (
            api.post(
                &format!("{commands}/fan"),
                &json!({"args": {"on": true}, "ttl": "soon"}),
            )
            .await,
            400,
            "invalid_ttl",
        ),
        (
            api.post(
                &format!("{commands}/fan"),
                &json!({"args": {"on": true}, "ttl": "0s"}),
            )
            .await,
            400,
            "invalid_ttl",
        ),
        (
            api.post(
                &format!("{commands}/fan"),
                &json!({"args": {"on": true}, "retries": 3}),
            )
            .await,
            400,
            "invalid_body",
        ),
        (
            api.put(&format!("{device}/twin/desired"), &json!([1, 2]))
                .await,
            400,
            "invalid_body",
        ),
        (
            api.put(&format!("{device}/twin/desired"), &json!({})).await,
            400,
            "invalid_body",
        ),
        (
            api.post(
                "/v1/devices",
                &json!({"id": id, "model": "demo-thermostat"}),
            )
            .await,
            409,
            "conflict",
        ),
        (
            api.put(&device, &json!({"model": "toaster"})).await,
            409,
            "conflict",
        ),
        (
            api.post("/v1/devices", &json!({"id": "t", "model": "toaster"}))
                .await,
            422,
            "unknown_model",
        ),
        (
            api.post(&format!("{commands}/explode"), &json!({})).await,
            422,
            "unknown_command",
        ),
        (
            api.post(&format!("{commands}/reboot"), &json!({})).await,
            422,
            "unsupported",
        ),
        (
            api.post(
                &format!("{commands}/set_target"),
                &json!({"args": {"celsius": 99}}),
            )
            .await,
            422,
            "invalid_argument",
        ),
        (
            api.post(&format!("{commands}/set_target"), &json!({"args": {}}))
                .await,
            422,
            "invalid_argument",
        ),
        (
            api.send("POST", "/v1/devices", Some(("text/plain", b"{}")))
                .await,
            415,
            "unsupported_media_type",
        ),
        (
            api.send(
                "POST",
                "/v1/devices",
                Some(("application/json", &[b' '; 8192])),
            )
            .await,
            413,
            "payload_too_large",
        ),
    ];
    for (number, (answer, status, code)) in cases.iter().enumerate() {
        assert_eq!(answer.status, *status, "case {number}: {}", answer.body);
        assert_eq!(answer.error_code(), *code, "case {number}: {}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("application/json"),
            "case {number}"
        );
    }
    // A rejected command is recorded, with what was wrong.
    let refused = api
        .post(
            &format!("{commands}/set_target"),
            &json!({"args": {"celsius": 99}}),
        )
        .await
        .json();
    assert_eq!(refused["error"]["argument"], json!("celsius"));
    let command_id = refused["error"]["command_id"].as_str().expect("its id");
    let recorded = api
        .get(&format!("/v1/commands/{command_id}"))
        .await
        .result();
    assert_eq!(
        (
            &recorded["status"],
            &recorded["reason"],
            &recorded["argument"]
        ),
        (
            &json!("rejected"),
            &json!("invalid_argument"),
            &json!("celsius")
        )
    );
    assert_eq!(recorded["terminal"], json!(true));
    // An unauthenticated request with a made-up method cannot mint a
    // metric series of its own.
    let probe = api
        .anonymous()
        .send("WHARFPROBEMETHOD", "/v1/devices", None)
        .await;
    assert!(
        [401, 405].contains(&probe.status),
        "{} {}",
        probe.status,
        probe.body
    );
    // Nothing of the above was a server error.
    let (_, metrics) = http::get(wharf.ops(), "/metrics").await.unwrap();
    assert!(
        !metrics.contains("status=\"500\""),
        "no 500 among the answers: {metrics}"
    );
    assert!(!metrics.contains("WHARFPROBEMETHOD"), "{metrics}");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_are_registered_listed_updated_and_read_with_their_twin() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let prefix = unique("fleet");
    let ids: Vec<String> = (0..3).map(|n| format!("{prefix}-{n}")).collect();
    let mut tokens = Vec::new();
    for id in &ids {
        tokens.push(api.register(id, json!({"site": "north"})).await);
    }

    // Paginated, by id: two pages of two cover the three (and thermo-1).
    let first = api.get("/v1/devices?limit=2").await.result();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = api
        .get(&format!("/v1/devices?limit=2&cursor={cursor}"))
        .await
        .result();
    let listed: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|device| device["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(second["next_cursor"].is_null(), "the last page: {second}");
    for id in &ids {
        assert!(listed.contains(&id.as_str()), "{id} in {listed:?}");
    }

    let device = format!("/v1/devices/{}", ids[0]);
    let updated = api
        .put(
            &device,
            &json!({"model": "demo-thermostat", "metadata": {"site": "south", "firmware": "2.1.0"}}),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    let read = api.get(&device).await.result();
    assert_eq!(read["metadata"]["site"], json!("south"));
    assert_eq!(read["metadata"]["firmware"], json!("2.1.0"));

    // The token the API issued connects; the twin shows what it reported.
    let mut thermostat = WsDevice::connect(&ws_url(&wharf), &tokens[0])
        .await
        .expect("the issued token connects");
    thermostat
        .send_text(r#"{"temperature": 21, "mode": "eco"}"#)
        .await;
    wharf.state_after(&ids[0], 1).await;
    let desired = api
        .put(
            &format!("{device}/twin/desired"),
            &json!({"mode": "comfort", "temperature": 21}),
        )
        .await;
    assert_eq!(desired.status, 202, "{}", desired.body);
    let twin = wait_until(PATIENCE, "the desired state in the twin", || async {
        let twin = api.get(&format!("{device}/twin")).await.result();
        (twin["desired"]["mode"] == json!("comfort")).then_some(twin)
    })
    .await;
    assert_eq!(twin["reported"]["temperature"], json!(21));
    assert_eq!(twin["delta"], json!({"mode": "comfort"}), "{twin}");
    assert_eq!(twin["connected"], json!(true));
    assert_eq!(twin["message_count"], json!(1));
    assert!(twin["last_seen"].is_string(), "{twin}");
    wharf.stop().await;
}

/// Reads one length-prefixed frame.
async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let length = stream.read_u32().await.expect("a frame header");
    let mut frame = vec![0; length as usize];
    stream.read_exact(&mut frame).await.expect("a whole frame");
    frame
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_are_rendered_per_transport_and_rejected_ones_never_sent() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let (ws_id, tcp_id, mqtt_id) = (unique("ws"), unique("tcp"), unique("mqtt"));
    let ws_token = api.register(&ws_id, json!({"firmware": "1.4.0"})).await;
    let tcp_token = api.register(&tcp_id, json!({})).await;
    let mqtt_token = api.register(&mqtt_id, json!({})).await;

    let mut ws = WsDevice::connect(&ws_url(&wharf), &ws_token).await.unwrap();
    let mut tcp = TcpStream::connect(wharf.addresses.tcp.unwrap())
        .await
        .unwrap();
    tcp.write_u32(tcp_token.len() as u32).await.unwrap();
    tcp.write_all(tcp_token.as_bytes()).await.unwrap();
    assert_eq!(read_frame(&mut tcp).await, vec![0], "status ok");
    let mut mqtt = MqttDevice::connect(
        Flavor::V5,
        wharf.addresses.mqtt.unwrap(),
        &mqtt_id,
        &mqtt_token,
    )
    .await
    .unwrap();
    mqtt.subscribe(&format!("devices/{mqtt_id}/commands/#"))
        .await;
    mqtt.next(PATIENCE, |seen| {
        matches!(seen, Seen::SubAck(_)).then_some(())
    })
    .await;
    let mut status = wharf.command_status().await;

    // Unsupported by the model, unsupported by the firmware (schedule needs
    // 2.0), out of range: each rejected with its reason, none sent.
    let refusals = [
        ("reboot", json!({}), "unsupported"),
        (
            "schedule",
            json!({"at": "07:00", "celsius": 20}),
            "unsupported",
        ),
        ("set_target", json!({"celsius": 4.5}), "invalid_argument"),
        ("fan", json!({"on": "yes"}), "invalid_argument"),
    ];
    let mut rejected_ids = Vec::new();
    for (command, args, reason) in refusals {
        let answer = api
            .post(
                &format!("/v1/devices/{ws_id}/commands/{command}"),
                &json!({"args": args}),
            )
            .await;
        assert_eq!(answer.status, 422, "{command}: {}", answer.body);
        assert_eq!(answer.error_code(), reason, "{command}");
        let id = answer.json()["error"]["command_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let recorded = api.command_with_status(&id, "rejected", PATIENCE).await;
        assert_eq!(recorded["reason"], json!(reason));
        rejected_ids.push(id);
    }
    // The first frame the device gets is the accepted command after them.
    let sent = api
        .post(
            &format!("/v1/devices/{ws_id}/commands/set_target"),
            &json!({"args": {"celsius": 21.5}}),
        )
        .await;
    assert_eq!(sent.status, 202, "{}", sent.body);
    let accepted = sent.result();
    let frame: Value = serde_json::from_str(&ws.next_text(PATIENCE).await).unwrap();
    assert_eq!(
        frame,
        json!({"cmd": "set_target", "id": accepted["id"], "celsius": 21.5})
    );
    api.command_with_status(accepted["id"].as_str().unwrap(), "delivered", PATIENCE)
        .await;

    // Bytes for the TCP device: opcode 2, then 21.5 °C in tenths, i16 big-endian.
    let sent = api
        .post(
            &format!("/v1/devices/{tcp_id}/commands/set_target"),
            &json!({"args": {"celsius": 21.5}}),
        )
        .await
        .result();
    let frame = tokio::time::timeout(PATIENCE, read_frame(&mut tcp))
        .await
        .unwrap();
    assert_eq!(frame, vec![0x02, 0x00, 0xd7]);
    api.command_with_status(sent["id"].as_str().unwrap(), "delivered", PATIENCE)
        .await;

    // QoS 0 over MQTT: delivered once written, the argument's default filled in.
    let sent = api
        .post(&format!("/v1/devices/{mqtt_id}/commands/blink"), &json!({}))
        .await
        .result();
    let (topic, payload) = mqtt.next_publish(PATIENCE).await;
    assert_eq!(topic, format!("devices/{mqtt_id}/commands/blink"));
    let blink: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(blink, json!({"cmd": "blink", "id": sent["id"], "times": 1}));
    let delivered = api
        .command_with_status(sent["id"].as_str().unwrap(), "delivered", PATIENCE)
        .await;
    assert_eq!(delivered["terminal"], json!(true));

    // Operators see the rejections on the command-status topic too.
    let mut seen_rejected = Vec::new();
    while seen_rejected.len() < rejected_ids.len() {
        let envelope = tokio::time::timeout(PATIENCE, status.recv())
            .await
            .expect("the rejections on the command-status topic")
            .expect("the tail runs");
        if let Event::CommandRejected(rejected) = &envelope.event {
            seen_rejected.push(rejected.command_id.to_string());
        }
    }
    assert_eq!(seen_rejected, rejected_ids);

    // The device's recent commands, newest first.
    let listed = api
        .get(&format!("/v1/devices/{ws_id}/commands?limit=10"))
        .await
        .result();
    let statuses: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|command| command["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["delivered", "rejected", "rejected", "rejected", "rejected"]
    );
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_offline_queue_expires_its_oldest_command() {
    let wharf = TestWharf::start(|settings| settings.commander.queue_limit = 2).await;
    let api = wharf.api();
    let id = unique("sleepy");
    let token = api.register(&id, json!({})).await;
    let mut ids = Vec::new();
    for celsius in [18, 19, 20] {
        let sent = api
            .post(
                &format!("/v1/devices/{id}/commands/set_target"),
                &json!({"args": {"celsius": celsius}}),
            )
            .await;
        assert_eq!(sent.status, 202, "{}", sent.body);
        let command_id = sent.result()["id"].as_str().unwrap().to_owned();
        api.command_with_status(&command_id, "queued", PATIENCE)
            .await;
        ids.push(command_id);
    }
    let displaced = api.command_with_status(&ids[0], "expired", PATIENCE).await;
    assert_eq!(displaced["reason"], json!("displaced"), "{displaced}");

    // On connect, the two still queued arrive in the order they were sent.
    let mut device = WsDevice::connect(&ws_url(&wharf), &token).await.unwrap();
    for (command_id, celsius) in ids[1..].iter().zip([19, 20]) {
        let frame: Value = serde_json::from_str(&device.next_text(PATIENCE).await).unwrap();
        assert_eq!(
            (&frame["id"], &frame["celsius"]),
            (&json!(command_id), &json!(celsius))
        );
        api.command_with_status(command_id, "delivered", PATIENCE)
            .await;
    }
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_device_closes_its_connections_and_refuses_its_token() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let (ws_id, mqtt_id) = (unique("ws"), unique("mqtt"));
    let ws_token = api.register(&ws_id, json!({})).await;
    let mqtt_token = api.register(&mqtt_id, json!({})).await;
    let mqtt_addr = wharf.addresses.mqtt.unwrap();
    let mut ws = WsDevice::connect(&ws_url(&wharf), &ws_token).await.unwrap();
    let mut mqtt = raw::open_v5(mqtt_addr, &mqtt_id, &mqtt_token).await;
    wharf.state_after(&mqtt_id, 0).await; // connected and announced

    for id in [&ws_id, &mqtt_id] {
        let deleted = api.delete(&format!("/v1/devices/{id}")).await;
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        assert!(deleted.result()["tokens_issued_before"].is_string());
    }
    assert_eq!(
        ws.closed(PATIENCE).await,
        (1008, "device revoked".to_owned())
    );
    assert_eq!(
        raw::disconnect_reason(&mut mqtt, PATIENCE).await,
        0x98,
        "MQTT 5 'administrative action'"
    );

    // Their tokens no longer connect, and the API no longer knows them.
    assert_eq!(
        WsDevice::refused_status(&ws_url(&wharf), &ws_token).await,
        401
    );
    let refused = MqttDevice::connect(Flavor::V5, mqtt_addr, &mqtt_id, &mqtt_token).await;
    assert!(refused.is_err(), "a revoked token is refused over MQTT");
    assert_eq!(api.get(&format!("/v1/devices/{ws_id}")).await.status, 404);
    assert_eq!(
        api.delete(&format!("/v1/devices/{ws_id}")).await.status,
        404
    );
    let (_, metrics) = http::get(wharf.ops(), "/metrics").await.unwrap();
    assert!(
        metrics.contains(
            "wharf_socket_auth_failures_total{transport=\"websocket\",reason=\"revoked\"} 1"
        ),
        "{metrics}"
    );

    // Registered again, the device gets a token issued after the revocation.
    let fresh = api.register(&ws_id, json!({})).await;
    assert_ne!(fresh, ws_token);
    WsDevice::connect(&ws_url(&wharf), &fresh)
        .await
        .expect("the new token connects");

    // Deleted, registered and deleted again in quick succession (within one
    // second, mostly): every token handed out is refused in the end.
    let mut handed_out = vec![fresh];
    for _ in 0..3 {
        assert_eq!(
            api.delete(&format!("/v1/devices/{ws_id}")).await.status,
            200
        );
        handed_out.push(api.register(&ws_id, json!({})).await);
    }
    assert_eq!(
        api.delete(&format!("/v1/devices/{ws_id}")).await.status,
        200
    );
    for token in &handed_out {
        // The Socket learns of revocations from the bus: give it a moment.
        wait_until(
            PATIENCE,
            "every token of the deleted device to be refused",
            || async {
                WsDevice::connect(&ws_url(&wharf), token)
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
        assert_eq!(WsDevice::refused_status(&ws_url(&wharf), token).await, 401);
    }
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_reads_share_one_database_read() {
    let wharf = TestWharf::start(|settings| {
        settings.commander.api.read_cache = Duration::from_secs(60);
    })
    .await;
    let api = wharf.api();
    let id = unique("popular");
    api.register(&id, json!({})).await;
    let reads = || async {
        let (_, metrics) = http::get(wharf.ops(), "/metrics").await.unwrap();
        http::metric(&metrics, "wharf_commander_api_store_reads_total").unwrap_or(0.0)
    };
    let before = reads().await;
    let path = format!("/v1/devices/{id}/twin");
    let answers = futures_util::future::join_all((0..50).map(|_| api.get(&path))).await;
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.result()["device"], json!(id));
    }
    assert_eq!(reads().await - before, 1.0, "50 concurrent GETs, one read");
    // A write clears the cache: the next read goes to the database.
    api.put(
        &format!("/v1/devices/{id}/twin/desired"),
        &json!({"mode": "eco"}),
    )
    .await;
    api.get(&path).await;
    assert_eq!(reads().await - before, 2.0);
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn profiles_reload_on_request_and_a_broken_one_changes_nothing() {
    let profiles = wharf_tests::temp_dir("profiles");
    let (trigger, wharf) = TestWharf::start_reloadable({
        let profiles = profiles.clone();
        move |settings| settings.commander.profiles_dir = profiles
    })
    .await;
    let api = wharf.api();
    let new_device = json!({"id": unique("pump"), "model": "demo-pump"});
    let refused = api.post("/v1/devices", &new_device).await;
    assert_eq!(refused.error_code(), "unknown_model");

    std::fs::write(
        profiles.join("demo-pump.toml"),
        "model = \"demo-pump\"\n[commands.start]\njson = '{\"cmd\": \"start\"}'\n",
    )
    .unwrap();
    trigger.reload();
    wait_until(PATIENCE, "the new profile to be loaded", || async {
        (api.post("/v1/devices", &new_device).await.status == 201).then_some(())
    })
    .await;

    // A broken file: the reload is refused, the profiles in force stay.
    std::fs::write(profiles.join("broken.toml"), "model = \n").unwrap();
    trigger.reload();
    wait_until(PATIENCE, "the failed reload to be counted", || async {
        let (_, metrics) = http::get(wharf.ops(), "/metrics").await.unwrap();
        metrics
            .contains("wharf_commander_profile_reloads_total{outcome=\"failed\"} 1")
            .then_some(())
    })
    .await;
    let again = json!({"id": unique("pump"), "model": "demo-pump"});
    assert_eq!(api.post("/v1/devices", &again).await.status, 201);
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_describes_every_route() {
    let wharf = TestWharf::start(|_| {}).await;
    let document = wharf.api().anonymous().get("/openapi.json").await;
    assert_eq!(document.status, 200);
    let document = document.json();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/v1/devices", "post"),
        ("/v1/devices", "get"),
        ("/v1/devices/{id}", "get"),
        ("/v1/devices/{id}", "put"),
        ("/v1/devices/{id}", "delete"),
        ("/v1/devices/{id}/twin", "get"),
        ("/v1/devices/{id}/twin/desired", "put"),
        ("/v1/devices/{id}/commands/{name}", "post"),
        ("/v1/devices/{id}/commands", "get"),
        ("/v1/commands/{id}", "get"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    assert!(document["components"]["securitySchemes"]["api_key"].is_object());
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_sub_receives_a_command_sent_through_the_api() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let id = unique("thermo");
    let token = api.register(&id, json!({})).await;
    let subscriber = mosquitto_sub_once(
        wharf.addresses.mqtt.unwrap().port(),
        &id,
        &token,
        &format!("devices/{id}/commands/#"),
        true,
    );
    // Sent once the subscriber is connected: before, it would wait queued.
    wait_until(PATIENCE, "mosquitto_sub to connect", || async {
        let twin = api.get(&format!("/v1/devices/{id}/twin")).await.result();
        (twin["connected"] == json!(true)).then_some(())
    })
    .await;
    let sent = api
        .post(
            &format!("/v1/devices/{id}/commands/fan"),
            &json!({"args": {"on": true}}),
        )
        .await
        .result();
    let output = subscriber.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let line = String::from_utf8(output.stdout).unwrap();
    let (topic, payload) = line.trim_end().split_once(' ').expect("topic and payload");
    assert_eq!(topic, format!("devices/{id}/commands/fan"));
    let command: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(command["id"], sent["id"]);
    api.command_with_status(sent["id"].as_str().unwrap(), "delivered", PATIENCE)
        .await;
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_its_device_left_before_receiving_waits_for_it_again() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let id = unique("flaky");
    let token = api.register(&id, json!({})).await;
    // Connected over MQTT but not subscribed yet: the command waits at the Socket.
    let mut raw = raw::open_v5(wharf.addresses.mqtt.unwrap(), &id, &token).await;
    wharf.state_after(&id, 0).await;
    let sent = api
        .post(
            &format!("/v1/devices/{id}/commands/fan"),
            &json!({"args": {"on": true}}),
        )
        .await
        .result();
    let command_id = sent["id"].as_str().unwrap();
    api.command_with_status(command_id, "dispatched", PATIENCE)
        .await;
    raw.shutdown().await.unwrap();
    drop(raw);

    // The device left before the frame was written: queued again, not failed.
    let queued = api
        .command_with_status(command_id, "queued", PATIENCE)
        .await;
    assert!(queued["expires_at"].is_string(), "{queued}");
    let mut device = MqttDevice::connect(Flavor::V5, wharf.addresses.mqtt.unwrap(), &id, &token)
        .await
        .unwrap();
    device.subscribe(&format!("devices/{id}/commands/#")).await;
    let (_, payload) = device.next_publish(PATIENCE).await;
    let frame: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(frame["id"], json!(command_id));
    api.command_with_status(command_id, "delivered", PATIENCE)
        .await;
    wharf.stop().await;
}

/// A device sending ever new keys cannot grow its twin without bound: past
/// `receiver.twin.max_keys` new keys are refused (counted), known keys
/// still change, and the API shows the capped twin.
#[tokio::test(flavor = "multi_thread")]
async fn a_device_cannot_grow_its_twin_without_bound() {
    let wharf = TestWharf::start(|settings| settings.receiver.twin.max_keys = 100).await;
    let api = wharf.api();
    let device = unique("hoarder");
    let token = api.register(&device, json!({})).await;
    let mut ws = WsDevice::connect(&ws_url(&wharf), &token).await.unwrap();
    let many: serde_json::Map<String, Value> =
        (0..150).map(|i| (format!("k{i:03}"), json!(i))).collect();
    ws.send_text(&Value::Object(many).to_string()).await;
    ws.send_text(r#"{"k000": "changed"}"#).await;
    wharf.state_after(&device, 2).await;
    let twin = api
        .get(&format!("/v1/devices/{device}/twin"))
        .await
        .result();
    let reported = twin["reported"].as_object().unwrap();
    assert_eq!(reported.len(), 100);
    assert_eq!(reported["k000"], json!("changed"));
    assert!(!reported.contains_key("k100"), "keys are taken in order");
    let (_, metrics) = http::get(wharf.ops(), "/metrics").await.unwrap();
    assert_eq!(
        http::metric(
            &metrics,
            r#"wharf_receiver_twin_refused_total{reason="too_many_keys",part="reported"}"#
        ),
        Some(50.0)
    );
    wharf.stop().await;
}

/// A ttl above `commander.max_ttl` waits `max_ttl`: the answer's
/// `expires_at` says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_ttl_above_the_maximum_waits_the_maximum() {
    let wharf = TestWharf::start(|settings| {
        settings.commander.max_ttl = Duration::from_secs(3600);
    })
    .await;
    let api = wharf.api();
    let device = unique("patient");
    api.register(&device, json!({})).await;
    let sent = api
        .post(
            &format!("/v1/devices/{device}/commands/fan"),
            &json!({"args": {"on": true}, "ttl": "30d"}),
        )
        .await
        .result();
    let queued = api
        .command_with_status(sent["id"].as_str().unwrap(), "queued", PATIENCE)
        .await;
    let expires_at = humantime::parse_rfc3339(queued["expires_at"].as_str().unwrap()).unwrap();
    let requested_at = humantime::parse_rfc3339(queued["requested_at"].as_str().unwrap()).unwrap();
    let waits = expires_at.duration_since(requested_at).unwrap();
    assert!(
        waits <= Duration::from_secs(3601) && waits >= Duration::from_secs(3500),
        "{queued}"
    );
    wharf.stop().await;
}
