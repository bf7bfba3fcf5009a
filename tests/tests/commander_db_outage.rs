//! A Commander stopped while its database is down leaves the request it was
//! retrying uncommitted: started again with the database back, it handles
//! that request. (Committing it would lose the command for good.)

use std::time::Duration;

use serde_json::json;
use wharf_bus::{Publisher as _, Record, TopicSpec};
use wharf_events::{CommandRequested, Envelope, Event, Topics};
use wharf_tests::commander::CommanderPorts;
use wharf_tests::kafka;
use wharf_tests::postgres::PgCluster;
use wharf_tests::process::Service;
use wharf_tests::{http, temp_dir, unique, wait_until};

const PATIENCE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread")]
async fn a_request_interrupted_by_shutdown_during_a_store_outage_is_handled_after_restart() {
    let postgres = PgCluster::start();
    let dir = temp_dir("wharf-commander-outage");
    let prefix = unique("cmd-outage");
    let commander = CommanderPorts::free();
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!(
            "{bus}\n[store]\nurl = \"{url}\"\nconnect_timeout = \"1s\"\n\n\
             [auth]\nsecret = \"a-secret-for-this-scenario-only\"\n\n{commander}",
            bus = kafka::bus_toml(&prefix, 2),
            url = postgres.url(),
            commander = commander.toml(),
        ),
    )
    .unwrap();
    let ready = |status: u16| {
        let ops = commander.ops;
        async move {
            wait_until(PATIENCE, &format!("/readyz to answer {status}"), || async {
                http::get(ops, "/readyz")
                    .await
                    .filter(|(answer, _)| *answer == status)
            })
            .await
        }
    };
    let mut running = Service::start("wharf-commander", &config, &dir);
    ready(200).await;

    let topics = Topics::new(&prefix).unwrap();
    let bus = kafka::bus();
    bus.ensure_topics(&[TopicSpec::new(topics.command_requests(), 2)])
        .await
        .unwrap();
    let store = wharf_tests::store_at(&postgres.url()).await;
    // A first request, handled: the Commander is consuming the topic.
    let first = fan_request();
    bus.publish(Record::event(topics.command_requests(), &first))
        .await
        .unwrap();
    wait_until(PATIENCE, "the first request to be handled", || async {
        store.command(first.id).await.ok().flatten()
    })
    .await;

    postgres.stop();
    let request = fan_request();
    bus.publish(Record::event(topics.command_requests(), &request))
        .await
        .unwrap();
    // The Commander reads it at once and retries the store: not ready. (A
    // few seconds more so that the request, not only a sweep, is waiting.)
    ready(503).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = running.terminate();
    assert!(status.success(), "the commander stops cleanly: {status}");

    postgres.resume();
    let _restarted = Service::start("wharf-commander", &config, &dir);
    ready(200).await;
    let row = wait_until(
        PATIENCE,
        "the interrupted request to be handled",
        || async { store.command(request.id).await.ok().flatten() },
    )
    .await;
    assert_eq!(row.command, "fan");
    assert_eq!(row.device, request.device);
}

/// A `fan` request for a device of its own.
fn fan_request() -> Envelope {
    Envelope::new(
        unique("thermo"),
        "receiver",
        Event::CommandRequested(CommandRequested {
            model: "demo-thermostat".into(),
            command: "fan".into(),
            args: json!({"on": true}).as_object().cloned().unwrap(),
            ttl_ms: Some(3_600_000),
        }),
    )
}
