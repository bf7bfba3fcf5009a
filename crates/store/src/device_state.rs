//! Device state rows: what the Receiver knows about each device.

use std::time::SystemTime;

use serde_json::{Map, Value};
use sqlx::Row as _;

use crate::{Error, Result, Store, Tx, unix_millis, values_placeholders};

/// One device's stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStateRow {
    pub device: String,
    pub model: String,
    /// Last reported values, merged key by key.
    pub reported: Map<String, Value>,
    /// Frames received from the device, over its whole life.
    pub message_count: i64,
    /// Unix milliseconds of the device's last event.
    pub last_seen_ms: Option<i64>,
}

const COLUMNS: usize = 6;

impl Store {
    /// The stored state of `device`, if it has any.
    pub async fn load_device_state(&self, device: &str) -> Result<Option<DeviceStateRow>> {
        let row = sqlx::query(
            "SELECT device, model, reported, message_count, last_seen_ms \
             FROM device_state WHERE device = $1",
        )
        .bind(device)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| decode(&row)).transpose()
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<DeviceStateRow> {
    let device: String = row.try_get("device")?;
    let reported: String = row.try_get("reported")?;
    let reported = match serde_json::from_str(&reported) {
        Ok(Value::Object(map)) => map,
        Ok(_) | Err(_) => {
            return Err(Error::Corrupt {
                what: format!("device_state.reported of {device}"),
                reason: "not a JSON object".into(),
            });
        }
    };
    Ok(DeviceStateRow {
        model: row.try_get("model")?,
        reported,
        message_count: row.try_get("message_count")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
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
         (device, model, reported, message_count, last_seen_ms, updated_at_ms) VALUES {} \
         ON CONFLICT (device) DO UPDATE SET model = excluded.model, \
         reported = excluded.reported, message_count = excluded.message_count, \
         last_seen_ms = excluded.last_seen_ms, updated_at_ms = excluded.updated_at_ms",
        values_placeholders(rows.len(), COLUMNS)
    );
    let now = unix_millis(SystemTime::now());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        query = query
            .bind(row.device.clone())
            .bind(row.model.clone())
            .bind(Value::Object(row.reported.clone()).to_string())
            .bind(row.message_count)
            .bind(row.last_seen_ms)
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
