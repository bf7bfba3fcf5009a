//! Kafka as the scenarios use it: the `[bus]` section of service
//! configurations, a publisher for the test itself, and a reader of topics.

use wharf_bus::kafka::KafkaConsumer;
use wharf_bus::{BusConfig, Consumer as _, KafkaBus, Subscriber as _};
use wharf_events::Envelope;

use crate::env::kafka_brokers;

/// librdkafka settings every Kafka client of the scenarios uses on top of
/// Wharf's own: production batching stays as it is. A short session (the
/// broker's minimum) lets a killed consumer's partitions move on sooner.
pub const CLIENT_SETTINGS: &[(&str, &str)] = &[("session.timeout.ms", "6000")];

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

/// One record as Kafka's console consumer printed it.
#[derive(Debug)]
pub struct ConsoleRecord {
    /// The record's key (the device id for Wharf's topics).
    pub key: String,
    /// The record's value: for Wharf's topics, a JSON envelope.
    pub value: String,
}

/// Reads `topic` from its beginning with Kafka's own console consumer
/// (`org.apache.kafka.tools.consumer.ConsoleConsumer` from the broker's
/// jars), as an operator would, until it has been quiet for `quiet_ms`.
pub async fn console_consume(topic: &str, quiet_ms: u32) -> Vec<ConsoleRecord> {
    let (brokers, topic) = (kafka_brokers(), topic.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        crate::broker::kafka_tool(
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            &[
                "--bootstrap-server",
                &brokers,
                "--topic",
                &topic,
                "--from-beginning",
                "--property",
                "print.key=true",
                "--property",
                "key.separator=\t",
                "--timeout-ms",
                &quiet_ms.to_string(),
            ],
        )
    })
    .await
    .expect("the console consumer ran");
    // It ends with a timeout error once the topic is quiet: that is its way
    // of finishing, so only what it printed counts.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(key, value)| ConsoleRecord {
            key: key.to_owned(),
            value: value.to_owned(),
        })
        .collect()
}
