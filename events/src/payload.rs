//! Device bytes as they travel in events: JSON when they are valid JSON,
//! base64 otherwise, so nothing a device sends is lost or mangled.
//!
//! On the wire a payload is two sibling fields of the event's `data`:
//! `"payload": <json>` or `"payload": "<base64>", "encoding": "base64"`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a device sent, or what is to be written to it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A valid JSON document.
    Json(Value),
    /// Anything else; carried base64-encoded.
    Binary(Vec<u8>),
}

impl Payload {
    /// Classifies raw bytes: valid JSON stays JSON, anything else is binary.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match serde_json::from_slice(bytes) {
            Ok(value) => Payload::Json(value),
            Err(_) => Payload::Binary(bytes.to_vec()),
        }
    }

    /// The bytes to write to a device: compact JSON text, or the raw bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Payload::Json(value) => value.to_string().into_bytes(),
            Payload::Binary(bytes) => bytes.clone(),
        }
    }

    /// The JSON object, when the payload is one.
    pub fn as_object(&self) -> Option<&serde_json::Map<String, Value>> {
        match self {
            Payload::Json(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    /// The number of bytes the device sent or will receive.
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(value) => value.to_string().len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        matches!(self, Payload::Binary(bytes) if bytes.is_empty())
    }
}

/// The `encoding` field: absent for JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Encoding {
    Base64,
}

/// The `payload` wire field, borrowed for serialization.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum PayloadOut<'a> {
    Json(&'a Value),
    Base64(String),
}

/// Splits a payload into its two wire fields.
pub(crate) fn to_wire(payload: &Payload) -> (PayloadOut<'_>, Option<Encoding>) {
    match payload {
        Payload::Json(value) => (PayloadOut::Json(value), None),
        Payload::Binary(bytes) => (
            PayloadOut::Base64(BASE64.encode(bytes)),
            Some(Encoding::Base64),
        ),
    }
}

/// Rebuilds a payload from its two wire fields.
pub(crate) fn from_wire(payload: Value, encoding: Option<Encoding>) -> Result<Payload, String> {
    match encoding {
        None => Ok(Payload::Json(payload)),
        Some(Encoding::Base64) => match payload {
            Value::String(text) => BASE64
                .decode(text.as_bytes())
                .map(Payload::Binary)
                .map_err(|error| format!("payload is not valid base64: {error}")),
            other => Err(format!(
                "payload with encoding \"base64\" must be a string, got {}",
                json_kind(&other)
            )),
        },
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stays_json_and_anything_else_is_binary() {
        assert_eq!(
            Payload::from_bytes(br#"{"temperature":35}"#),
            Payload::Json(serde_json::json!({"temperature": 35}))
        );
        assert_eq!(
            Payload::from_bytes(b"\x00\x01\xff"),
            Payload::Binary(vec![0, 1, 255])
        );
        assert_eq!(
            Payload::from_bytes(b"hello"),
            Payload::Binary(b"hello".to_vec())
        );
    }

    /// Found by fuzz/websocket_payload: without exact float parsing, this
    /// number came out of its event one bit off.
    #[test]
    fn a_number_comes_out_of_an_event_as_it_went_in() {
        for text in ["16161111111111116111115", "0.30000000000000004", "1e-320"] {
            let payload = Payload::from_bytes(text.as_bytes());
            let (out, encoding) = to_wire(&payload);
            let wire = serde_json::to_string(&out).unwrap();
            let back = from_wire(serde_json::from_str(&wire).unwrap(), encoding).unwrap();
            assert_eq!(back, payload, "{text}");
        }
    }

    #[test]
    fn binary_round_trips_through_base64() {
        let payload = Payload::Binary(vec![0, 1, 255]);
        let (out, encoding) = to_wire(&payload);
        assert_eq!(encoding, Some(Encoding::Base64));
        let back = from_wire(serde_json::to_value(out).unwrap(), encoding).unwrap();
        assert_eq!(back, Payload::Binary(vec![0, 1, 255]));
    }

    #[test]
    fn rejects_base64_that_is_not_a_string_or_not_base64() {
        let err = from_wire(serde_json::json!(5), Some(Encoding::Base64)).unwrap_err();
        assert!(err.contains("must be a string, got a number"), "{err}");
        let err = from_wire(serde_json::json!("%%%"), Some(Encoding::Base64)).unwrap_err();
        assert!(err.contains("not valid base64"), "{err}");
    }
}
