//! Store scenarios, written once and run on SQLite and on PostgreSQL (at
//! `WHARF_TEST_POSTGRES_URL`; `scripts/test` starts one).

mod common;

use common::{postgres, sqlite, unique};
use serde_json::json;
use wharf_store::{DeviceStateRow, Store, StoreConfig, StoredOffset};

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

async fn state_and_offsets_round_trip(config: StoreConfig) {
    let store = Store::connect(&config).await.unwrap();
    let (a, b, group) = (unique("a"), unique("b"), unique("receiver"));
    store
        .commit_batch(
            &group,
            &[state(&a, 3, 35), state(&b, 1, 20)],
            &[offset("events", 0, 10), offset("events", 1, 4)],
        )
        .await
        .unwrap();

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
    store
        .commit_batch(&group, &[state(&a, 1, 20)], &[offset("events", 0, 1)])
        .await
        .unwrap();
    store
        .commit_batch(&group, &[state(&a, 2, 36)], &[offset("events", 0, 2)])
        .await
        .unwrap();
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
    store
        .commit_batch(&group, &rows, &[offset("events", 0, 1203)])
        .await
        .unwrap();
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
        store
            .commit_batch(name, &[], &[offset("t", 0, 5)])
            .await
            .unwrap();
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

async fn reconnecting_keeps_data_and_skips_applied_migrations(config: StoreConfig) {
    let device = unique("a");
    {
        let store = Store::connect(&config).await.unwrap();
        store
            .commit_batch("g", &[state(&device, 9, 30)], &[])
            .await
            .unwrap();
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
            async fn reconnecting_keeps_data_and_skips_applied_migrations() {
                super::reconnecting_keeps_data_and_skips_applied_migrations($config).await;
            }
        }
    };
}

scenarios!(sqlite, sqlite());
scenarios!(postgres, postgres());
