//! The connections this instance holds: one per device, each with a bounded
//! queue of commands to write.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wharf_events::{FailureReason, Payload};

/// How a delivery ended, as the session task saw it.
pub(crate) type Outcome = Result<(), (FailureReason, String)>;

/// A command for a session task to deliver.
pub(crate) struct Outbound {
    pub(crate) payload: Payload,
    /// The MQTT topic; other transports have one channel.
    pub(crate) channel: Option<String>,
    /// Answered once the frame is written (or, over MQTT, acknowledged).
    pub(crate) outcome: oneshot::Sender<Outcome>,
}

/// How to reach the session task of one connection.
#[derive(Clone)]
pub(crate) struct ConnectionHandle {
    /// Tells this connection apart from the device's earlier and later ones.
    pub(crate) id: Uuid,
    pub(crate) outbound: mpsc::Sender<Outbound>,
    /// Cancelled when a newer connection of the device takes over.
    pub(crate) taken_over: CancellationToken,
}

/// The live connection of each device on this instance.
#[derive(Default)]
pub(crate) struct LiveConnections {
    by_device: Mutex<HashMap<String, ConnectionHandle>>,
}

impl LiveConnections {
    /// Makes `handle` the device's connection; returns the one it replaces.
    pub(crate) fn insert(
        &self,
        device: &str,
        handle: ConnectionHandle,
    ) -> Option<ConnectionHandle> {
        self.lock().insert(device.to_owned(), handle)
    }

    /// Forgets the device's connection if it is still `id`; a newer
    /// connection of the device stays.
    pub(crate) fn remove(&self, device: &str, id: Uuid) -> bool {
        let mut map = self.lock();
        if map.get(device).is_some_and(|handle| handle.id == id) {
            map.remove(device);
            true
        } else {
            false
        }
    }

    /// The device's live connection, if it has one here.
    pub(crate) fn get(&self, device: &str) -> Option<ConnectionHandle> {
        self.lock().get(device).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ConnectionHandle>> {
        self.by_device
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> ConnectionHandle {
        ConnectionHandle {
            id: Uuid::now_v7(),
            outbound: mpsc::channel(1).0,
            taken_over: CancellationToken::new(),
        }
    }

    #[test]
    fn an_old_connection_cannot_remove_its_successor() {
        let live = LiveConnections::default();
        let old = handle();
        let new = handle();
        assert!(live.insert("d", old.clone()).is_none());
        assert_eq!(live.insert("d", new.clone()).map(|h| h.id), Some(old.id));
        assert!(!live.remove("d", old.id));
        assert_eq!(live.get("d").map(|h| h.id), Some(new.id));
        assert!(live.remove("d", new.id));
        assert!(live.get("d").is_none());
    }
}
