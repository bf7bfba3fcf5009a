//! The AsyncAPI 3.0 document: every topic, who sends and receives on it,
//! and the schema of every event it carries.

use serde_json::{Map, Value, json};

use super::{envelope_schema, event_data_schemas};

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
            "CommandReplied",
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
            "CommandReplied",
            "CommandTimedOut",
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
        &[
            "DeviceConnected",
            "DeviceDisconnected",
            "FrameReceived",
            "CommandReplied",
        ],
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
            "CommandReplied",
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
            "CommandReplied",
            "CommandTimedOut",
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
            "CommandReplied",
            "CommandTimedOut",
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
