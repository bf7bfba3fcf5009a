//! The schema, embedded in the binary. One SQL text serves both backends;
//! where their dialects differ, a placeholder stands for the difference
//! (see [`DIALECT`]).

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr as _};

use crate::{Backend, Result};

/// (version, description, SQL), in order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "device state and offsets",
        include_str!("../migrations/0001_device_state_and_offsets.sql"),
    ),
    (
        2,
        "device twin",
        include_str!("../migrations/0002_device_twin.sql"),
    ),
    (
        3,
        "devices, commands and outbox",
        include_str!("../migrations/0003_commands.sql"),
    ),
    (
        4,
        "partition claims",
        include_str!("../migrations/0004_partition_claims.sql"),
    ),
    (
        5,
        "dispatched commands by age",
        include_str!("../migrations/0005_dispatched_by_age.sql"),
    ),
    (
        6,
        "command replies",
        include_str!("../migrations/0006_command_replies.sql"),
    ),
];

/// Placeholders and what they become on (SQLite, PostgreSQL). The text a
/// database records (and checksums) is the one with them replaced.
const DIALECT: &[(&str, &str, &str)] = &[(
    "{{serial_primary_key}}",
    "INTEGER PRIMARY KEY AUTOINCREMENT",
    "BIGSERIAL PRIMARY KEY",
)];

/// `sql` in `backend`'s dialect.
fn in_dialect(sql: &str, backend: Backend) -> String {
    DIALECT
        .iter()
        .fold(sql.to_owned(), |sql, (placeholder, sqlite, postgres)| {
            sql.replace(
                placeholder,
                match backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                },
            )
        })
}

/// Applies the migrations `pool` has not seen yet.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                sqlx::AssertSqlSafe(in_dialect(sql, backend)).into_sql_str(),
                false,
            )
        })
        .collect();
    let migrator = Migrator::with_migrations(migrations);
    // PostgreSQL: sqlx holds an advisory lock while migrating. SQLite has
    // no such lock, so two services starting on one new file can both try
    // a migration; the loser's transaction rolls back, and running again
    // finds it applied.
    let mut attempt = 1;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(error) if backend == Backend::Sqlite && attempt < SQLITE_ATTEMPTS => {
                tracing::debug!(%error, attempt, "migration raced another process; running again");
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Runs of the SQLite migrations before an error is final.
const SQLITE_ATTEMPTS: u64 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_replaced_in_both_dialects() {
        for (version, _, sql) in MIGRATIONS {
            for backend in [Backend::Sqlite, Backend::Postgres] {
                let text = in_dialect(sql, backend);
                assert!(!text.contains("{{"), "migration {version} on {backend:?}");
            }
        }
        let outbox = in_dialect(MIGRATIONS[2].2, Backend::Postgres);
        assert!(outbox.contains("seq           BIGSERIAL PRIMARY KEY,"));
    }
}
