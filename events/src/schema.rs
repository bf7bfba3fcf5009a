//! The wire format as a document: a JSON Schema for every event type (the
//! whole envelope, its `data` per type) and the AsyncAPI 3.0 description of
//! every topic, rendered to `docs/asyncapi.yaml`. The schemas are written
//! here, beside the types, from the same names the encoder uses (the enums'
//! `ALL` and `as_str`); `tests/asyncapi.rs` fails when the committed
//! document is not the one this code renders, and `scripts/asyncapi-check`
//! validates the document and every golden fixture against its schema.

use serde_json::{Map, Value, json};

use crate::{ExpiryReason, FailureReason, RejectReason, Transport};

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
                ]),
                &["command_id", "command", "instance", "payload"],
            ),
        ),
        (
            "CommandDelivered",
            "The Socket wrote the command (QoS 0) or the device acknowledged it (QoS 1); terminal",
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

/// The topics: (channel id, address, description, event types it carries).
const CHANNELS: &[(&str, &str, &str, &[&str])] = &[
    (
        "deviceEvents",
        "{prefix}.device-events",
        "Device connects, disconnects and frames, and desired-state changes; keyed by device; read by the Receivers",
        &[
            "DeviceConnected",
            "DeviceDisconnected",
            "FrameReceived",
            "DesiredStateChanged",
        ],
    ),
    (
        "commandRequests",
        "{prefix}.command-requests",
        "Commands asked for; keyed by device; read by the Commander",
        &["CommandRequested"],
    ),
    (
        "deliveries",
        "{prefix}.deliveries.{instance}",
        "Commands for the devices one Socket instance holds; read by that instance only",
        &["CommandDispatched"],
    ),
    (
        "commandStatus",
        "{prefix}.command-status",
        "Every command's lifecycle, to exactly one terminal event; keyed by device",
        &[
            "CommandQueued",
            "CommandDispatched",
            "CommandDelivered",
            "CommandFailed",
            "CommandRejected",
            "CommandExpired",
        ],
    ),
    (
        "presence",
        "{prefix}.presence",
        "Which Socket instance holds each device; compacted, keyed by device; read by the Commander",
        &["DeviceConnected", "DeviceDisconnected"],
    ),
    (
        "revocations",
        "{prefix}.revocations",
        "Deleted devices; compacted, keyed by device; read by every Socket instance",
        &["DeviceRevoked"],
    ),
];

/// (operation id, action, channel id, who, event types).
const OPERATIONS: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "socketPublishesDeviceEvents",
        "send",
        "deviceEvents",
        "The Socket publishes what devices do",
        &["DeviceConnected", "DeviceDisconnected", "FrameReceived"],
    ),
    (
        "apiPublishesDesiredState",
        "send",
        "deviceEvents",
        "The API publishes desired-state changes",
        &["DesiredStateChanged"],
    ),
    (
        "receiverConsumesDeviceEvents",
        "receive",
        "deviceEvents",
        "Receivers apply device events to per-device actors",
        &[
            "DeviceConnected",
            "DeviceDisconnected",
            "FrameReceived",
            "DesiredStateChanged",
        ],
    ),
    (
        "requestCommand",
        "send",
        "commandRequests",
        "Receiver rules and the API ask for commands",
        &["CommandRequested"],
    ),
    (
        "commanderConsumesRequests",
        "receive",
        "commandRequests",
        "The Commander decides each request",
        &["CommandRequested"],
    ),
    (
        "commanderDispatches",
        "send",
        "deliveries",
        "The Commander sends a command to the Socket instance holding the device",
        &["CommandDispatched"],
    ),
    (
        "socketConsumesDeliveries",
        "receive",
        "deliveries",
        "A Socket instance writes commands to its devices",
        &["CommandDispatched"],
    ),
    (
        "publishCommandStatus",
        "send",
        "commandStatus",
        "The Commander and the Sockets report each command's lifecycle",
        &[
            "CommandQueued",
            "CommandDispatched",
            "CommandDelivered",
            "CommandFailed",
            "CommandRejected",
            "CommandExpired",
        ],
    ),
    (
        "followCommandStatus",
        "receive",
        "commandStatus",
        "The Commander records outcomes; anyone may follow",
        &[
            "CommandQueued",
            "CommandDispatched",
            "CommandDelivered",
            "CommandFailed",
            "CommandRejected",
            "CommandExpired",
        ],
    ),
    (
        "socketPublishesPresence",
        "send",
        "presence",
        "The Socket says where each device is",
        &["DeviceConnected", "DeviceDisconnected"],
    ),
    (
        "commanderFollowsPresence",
        "receive",
        "presence",
        "The Commander routes commands by it",
        &["DeviceConnected", "DeviceDisconnected"],
    ),
    (
        "commanderRevokes",
        "send",
        "revocations",
        "The API's DELETE revokes a device",
        &["DeviceRevoked"],
    ),
    (
        "socketFollowsRevocations",
        "receive",
        "revocations",
        "Every Socket instance refuses revoked tokens and closes their connections",
        &["DeviceRevoked"],
    ),
];

