//! The Kafka bus, on rdkafka with its bundled librdkafka: an idempotent
//! producer with `acks=all`, consumers with manual commits, and topics created
//! through the admin API when missing.
//!
//! Here: the producer, topics and log ends; `consumer`: [`KafkaConsumer`].

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tracing::debug;

use crate::config::{BusConfig, BusUrl};
use crate::error::{Error, Result};
use crate::record::{CommitOffset, Delivered, Record, TopicSpec};
use crate::{PendingAck, Publisher, Subscriber};

mod client_config;
mod consumer;

use client_config::client_config;

pub use consumer::KafkaConsumer;

/// How long to wait before retrying an enqueue when librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// The Kafka bus. Clones share one producer.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// Settings every client starts from: the brokers.
    base: ClientConfig,
    /// librdkafka properties from `bus.kafka`.
    overrides: std::collections::BTreeMap<String, String>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    replication: i32,
}

impl KafkaBus {
    /// Connects to the brokers of `config.url` (which must be `kafka://…`).
    ///
    /// Creating the clients does not contact the brokers; the first publish or
    /// admin call does, and librdkafka keeps reconnecting after outages.
    pub fn connect(config: &BusConfig) -> Result<Self> {
        let BusUrl::Kafka { brokers } = BusUrl::parse(&config.url)? else {
            return Err(Error::InvalidUrl {
                url: config.url.clone(),
                reason: "not a kafka:// url".into(),
            });
        };
        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &brokers);
        let producer = client_config(
            &base,
            &[
                ("linger.ms", "5"),
                // Bound what waits in memory during a broker outage: 64 MiB.
                ("queue.buffering.max.kbytes", "65536"),
                ("queue.buffering.max.messages", "100000"),
            ],
            &config.kafka,
            // Acknowledged means durable, and retries never duplicate.
            &[("enable.idempotence", "true"), ("acks", "all")],
        )
        .create()?;
        let admin = client_config(&base, &[], &config.kafka, &[]).create()?;
        Ok(KafkaBus {
            inner: Arc::new(Inner {
                base,
                overrides: config.kafka.clone(),
                producer,
                admin,
                replication: i32::from(config.replication),
            }),
        })
    }

    /// Waits until everything queued so far is acknowledged or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let producer = self.inner.producer.clone();
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer as _;
            producer.flush(timeout)
        })
        .await
        .map_err(|_| Error::Closed)??;
        Ok(())
    }

    /// The names of the topics the cluster has, sorted.
    pub async fn topic_names(&self) -> Result<Vec<String>> {
        use rdkafka::producer::Producer as _;
        let producer = self.inner.producer.clone();
        tokio::task::spawn_blocking(move || {
            let metadata = producer.client().fetch_metadata(None, LOG_END_REQUEST)?;
            let mut names: Vec<String> = metadata
                .topics()
                .iter()
                .map(|topic| topic.name().to_owned())
                .collect();
            names.sort();
            Ok(names)
        })
        .await
        .map_err(|_| Error::Closed)?
    }
}

impl Publisher for KafkaBus {
    async fn enqueue(&self, record: Record) -> Result<PendingAck> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut pending = FutureRecord::to(&record.topic)
            .key(record.key.as_str())
            .payload(record.payload.as_slice())
            .headers(headers);
        loop {
            match self.inner.producer.send_result(pending) {
                Ok(delivery) => {
                    return Ok(PendingAck::from_future(async move {
                        match delivery.await {
                            Ok(Ok(delivery)) => Ok(Delivered {
                                partition: delivery.partition,
                                offset: delivery.offset,
                            }),
                            Ok(Err((error, _message))) => Err(Error::Kafka(error)),
                            Err(_canceled) => Err(Error::Closed),
                        }
                    }));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Backpressure: librdkafka's bounded queue is full.
                    pending = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, _)) => return Err(Error::Kafka(error)),
            }
        }
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        let compact = [("cleanup.policy", "compact")];
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|spec| {
                let topic = NewTopic::new(
                    &spec.name,
                    spec.partitions,
                    TopicReplication::Fixed(self.inner.replication),
                );
                if spec.compacted {
                    compact
                        .iter()
                        .fold(topic, |topic, (key, value)| topic.set(key, value))
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in self
            .inner
            .admin
            .create_topics(&new_topics, &options)
            .await?
        {
            match result {
                Ok(name) => debug!(topic = %name, "created topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::CreateTopic {
                        topic,
                        reason: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Subscriber for KafkaBus {
    type Consumer = KafkaConsumer;

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<KafkaConsumer> {
        KafkaConsumer::join(&self.inner.base, &self.inner.overrides, group, topics)
    }

    fn incarnation(&self) -> Option<&str> {
        None
    }

    async fn log_end(&self, topic: &str) -> Result<Vec<CommitOffset>> {
        use rdkafka::producer::Producer as _;
        let producer = self.inner.producer.clone();
        let topic = topic.to_owned();
        // Metadata and watermark requests block on the broker: off the
        // runtime. A topic just created has no leader for a moment: such
        // answers are retried until LOG_END_TIMEOUT.
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + LOG_END_TIMEOUT;
            loop {
                match watermarks(producer.client(), &topic) {
                    Err(error) if error.is_retryable() && std::time::Instant::now() < deadline => {
                        debug!(%error, topic, "log end not known yet; retrying");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    result => return result,
                }
            }
        })
        .await
        .map_err(|_| Error::Closed)?
    }
}

/// The high watermark of every partition of `topic`.
fn watermarks<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<Vec<CommitOffset>> {
    let metadata = client.fetch_metadata(Some(topic), LOG_END_REQUEST)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions
        .into_iter()
        .map(|partition| {
            let (_, high) = client.fetch_watermarks(topic, partition, LOG_END_REQUEST)?;
            Ok(CommitOffset {
                topic: topic.to_owned(),
                partition,
                next_offset: high,
            })
        })
        .collect()
}

/// How long one metadata or watermark request may wait for the broker.
const LOG_END_REQUEST: Duration = Duration::from_secs(10);
/// How long a log-end query keeps retrying while partitions have no leader.
const LOG_END_TIMEOUT: Duration = Duration::from_secs(60);
