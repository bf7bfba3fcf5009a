//! The store's error type.

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported store url {0}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("failed to create directory {dir} for the database: {source}")]
    CreateDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("failed to migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored value of {what} is not valid: {reason}")]
    Corrupt { what: String, reason: String },
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same operation can succeed later (the database was
    /// unreachable or busy) rather than being refused for good.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Database(error) => {
                matches!(
                    error,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                ) || error
                    .as_database_error()
                    .and_then(|db| db.code())
                    .is_some_and(|code| is_transient_code(&code))
            }
            _ => false,
        }
    }
}

/// SQLite busy/locked (primary codes 5 and 6 and their extended codes, such
/// as 517 "busy snapshot" when another process wrote first) and PostgreSQL
/// connection, serialization and shutdown classes (always five characters).
fn is_transient_code(code: &str) -> bool {
    if code.len() < 5
        && let Ok(sqlite) = code.parse::<u32>()
    {
        return matches!(sqlite & 0xff, 5 | 6);
    }
    matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03") || code.starts_with("08")
}

#[cfg(test)]
mod tests {
    use super::is_transient_code;

    #[test]
    fn busy_and_connection_codes_are_transient() {
        for code in ["5", "6", "517", "261", "262", "40001", "08006", "57P01"] {
            assert!(is_transient_code(code), "{code}");
        }
        for code in ["19", "2067", "1555", "23505", "42P01"] {
            assert!(!is_transient_code(code), "{code}");
        }
    }
}