/// The AsyncAPI 3.0 document of every topic and event.
pub fn asyncapi() -> Value {
    let mut schemas = Map::new();
    let mut messages = Map::new();
    for (kind, summary, data) in event_data_schemas() {
        schemas.insert(kind.to_owned(), envelope_schema(kind, &data));
        messages.insert(
            kind.to_owned(),
            json!({
                "name": kind,
                "title": kind,
                "summary": summary,
                "contentType": "application/json",
                "headers": {"$ref": "#/components/schemas/KafkaHeaders"},
                "payload": {"$ref": format!("#/components/schemas/{kind}")},
                "bindings": {"kafka": {"key": {"type": "string", "description": "The device id"}, "bindingVersion": "0.5.0"}},
            }),
        );
    }
    schemas.insert(
        "KafkaHeaders".into(),
        json!({
            "type": "object",
            "properties": {
                "type": {"type": "string", "description": "The event type, as in the envelope"},
                "device": {"type": "string", "description": "The device, as in the envelope"},
                "traceparent": {
                    "type": "string",
                    "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-01$",
                    "description": "W3C trace context: the trace id is the envelope's correlation (the chain is the trace), the span id the low 8 bytes of its id",
                },
            },
        }),
    );
    let message_refs = |kinds: &[&str], channel: Option<&str>| -> Vec<Value> {
        kinds
            .iter()
            .map(|kind| match channel {
                None => json!({"$ref": format!("#/components/messages/{kind}")}),
                Some(channel) => json!({"$ref": format!("#/channels/{channel}/messages/{kind}")}),
            })
            .collect()
    };
    let mut channels = Map::new();
    for (id, address, description, kinds) in CHANNELS {
        let mut channel_messages = Map::new();
        for (kind, reference) in kinds.iter().zip(message_refs(kinds, None)) {
            channel_messages.insert((*kind).to_owned(), reference);
        }
        let mut parameters = Map::new();
        parameters.insert(
            "prefix".into(),
            json!({"description": "bus.topic_prefix", "default": "wharf"}),
        );
        if address.contains("{instance}") {
            parameters.insert(
                "instance".into(),
                json!({"description": "The Socket instance id (socket.instance_id; its pod name on Kubernetes)"}),
            );
        }
        channels.insert(
            (*id).to_owned(),
            json!({
                "address": address,
                "description": description,
                "parameters": parameters,
                "messages": channel_messages,
            }),
        );
    }
    let mut operations = Map::new();
    for (id, action, channel, summary, kinds) in OPERATIONS {
        operations.insert(
            (*id).to_owned(),
            json!({
                "action": action,
                "summary": summary,
                "channel": {"$ref": format!("#/channels/{channel}")},
                "messages": message_refs(kinds, Some(channel)),
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Wharf events",
            "version": "1.0.0",
            "description": "Every topic Wharf's services talk through and every event on them. Each message is one JSON envelope (docs/events.md); this document is generated from the wharf-events crate (events/src/schema.rs).",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "Apache Kafka (bus.url = kafka://host:port)",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    })
}

/// `value` as YAML (block style; strings quoted as JSON strings, which
/// YAML reads the same).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&pad);
                out.push_str(&scalar(&Value::String(key.clone())));
                out.push(':');
                nested(item, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                nested(item, indent, out);
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn nested(item: &Value, indent: usize, out: &mut String) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_yaml(item, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_yaml(item, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        // Plain keys stay plain; everything else is a JSON string.
        Value::String(text)
            if !text.is_empty()
                && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !matches!(
                    text.as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off"
                )
                && !text.chars().next().is_some_and(|c| c.is_ascii_digit()) =>
        {
            text.clone()
        }
        other => other.to_string(),
    }
}
