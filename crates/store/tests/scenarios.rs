//! Store scenarios, written once and run on SQLite and on PostgreSQL (at
//! `WHARF_TEST_POSTGRES_URL`; `scripts/test` starts one).

mod common;

use common::{postgres, sqlite, unique};
use serde_json::json;
use wharf_store::{Committed, DeviceStateRow, PartitionClaim, Store, StoreConfig, StoredOffset};

fn state(device: &str, count: i64, temperature: i64) -> DeviceStateRow {
    DeviceStateRow {
        device: device.to_owned(),
        model: "demo-thermostat".into(),
        reported: json!({"temperature": temperature, "unit": "C"})
            .as_object()
            .cloned()
            .unwrap(),
        message_count: count,
        last_seen_ms: Some(1_764_000_000_000 + count),
        desired: json!({"target": 21}).as_object().cloned().unwrap(),
        connected: count % 2 == 0,
        meta: json!({"rules": {"hot": 1_764_000_000_000_i64}})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

fn offset(topic: &str, partition: i32, next_offset: i64) -> StoredOffset {
    StoredOffset {
        topic: topic.to_owned(),
        partition,
        next_offset,
    }
}

/// Writes a batch without claims (unfenced) and expects it stored.
async fn write(store: &Store, group: &str, states: &[DeviceStateRow], offsets: &[StoredOffset]) {
    let committed = store
        .commit_batch(group, &[], states, offsets)
        .await
        .unwrap();
    assert_eq!(committed, Committed::Written);
}

async fn state_and_offsets_round_trip(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let (a, b, group) = (unique("a"), unique("b"), unique("receiver"));
    write(
        &store,
        &group,
        &[state(&a, 3, 35), state(&b, 1, 20)],
        &[offset("events", 0, 10), offset("events", 1, 4)],
    )
    .await;

    assert_eq!(
        store.load_device_state(&a).await.unwrap(),
        Some(state(&a, 3, 35))
    );
    assert_eq!(
        store.load_device_state(&b).await.unwrap(),
        Some(state(&b, 1, 20))
    );
    assert_eq!(
        store.load_device_state(&unique("nobody")).await.unwrap(),
        None
    );
    let mut offsets = store.load_offsets(&group).await.unwrap();
    offsets.sort_by_key(|o| o.partition);
    assert_eq!(
        offsets,
        vec![offset("events", 0, 10), offset("events", 1, 4)]
    );
}

async fn later_batches_replace_earlier_ones(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let (a, group) = (unique("a"), unique("receiver"));
    write(
        &store,
        &group,
        &[state(&a, 1, 20)],
        &[offset("events", 0, 1)],
    )
    .await;
    write(
        &store,
        &group,
        &[state(&a, 2, 36)],
        &[offset("events", 0, 2)],
    )
    .await;
    let row = store.load_device_state(&a).await.unwrap().unwrap();
    assert_eq!(
        (row.message_count, row.reported["temperature"].clone()),
        (2, json!(36))
    );
    assert_eq!(
        store.load_offsets(&group).await.unwrap(),
        vec![offset("events", 0, 2)]
    );
}

async fn large_batches_span_several_statements(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let group = unique("receiver");
    let prefix = unique("fleet");
    let rows: Vec<DeviceStateRow> = (0..1203)
        .map(|i| state(&format!("{prefix}-{i}"), i, 20))
        .collect();
    write(&store, &group, &rows, &[offset("events", 0, 1203)]).await;
    let devices: Vec<String> = rows.iter().map(|row| row.device.clone()).collect();
    let before = store.statements();
    let mut loaded = store.load_device_states(&devices).await.unwrap();
    assert_eq!(
        store.statements() - before,
        3,
        "1203 devices load in three statements"
    );
    loaded.sort_by_key(|row| row.message_count);
    assert_eq!(loaded, rows);
}

async fn earlier_runs_are_forgotten_but_not_other_groups(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let group = unique("receiver_1");
    let (earlier, current) = (format!("{group}@run-1"), format!("{group}@run-2"));
    let lookalike = format!("{}x@run-1", &group[..group.len() - 1]);
    for name in [&earlier, &current, &lookalike] {
        write(&store, name, &[], &[offset("t", 0, 5)]).await;
    }
    store
        .forget_other_runs(&format!("{group}@"), &current)
        .await
        .unwrap();
    assert!(store.load_offsets(&earlier).await.unwrap().is_empty());
    assert_eq!(
        store.load_offsets(&current).await.unwrap(),
        vec![offset("t", 0, 5)]
    );
    assert_eq!(
        store.load_offsets(&lookalike).await.unwrap(),
        vec![offset("t", 0, 5)],
        "_ is not a wildcard"
    );
}

/// A member that lost its partition while stalled comes back and writes
/// back what it had: refused, and nothing of the batch is stored.
async fn a_later_claim_fences_the_earlier_owner(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let (device, group) = (unique("d"), unique("receiver"));
    let partitions = [("events".to_owned(), 0), ("events".to_owned(), 1)];
    let first = store.claim_partitions(&group, &partitions).await.unwrap();
    assert_eq!(first.offsets, vec![]);
    assert_eq!(first.claims[0].epoch, 1);
    let committed = store
        .commit_batch(
            &group,
            &first.claims[..1],
            &[state(&device, 10, 20)],
            &[offset("events", 0, 10)],
        )
        .await
        .unwrap();
    assert_eq!(committed, Committed::Written);

    // The next owner of partition 0 starts where the first one stopped.
    let second = store
        .claim_partitions(&group, &partitions[..1])
        .await
        .unwrap();
    assert_eq!(second.offsets, vec![offset("events", 0, 10)]);
    assert_eq!(second.claims[0].epoch, 2);
    let committed = store
        .commit_batch(
            &group,
            &second.claims,
            &[state(&device, 15, 25)],
            &[offset("events", 0, 15)],
        )
        .await
        .unwrap();
    assert_eq!(committed, Committed::Written);

    // The first owner's stale write-back of both partitions: refused whole,
    // naming the claim it lost; partition 1's claim still holds.
    let stale = store
        .commit_batch(
            &group,
            &first.claims,
            &[state(&device, 12, 21)],
            &[offset("events", 0, 12), offset("events", 1, 3)],
        )
        .await
        .unwrap();
    assert_eq!(
        stale,
        Committed::Fenced(vec![PartitionClaim {
            topic: "events".into(),
            partition: 0,
            epoch: 1
        }])
    );
    let row = store.load_device_state(&device).await.unwrap().unwrap();
    assert_eq!(row.message_count, 15);
    assert_eq!(
        store.load_offsets(&group).await.unwrap(),
        vec![offset("events", 0, 15)]
    );
    // Claims are per group: another group's claim is its own.
    let other = store
        .claim_partitions(&unique("other"), &partitions[..1])
        .await
        .unwrap();
    assert_eq!(other.claims[0].epoch, 1);
}

async fn reconnecting_keeps_data_and_skips_applied_migrations(config: StoreConfig) {
    let device = unique("a");
    {
        let store = Store::connect(&config).await.unwrap();
        write(&store, "g", &[state(&device, 9, 30)], &[]).await;
        store.close().await;
    }
    let store = Store::connect(&config).await.unwrap();
    let row = store.load_device_state(&device).await.unwrap().unwrap();
    assert_eq!(row.message_count, 9);
}

macro_rules! scenarios {
    ($name:ident, $config:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn state_and_offsets_round_trip() {
                super::state_and_offsets_round_trip($config).await;
            }

            #[tokio::test]
            async fn later_batches_replace_earlier_ones() {
                super::later_batches_replace_earlier_ones($config).await;
            }

            #[tokio::test]
            async fn large_batches_span_several_statements() {
                super::large_batches_span_several_statements($config).await;
            }

            #[tokio::test]
            async fn earlier_runs_are_forgotten_but_not_other_groups() {
                super::earlier_runs_are_forgotten_but_not_other_groups($config).await;
            }

            #[tokio::test]
            async fn a_later_claim_fences_the_earlier_owner() {
                super::a_later_claim_fences_the_earlier_owner($config).await;
            }

            #[tokio::test]
            async fn reconnecting_keeps_data_and_skips_applied_migrations() {
                super::reconnecting_keeps_data_and_skips_applied_migrations($config).await;
            }
        }
    };
}

scenarios!(sqlite, sqlite());
scenarios!(postgres, postgres());
