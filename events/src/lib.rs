//! Wharf's wire format: the event envelope, the event types and the topic
//! names every service agrees on. Services never share code paths, only this
//! crate carried over the bus. No I/O, no async runtime.
//!
//! # Layout
//! - [`envelope`]: [`Envelope`], its JSON encoding and decoding.
//! - [`event`]: [`Event`], one struct per event type, named as facts.
//! - [`lifecycle`]: a command refused, queued or expired; a device revoked.
//! - [`payload`]: [`Payload`], device bytes carried as JSON or base64.
//! - [`ids`]: fresh (UUIDv7) and derived (UUIDv5) event ids.
//! - [`time`]: points in time inside event data, as RFC 3339.
//! - [`schema`]: a JSON Schema per event type and the AsyncAPI document of
//!   every topic (`docs/asyncapi.yaml`).
//! - [`topics`]: [`Topics`], topic names under a configurable prefix.
//! - [`trace`]: the W3C `traceparent` of an event: its chain is the trace.
//!
//! # Invariants
//! - Every message on every topic is one [`Envelope`] encoded as JSON.
//! - An event derived from another gets [`ids::derive_id`] of its cause, so
//!   a replay produces the same id and consumers can drop the duplicate.
//! - Field names and type names are the wire format: the golden fixtures in
//!   `tests/fixtures` fail when either changes.

pub mod envelope;
pub mod event;
pub mod ids;
pub mod lifecycle;
pub mod payload;
pub mod schema;
pub mod time;
pub mod topics;
pub mod trace;

pub use envelope::{DecodeError, Envelope};
pub use event::{
    CommandDelivered, CommandDispatched, CommandFailed, CommandReplied, CommandRequested,
    CommandTimedOut, DesiredStateChanged, DeviceConnected, DeviceDisconnected, Event,
    FailureReason, FrameReceived, Transport,
};
pub use ids::{derive_id, new_id};
pub use lifecycle::{
    CommandExpired, CommandQueued, CommandRejected, DeviceRevoked, ExpiryReason, RejectReason,
};
pub use payload::Payload;
pub use topics::{TopicNameError, Topics};
