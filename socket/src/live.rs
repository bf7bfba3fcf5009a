//! The connections this instance holds: one per device, each with a small
//! mailbox for the commands to write and for the news that it must close
//! (taken over, revoked).
//!
//! The mailbox is one allocation that grows only when commands wait: a
//! Socket holds many idle connections, and each byte of per-connection
//! state counts.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, oneshot};
use uuid::Uuid;
use wharf_events::{FailureReason, Payload};

use crate::close::CloseReason;

/// How a delivery ended, as the session task saw it.
pub(crate) type Outcome = Result<(), DeliveryFailure>;

/// Why a command was not delivered: the reason the Commander acts on
/// (`device_not_connected` queues it again, the others fail it) and the
/// detail for people.
#[derive(Debug)]
pub(crate) struct DeliveryFailure {
    pub(crate) reason: FailureReason,
    pub(crate) detail: String,
}

impl DeliveryFailure {
    pub(crate) fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        DeliveryFailure {
            reason,
            detail: detail.into(),
        }
    }
}

/// A command for a session task to deliver.
pub(crate) struct Outbound {
    pub(crate) payload: Payload,
    /// The MQTT topic; other transports have one channel.
    pub(crate) channel: Option<String>,
    /// MQTT: 0 publishes at most once and counts as delivered once
    /// written; anything else publishes at QoS 1 and waits for the PUBACK.
    pub(crate) qos: Option<u8>,
    /// Answered once the frame is written (or, over MQTT, acknowledged).
    pub(crate) outcome: oneshot::Sender<Outcome>,
    /// When `delivery_timeout` runs out: an MQTT command not acknowledged
    /// by then fails with `no_ack`.
    pub(crate) deadline: tokio::time::Instant,
    /// The command's id when the device is expected to answer it: an MQTT 5
    /// PUBLISH carries its reply topic and the id as Correlation Data.
    pub(crate) reply_to: Option<uuid::Uuid>,
}

/// What a session task learns from its mailbox.
pub(crate) enum Signal {
    Command(Outbound),
    /// Close the connection: a newer one took over, or its token was revoked.
    Close(CloseReason),
}

/// Why a command could not be queued.
pub(crate) enum Refused {
    Full,
    Closed,
}

/// Commands waiting for one connection, and why it must close, if it must.
pub(crate) struct Mailbox {
    commands: Mutex<VecDeque<Outbound>>,
    capacity: usize,
    notify: Notify,
    closing: OnceLock<CloseReason>,
    closed: AtomicBool,
}

impl Mailbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Mailbox {
            commands: Mutex::new(VecDeque::new()),
            capacity,
            notify: Notify::new(),
            closing: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Queues a command behind the others, unless `capacity` are waiting.
    pub(crate) fn push(&self, command: Outbound) -> Result<(), Refused> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        let mut commands = self.lock();
        if commands.len() >= self.capacity {
            return Err(Refused::Full);
        }
        commands.push_back(command);
        drop(commands);
        self.notify.notify_one();
        Ok(())
    }

    /// Tells the session to close for `reason`; the first reason given wins.
    pub(crate) fn close_for(&self, reason: CloseReason) {
        let _ = self.closing.set(reason);
        self.notify.notify_one();
    }

    /// The next command, or why to close; commands are left waiting unless
    /// `take_commands` (an MQTT device that has not subscribed yet).
    /// Cancel-safe: a command leaves the mailbox only when returned.
    pub(crate) async fn next(&self, take_commands: bool) -> Signal {
        loop {
            if let Some(reason) = self.closing.get() {
                return Signal::Close(*reason);
            }
            if take_commands && let Some(command) = self.lock().pop_front() {
                return Signal::Command(command);
            }
            // notify_one keeps a permit when nobody waits: no wake-up is lost.
            self.notify.notified().await;
        }
    }

    /// Refuses further commands and hands back those still waiting.
    pub(crate) fn close(&self) -> Vec<Outbound> {
        self.closed.store(true, Ordering::Release);
        self.lock().drain(..).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        self.commands
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A live connection as the rest of the Socket sees it: which one it is,
/// and its mailbox. One allocation per connection, shared by its session
/// task and the live map.
pub(crate) struct LiveConnection {
    /// Tells this connection apart from the device's earlier and later ones.
    pub(crate) id: Uuid,
    /// When the connection's token was issued (seconds since the epoch):
    /// a revocation closes connections whose token is older.
    pub(crate) issued_at: u64,
    /// When the Socket admitted the connection ([`crate::gateway::Admitted`]).
    pub(crate) order: u64,
    pub(crate) mailbox: Mailbox,
}

/// How to reach the session task of one connection.
pub(crate) type ConnectionHandle = Arc<LiveConnection>;

/// The live connection of each device on this instance.
#[derive(Default)]
pub(crate) struct LiveConnections {
    by_device: Mutex<HashMap<String, ConnectionHandle>>,
}

impl LiveConnections {
    /// Makes `handle` the device's connection unless one admitted later is
    /// there already; returns the connection that lost (to close).
    pub(crate) fn insert(
        &self,
        device: &str,
        handle: ConnectionHandle,
    ) -> Option<ConnectionHandle> {
        let mut map = self.lock();
        match map.get(device) {
            Some(current) if current.order > handle.order => Some(handle),
            _ => map.insert(device.to_owned(), handle),
        }
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

    /// Tells every live connection to close for `reason`.
    pub(crate) fn close_all(&self, reason: CloseReason) {
        for handle in self.lock().values() {
            handle.mailbox.close_for(reason);
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
        static ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Arc::new(LiveConnection {
            id: Uuid::now_v7(),
            issued_at: 0,
            order: ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            mailbox: Mailbox::new(1),
        })
    }

    fn command() -> Outbound {
        Outbound {
            payload: Payload::Binary(vec![1]),
            channel: None,
            qos: None,
            outcome: oneshot::channel().0,
            deadline: tokio::time::Instant::now(),
            reply_to: None,
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

    #[test]
    fn the_connection_admitted_later_wins_whichever_registers_first() {
        let live = LiveConnections::default();
        let (older, newer) = (handle(), handle());
        assert!(live.insert("d", newer.clone()).is_none());
        // The older one registers last (its task ran late): it is the one
        // handed back to be closed, and the newer one stays.
        assert_eq!(
            live.insert("d", older.clone()).map(|h| h.id),
            Some(older.id)
        );
        assert_eq!(live.get("d").map(|h| h.id), Some(newer.id));
    }

    #[tokio::test]
    async fn a_mailbox_is_bounded_and_tells_of_a_takeover() {
        let mailbox = Mailbox::new(1);
        assert!(mailbox.push(command()).is_ok());
        assert!(matches!(mailbox.push(command()), Err(Refused::Full)));
        assert!(matches!(mailbox.next(true).await, Signal::Command(_)));
        assert!(mailbox.push(command()).is_ok());
        let held = tokio::time::timeout(std::time::Duration::from_millis(20), mailbox.next(false));
        assert!(held.await.is_err(), "commands wait until taken");
        mailbox.close_for(CloseReason::TakenOver);
        mailbox.close_for(CloseReason::Revoked);
        assert!(matches!(
            mailbox.next(true).await,
            Signal::Close(CloseReason::TakenOver)
        ));
        assert_eq!(
            mailbox.close().len(),
            1,
            "the waiting command is handed back"
        );
        assert!(matches!(mailbox.push(command()), Err(Refused::Closed)));
    }
}
