//! Device state rows: what the Receiver knows about each device.

use std::time::SystemTime;

use serde_json::{Map, Value};
use sqlx::Row as _;

use crate::{Error, Result, Store, Tx, unix_millis, values_placeholders};

/// One device's stored state: its twin and bookkeeping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceStateRow {
    pub device: String,
    pub model: String,
    /// Last reported values, merged key by key.
    pub reported: Map<String, Value>,
    /// The values the device should have; `reported` catches up.
    pub desired: Map<String, Value>,
    pub connected: bool,
    /// Frames received from the device, over its whole life.
    pub message_count: i64,
    /// Unix milliseconds of the device's last event.
    pub last_seen_ms: Option<i64>,
    /// The business logic's own bookkeeping (rule cool-downs, …).
    pub meta: Map<String, Value>,
}

impl DeviceStateRow {
    /// An empty state for a device never seen before.
    pub fn new(device: &str) -> Self {
        DeviceStateRow {
            device: device.to_owned(),
            ..DeviceStateRow::default()
        }
    }

    /// The desired keys whose reported value differs, with their desired
    /// values: what the device still has to apply.
    pub fn delta(&self) -> Map<String, Value> {
        twin_delta(&self.desired, &self.reported)
    }
}

/// The `desired` keys whose `reported` value differs, with their desired
/// values: what a device still has to apply.
pub fn twin_delta(
    desired: &Map<String, Value>,
    reported: &Map<String, Value>,
) -> Map<String, Value> {
    desired
        .iter()
        .filter(|(key, value)| reported.get(*key) != Some(value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

const COLUMNS: usize = 9;
const SELECT: &str = "SELECT device, model, reported, desired, connected, message_count, \
                      last_seen_ms, meta FROM device_state";

impl Store {
    /// The stored state of `device`, if it has any.
    pub async fn load_device_state(&self, device: &str) -> Result<Option<DeviceStateRow>> {
        self.count_statements(1);
        let sql = format!("{SELECT} WHERE device = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(device)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| decode(&row)).transpose()
    }

    /// The stored states of `devices`, in one statement per
    /// [`ROWS_PER_STATEMENT`](crate::ROWS_PER_STATEMENT) devices; devices
    /// without state are absent from the result.
    pub async fn load_device_states(&self, devices: &[String]) -> Result<Vec<DeviceStateRow>> {
        let mut rows = Vec::with_capacity(devices.len());
        for chunk in devices.chunks(crate::ROWS_PER_STATEMENT) {
            self.count_statements(1);
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("{SELECT} WHERE device IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for device in chunk {
                query = query.bind(device.clone());
            }
            for row in query.fetch_all(self.pool()).await? {
                rows.push(decode(&row)?);
            }
        }
        Ok(rows)
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<DeviceStateRow> {
    let device: String = row.try_get("device")?;
    let object = |column: &str| -> Result<Map<String, Value>> {
        let text: String = row.try_get(column)?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(Error::Corrupt {
                what: format!("device_state.{column} of {device}"),
                reason: "not a JSON object".into(),
            }),
        }
    };
    Ok(DeviceStateRow {
        model: row.try_get("model")?,
        reported: object("reported")?,
        desired: object("desired")?,
        connected: row.try_get::<i64, _>("connected")? != 0,
        message_count: row.try_get("message_count")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        meta: object("meta")?,
        device,
    })
}

/// Inserts or replaces `rows` in one statement.
pub(crate) async fn upsert(tx: &mut Tx, rows: &[DeviceStateRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO device_state \
         (device, model, reported, desired, connected, message_count, last_seen_ms, meta, \
         updated_at_ms) VALUES {} \
         ON CONFLICT (device) DO UPDATE SET model = excluded.model, \
         reported = excluded.reported, desired = excluded.desired, \
         connected = excluded.connected, message_count = excluded.message_count, \
         last_seen_ms = excluded.last_seen_ms, meta = excluded.meta, \
         updated_at_ms = excluded.updated_at_ms",
        values_placeholders(rows.len(), COLUMNS)
    );
    let now = unix_millis(SystemTime::now());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        query = query
            .bind(row.device.clone())
            .bind(row.model.clone())
            .bind(Value::Object(row.reported.clone()).to_string())
            .bind(Value::Object(row.desired.clone()).to_string())
            .bind(i64::from(row.connected))
            .bind(row.message_count)
            .bind(row.last_seen_ms)
            .bind(Value::Object(row.meta.clone()).to_string())
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
