//! The schema, embedded in the binary: one migration set per backend, so each
//! can use its own dialect where they differ.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr as _};

use crate::{Backend, Result};

/// (version, description, SQLite SQL, PostgreSQL SQL), in order.
const MIGRATIONS: &[(i64, &str, &str, &str)] = &[(
    1,
    "device state and offsets",
    include_str!("../migrations/sqlite/0001_device_state_and_offsets.sql"),
    include_str!("../migrations/postgres/0001_device_state_and_offsets.sql"),
)];

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
    Migrator::with_migrations(migrations).run(pool).await?;
    Ok(())
}
