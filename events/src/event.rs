//! The event types. Each is a fact that happened, named in the past tense;
//! the enum variant name is the envelope's `type`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::lifecycle::{CommandExpired, CommandQueued, CommandRejected, DeviceRevoked};
use crate::payload::{self, Encoding, Payload, PayloadOut};

/// Every event Wharf services exchange.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    DeviceConnected(DeviceConnected),
    DeviceDisconnected(DeviceDisconnected),
    FrameReceived(FrameReceived),
    DesiredStateChanged(DesiredStateChanged),
    CommandRequested(CommandRequested),
    CommandRejected(CommandRejected),
    CommandQueued(CommandQueued),
    CommandDispatched(CommandDispatched),
    CommandDelivered(CommandDelivered),
    CommandFailed(CommandFailed),
    CommandExpired(CommandExpired),
    DeviceRevoked(DeviceRevoked),
    CommandReplied(CommandReplied),
    CommandTimedOut(CommandTimedOut),
}

impl Event {
    /// Every envelope `type` this version knows.
    pub const KINDS: [&'static str; 14] = [
        "DeviceConnected",
        "DeviceDisconnected",
        "FrameReceived",
        "DesiredStateChanged",
        "CommandRequested",
        "CommandRejected",
        "CommandQueued",
        "CommandDispatched",
        "CommandDelivered",
        "CommandFailed",
        "CommandExpired",
        "DeviceRevoked",
        "CommandReplied",
        "CommandTimedOut",
    ];

    /// The envelope `type` of this event.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::DeviceConnected(_) => "DeviceConnected",
            Event::DeviceDisconnected(_) => "DeviceDisconnected",
            Event::FrameReceived(_) => "FrameReceived",
            Event::DesiredStateChanged(_) => "DesiredStateChanged",
            Event::CommandRequested(_) => "CommandRequested",
            Event::CommandRejected(_) => "CommandRejected",
            Event::CommandQueued(_) => "CommandQueued",
            Event::CommandDispatched(_) => "CommandDispatched",
            Event::CommandDelivered(_) => "CommandDelivered",
            Event::CommandFailed(_) => "CommandFailed",
            Event::CommandExpired(_) => "CommandExpired",
            Event::DeviceRevoked(_) => "DeviceRevoked",
            Event::CommandReplied(_) => "CommandReplied",
            Event::CommandTimedOut(_) => "CommandTimedOut",
        }
    }

    /// Decodes the `data` of an event of type `kind`; `None` for a type this
    /// version does not know.
    pub(crate) fn decode(kind: &str, data: &str) -> Option<serde_json::Result<Event>> {
        fn parse<'a, T: Deserialize<'a>>(
            data: &'a str,
            wrap: fn(T) -> Event,
        ) -> serde_json::Result<Event> {
            serde_json::from_str(data).map(wrap)
        }
        Some(match kind {
            "DeviceConnected" => parse(data, Event::DeviceConnected),
            "DeviceDisconnected" => parse(data, Event::DeviceDisconnected),
            "FrameReceived" => parse(data, Event::FrameReceived),
            "DesiredStateChanged" => parse(data, Event::DesiredStateChanged),
            "CommandRequested" => parse(data, Event::CommandRequested),
            "CommandRejected" => parse(data, Event::CommandRejected),
            "CommandQueued" => parse(data, Event::CommandQueued),
            "CommandDispatched" => parse(data, Event::CommandDispatched),
            "CommandDelivered" => parse(data, Event::CommandDelivered),
            "CommandFailed" => parse(data, Event::CommandFailed),
            "CommandExpired" => parse(data, Event::CommandExpired),
            "DeviceRevoked" => parse(data, Event::DeviceRevoked),
            "CommandReplied" => parse(data, Event::CommandReplied),
            "CommandTimedOut" => parse(data, Event::CommandTimedOut),
            _ => return None,
        })
    }
}

/// How a device is connected to the Socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Frames as WebSocket messages at `/v1/ws`.
    Websocket,
    /// MQTT 3.1.1 or 5 over TCP.
    Mqtt,
    /// MQTT over WebSocket at `/mqtt`.
    MqttWebsocket,
    /// Length-prefixed or newline-delimited frames over TCP.
    Tcp,
    /// Datagrams with a session id.
    Udp,
}

