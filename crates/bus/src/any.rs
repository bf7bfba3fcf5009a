//! [`Bus`]: the implementation a URL selects, behind one type the services
//! hold.

use crate::config::{BusConfig, BusUrl};
use crate::delivery::{Delivery, PartitionId};
use crate::error::Result;
use crate::kafka::{KafkaBus, KafkaConsumer};
use crate::memory::{MemoryBus, MemoryConsumer};
use crate::record::{CommitOffset, Message, Record, TopicSpec};
use crate::{Consumer, PendingAck, Publisher, Subscriber};

/// The in-process or the Kafka bus.
#[derive(Clone)]
pub enum Bus {
    Memory(MemoryBus),
    Kafka(KafkaBus),
}

impl Bus {
    /// Builds the bus `config.url` names. A `memory://` URL gets a fresh,
    /// empty bus; a `file://` URL reads its journal back (and locks its
    /// directory for this process). To share one in-process bus, clone the
    /// returned value.
    pub fn connect(config: &BusConfig) -> Result<Self> {
        let partitions = config.partitions.max(1) as usize;
        Ok(match BusUrl::parse(&config.url)? {
            BusUrl::Memory => Bus::Memory(MemoryBus::new(partitions, config.memory_capacity)),
            BusUrl::File { dir } => Bus::Memory(MemoryBus::open(
                &dir,
                partitions,
                config.memory_capacity,
                crate::memory::journal::JournalOptions {
                    segment_bytes: config.segment_bytes,
                },
            )?),
            BusUrl::Kafka { .. } => Bus::Kafka(KafkaBus::connect(config)?),
        })
    }

    /// The names of the topics that exist now, sorted.
    pub async fn topic_names(&self) -> Result<Vec<String>> {
        match self {
            Bus::Memory(bus) => Ok(bus.topic_names()),
            Bus::Kafka(bus) => bus.topic_names().await,
        }
    }

    /// Waits until everything published so far is durable, up to `timeout`.
    pub async fn flush(&self, timeout: std::time::Duration) -> Result<()> {
        match self {
            Bus::Memory(_) => Ok(()),
            Bus::Kafka(bus) => bus.flush(timeout).await,
        }
    }
}

impl Publisher for Bus {
    async fn enqueue(&self, record: Record) -> Result<PendingAck> {
        match self {
            Bus::Memory(bus) => bus.enqueue(record).await,
            Bus::Kafka(bus) => bus.enqueue(record).await,
        }
    }

    async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        match self {
            Bus::Memory(bus) => bus.ensure_topics(topics).await,
            Bus::Kafka(bus) => bus.ensure_topics(topics).await,
        }
    }
}

impl Subscriber for Bus {
    type Consumer = BusConsumer;

    async fn subscribe(&self, group: &str, topics: &[String]) -> Result<BusConsumer> {
        Ok(match self {
            Bus::Memory(bus) => BusConsumer::Memory(bus.subscribe(group, topics).await?),
            Bus::Kafka(bus) => BusConsumer::Kafka(bus.subscribe(group, topics).await?),
        })
    }

    fn incarnation(&self) -> Option<&str> {
        match self {
            Bus::Memory(bus) => bus.incarnation(),
            Bus::Kafka(bus) => bus.incarnation(),
        }
    }

    async fn log_end(&self, topic: &str) -> Result<Vec<CommitOffset>> {
        match self {
            Bus::Memory(bus) => bus.log_end(topic).await,
            Bus::Kafka(bus) => bus.log_end(topic).await,
        }
    }
}

/// A connected bus and the topic layout every service shares.
#[derive(Clone)]
pub struct BusHandle {
    /// The connected bus itself.
    pub connection: Bus,
    pub topics: wharf_events::Topics,
    /// Partitions of the topics services create at start-up.
    pub partitions: i32,
}

impl BusHandle {
    /// Connects to the bus `config` names; `config` must have been validated.
    pub fn connect(config: &BusConfig) -> Result<Self> {
        Ok(BusHandle {
            connection: Bus::connect(config)?,
            topics: config.topics(),
            partitions: config.partitions,
        })
    }
}

/// A consumer of either bus.
pub enum BusConsumer {
    Memory(MemoryConsumer),
    Kafka(KafkaConsumer),
}

impl Consumer for BusConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        match self {
            BusConsumer::Memory(consumer) => consumer.next().await,
            BusConsumer::Kafka(consumer) => consumer.next().await,
        }
    }

    fn try_next_message(&mut self) -> Result<Option<Message>> {
        match self {
            BusConsumer::Memory(consumer) => consumer.try_next_message(),
            BusConsumer::Kafka(consumer) => consumer.try_next_message(),
        }
    }

    async fn commit(&mut self, offsets: &[CommitOffset]) -> Result<()> {
        match self {
            BusConsumer::Memory(consumer) => consumer.commit(offsets).await,
            BusConsumer::Kafka(consumer) => consumer.commit(offsets).await,
        }
    }

    fn assignment(&self) -> Result<Vec<PartitionId>> {
        match self {
            BusConsumer::Memory(consumer) => consumer.assignment(),
            BusConsumer::Kafka(consumer) => consumer.assignment(),
        }
    }
}
