//! What travels on the bus.

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    /// The device id: records with one key stay in order on one partition.
    pub key: String,
    pub payload: Vec<u8>,
    /// Small metadata repeated outside the payload for cheap filtering.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// A record without headers.
    pub fn new(topic: impl Into<String>, key: impl Into<String>, payload: Vec<u8>) -> Self {
        Record {
            topic: topic.into(),
            key: key.into(),
            payload,
            headers: Vec::new(),
        }
    }

    /// The record carrying `envelope` on `topic`: keyed by the device, with
    /// `type` and `device` repeated as headers for cheap filtering, and the
    /// event's W3C `traceparent` (its chain is the trace).
    pub fn event(topic: impl Into<String>, envelope: &wharf_events::Envelope) -> Self {
        Self::with_event_headers(
            topic,
            &envelope.device,
            envelope.kind(),
            envelope.to_json(),
            Some(envelope.traceparent()),
        )
    }

    /// Like [`Record::event`], for an envelope already encoded as `payload`
    /// (an outbox row).
    pub fn encoded_event(
        topic: impl Into<String>,
        device: &str,
        kind: &str,
        payload: Vec<u8>,
    ) -> Self {
        let traceparent = wharf_events::trace::traceparent_of_json(&payload);
        Self::with_event_headers(topic, device, kind, payload, traceparent)
    }

    fn with_event_headers(
        topic: impl Into<String>,
        device: &str,
        kind: &str,
        payload: Vec<u8>,
        traceparent: Option<String>,
    ) -> Self {
        let mut headers = Vec::with_capacity(3);
        headers.push(("type".to_owned(), kind.to_owned()));
        headers.push(("device".to_owned(), device.to_owned()));
        if let Some(traceparent) = traceparent {
            headers.push(("traceparent".to_owned(), traceparent));
        }
        Record {
            topic: topic.into(),
            key: device.to_owned(),
            payload,
            headers,
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }
}

/// Where a published record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Message {
    /// The value of header `name`, if the record carries it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The position to commit once this message is handled.
    pub fn next_position(&self) -> CommitOffset {
        CommitOffset {
            topic: self.topic.clone(),
            partition: self.partition,
            next_offset: self.offset + 1,
        }
    }
}

/// A consumer group position: `next_offset` is the next record to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommitOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// A topic to create when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Keep only the latest record per key (Kafka log compaction).
    pub compacted: bool,
}

impl TopicSpec {
    /// A regular topic with `partitions` partitions.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            compacted: false,
        }
    }

    /// A compacted topic with `partitions` partitions.
    pub fn compacted(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            compacted: true,
            ..Self::new(name, partitions)
        }
    }
}