impl Transport {
    /// Every transport.
    pub const ALL: [Transport; 5] = [
        Transport::Websocket,
        Transport::Mqtt,
        Transport::MqttWebsocket,
        Transport::Tcp,
        Transport::Udp,
    ];

    /// The name used in events, logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::Mqtt => "mqtt",
            Transport::MqttWebsocket => "mqtt-websocket",
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// A device authenticated and holds a connection to a Socket instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceConnected {
    pub model: String,
    pub transport: Transport,
    /// The Socket instance holding the connection: where commands must go.
    pub instance: String,
    /// Tells this connection apart from earlier and later ones of the device.
    pub connection: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// A device's connection ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceDisconnected {
    pub model: String,
    pub transport: Transport,
    pub instance: String,
    /// The connection that ended; a newer connection of the device is unaffected.
    pub connection: Uuid,
    pub reason: String,
}

/// A device sent a frame.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "FrameWire")]
pub struct FrameReceived {
    pub model: String,
    /// Where on the connection the frame arrived (an MQTT topic); `None` for
    /// transports with a single channel.
    pub channel: Option<String>,
    pub payload: Payload,
}

#[derive(Deserialize)]
struct FrameWire {
    model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<Encoding>,
}

impl TryFrom<FrameWire> for FrameReceived {
    type Error = String;

    fn try_from(wire: FrameWire) -> Result<Self, String> {
        Ok(FrameReceived {
            model: wire.model,
            channel: wire.channel,
            payload: payload::from_wire(wire.payload, wire.encoding)?,
        })
    }
}

impl Serialize for FrameReceived {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            model: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: &'a Option<String>,
            payload: PayloadOut<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            encoding: Option<Encoding>,
        }
        let (payload, encoding) = payload::to_wire(&self.payload);
        Out {
            model: &self.model,
            channel: &self.channel,
            payload,
            encoding,
        }
        .serialize(serializer)
    }
}

/// Someone (an app, through the API) changed the state a device should be
/// in. `desired` is a patch: each key is set to its value; `null` removes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredStateChanged {
    pub desired: Map<String, Value>,
}

/// Something (a rule, an app) asked for a command to be sent to a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRequested {
    pub model: String,
    pub command: String,
    #[serde(default)]
    pub args: Map<String, Value>,
    /// How long the command may wait for an offline device, in
    /// milliseconds; the profile's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// The Commander rendered a command and sent it to the Socket instance that
/// holds the device. Published on that instance's deliveries topic (which
/// is how the frame travels) and on the command-status topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "DispatchWire")]
pub struct CommandDispatched {
    /// The id of the `CommandRequested` event.
    pub command_id: Uuid,
    pub command: String,
    pub instance: String,
    /// Where the frame goes on the connection: the MQTT topic.
    pub channel: Option<String>,
    /// MQTT QoS of the PUBLISH (0: delivered once written, 1: once the
    /// device acknowledges); 1 when absent.
    pub qos: Option<u8>,
    /// The bytes to write to the device.
    pub frame: Payload,
    /// When the command's time to live ends: a Socket does not write the
    /// frame after it (a late or replayed delivery), and reports
    /// `CommandFailed` with reason `expired` instead. Absent: no limit
    /// (events of earlier versions).
    pub expires_at: Option<SystemTime>,
    /// The device is expected to answer (the profile's `reply = true`): an
    /// MQTT 5 PUBLISH carries a Response Topic and Correlation Data.
    pub reply: bool,
}

#[derive(Deserialize)]
struct DispatchWire {
    command_id: Uuid,
    command: String,
    instance: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    qos: Option<u8>,
    payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encoding: Option<Encoding>,
    #[serde(default, with = "crate::time::optional")]
    expires_at: Option<SystemTime>,
    #[serde(default)]
    reply: bool,
}

impl TryFrom<DispatchWire> for CommandDispatched {
    type Error = String;

