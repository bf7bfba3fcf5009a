//! The transactional outbox: events written in the same transaction as the
//! rows they describe, then published by the instance that wrote them and
//! deleted once the bus has them. A crash between publishing and deleting
//! publishes again (same event ids), never loses an event.

use std::time::SystemTime;

use sqlx::Row as _;

use crate::{Result, Store, StoreTx, unix_millis};

/// One event waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Publication order within an instance.
    pub seq: i64,
    pub topic: String,
    /// The bus key (the device id).
    pub key: String,
    /// The envelope's `type`, repeated as a header.
    pub event_type: String,
    /// The encoded envelope.
    pub payload: String,
}

impl StoreTx {
    /// Adds an event of type `event_type` for `instance` to publish on
    /// `topic` under `key`.
    pub async fn outbox(
        &mut self,
        instance: &str,
        topic: &str,
        key: &str,
        event_type: &str,
        payload: String,
    ) -> Result<()> {
        self.statements += 1;
        sqlx::query(
            "INSERT INTO outbox (instance, topic, event_key, event_type, payload, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(instance)
        .bind(topic)
        .bind(key)
        .bind(event_type)
        .bind(payload)
        .bind(unix_millis(SystemTime::now()))
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Up to `limit` of `instance`'s unpublished events, in order.
    pub async fn outbox_batch(&self, instance: &str, limit: u32) -> Result<Vec<OutboxRow>> {
        self.count_statements(1);
        let sql = format!(
            "SELECT seq, topic, event_key, event_type, payload FROM outbox WHERE instance = $1 \
             ORDER BY seq LIMIT {limit}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(instance)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    seq: row.try_get("seq")?,
                    topic: row.try_get("topic")?,
                    key: row.try_get("event_key")?,
                    event_type: row.try_get("event_type")?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect()
    }

    /// Deletes exactly the events `seqs` of `instance`: published.
    ///
    /// Not "everything up to the last one": a sequence number is taken when
    /// a row is inserted, not when its transaction commits, so a row with a
    /// lower number can commit after a higher one was read and published.
    pub async fn outbox_published(&self, instance: &str, seqs: &[i64]) -> Result<()> {
        for chunk in seqs.chunks(crate::ROWS_PER_STATEMENT) {
            self.count_statements(1);
            let placeholders: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "DELETE FROM outbox WHERE instance = $1 AND seq IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(instance);
            for seq in chunk {
                query = query.bind(*seq);
            }
            query.execute(self.pool()).await?;
        }
        Ok(())
    }
}
