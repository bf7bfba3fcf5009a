//! The Commander's tables — device registry, commands, outbox — written
//! once and run on SQLite and on PostgreSQL.

mod common;

use std::time::Duration;

use common::{postgres, sqlite, unique};
use serde_json::{Map, json};
use uuid::Uuid;
use wharf_store::{
    CommandCursor, CommandRow, CommandStatus, Created, DeviceRow, StatusChange, Store, StoreConfig,
    unix_millis,
};

fn object(value: serde_json::Value) -> Map<String, serde_json::Value> {
    value.as_object().cloned().unwrap()
}

fn device(id: &str, firmware: &str) -> DeviceRow {
    DeviceRow {
        id: id.to_owned(),
        model: "demo-thermostat".into(),
        metadata: object(json!({"firmware": firmware, "site": "lab"})),
        ..DeviceRow::default()
    }
}

async fn devices_are_created_deleted_and_created_again(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let id = unique("thermo");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.create_device(&device(&id, "1.0.0")).await.unwrap(),
        Created::Created {
            revoked_at_ms: None
        }
    );
    assert_eq!(
        tx.create_device(&device(&id, "1.0.0")).await.unwrap(),
        Created::AlreadyExists
    );
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert!(
        tx.update_device(
            &id,
            "demo-thermostat",
            &object(json!({"firmware": "2.1.0"}))
        )
        .await
        .unwrap()
    );
    tx.commit().await.unwrap();
    let stored = store.device(&id).await.unwrap().unwrap();
    assert_eq!(stored.metadata["firmware"], "2.1.0");
    assert_eq!(stored.revoked_at_ms, None);
    // Listing after a prefix of the id finds it first.
    let listed = store.devices(1, Some(&id[..id.len() - 1])).await.unwrap();
    assert_eq!(listed[0].id, id);

    let deleted_at = unix_millis(std::time::SystemTime::now());
    let mut tx = store.begin().await.unwrap();
    assert!(tx.revoke_device(&id, deleted_at).await.unwrap());
    assert!(!tx.revoke_device(&id, deleted_at).await.unwrap(), "once");
    assert!(
        !tx.update_device(&id, "demo-thermostat", &Map::new())
            .await
            .unwrap(),
        "a deleted device cannot be updated"
    );
    tx.commit().await.unwrap();
    assert_eq!(
        store.device(&id).await.unwrap().unwrap().revoked_at_ms,
        Some(deleted_at)
    );
    let all = store.devices(1000, None).await.unwrap();
    assert!(
        all.iter().all(|d| d.id != id),
        "deleted devices are not listed"
    );

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.create_device(&device(&id, "3.0.0")).await.unwrap(),
        Created::Created {
            revoked_at_ms: Some(deleted_at)
        }
    );
    tx.commit().await.unwrap();
    let again = store.device(&id).await.unwrap().unwrap();
    assert_eq!(
        (again.revoked_at_ms, &again.metadata["firmware"]),
        (None, &json!("3.0.0"))
    );
}

async fn devices_page_by_id(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let prefix = unique("page");
    let mut tx = store.begin().await.unwrap();
    for i in 0..5 {
        tx.create_device(&device(&format!("{prefix}-{i}"), "1"))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let first = store.devices(2, Some(&prefix)).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, [format!("{prefix}-0"), format!("{prefix}-1")]);
    let next = store.devices(2, Some(&first[1].id)).await.unwrap();
    assert_eq!(next[0].id, format!("{prefix}-2"));
}

fn request(device: &str, command: &str) -> CommandRow {
    let id = Uuid::now_v7();
    CommandRow::requested(
        id,
        id,
        device,
        "demo-thermostat",
        command,
        object(json!({"on": true})),
        Some(30_000),
    )
}

