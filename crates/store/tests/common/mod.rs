//! What every store scenario file shares: a fresh SQLite file, the test
//! PostgreSQL, unique names.

use wharf_store::{Backend, StoreConfig};

pub(crate) fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::now_v7().simple())
}

/// A new SQLite database file.
pub(crate) fn sqlite() -> StoreConfig {
    let dir = std::env::temp_dir().join(unique("wharf-store"));
    StoreConfig {
        url: format!("sqlite://{}/wharf.db", dir.display()),
        ..StoreConfig::default()
    }
}

/// The PostgreSQL database `scripts/test` starts.
pub(crate) fn postgres() -> StoreConfig {
    let url = std::env::var("WHARF_TEST_POSTGRES_URL")
        .expect("WHARF_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL");
    assert_eq!(Backend::of_url(&url).unwrap(), Backend::Postgres);
    StoreConfig {
        url,
        ..StoreConfig::default()
    }
}
