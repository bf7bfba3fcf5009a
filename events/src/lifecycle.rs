//! The command lifecycle beyond dispatch: refused, waiting for an offline
//! device, or out of time. With `CommandDelivered` and `CommandFailed`
//! these are the terminal statuses every command reaches exactly once.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The Commander refused a command before sending it; terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRejected {
    pub command_id: Uuid,
    pub command: String,
    pub reason: RejectReason,
    /// The argument at fault, for `invalid_argument`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
    /// A sentence for humans; `reason` is what programs should match on.
    pub detail: String,
}

/// Why a command was refused, as a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// No profile is configured for the device's model.
    UnknownModel,
    /// The model's profile has no such command.
    UnknownCommand,
    /// The model, or the device's firmware version, does not support it.
    Unsupported,
    /// An argument is missing, unknown, of the wrong type or out of range.
    InvalidArgument,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

impl RejectReason {
    /// Every reason this version writes.
    pub const ALL: [RejectReason; 4] = [
        RejectReason::UnknownModel,
        RejectReason::UnknownCommand,
        RejectReason::Unsupported,
        RejectReason::InvalidArgument,
    ];

    /// The wire name, also used in the `commands` table and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownModel => "unknown_model",
            RejectReason::UnknownCommand => "unknown_command",
            RejectReason::Unsupported => "unsupported",
            RejectReason::InvalidArgument => "invalid_argument",
            RejectReason::Other => "other",
        }
    }
}

/// The device is offline: the Commander stored the command and sends it
/// when the device connects, unless `expires_at` passes first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandQueued {
    pub command_id: Uuid,
    pub command: String,
    #[serde(with = "crate::time")]
    pub expires_at: SystemTime,
}

/// A queued command was never sent; terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandExpired {
    pub command_id: Uuid,
    pub reason: ExpiryReason,
    pub detail: String,
}

/// Why a queued command expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryReason {
    /// Its time to live passed while the device stayed offline.
    Ttl,
    /// The device's queue was full; the oldest command made room.
    Displaced,
    /// A reason this version does not know.
    #[serde(other)]
    Other,
}

impl ExpiryReason {
    /// Every reason this version writes.
    pub const ALL: [ExpiryReason; 2] = [ExpiryReason::Ttl, ExpiryReason::Displaced];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiryReason::Ttl => "ttl",
            ExpiryReason::Displaced => "displaced",
            ExpiryReason::Other => "other",
        }
    }
}

/// A device was deleted: its tokens issued before `tokens_issued_before`
/// no longer open a connection, and its live connection is closed. Kept
/// per device on the compacted revocations topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRevoked {
    #[serde(with = "crate::time")]
    pub tokens_issued_before: SystemTime,
}
