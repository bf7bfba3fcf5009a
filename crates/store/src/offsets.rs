//! Consumer offsets stored beside the state they produced.

use std::time::SystemTime;

use sqlx::Row as _;

use crate::{Result, Store, Tx, unix_millis, values_placeholders};

/// The next offset a consumer group reads from one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

const COLUMNS: usize = 5;

impl Store {
    /// Every stored position of `group`.
    pub async fn load_offsets(&self, group: &str) -> Result<Vec<StoredOffset>> {
        self.count_statements(1);
        let rows = sqlx::query(
            "SELECT topic, partition_id, next_offset FROM consumer_offsets \
             WHERE consumer_group = $1",
        )
        .bind(group)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredOffset {
                    topic: row.try_get("topic")?,
                    partition: row.try_get::<i64, _>("partition_id")? as i32,
                    next_offset: row.try_get("next_offset")?,
                })
            })
            .collect()
    }

    /// Forgets the positions of every group named `prefix…` but `keep`: the
    /// positions of earlier runs of an in-process bus.
    pub async fn forget_other_runs(&self, prefix: &str, keep: &str) -> Result<()> {
        self.count_statements(1);
        let pattern = format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_"));
        sqlx::query(
            "DELETE FROM consumer_offsets \
             WHERE consumer_group LIKE $1 ESCAPE '\\' AND consumer_group <> $2",
        )
        .bind(pattern)
        .bind(keep)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// Inserts or replaces `offsets` of `group` in one statement.
pub(crate) async fn upsert(tx: &mut Tx, group: &str, offsets: &[StoredOffset]) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO consumer_offsets \
         (consumer_group, topic, partition_id, next_offset, updated_at_ms) VALUES {} \
         ON CONFLICT (consumer_group, topic, partition_id) DO UPDATE SET \
         next_offset = excluded.next_offset, updated_at_ms = excluded.updated_at_ms",
        values_placeholders(offsets.len(), COLUMNS)
    );
    let now = unix_millis(SystemTime::now());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for offset in offsets {
        query = query
            .bind(group.to_owned())
            .bind(offset.topic.clone())
            .bind(i64::from(offset.partition))
            .bind(offset.next_offset)
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}
