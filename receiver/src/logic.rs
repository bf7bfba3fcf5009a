//! The extension point: the business logic the Receiver runs for each
//! device. [`TwinLogic`](crate::twin::TwinLogic) is the built-in one; see
//! `docs/receiver.md` for writing your own.

use serde_json::{Map, Value};
use wharf_events::{CommandRequested, Envelope, Event};

pub use crate::state::DeviceState;

/// Whether handling an event changed the state, which then must be written
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Changed,
}

/// How events change a device's state, and which events they cause.
///
/// The Receiver calls [`apply`](Self::apply) for every event of a device, in
/// order, one device at a time. It must be deterministic: after a crash the
/// Receiver replays the events whose effects were not stored, from the state
/// that was, and the replay must change the state and reply exactly as the
/// first run did. So it may read only the state and the event (use the
/// event's `time`, not the clock).
pub trait DeviceLogic: Send + Sync + 'static {
    /// Registers the logic's own metrics (exported under `wharf_receiver_`);
    /// none by default.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let _ = registry;
    }

    /// Applies `event` to `state`; events it causes go to `replies`.
    fn apply(&self, state: &mut DeviceState, event: &Envelope, replies: &mut Replies<'_>)
    -> Change;
}

/// The events one event causes, with ids derived from it.
pub struct Replies<'a> {
    cause: &'a Envelope,
    source: &'a str,
    out: Vec<Envelope>,
}

impl<'a> Replies<'a> {
    /// Collects the replies to `cause`; `source` names who replies.
    pub fn new(cause: &'a Envelope, source: &'a str) -> Self {
        Replies {
            cause,
            source,
            out: Vec::new(),
        }
    }

    /// Asks the Commander to send `command` to the event's device. `key`
    /// tells this reply apart from the event's other replies; the command id
    /// derives from the event's id and `key`, so a replay asks for the same
    /// command and the Commander sends it once.
    pub fn request_command(
        &mut self,
        key: &str,
        model: &str,
        command: &str,
        args: Map<String, Value>,
    ) {
        self.out.push(self.cause.derive(
            key,
            self.source,
            Event::CommandRequested(CommandRequested {
                model: model.to_owned(),
                command: command.to_owned(),
                args,
                ttl_ms: None,
            }),
        ));
    }

    /// The replies so far.
    pub fn events(&self) -> &[Envelope] {
        &self.out
    }

    pub(crate) fn into_events(self) -> Vec<Envelope> {
        self.out
    }
}
