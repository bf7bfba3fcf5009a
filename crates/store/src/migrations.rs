//! The schema, embedded in the binary. Where the two dialects differ, a
//! migration has a file per backend (0003: the outbox's sequence).

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr as _};

use crate::{Backend, Result};

const DEVICE_STATE_AND_OFFSETS: &str =
    include_str!("../migrations/0001_device_state_and_offsets.sql");

const DEVICE_TWIN: &str = include_str!("../migrations/0002_device_twin.sql");

const COMMANDS_SQLITE: &str = include_str!("../migrations/0003_commands_sqlite.sql");
const COMMANDS_POSTGRES: &str = include_str!("../migrations/0003_commands_postgres.sql");

/// (version, description, SQLite SQL, PostgreSQL SQL), in order. A
/// migration that needs each backend's own dialect gets two files.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
    (
        1,
        "device state and offsets",
        DEVICE_STATE_AND_OFFSETS,
        DEVICE_STATE_AND_OFFSETS,
    ),
    (2, "device twin", DEVICE_TWIN, DEVICE_TWIN),
    (
        3,
        "devices, commands and outbox",
        COMMANDS_SQLITE,
        COMMANDS_POSTGRES,
    ),
];

/// Applies the migrations `pool` has not seen yet.
pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<()> {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sqlite, postgres)| {
            let sql = match backend {
                Backend::Sqlite => *sqlite,
                Backend::Postgres => *postgres,
            };
            Migration::new(
                *version,
                (*description).into(),
                MigrationType::Simple,
                sql.into_sql_str(),
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