/// Past the first page of devices with queued commands the rest are found
/// too: a device whose id sorts late still has its queue flushed.
async fn every_device_with_queued_commands_is_found_past_a_page(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let prefix = unique("waiting");
    let mut tx = store.begin().await.unwrap();
    for i in 0..5 {
        let row = request(&format!("{prefix}-{i}"), "fan");
        tx.insert_command(&row).await.unwrap();
        let queued = StatusChange {
            expires_at_ms: Some(row.requested_at_ms + 30_000),
            ..StatusChange::to(CommandStatus::Queued)
        };
        tx.transition(row.id, CommandStatus::Requested, &queued)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let found = store.devices_with_queued_commands(2).await.unwrap();
    for i in 0..5 {
        let device = format!("{prefix}-{i}");
        assert!(found.contains(&device), "{device} missing from {found:?}");
    }
}

async fn commands_change_status_only_from_the_status_seen(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let device = unique("thermo");
    let row = request(&device, "fan");
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_command(&row).await.unwrap());
    assert!(
        !tx.insert_command(&row).await.unwrap(),
        "a replay is not new"
    );
    let expires = row.requested_at_ms + 30_000;
    let queued = StatusChange {
        expires_at_ms: Some(expires),
        ..StatusChange::to(CommandStatus::Queued)
    };
    assert!(
        tx.transition(row.id, CommandStatus::Requested, &queued)
            .await
            .unwrap()
    );
    assert!(
        !tx.transition(row.id, CommandStatus::Requested, &queued)
            .await
            .unwrap(),
        "no longer requested"
    );
    tx.commit().await.unwrap();
    let stored = store.command(row.id).await.unwrap().unwrap();
    assert_eq!(stored.status, CommandStatus::Queued);
    assert_eq!(stored.expires_at_ms, Some(expires));
    assert_eq!(stored.args, row.args);
    assert!(
        store
            .expired_queued(expires - 1, 100)
            .await
            .unwrap()
            .iter()
            .all(|c| c.id != row.id)
    );
    assert!(
        store
            .expired_queued(expires, 100000)
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == row.id)
    );
    assert!(
        store
            .devices_with_queued_commands(100_000)
            .await
            .unwrap()
            .contains(&device)
    );

    // Two transactions race to send the command: exactly one wins.
    let dispatched = StatusChange {
        instance: Some("socket-0".into()),
        ..StatusChange::to(CommandStatus::Dispatched)
    };
    let mut first = store.begin().await.unwrap();
    assert!(
        first
            .transition(row.id, CommandStatus::Queued, &dispatched)
            .await
            .unwrap()
    );
    let second = {
        let (store, dispatched) = (store.clone(), dispatched.clone());
        tokio::spawn(async move {
            let mut tx = store.begin().await.unwrap();
            let won = tx
                .transition(row.id, CommandStatus::Queued, &dispatched)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            won
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.commit().await.unwrap();
    assert!(!second.await.unwrap(), "the second sender lost the race");

    let mut tx = store.begin().await.unwrap();
    let delivered = StatusChange::to(CommandStatus::Delivered);
    assert!(
        tx.transition(row.id, CommandStatus::Dispatched, &delivered)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let settled = store.command(row.id).await.unwrap().unwrap();
    assert_eq!(settled.status, CommandStatus::Delivered);
    assert!(settled.status.is_terminal());
    assert_eq!(
        settled.instance.as_deref(),
        Some("socket-0"),
        "kept from dispatch"
    );
}

async fn a_device_queue_keeps_request_order(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let device = unique("thermo");
    let mut tx = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for (i, command) in ["a", "b", "c"].iter().enumerate() {
        let mut row = request(&device, command);
        row.requested_at_ms += i as i64; // distinct and ordered
        row.status = CommandStatus::Queued;
        tx.insert_command(&row).await.unwrap();
        ids.push(row.id);
    }
    let queue = tx.queued_commands(&device).await.unwrap();
    assert_eq!(queue.iter().map(|c| c.id).collect::<Vec<_>>(), ids);
    assert_eq!(tx.queued_count(&device).await.unwrap(), 3);
    let oldest = tx.oldest_queued(&device, 2).await.unwrap();
    assert_eq!(oldest.iter().map(|c| c.id).collect::<Vec<_>>(), ids[..2]);
    tx.commit().await.unwrap();

    let page = store.device_commands(&device, 2, None).await.unwrap();
    assert_eq!(
        page.iter().map(|c| c.id).collect::<Vec<_>>(),
        [ids[2], ids[1]]
    );
    let cursor = CommandCursor {
        requested_at_ms: page[1].requested_at_ms,
        id: page[1].id,
    };
    let rest = store
        .device_commands(&device, 2, Some(&cursor))
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|c| c.id).collect::<Vec<_>>(), [ids[0]]);
}

async fn the_outbox_publishes_in_order_and_only_what_committed(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let (instance, other) = (unique("commander"), unique("commander"));
    let mut tx = store.begin().await.unwrap();
    for i in 0..3 {
        tx.outbox(
            &instance,
            "wharf.command-status",
            "d",
            "CommandQueued",
            format!("{{\"n\":{i}}}"),
        )
        .await
        .unwrap();
    }
    tx.outbox(
        &other,
        "wharf.command-status",
        "d",
        "CommandQueued",
        "{}".into(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let mut rolled_back = store.begin().await.unwrap();
    rolled_back
        .outbox(&instance, "t", "d", "CommandQueued", "{\"n\":99}".into())
        .await
        .unwrap();
    drop(rolled_back);

    let batch = store.outbox_batch(&instance, 100).await.unwrap();
    let payloads: Vec<&str> = batch.iter().map(|row| row.payload.as_str()).collect();
    assert_eq!(payloads, [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#]);
    store
        .outbox_published(&instance, &[batch[0].seq, batch[1].seq])
        .await
        .unwrap();
    let rest = store.outbox_batch(&instance, 100).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].payload, r#"{"n":2}"#);
    assert_eq!(store.outbox_batch(&other, 100).await.unwrap().len(), 1);
}

macro_rules! scenarios {
    ($name:ident, $config:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn devices_are_created_deleted_and_created_again() {
                super::devices_are_created_deleted_and_created_again($config).await;
            }

            #[tokio::test]
            async fn devices_page_by_id() {
                super::devices_page_by_id($config).await;
            }

            #[tokio::test]
            async fn every_device_with_queued_commands_is_found_past_a_page() {
                super::every_device_with_queued_commands_is_found_past_a_page($config).await;
            }

            #[tokio::test]
            async fn commands_change_status_only_from_the_status_seen() {
                super::commands_change_status_only_from_the_status_seen($config).await;
            }

            #[tokio::test]
            async fn a_device_queue_keeps_request_order() {
                super::a_device_queue_keeps_request_order($config).await;
            }

            #[tokio::test]
            async fn the_outbox_publishes_in_order_and_only_what_committed() {
                super::the_outbox_publishes_in_order_and_only_what_committed($config).await;
            }
        }
    };
}

scenarios!(sqlite, sqlite());
scenarios!(postgres, postgres());

/// Two services starting at once on a new SQLite file (the Receiver and the
/// Commander of one deployment) both end up on the full schema.
#[tokio::test(flavor = "multi_thread")]
async fn services_starting_together_on_a_new_sqlite_file_both_migrate() {
    for _ in 0..5 {
        let config = sqlite();
        let (first, second) = tokio::join!(Store::connect(&config), Store::connect(&config));
        let (first, second) = (first.expect("first"), second.expect("second"));
        assert!(second.device("nobody").await.unwrap().is_none());
        first.close().await;
        second.close().await;
    }
}

/// An outbox row that commits after a later-numbered one was read and
/// published is still published: sequence numbers are taken at insert, not
/// at commit, so "delete everything up to the last published" would delete
/// it unpublished. Only PostgreSQL lets two writers interleave (SQLite's
/// writes are serialised).
#[tokio::test(flavor = "multi_thread")]
async fn an_outbox_row_committed_late_is_not_deleted_unpublished_on_postgres() {
    let store = Store::connect(&postgres()).await.unwrap();
    let instance = unique("commander");
    let mut early = store.begin().await.unwrap();
    early
        .outbox(&instance, "t", "d", "DeviceRevoked", "{\"n\":1}".into())
        .await
        .unwrap();
    let mut late = store.begin().await.unwrap();
    late.outbox(&instance, "t", "d", "CommandDispatched", "{\"n\":2}".into())
        .await
        .unwrap();
    late.commit().await.unwrap();

    // The relay reads and publishes what has committed so far: seq 2 only.
    let first = store.outbox_batch(&instance, 100).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].payload, r#"{"n":2}"#);
    early.commit().await.unwrap();
    store
        .outbox_published(&instance, &[first[0].seq])
        .await
        .unwrap();

    let next = store.outbox_batch(&instance, 100).await.unwrap();
    let payloads: Vec<&str> = next.iter().map(|row| row.payload.as_str()).collect();
    assert_eq!(
        payloads,
        [r#"{"n":1}"#],
        "the early row is still to publish"
    );
}
