//! Helpers for the end-to-end scenarios in `tests/tests`: where the broker
//! and the database are, unique names, service processes, and a WebSocket
//! device played by tokio-tungstenite.
//!
//! # Layout
//! - [`api`]: [`api::ApiClient`], the Commander's REST API over a real socket.
//! - [`broker`]: a broker of a test's own behind a proxy it can cut.
//! - [`commander`]: a Commander process's ports and API key.
//! - [`env`]: the broker and database the scenarios run against.
//! - [`process`]: the service binaries, started as real processes.
//! - [`proxy`]: [`proxy::CuttableProxy`], a TCP proxy a test can cut.
//! - [`device`]: [`WsDevice`], a WebSocket device.
//! - [`http`]: a minimal GET for the operations endpoints.
//! - [`kafka`]: Kafka settings, a publisher and a topic reader for scenarios.
//! - [`mqtt`]: MQTT devices played by rumqttc.
//! - [`postgres`]: [`postgres::PgCluster`], a PostgreSQL server a test may stop.
//! - [`receiver`]: watching a Receiver process through its metrics.
//! - [`socket`]: Socket listeners on free ports.
//! - [`up`]: [`up::UpProcess`], `wharf up` as a process on fixed ports.
//! - [`wait`]: [`wait_until`], polling for an outcome with a deadline.
//! - [`workload`]: counter workloads for exact-count checks.
//! - [`wharf`]: [`wharf::TestWharf`], a whole Wharf in the test process.

pub mod api;
pub mod broker;
pub mod commander;
pub mod device;
pub mod env;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod socket;
pub mod up;
pub mod wait;
pub mod wharf;
pub mod workload;

pub use device::WsDevice;
pub use wait::wait_until;

/// A name no other test run uses: for topic prefixes, groups, devices.
pub fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::now_v7().simple())
}

/// A store at `url` (`sqlite://…` or `postgres://…`), migrated, as a
/// test reads it to check what the services wrote.
pub async fn store_at(url: &str) -> wharf_store::Store {
    wharf_store::Store::connect(&wharf_store::StoreConfig {
        url: url.to_owned(),
        ..wharf_store::StoreConfig::default()
    })
    .await
    .unwrap_or_else(|error| panic!("the store at {url} opens: {error}"))
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    dir
}
