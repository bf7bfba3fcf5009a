//! How every Kafka client of the bus is configured, in one order.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;

/// The brokers, then tunable defaults, then the user's `bus.kafka`
/// properties, then the settings Wharf's guarantees depend on.
pub(super) fn client_config(
    base: &ClientConfig,
    defaults: &[(&str, &str)],
    overrides: &BTreeMap<String, String>,
    required: &[(&str, &str)],
) -> ClientConfig {
    let mut config = base.clone();
    for (key, value) in defaults {
        config.set(*key, *value);
    }
    for (key, value) in overrides {
        config.set(key, value);
    }
    for (key, value) in required {
        config.set(*key, *value);
    }
    config
}
