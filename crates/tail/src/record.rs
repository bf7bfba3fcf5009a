//! [`TailedRecord`]: a record of any bus, or of `wharf up`'s event stream.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use wharf_bus::Message;
use wharf_events::{DecodeError, Envelope};

/// One record as `wharf tail` handles it, whichever way it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The record's value. On the event stream it travels as base64: a
    /// record that is not an envelope need not be UTF-8.
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

impl TailedRecord {
    /// The record's value as an envelope, or why it is not one.
    pub fn decode(&self) -> Result<Envelope, DecodeError> {
        Envelope::from_json(&self.value)
    }
}

impl From<Message> for TailedRecord {
    fn from(message: Message) -> Self {
        TailedRecord {
            topic: message.topic,
            partition: message.partition,
            offset: message.offset,
            key: message.key,
            headers: message.headers,
            value: message.payload,
        }
    }
}

mod base64_bytes {
    use super::*;

    pub(super) fn serialize<S: serde::Serializer>(
        bytes: &[u8],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_stream_even_when_it_is_not_utf8() {
        let record = TailedRecord {
            topic: "wharf.device-events".into(),
            partition: 3,
            offset: 42,
            key: Some("thermo-1".into()),
            headers: vec![("traceparent".into(), "00-abc".into())],
            value: vec![0xff, 0x00, b'{'],
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<TailedRecord>(&json).unwrap(), record);
    }
}
