//! The device registry: devices created through the API, their model and
//! metadata, and when they were revoked.

use std::time::SystemTime;

use serde_json::{Map, Value};
use sqlx::Row as _;

use crate::{Error, Result, Store, StoreTx, unix_millis};

/// One registered device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceRow {
    pub id: String,
    pub model: String,
    /// Free-form JSON the API stores for apps (`firmware` is read by the
    /// Commander's version checks).
    pub metadata: Map<String, Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When the device was deleted; its tokens issued before are refused.
    pub revoked_at_ms: Option<i64>,
}

/// What [`StoreTx::create_device`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The device is new, or was deleted before (then `revoked_at_ms`
    /// says when: its new tokens must be issued after that).
    Created { revoked_at_ms: Option<i64> },
    /// A device with that id exists.
    AlreadyExists,
}

const SELECT: &str =
    "SELECT id, model, metadata, created_at_ms, updated_at_ms, revoked_at_ms FROM devices";

impl Store {
    /// The device with `id`, deleted or not.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>> {
        self.count_statements(1);
        let sql = format!("{SELECT} WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| decode(&row)).transpose()
    }

    /// Up to `limit` devices that are not deleted, by id, after `after`.
    pub async fn devices(&self, limit: u32, after: Option<&str>) -> Result<Vec<DeviceRow>> {
        self.count_statements(1);
        let sql = format!(
            "{SELECT} WHERE revoked_at_ms IS NULL AND id > $1 ORDER BY id LIMIT {}",
            limit
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.unwrap_or(""))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode).collect()
    }
}

impl StoreTx {
    /// Registers `device`, unless a device with its id exists (a deleted
    /// one is created again).
    pub async fn create_device(&mut self, device: &DeviceRow) -> Result<Created> {
        self.statements += 2;
        let previous: Option<Option<i64>> =
            sqlx::query("SELECT revoked_at_ms FROM devices WHERE id = $1")
                .bind(device.id.clone())
                .fetch_optional(&mut *self.tx)
                .await?
                .map(|row| row.try_get("revoked_at_ms"))
                .transpose()?;
        // A device created again is dated no earlier than its deletion: the
        // API dates its new tokens after the revocation, and a later
        // deletion must revoke tokens up to this date (see the Commander's
        // `revocation_moment`).
        let now = unix_millis(SystemTime::now()).max(previous.flatten().unwrap_or(i64::MIN));
        let result = sqlx::query(
            "INSERT INTO devices (id, model, metadata, created_at_ms, updated_at_ms, revoked_at_ms) \
             VALUES ($1, $2, $3, $4, $5, NULL) \
             ON CONFLICT (id) DO UPDATE SET model = excluded.model, metadata = excluded.metadata, \
             created_at_ms = excluded.created_at_ms, updated_at_ms = excluded.updated_at_ms, \
             revoked_at_ms = NULL WHERE devices.revoked_at_ms IS NOT NULL",
        )
        .bind(device.id.clone())
        .bind(device.model.clone())
        .bind(Value::Object(device.metadata.clone()).to_string())
        .bind(now)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        Ok(if result.rows_affected() == 0 {
            Created::AlreadyExists
        } else {
            Created::Created {
                revoked_at_ms: previous.flatten(),
            }
        })
    }

    /// Replaces the model and metadata of a device that is not deleted;
    /// false when there is none.
    pub async fn update_device(
        &mut self,
        id: &str,
        model: &str,
        metadata: &Map<String, Value>,
    ) -> Result<bool> {
        self.statements += 1;
        let result = sqlx::query(
            "UPDATE devices SET model = $2, metadata = $3, updated_at_ms = $4 \
             WHERE id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(id)
        .bind(model)
        .bind(Value::Object(metadata.clone()).to_string())
        .bind(unix_millis(SystemTime::now()))
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Marks a device deleted at `at_ms`; false when there is none.
    pub async fn revoke_device(&mut self, id: &str, at_ms: i64) -> Result<bool> {
        self.statements += 1;
        let result = sqlx::query(
            "UPDATE devices SET revoked_at_ms = $2, updated_at_ms = $3 \
             WHERE id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(id)
        .bind(at_ms)
        .bind(at_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<DeviceRow> {
    let id: String = row.try_get("id")?;
    let metadata: String = row.try_get("metadata")?;
    let metadata = match serde_json::from_str(&metadata) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(Error::Corrupt {
                what: format!("devices.metadata of {id}"),
                reason: "not a JSON object".into(),
            });
        }
    };
    Ok(DeviceRow {
        model: row.try_get("model")?,
        metadata,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        revoked_at_ms: row.try_get("revoked_at_ms")?,
        id,
    })
}
