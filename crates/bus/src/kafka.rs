//! The Kafka bus, on rdkafka with its bundled librdkafka: an idempotent
//! producer with `acks=all`, consumers with manual commits, and topics created
//! through the admin API when missing.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::config::{BusConfig, BusUrl};
use crate::error::{Error, Result};
use crate::record::{CommitOffset, Delivered, Message, Record, TopicSpec};
use crate::{Consumer, PendingAck, Publisher, Subscriber};

/// How long to wait before retrying an enqueue when librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);
/// How long to wait after a transient consumer error before polling again.
const CONSUMER_ERROR_BACKOFF: Duration = Duration::from_millis(200);

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
        let consumer: StreamConsumer = client_config(
            &self.inner.base,
            &[
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
                // Devices wait on these round trips: poll the broker often.
                ("fetch.wait.max.ms", "100"),
            ],
            &self.inner.overrides,
            // Offsets move only when the service commits them.
            &[
                ("group.id", group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
        )
        .create()?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        Ok(KafkaConsumer {
            consumer: Arc::new(consumer),
        })
    }

    fn is_persistent(&self) -> bool {
        true
    }
}

/// A member of a Kafka consumer group; leaves the group on drop.
pub struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
}

impl Consumer for KafkaConsumer {
    async fn recv(&mut self) -> Result<Message> {
        loop {
            match self.consumer.recv().await {
                Ok(message) => return Ok(owned(&message)),
                Err(KafkaError::MessageConsumption(code)) if is_transient_consume(code) => {
                    // Topic not created yet, broker away, rebalance under way:
                    // librdkafka recovers on its own.
                    warn!(error = %code, "kafka consumer waiting");
                    tokio::time::sleep(CONSUMER_ERROR_BACKOFF).await;
                }
                Err(error) => return Err(Error::Kafka(error)),
            }
        }
    }

    async fn commit(&mut self, offsets: &[CommitOffset]) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for offset in offsets {
            list.add_partition_offset(
                &offset.topic,
                offset.partition,
                Offset::Offset(offset.next_offset),
            )?;
        }
        let consumer = self.consumer.clone();
        // A synchronous commit blocks on the broker's answer: off the runtime.
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| Error::Closed)??;
        Ok(())
    }

    fn assignment(&self) -> Result<Vec<(String, i32)>> {
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .map(|element| (element.topic().to_owned(), element.partition()))
            .collect())
    }
}

/// The brokers, then tunable defaults, then the user's `bus.kafka`
/// properties, then the settings Wharf's guarantees depend on.
fn client_config(
    base: &ClientConfig,
    defaults: &[(&str, &str)],
    overrides: &std::collections::BTreeMap<String, String>,
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

fn is_transient_consume(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::UnknownPartition
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::PartitionEOF
            | RDKafkaErrorCode::CoordinatorNotAvailable
            | RDKafkaErrorCode::NotCoordinator
            | RDKafkaErrorCode::RebalanceInProgress
    )
}

fn owned(message: &BorrowedMessage<'_>) -> Message {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| {
                    let value = header.value.unwrap_or_default();
                    (
                        header.key.to_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|key| String::from_utf8_lossy(key).into_owned()),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}
