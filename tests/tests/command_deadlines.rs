//! Every command ends in exactly one terminal status, and a Socket never
//! writes a stale command:
//! - a command dispatched to a Socket instance that never reports (it went
//!   away, or its report was lost) fails with `no_outcome` after the
//!   Commander's `outcome_timeout`;
//! - a delivery read after the command's time to live is not written; it
//!   ends `expired`;
//! - a delivery read twice (the same dispatch) reaches the device once.

use std::time::{Duration, SystemTime};

use serde_json::json;
use wharf_events::{
    CommandDispatched, DeviceConnected, Envelope, Event, FailureReason, Payload, Transport,
};
use wharf_tests::wharf::TestWharf;
use wharf_tests::{WsDevice, unique};

const PATIENCE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_command_its_socket_never_reports_on_fails_with_no_outcome() {
    let wharf = TestWharf::start(|settings| {
        settings.commander.outcome_timeout = Duration::from_secs(2);
        settings.commander.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let api = wharf.api();
    let device = unique("stranded");
    api.register(&device, json!({})).await;
    // The device is held by a Socket instance that is gone (scaled down):
    // the command goes to its deliveries topic, which nobody reads.
    let connected = Envelope::new(
        &device,
        "socket-gone",
        Event::DeviceConnected(DeviceConnected {
            model: "demo-thermostat".into(),
            transport: Transport::Websocket,
            instance: "socket-gone".into(),
            connection: uuid::Uuid::now_v7(),
            remote: None,
        }),
    );
    wharf.publish(|topics| topics.presence(), &connected).await;
    let mut status = wharf.command_status().await;
    // Queued or dispatched at once, depending on whether the Commander saw
    // the presence first; dispatched to the gone instance either way.
    let sent = api
        .post(
            &format!("/v1/devices/{device}/commands/fan"),
            &json!({"args": {"on": true}}),
        )
        .await
        .result();
    let command_id = sent["id"].as_str().unwrap().to_owned();
    let dispatched = api
        .command_with_status(&command_id, "dispatched", PATIENCE)
        .await;
    assert_eq!(dispatched["instance"], json!("socket-gone"), "{dispatched}");

    let failed = api
        .command_with_status(&command_id, "failed", PATIENCE)
        .await;
    assert_eq!(failed["reason"], json!("no_outcome"), "{failed}");
    assert!(
        failed["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("socket-gone")),
        "the detail names the instance: {failed}"
    );
    // The status topic tells the same story, once.
    let told = loop {
        let envelope = next(&mut status).await;
        if let Event::CommandFailed(failed) = envelope.event
            && failed.command_id.to_string() == command_id
        {
            break failed;
        }
    };
    assert_eq!(told.reason, FailureReason::NoOutcome);
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_writes_neither_an_expired_nor_a_repeated_delivery() {
    let wharf = TestWharf::start(|_| {}).await;
    let device = unique("replayed");
    let url = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    let mut ws = WsDevice::connect(&url, &wharf.token(&device))
        .await
        .unwrap();
    wharf.state_after(&device, 0).await;
    let mut status = wharf.command_status().await;

    let dispatch = |name: &str, expires_at: Option<SystemTime>| {
        Envelope::new(
            &device,
            "commander",
            Event::CommandDispatched(CommandDispatched {
                command_id: uuid::Uuid::now_v7(),
                command: "fan".into(),
                instance: "socket-0".into(),
                channel: None,
                qos: None,
                frame: Payload::Json(json!({"cmd": name})),
                expires_at,
                reply: false,
            }),
        )
    };
    let to_socket = |topics: &wharf_events::Topics| topics.deliveries("socket-0");
    let stale = dispatch("stale", Some(SystemTime::now() - Duration::from_secs(1)));
    let twice = dispatch("twice", Some(SystemTime::now() + Duration::from_secs(3600)));
    let last = dispatch("last", None);
    for envelope in [&stale, &twice, &twice, &last] {
        wharf.publish(to_socket, envelope).await;
    }

    // In order on the device's connection: only "twice", once, then "last".
    let first = ws.next_text(PATIENCE).await;
    let second = ws.next_text(PATIENCE).await;
    assert_eq!(
        [first.as_str(), second.as_str()],
        [r#"{"cmd":"twice"}"#, r#"{"cmd":"last"}"#]
    );

    // The stale one is reported expired, and the repeated one delivered once.
    let id_of = |envelope: &Envelope| match &envelope.event {
        Event::CommandDispatched(dispatched) => dispatched.command_id,
        _ => unreachable!(),
    };
    let mut outcomes = Vec::new();
    while outcomes.len() < 3 {
        match next(&mut status).await.event {
            Event::CommandFailed(failed) => outcomes.push((
                failed.command_id,
                format!("failed:{}", failed.reason.as_str()),
            )),
            Event::CommandDelivered(delivered) => {
                outcomes.push((delivered.command_id, "delivered".to_owned()))
            }
            _ => {}
        }
    }
    // A second outcome of the repeated delivery would follow at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(envelope) = status.try_recv() {
        if let Event::CommandDelivered(delivered) = envelope.event {
            outcomes.push((delivered.command_id, "delivered".to_owned()));
        }
    }
    outcomes.sort();
    let mut expected = vec![
        (id_of(&stale), "failed:expired".to_owned()),
        (id_of(&twice), "delivered".to_owned()),
        (id_of(&last), "delivered".to_owned()),
    ];
    expected.sort();
    assert_eq!(outcomes, expected);
    wharf.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_whose_ttl_ends_before_the_socket_writes_it_ends_expired() {
    let wharf = TestWharf::start(|_| {}).await;
    let api = wharf.api();
    let device = unique("late");
    let token = api.register(&device, json!({})).await;
    let url = format!("ws://{}/v1/ws", wharf.addresses.websocket.unwrap());
    let mut ws = WsDevice::connect(&url, &token).await.unwrap();
    // A command with time to spare reaches the device: the Commander knows
    // where the device is, so the next one is dispatched, not queued.
    let first = api
        .post(
            &format!("/v1/devices/{device}/commands/fan"),
            &json!({"args": {"on": false}}),
        )
        .await
        .result();
    let frame: serde_json::Value = serde_json::from_str(&ws.next_text(PATIENCE).await).unwrap();
    assert_eq!(frame["id"], first["id"], "{frame}");
    api.command_with_status(first["id"].as_str().unwrap(), "delivered", PATIENCE)
        .await;
    let mut status = wharf.command_status().await;

    // One millisecond is over before the Socket reads the delivery.
    let sent = api
        .post(
            &format!("/v1/devices/{device}/commands/fan"),
            &json!({"args": {"on": true}, "ttl": "1ms"}),
        )
        .await
        .result();
    let command_id = sent["id"].as_str().unwrap().to_owned();
    let expired = api
        .command_with_status(&command_id, "expired", PATIENCE)
        .await;
    assert_eq!(expired["reason"], json!("ttl"), "{expired}");
    // It was the Socket that refused it (not a queue expiry), and the
    // device never saw it.
    let refused = loop {
        if let Event::CommandFailed(failed) = next(&mut status).await.event
            && failed.command_id.to_string() == command_id
        {
            break failed;
        }
    };
    assert_eq!(refused.reason, FailureReason::Expired);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), ws.next_text(PATIENCE))
            .await
            .is_err(),
        "the expired command reached the device"
    );
    wharf.stop().await;
}

/// The next event on the status topic, waiting at most `PATIENCE`.
async fn next(status: &mut tokio::sync::mpsc::UnboundedReceiver<Envelope>) -> Envelope {
    tokio::time::timeout(PATIENCE, status.recv())
        .await
        .expect("an event on the status topic in time")
        .expect("the status topic is read")
}
