//! The broker and the database the scenarios run against. `scripts/test`
//! starts both and sets these variables; a scenario that needs one fails
//! with a clear message when it is missing, rather than being skipped.

/// `host:port` of the Kafka-protocol broker (`KAFKA_BROKERS`).
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS is not set: run scripts/test, which starts a Kafka-protocol broker")
}

/// The PostgreSQL URL for tests (`WHARF_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    std::env::var("WHARF_TEST_POSTGRES_URL")
        .expect("WHARF_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL")
}

/// A free TCP port on 127.0.0.1, for services started as processes.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}
