//! [`KafkaConsumer`]: a member of a Kafka consumer group, polled by a
//! thread of its own that relays records and rebalances in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::client_config::client_config;
use crate::Consumer;
use crate::delivery::{Assigned, Delivery, PartitionId, Revoked};
use crate::error::{Error, Result};
use crate::record::{CommitOffset, Message};

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
    /// Joins `group` on `topics` with a thread of its own polling the broker.
    pub(super) fn join(
        base: &ClientConfig,
        overrides: &BTreeMap<String, String>,
        group: &str,
        topics: &[String],
    ) -> Result<Self> {
        let (deliveries_tx, deliveries) = mpsc::channel(CONSUMER_QUEUE);
        let relay = RebalanceRelay {
            deliveries: deliveries_tx.clone(),
            closed: AtomicBool::new(false),
        };
        let consumer: BaseConsumer<RebalanceRelay> = client_config(
            base,
            &[
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "1000"),
                // Devices wait on these round trips: poll the broker often.
                ("fetch.wait.max.ms", "100"),
            ],
            overrides,
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
