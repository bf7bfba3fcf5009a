//! Wharf's database access: device state, consumer offsets, the device
//! registry, commands and the outbox, on SQLite
//! (the default, a file under `data/`) or PostgreSQL, chosen by URL. Queries
//! are checked at runtime, not at compile time, so building needs no
//! database. sqlx is used only in this crate.
//!
//! # Layout
//! - [`config`]: [`StoreConfig`], the `[store]` configuration section.
//! - [`migrations`]: the embedded schema, per backend where dialects differ.
//! - [`device_state`]: [`DeviceStateRow`] and its reads.
//! - [`offsets`]: [`StoredOffset`] and its reads; [`PartitionClaim`], the
//!   epoch that fences a partition's write-backs to its latest owner.
//! - [`Store::commit_batch`]: states and offsets written in one transaction.
//! - [`tx`]: [`StoreTx`], a transaction over the Commander's tables.
//! - [`devices`]: [`DeviceRow`], the device registry.
//! - [`commands`]: [`CommandRow`] and its compare-and-set status changes.
//! - [`outbox`]: [`OutboxRow`], events committed with the rows they describe.
//!
//! # Invariants
//! - A batch of device states and the consumer offsets that produced them
//!   commit together or not at all: the database never holds state without
//!   the offsets, nor offsets without the state.
//! - A batch commits only while its partitions' claims hold: once another
//!   member claimed a partition, the former owner writes nothing more.
//! - A command's status changes only from the status the caller saw, so
//!   concurrent Commanders never both send or both expire one command.
//! - An event in the outbox commits with the change it describes.

pub mod commands;
pub mod config;
pub mod device_state;
pub mod devices;
mod error;
pub mod migrations;
pub mod offsets;
pub mod outbox;
pub mod tx;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor as _, Transaction};

pub use commands::{CommandCursor, CommandRow, CommandStatus, StatusChange};
pub use config::StoreConfig;
pub use device_state::{DeviceStateRow, twin_delta};
pub use devices::{Created, DeviceRow};
pub use error::{Error, Result};
pub use offsets::{Claimed, Committed, PartitionClaim, StoredOffset};
pub use outbox::OutboxRow;
pub use tx::StoreTx;

/// Rows per multi-row statement; keeps binds under both backends' limits.
pub const ROWS_PER_STATEMENT: usize = 500;

/// Device states per upsert statement of a write-back. Smaller than
/// [`ROWS_PER_STATEMENT`]: with SQLite the statement runs on a thread of its
/// own, and where the whole process shares one core, one long statement
/// holds the core away from the connections for its whole run (it showed as
/// PUBACK latency tails of ~20 ms per 500 rows). Between short statements
/// the connections get their turn; the transaction stays one.
pub const STATES_PER_STATEMENT: usize = 64;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of `url`, or why it is not one Wharf supports.
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::UnsupportedUrl(redact(url)))
        }
    }
}

/// A connection pool on the configured database, migrated on connect.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQL statements sent, transaction control included: what the
    /// write-behind benchmarks and metrics report.
    statements: Arc<AtomicU64>,
}

impl Store {
    /// Connects, creating an SQLite file and its directory when missing, and
    /// applies pending migrations.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        install_default_drivers();
        let backend = Backend::of_url(&config.url)?;
        let url = match backend {
            Backend::Sqlite => prepare_sqlite(&config.url)?,
            Backend::Postgres => config.url.clone(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            .connect(&url)
            .await
            .map_err(|source| Error::Connect {
                url: redact(&config.url),
                source,
            })?;
        if backend == Backend::Sqlite {
            // WAL lets readers (the API, tests) run beside the writer.
            // Switching needs the file to itself: when another service is
            // opening (and migrating) it at the same moment, SQLite answers
            // "busy" at once instead of waiting, so try again.
            let mut attempt = 1;
            loop {
                match pool
                    .execute("PRAGMA journal_mode = WAL")
                    .await
                    .map_err(Error::from)
                {
                    Ok(_) => break,
                    Err(error) if attempt < 20 && error.is_retryable() => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        migrations::run(&pool, backend).await?;
        Ok(Store {
            pool,
            backend,
            statements: Arc::default(),
        })
    }

    /// The database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write. On SQLite it takes the write
    /// lock at once (`BEGIN IMMEDIATE`), waiting for it up to the busy
    /// timeout: a transaction that read first and then tried to write while
    /// another connection held the lock would fail at once with "database is
    /// locked" instead of waiting.
    pub(crate) async fn begin_writing(&self) -> Result<Tx> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Writes `states` and `offsets` for `group` in one transaction, if
    /// every claim of `claims` still holds; otherwise writes nothing and
    /// says which claims a later owner superseded. The offsets' partitions
    /// are the ones to pass in `claims` (none: not fenced).
    pub async fn commit_batch(
        &self,
        group: &str,
        claims: &[PartitionClaim],
        states: &[DeviceStateRow],
        offsets: &[StoredOffset],
    ) -> Result<Committed> {
        let mut tx = self.begin_writing().await?;
        if !claims.is_empty() {
            let lost = offsets::superseded(&mut tx, group, claims).await?;
            self.count_statements(claims.len().div_ceil(offsets::CLAIMS_PER_STATEMENT) as u64);
            if !lost.is_empty() {
                // The lookup of the current epochs, BEGIN, ROLLBACK.
                self.count_statements(3);
                tx.rollback().await?;
                return Ok(Committed::Fenced(lost));
            }
        }
        for chunk in states.chunks(STATES_PER_STATEMENT) {
            device_state::upsert(&mut tx, chunk).await?;
        }
        for chunk in offsets.chunks(ROWS_PER_STATEMENT) {
            offsets::upsert(&mut tx, group, chunk).await?;
        }
        tx.commit().await?;
        let statements = 2
            + states.len().div_ceil(STATES_PER_STATEMENT)
            + offsets.len().div_ceil(ROWS_PER_STATEMENT);
        self.count_statements(statements as u64);
        Ok(Committed::Written)
    }

    /// How many SQL statements this store (and its clones) sent so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    pub(crate) fn count_statements(&self, count: u64) {
        self.statements.fetch_add(count, Ordering::Relaxed);
    }

    /// The pool, for this crate's query modules.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) type Tx = Transaction<'static, Any>;

/// Adds `mode=rwc` so SQLite creates the file, and creates its directory.
fn prepare_sqlite(url: &str) -> Result<String> {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(Error::UnsupportedUrl(format!(
            "{url}: Wharf needs a file database, like sqlite://data/wharf.db"
        )));
    }
    if let Some(dir) = std::path::Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// Hides the password of a database URL in messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch, as stored in `*_ms` columns.
pub fn unix_millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `($1, $2, …), (…)` for `rows` rows of `columns` placeholders.
pub(crate) fn values_placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://wharf:secret@db:5432/wharf"),
            "postgres://wharf:***@db:5432/wharf"
        );
        assert_eq!(redact("sqlite://data/wharf.db"), "sqlite://data/wharf.db");
    }

    #[test]
    fn numbers_placeholders_row_by_row() {
        assert_eq!(values_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }

    #[test]
    fn refuses_unknown_and_in_memory_urls() {
        assert!(Backend::of_url("mysql://x").is_err());
        assert_eq!(
            Backend::of_url("postgresql://x/y").unwrap(),
            Backend::Postgres
        );
        assert!(prepare_sqlite("sqlite::memory:").is_err());
    }
}
