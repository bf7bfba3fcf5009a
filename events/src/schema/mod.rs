//! The wire format as a document: a JSON Schema for every event type (the
//! whole envelope, its `data` per type) and the AsyncAPI 3.0 description of
//! every topic, rendered to `docs/asyncapi.yaml`. The schemas are written
//! here, beside the types, from the same names the encoder uses (the enums'
//! `ALL` and `as_str`); `tests/asyncapi.rs` fails when the committed
//! document is not the one this code renders, and `scripts/asyncapi-check`
//! validates the document and every golden fixture against its schema.

use serde_json::{Map, Value, json};

use crate::{ExpiryReason, FailureReason, RejectReason, Transport};

mod asyncapi;
mod yaml;

pub use asyncapi::asyncapi;
pub use yaml::to_yaml;

/// Every event type and the schema of its `data`.
pub fn event_data_schemas() -> Vec<(&'static str, &'static str, Value)> {
    let uuid = json!({"type": "string", "format": "uuid"});
    let time = json!({"type": "string", "format": "date-time", "description": "RFC 3339, UTC, milliseconds"});
    let text = json!({"type": "string"});
    let object = json!({"type": "object"});
    let transports: Vec<&str> = Transport::ALL.iter().map(|t| t.as_str()).collect();
    let transport = json!({"type": "string", "enum": transports});
    let failures: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
    let rejections: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    let expiries: Vec<&str> = ExpiryReason::ALL.iter().map(|r| r.as_str()).collect();
    // A device's bytes: JSON as JSON, anything else base64 with `encoding`.
    let payload = json!({"description": "The bytes: JSON as JSON; anything else as a base64 string with \"encoding\": \"base64\""});
    let encoding = json!({"type": "string", "enum": ["base64"]});
    let connection = |extra: (&str, Value)| {
        let mut properties = Map::new();
        properties.insert("model".into(), text.clone());
        properties.insert("transport".into(), transport.clone());
        properties.insert(
            "instance".into(),
            json!({"type": "string", "description": "The Socket instance holding the connection"}),
        );
        properties.insert("connection".into(), uuid.clone());
        properties.insert(extra.0.into(), extra.1);
        properties
    };
    vec![
        (
            "DeviceConnected",
            "A device authenticated and holds a connection to a Socket instance",
            data(
                connection(("remote", text.clone())),
                &["model", "transport", "instance", "connection"],
            ),
        ),
        (
            "DeviceDisconnected",
            "A device's connection ended",
            data(
                connection(("reason", text.clone())),
                &["model", "transport", "instance", "connection", "reason"],
            ),
        ),
        (
            "FrameReceived",
            "A device sent a frame",
            data(
                props([
                    ("model", text.clone()),
                    (
                        "channel",
                        json!({"type": "string", "description": "The MQTT topic it came on"}),
                    ),
                    ("payload", payload.clone()),
                    ("encoding", encoding.clone()),
                ]),
                &["model", "payload"],
            ),
        ),
        (
            "DesiredStateChanged",
            "An app changed a device's desired state: a patch, null removes a key",
            data(props([("desired", object.clone())]), &["desired"]),
        ),
        (
            "CommandRequested",
            "A command is asked for (a Receiver rule, the API)",
            data(
                props([
                    ("model", text.clone()),
                    ("command", text.clone()),
                    ("args", object.clone()),
                    (
                        "ttl_ms",
                        json!({"type": "integer", "minimum": 0, "description": "How long it may wait for an offline device"}),
                    ),
                ]),
                &["model", "command", "args"],
            ),
        ),
        (
            "CommandQueued",
            "The device is offline: the command waits until it connects or expires_at",
            data(
                props([
                    ("command_id", uuid.clone()),
                    ("command", text.clone()),
                    ("expires_at", time.clone()),
                ]),
                &["command_id", "command", "expires_at"],
            ),
        ),
        (
            "CommandDispatched",
            "The command, rendered for the device's transport, goes to the Socket instance holding it",
            data(
                props([
                    ("command_id", uuid.clone()),
                    ("command", text.clone()),
                    ("instance", text.clone()),
                    (
                        "channel",
                        json!({"type": "string", "description": "The MQTT topic"}),
                    ),
                    (
                        "qos",
                        json!({"type": "integer", "enum": [0, 1], "description": "MQTT QoS; 1 when absent"}),
                    ),
                    ("payload", payload),
                    ("encoding", encoding),
                    (
                        "expires_at",
                        json!({"type": "string", "format": "date-time", "description": "The Socket does not write the frame after this"}),
                    ),
                    (
                        "reply",
                        json!({"type": "boolean", "description": "The device is expected to answer (MQTT 5: Response Topic and Correlation Data are set)"}),
                    ),
                ]),
                &["command_id", "command", "instance", "payload"],
            ),
        ),
        (
            "CommandDelivered",
            "The Socket wrote the command (QoS 0) or the device acknowledged it (QoS 1); terminal unless the command expects a reply",
            data(
                props([("command_id", uuid.clone()), ("instance", text.clone())]),
                &["command_id", "instance"],
            ),
        ),
        (
            "CommandFailed",
            "The command could not be delivered; terminal",
            data(
                props([
                    ("command_id", uuid.clone()),
                    ("reason", json!({"type": "string", "enum": failures})),
                    ("detail", text.clone()),
                ]),
                &["command_id", "reason", "detail"],
            ),
        ),
        (
            "CommandReplied",
            "The device answered a command: ok with its result, or its own error",
            data(
                props([
                    ("command_id", uuid.clone()),
                    ("ok", json!({"type": "boolean"})),
                    (
                        "result",
                        json!({"description": "What the device answered when ok"}),
                    ),
                    (
                        "error",
                        json!({"description": "The device's own error when not ok"}),
                    ),
                    ("instance", text.clone()),
                ]),
                &["command_id", "ok", "instance"],
            ),
        ),
        (
            "CommandTimedOut",
            "No answer came within the profile's reply_timeout after delivery; terminal",
            data(
                props([
                    ("command_id", uuid.clone()),
                    ("reply_timeout_ms", json!({"type": "integer", "minimum": 0})),
                ]),
                &["command_id", "reply_timeout_ms"],
            ),
        ),
        (
            "CommandRejected",
            "The Commander refused the command; it was never sent; terminal",
            data(
                props([
                    ("command_id", uuid.clone()),
                    ("command", text.clone()),
                    ("reason", json!({"type": "string", "enum": rejections})),
                    ("argument", text.clone()),
                    ("detail", text.clone()),
                ]),
                &["command_id", "command", "reason", "detail"],
            ),
        ),
        (
            "CommandExpired",
            "A queued command was never sent; terminal",
            data(
                props([
                    ("command_id", uuid.clone()),
                    ("reason", json!({"type": "string", "enum": expiries})),
                    ("detail", text),
                ]),
                &["command_id", "reason", "detail"],
            ),
        ),
        (
            "DeviceRevoked",
            "A device was deleted: its tokens issued before tokens_issued_before no longer connect",
            data(
                props([("tokens_issued_before", time)]),
                &["tokens_issued_before"],
            ),
        ),
    ]
}

fn props<const N: usize>(entries: [(&str, Value); N]) -> Map<String, Value> {
    entries
        .into_iter()
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect()
}

fn data(properties: Map<String, Value>, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The schema of a whole envelope carrying `kind` with `data`.
pub fn envelope_schema(kind: &str, data: &Value) -> Value {
    let uuid = json!({"type": "string", "format": "uuid"});
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "UUIDv7 for a new fact; UUIDv5 of the cause for a derived one"},
            "type": {"const": kind},
            "v": {"const": 1},
            "time": {"type": "string", "format": "date-time", "description": "RFC 3339, UTC, milliseconds"},
            "device": {"type": "string", "description": "The device the event is about; also the Kafka key"},
            "source": {"type": "string", "description": "The service instance that wrote it"},
            "correlation": uuid,
            "causation": uuid,
            "data": data,
        },
        "required": ["id", "type", "v", "time", "device", "source", "correlation", "data"],
        "additionalProperties": false,
    })
}