    fn try_from(wire: DispatchWire) -> Result<Self, String> {
        Ok(CommandDispatched {
            command_id: wire.command_id,
            command: wire.command,
            instance: wire.instance,
            channel: wire.channel,
            qos: wire.qos,
            frame: payload::from_wire(wire.payload, wire.encoding)?,
            expires_at: wire.expires_at,
            reply: wire.reply,
        })
    }
}

impl Serialize for CommandDispatched {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            command_id: &'a Uuid,
            command: &'a str,
            instance: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            qos: &'a Option<u8>,
            payload: PayloadOut<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            encoding: Option<Encoding>,
            #[serde(
                skip_serializing_if = "Option::is_none",
                with = "crate::time::optional"
            )]
            expires_at: &'a Option<SystemTime>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            reply: bool,
        }
        let (payload, encoding) = payload::to_wire(&self.frame);
        Out {
            command_id: &self.command_id,
            command: &self.command,
            instance: &self.instance,
            channel: &self.channel,
            qos: &self.qos,
            payload,
            encoding,
            expires_at: &self.expires_at,
            reply: self.reply,
        }
        .serialize(serializer)
    }
}

/// The Socket wrote a command's frame to the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandDelivered {
    pub command_id: Uuid,
    pub instance: String,
}

/// A device answered a command (its profile says `reply = true`). Published
/// by the Socket on the command-status topic (the Commander settles the
/// command: `succeeded`, or `failed` with reason `device_error`) and on the
/// device-events topic (business logic sees the answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandReplied {
    /// The command answered, as the device named it: the Commander accepts
    /// the answer only from the device the command was for.
    pub command_id: Uuid,
    /// Whether the device says it carried the command out.
    pub ok: bool,
    /// What the device answered when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The device's own error when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    pub instance: String,
}

/// A command that expects an answer got none within its profile's
/// `reply_timeout` after it was delivered; terminal (`timed_out`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandTimedOut {
    pub command_id: Uuid,
    /// How long the Commander waited after delivery, in milliseconds.
    pub reply_timeout_ms: u64,
}

/// A command could not be delivered; terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandFailed {
    pub command_id: Uuid,
    pub reason: FailureReason,
    /// A sentence for humans; `reason` is what programs should match on.
    pub detail: String,
}

/// Why a command failed, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// No Socket instance holds a connection for the device.
    DeviceNotConnected,
    /// The connection ended or failed while the frame was being written.
    WriteFailed,
    /// The device did not acknowledge the command in time (MQTT PUBACK).
    NoAck,
    /// Too many commands are already waiting for the device.
    QueueFull,
    /// The command's time to live ended before the Socket could write it
    /// (a late or replayed delivery); the device never got it.
    Expired,
    /// No Socket reported an outcome by the Commander's `outcome_timeout`
    /// (the instance went away, or its report was lost): the device may or
    /// may not have received the command.
    NoOutcome,
    /// The device answered that it could not carry the command out
    /// (`CommandReplied` with `ok: false`); its error is in the reply.
    DeviceError,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

impl FailureReason {
    /// Every reason this version writes.
    pub const ALL: [FailureReason; 7] = [
        FailureReason::DeviceNotConnected,
        FailureReason::WriteFailed,
        FailureReason::NoAck,
        FailureReason::QueueFull,
        FailureReason::Expired,
        FailureReason::NoOutcome,
        FailureReason::DeviceError,
    ];

    /// The wire name, also used in the `commands` table and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::DeviceNotConnected => "device_not_connected",
            FailureReason::WriteFailed => "write_failed",
            FailureReason::NoAck => "no_ack",
            FailureReason::QueueFull => "queue_full",
            FailureReason::Expired => "expired",
            FailureReason::NoOutcome => "no_outcome",
            FailureReason::DeviceError => "device_error",
            FailureReason::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_kind_is_one_the_decoder_knows() {
        for kind in Event::KINDS {
            assert!(Event::decode(kind, "{}").is_some(), "{kind} is not decoded");
        }
        assert!(Event::decode("NoSuchEvent", "{}").is_none());
    }
}
