//! The Kafka bus, on rdkafka with its bundled librdkafka: an idempotent
//! producer with `acks=all`, consumers with manual commits, and topics created
//! through the admin API when missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::{BusConfig, BusUrl};
use crate::delivery::{Assigned, Delivery, PartitionId, Revoked};
use crate::error::{Error, Result};
use crate::record::{CommitOffset, Delivered, Message, Record, TopicSpec};
use crate::{Consumer, PendingAck, Publisher, Subscriber};

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
        let (deliveries_tx, deliveries) = mpsc::channel(CONSUMER_QUEUE);
        let relay = RebalanceRelay {
            deliveries: deliveries_tx.clone(),
            closed: AtomicBool::new(false),
        };
        let consumer: BaseConsumer<RebalanceRelay> = client_config(
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
        .create_with_context(relay)?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names)?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("kafka-consumer-{group}"))
                .spawn(move || poll_loop(&consumer, &deliveries_tx, &stop))
                .map_err(|_| Error::Closed)?
        };
        Ok(KafkaConsumer {
            consumer: Some(consumer),
            deliveries,
            peeked: None,
            stop,
            _thread: thread,
        })
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

/// How many deliveries the poll thread may run ahead of the application.
const CONSUMER_QUEUE: usize = 1024;

/// A member of a Kafka consumer group; leaves the group on drop.
///
/// A dedicated thread polls librdkafka and relays records and rebalances
/// in order over a bounded channel, so a rebalance can wait for the
/// application to finish with revoked partitions (quickwit's Kafka source
/// does the same).
pub struct KafkaConsumer {
    consumer: Option<Arc<BaseConsumer<RebalanceRelay>>>,
    deliveries: mpsc::Receiver<Result<Delivery>>,
    /// A delivery taken from the channel but not handed out yet.
    peeked: Option<Delivery>,
    stop: Arc<AtomicBool>,
    _thread: std::thread::JoinHandle<()>,
}

impl KafkaConsumer {
    fn consumer(&self) -> &Arc<BaseConsumer<RebalanceRelay>> {
        self.consumer
            .as_ref()
            .expect("the consumer is only taken on drop")
    }
}

impl Consumer for KafkaConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        if let Some(delivery) = self.peeked.take() {
            return Ok(delivery);
        }
        self.deliveries.recv().await.unwrap_or(Err(Error::Closed))
    }

    fn try_next_message(&mut self) -> Result<Option<Message>> {
        if self.peeked.is_none() {
            match self.deliveries.try_recv() {
                Ok(delivery) => self.peeked = Some(delivery?),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(None),
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(Error::Closed),
            }
        }
        match self.peeked.take() {
            Some(Delivery::Message(message)) => Ok(Some(message)),
            other => {
                self.peeked = other;
                Ok(None)
            }
        }
    }

    async fn commit(&mut self, offsets: &[CommitOffset]) -> Result<()> {
        // Only partitions this member still owns: a partition given up in a
        // rebalance belongs to another member, whose progress a late commit
        // of ours would overwrite.
        let owned = self.consumer().assignment()?;
        let mut list = TopicPartitionList::with_capacity(offsets.len());
        for offset in offsets {
            if owned
                .find_partition(&offset.topic, offset.partition)
                .is_some()
            {
                list.add_partition_offset(
                    &offset.topic,
                    offset.partition,
                    Offset::Offset(offset.next_offset),
                )?;
            } else {
                debug!(topic = %offset.topic, partition = offset.partition, "not committing a partition this member gave up");
            }
        }
        if list.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer().clone();
        // A synchronous commit blocks on the broker's answer: off the runtime.
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| Error::Closed)??;
        Ok(())
    }

    fn assignment(&self) -> Result<Vec<PartitionId>> {
        Ok(partition_ids(&self.consumer().assignment()?))
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(consumer) = self.consumer.take() {
            consumer.context().closed.store(true, Ordering::Relaxed);
            // Closing leaves the group with a network round trip and runs the
            // revoke callback: never on an async worker thread.
            let _ = std::thread::Builder::new()
                .name("kafka-consumer-close".into())
                .spawn(move || drop(consumer));
        }
    }
}

/// Polls librdkafka until stopped, relaying records in order.
fn poll_loop(
    consumer: &BaseConsumer<RebalanceRelay>,
    deliveries: &mpsc::Sender<Result<Delivery>>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        let delivery = match consumer.poll(POLL_INTERVAL) {
            None => continue,
            Some(Ok(message)) => Ok(Delivery::Message(owned(&message))),
            Some(Err(KafkaError::MessageConsumption(code))) if is_transient_consume(code) => {
                // Topic not created yet, broker away: librdkafka recovers.
                debug!(error = %code, "kafka consumer waiting");
                continue;
            }
            Some(Err(error)) => Err(Error::Kafka(error)),
        };
        // A full channel stops polling: backpressure up to the broker.
        if deliveries.blocking_send(delivery).is_err() {
            break;
        }
    }
}

/// How long one poll waits for a record before checking for a stop.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Turns librdkafka's rebalance callback into deliveries, and waits for the
/// application: for the start positions of assigned partitions, and until it
/// has dropped the `Revoked` of revoked ones.
struct RebalanceRelay {
    deliveries: mpsc::Sender<Result<Delivery>>,
    /// Set once the application dropped its consumer: nobody will answer.
    closed: AtomicBool,
}

impl ClientContext for RebalanceRelay {}

impl ConsumerContext for RebalanceRelay {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let listening = !self.closed.load(Ordering::Relaxed);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if listening {
                    let (answer, positions) = oneshot::channel();
                    let assigned = Assigned::new(partition_ids(partitions), move |chosen| {
                        let _ = answer.send(chosen);
                    });
                    if self
                        .deliveries
                        .blocking_send(Ok(Delivery::Assigned(assigned)))
                        .is_ok()
                    {
                        for position in positions.blocking_recv().unwrap_or_default() {
                            let _ = partitions.set_partition_offset(
                                &position.topic,
                                position.partition,
                                Offset::Offset(position.next_offset),
                            );
                        }
                    }
                }
                if let Err(error) = consumer.assign(partitions) {
                    warn!(%error, "failed to take the assigned partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if listening {
                    let (release, released) = oneshot::channel::<()>();
                    let revoked = Revoked::new(partition_ids(partitions), move || drop(release));
                    if self
                        .deliveries
                        .blocking_send(Ok(Delivery::Revoked(revoked)))
                        .is_ok()
                    {
                        let _ = released.blocking_recv();
                    }
                }
                if let Err(error) = consumer.unassign() {
                    warn!(%error, "failed to give up the revoked partitions");
                }
            }
            other => {
                warn!(error = ?other, "rebalance failed");
                let _ = consumer.unassign();
            }
        }
    }
}

fn partition_ids(list: &TopicPartitionList) -> Vec<PartitionId> {
    list.elements()
        .iter()
        .map(|element| PartitionId {
            topic: element.topic().to_owned(),
            partition: element.partition(),
        })
        .collect()
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
