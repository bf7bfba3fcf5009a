//! The broker and the database the scenarios run against. `scripts/test`
//! starts both and sets these variables; a scenario that needs one fails
//! with a clear message when it is missing, rather than being skipped.

/// `host:port` of the Kafka broker (`KAFKA_BROKERS`).
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS")
        .expect("KAFKA_BROKERS is not set: run scripts/test, which starts Apache Kafka")
}

/// The PostgreSQL URL for tests (`WHARF_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    std::env::var("WHARF_TEST_POSTGRES_URL")
        .expect("WHARF_TEST_POSTGRES_URL is not set: run scripts/test, which starts PostgreSQL")
}

/// A free TCP port on 127.0.0.1, for services started as processes.
///
/// The kernel may hand the same ephemeral port out twice once the probing
/// listener is closed, so ports already given to this test are skipped: two
/// listeners of one scenario never collide.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("a free port");
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}
