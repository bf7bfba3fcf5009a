//! Kafka as the scenarios use it: the `[bus]` section of service
//! configurations, a publisher for the test itself, and a reader of topics.

use wharf_bus::kafka::KafkaConsumer;
use wharf_bus::{BusConfig, Consumer as _, KafkaBus, Subscriber as _};
use wharf_events::Envelope;

use crate::env::kafka_brokers;

/// librdkafka settings every Kafka client of the scenarios uses.
///
/// Tansu 0.6 answers a fetch that starts inside a record batch with the
/// batches after it, skipping the rest of that batch (`dynostore.rs`,
/// `fetch`: `offsets.split_off(&offset)`); a consumer resuming at a stored
/// offset would miss records. One record per batch makes every offset the
/// start of a batch. Apache Kafka needs none of this. A short session lets a
/// killed consumer's partitions move on sooner.
pub const CLIENT_SETTINGS: &[(&str, &str)] =
    &[("batch.num.messages", "1"), ("session.timeout.ms", "6000")];

/// The `[bus]` section for services under `prefix`.
pub fn bus_toml(prefix: &str, partitions: i32) -> String {
    let mut toml = format!(
        "[bus]\nurl = \"kafka://{}\"\ntopic_prefix = \"{prefix}\"\npartitions = {partitions}\n\n[bus.kafka]\n",
        kafka_brokers()
    );
    for (key, value) in CLIENT_SETTINGS {
        toml.push_str(&format!("\"{key}\" = \"{value}\"\n"));
    }
    toml
}

/// A Kafka bus for the test itself.
pub fn bus() -> KafkaBus {
    KafkaBus::connect(&BusConfig {
        url: format!("kafka://{}", kafka_brokers()),
        kafka: CLIENT_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..BusConfig::default()
    })
    .expect("a kafka bus")
}

/// Reads `topic` from its beginning, as an operator tailing it would.
pub struct TopicReader {
    consumer: KafkaConsumer,
}

impl TopicReader {
    /// A reader with a group of its own.
    pub async fn new(topic: String) -> Self {
        let consumer = bus()
            .subscribe_from_start("reader", &[topic])
            .await
            .unwrap();
        TopicReader { consumer }
    }

    /// The next envelope, or `None` when nothing arrives within `quiet`.
    pub async fn next(&mut self, quiet: std::time::Duration) -> Option<Envelope> {
        let message = tokio::time::timeout(quiet, self.consumer.recv())
            .await
            .ok()?
            .expect("the reader reads");
        Some(Envelope::from_json(&message.payload).expect("an envelope"))
    }
}
