//! Consumer offsets stored beside the state they produced, and the claims
//! that fence them: only a partition's latest owner may write them.

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

/// A partition a consumer took over: its write-backs hold while no later
/// owner has claimed the partition (a higher epoch).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionClaim {
    pub topic: String,
    pub partition: i32,
    pub epoch: i64,
}

/// What claiming partitions found: the new claims, and where the stored
/// offsets say each partition stopped (read after the claim, so a write-back
/// of an earlier owner is either in them or refused).
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub claims: Vec<PartitionClaim>,
    pub offsets: Vec<StoredOffset>,
}

/// Whether a write-back was stored.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Committed {
    Written,
    /// Nothing was written: these claims were superseded by a later owner.
    Fenced(Vec<PartitionClaim>),
}

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

    /// Takes `partitions` (topic, partition) of `group` over: each one's
    /// epoch goes up by one, so write-backs of any earlier owner are refused
    /// from now on. Returns the new claims and the stored offsets of those
    /// partitions, read in the same transaction.
    pub async fn claim_partitions(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Claimed> {
        let mut tx = self.begin_writing().await?;
        let now = unix_millis(SystemTime::now());
        let mut claims = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let row = sqlx::query(
                "INSERT INTO partition_claims \
                 (consumer_group, topic, partition_id, epoch, claimed_at_ms) \
                 VALUES ($1, $2, $3, 1, $4) \
                 ON CONFLICT (consumer_group, topic, partition_id) DO UPDATE SET \
                 epoch = partition_claims.epoch + 1, claimed_at_ms = excluded.claimed_at_ms \
                 RETURNING epoch",
            )
            .bind(group)
            .bind(topic.clone())
            .bind(i64::from(*partition))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            claims.push(PartitionClaim {
                topic: topic.clone(),
                partition: *partition,
                epoch: row.try_get("epoch")?,
            });
        }
        let rows = sqlx::query(
            "SELECT topic, partition_id, next_offset FROM consumer_offsets \
             WHERE consumer_group = $1",
        )
        .bind(group)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        self.count_statements(partitions.len() as u64 + 3);
        let mut offsets = Vec::new();
        for row in &rows {
            let offset = StoredOffset {
                topic: row.try_get("topic")?,
                partition: row.try_get::<i64, _>("partition_id")? as i32,
                next_offset: row.try_get("next_offset")?,
            };
            if partitions
                .iter()
                .any(|(topic, partition)| *topic == offset.topic && *partition == offset.partition)
            {
                offsets.push(offset);
            }
        }
        Ok(Claimed { claims, offsets })
    }

    /// Forgets the positions and claims of every group named `prefix…` but
    /// `keep`: those of earlier runs of an in-process bus.
    pub async fn forget_other_runs(&self, prefix: &str, keep: &str) -> Result<()> {
        let pattern = format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_"));
        for table in ["consumer_offsets", "partition_claims"] {
            self.count_statements(1);
            let sql = format!(
                "DELETE FROM {table} \
                 WHERE consumer_group LIKE $1 ESCAPE '\\' AND consumer_group <> $2"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(pattern.clone())
                .bind(keep)
                .execute(self.pool())
                .await?;
        }
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

/// Claims checked per statement.
pub(crate) const CLAIMS_PER_STATEMENT: usize = 100;

/// Checks in `tx` that every claim in `claims` still holds, and locks their
/// rows until `tx` ends (on PostgreSQL, a concurrent claim waits for the
/// write-back, and its owner then reads what the write-back stored). Returns
/// the claims superseded by a later owner.
pub(crate) async fn superseded(
    tx: &mut Tx,
    group: &str,
    claims: &[PartitionClaim],
) -> Result<Vec<PartitionClaim>> {
    let mut held = 0;
    for chunk in claims.chunks(CLAIMS_PER_STATEMENT) {
        let conditions: Vec<String> = (0..chunk.len())
            .map(|i| {
                let first = 2 + i * 3;
                format!(
                    "(topic = ${first} AND partition_id = ${} AND epoch = ${})",
                    first + 1,
                    first + 2
                )
            })
            .collect();
        // A no-op update: what it does is count the rows that match and
        // lock them.
        let sql = format!(
            "UPDATE partition_claims SET epoch = epoch \
             WHERE consumer_group = $1 AND ({})",
            conditions.join(" OR ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(group.to_owned());
        for claim in chunk {
            query = query
                .bind(claim.topic.clone())
                .bind(i64::from(claim.partition))
                .bind(claim.epoch);
        }
        held += query.execute(&mut **tx).await?.rows_affected() as usize;
    }
    if held == claims.len() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT topic, partition_id, epoch FROM partition_claims WHERE consumer_group = $1",
    )
    .bind(group)
    .fetch_all(&mut **tx)
    .await?;
    let mut current = Vec::with_capacity(rows.len());
    for row in &rows {
        current.push(PartitionClaim {
            topic: row.try_get("topic")?,
            partition: row.try_get::<i64, _>("partition_id")? as i32,
            epoch: row.try_get("epoch")?,
        });
    }
    Ok(claims
        .iter()
        .filter(|claim| !current.contains(claim))
        .cloned()
        .collect())
}
