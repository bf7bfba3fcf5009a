//! Waiting for a command to end (`?wait=10s`), and sharing idempotent
//! commands between identical requests.
//!
//! A waiting request looks at the command's row whenever this Commander
//! ends a command (the desk's `ended`), and at least every
//! [`LOOK_EVERY`] on its own: another Commander instance may be the one that
//! records the device's answer. At most `commander.api.max_waiting` requests
//! wait at once; one more is answered 503 `too_many_waiting` at once, before
//! anything is sent.
//!
//! Identical requests for an idempotent command (same device, same command,
//! the same arguments as JSON, object key order aside) made while one is in
//! flight, or within its profile's `reply_cache` after it ended, share that
//! command: the device gets it once, every caller gets its one answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;
use uuid::Uuid;
use wharf_store::{CommandRow, Store};

use super::envelope::ApiError;
use crate::desk::Desk;

/// How often a waiting request looks at its command on its own.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Above this many remembered shared commands, ended ones past their reuse,
/// and any asked for longer ago than [`FORGET_AFTER`], are swept out.
const SWEEP_ABOVE: usize = 1024;

/// A shared command no request saw end is forgotten this long after it was
/// asked for (at the next sweep): an identical request then asks anew.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Requests waiting now, and the idempotent commands they may share.
pub(crate) struct Waiting {
    slots: Semaphore,
    max_wait: Duration,
    shared: Mutex<HashMap<String, Shared>>,
    /// `wharf_commander_api_waiting`: the slots taken.
    waiting: Gauge,
}

/// A request's place among the waiting ones, given back when dropped.
pub(crate) struct WaitSlot<'a> {
    _permit: SemaphorePermit<'a>,
    waiting: Gauge,
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.waiting.dec();
    }
}

/// An idempotent command identical requests share.
#[derive(Clone, Copy)]
struct Shared {
    command_id: Uuid,
    asked_at: Instant,
    /// When it ended, once a request saw it end.
    ended_at: Option<Instant>,
    reuse_for: Duration,
}

impl Shared {
    fn reusable(&self, now: Instant) -> bool {
        self.ended_at
            .is_none_or(|ended| now.duration_since(ended) <= self.reuse_for)
    }

    fn worth_keeping(&self, now: Instant) -> bool {
        self.reusable(now) && now.duration_since(self.asked_at) <= FORGET_AFTER
    }
}

/// What a request for an idempotent command does.
pub(crate) enum Sharing {
    /// Another request asked for the same command: wait for that one.
    Join(Uuid),
    /// The first: ask for the command with this id.
    Ask(Uuid),
}

impl Waiting {
    pub(crate) fn new(max_waiting: usize, max_wait: Duration, waiting: Gauge) -> Self {
        Waiting {
            slots: Semaphore::new(max_waiting),
            max_wait,
            shared: Mutex::new(HashMap::new()),
            waiting,
        }
    }

    /// `?wait=` as a duration: at least 1 ms, at most `max_wait` (a longer
    /// one waits `max_wait`).
    pub(crate) fn parse_wait(&self, text: &str) -> Result<Duration, ApiError> {
        super::bounded_duration("wait", text, "5s", self.max_wait)
    }

    /// A place among the waiting requests, or 503 when they are all taken.
    pub(crate) fn slot(&self) -> Result<WaitSlot<'_>, ApiError> {
        let permit = self.slots.try_acquire().map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_waiting",
                "too many requests are waiting for commands (commander.api.max_waiting); retry, or ask without wait and poll",
            )
        })?;
        self.waiting.inc();
        Ok(WaitSlot {
            _permit: permit,
            waiting: self.waiting.clone(),
        })
    }

    /// Whether a request for an idempotent command joins an identical one
    /// or asks for its own (then remembered for the next ones).
    pub(crate) fn share(
        &self,
        device: &str,
        command: &str,
        args: &Map<String, Value>,
        reuse_for: Duration,
    ) -> Sharing {
        let key = sharing_key(device, command, args);
        let now = Instant::now();
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.len() > SWEEP_ABOVE {
            shared.retain(|_, entry| entry.worth_keeping(now));
        }
        match shared.get(&key) {
            Some(entry) if entry.reusable(now) => Sharing::Join(entry.command_id),
            _ => Sharing::Ask(remember(&mut shared, key, now, reuse_for)),
        }
    }

    /// The request found the shared command ended longer ago than its
    /// reuse: it asks for a new one, which identical requests share from
    /// now on.
    pub(crate) fn ask_again(
        &self,
        device: &str,
        command: &str,
        args: &Map<String, Value>,
        reuse_for: Duration,
    ) -> Uuid {
        let key = sharing_key(device, command, args);
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        remember(&mut shared, key, Instant::now(), reuse_for)
    }

    /// Forgets that the shared command with `key`'s parts is being asked
    /// for (it was refused before anything was sent).
    pub(crate) fn unshare(&self, device: &str, command: &str, args: &Map<String, Value>) {
        let key = sharing_key(device, command, args);
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }

    /// Notes that `command_id` ended now, so its reuse window starts.
    fn ended(&self, command_id: Uuid) {
        let now = Instant::now();
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        for entry in shared.values_mut() {
            if entry.command_id == command_id && entry.ended_at.is_none() {
                entry.ended_at = Some(now);
            }
        }
    }

    /// `id`'s row once it ends, or as it is when `wait` runs out; `None`
    /// while it does not exist yet (a shared command being recorded).
    pub(crate) async fn until_ended(
        &self,
        store: &Store,
        desk: &Desk,
        id: Uuid,
        wait: Duration,
    ) -> Result<Option<CommandRow>, ApiError> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before looking, so an end between the look and
            // the sleep still wakes this request.
            let ended = desk.ended.notified();
            let row = store.command(id).await?;
            if let Some(row) = &row
                && row.status.is_terminal()
            {
                self.ended(id);
                return Ok(Some(row.clone()));
            }
            if Instant::now() >= deadline {
                return Ok(row);
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep(LOOK_EVERY) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// A new command id, shared under `key` from `now`.
fn remember(
    shared: &mut HashMap<String, Shared>,
    key: String,
    now: Instant,
    reuse_for: Duration,
) -> Uuid {
    let command_id = wharf_events::new_id();
    shared.insert(
        key,
        Shared {
            command_id,
            asked_at: now,
            ended_at: None,
            reuse_for,
        },
    );
    command_id
}

/// What makes two requests identical: the device, the command and the
/// arguments as JSON (`serde_json` keeps object keys sorted, so key order
/// does not matter).
fn sharing_key(device: &str, command: &str, args: &Map<String, Value>) -> String {
    format!("{device}\u{0}{command}\u{0}{}", Value::Object(args.clone()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn identical_requests_share_one_command_until_its_reuse_ends() {
        let waiting = Waiting::new(10, Duration::from_secs(60), Gauge::default());
        let reuse = Duration::from_secs(5);
        let Sharing::Ask(first) =
            waiting.share("t-1", "read", &args(json!({"a": 1, "b": 2})), reuse)
        else {
            panic!("the first request asks");
        };
        // Key order aside, the same arguments.
        assert!(matches!(
            waiting.share("t-1", "read", &args(json!({"b": 2, "a": 1})), reuse),
            Sharing::Join(id) if id == first
        ));
        // Another device, command or argument is another command.
        for (device, command, value) in [
            ("t-2", "read", json!({"a": 1, "b": 2})),
            ("t-1", "other", json!({"a": 1, "b": 2})),
            ("t-1", "read", json!({"a": 1, "b": 3})),
        ] {
            assert!(matches!(
                waiting.share(device, command, &args(value), reuse),
                Sharing::Ask(_)
            ));
        }
        waiting.ended(first);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(matches!(
            waiting.share("t-1", "read", &args(json!({"a": 1, "b": 2})), reuse),
            Sharing::Join(id) if id == first
        ));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(
            waiting.share("t-1", "read", &args(json!({"a": 1, "b": 2})), reuse),
            Sharing::Ask(id) if id != first
        ));
    }

    #[test]
    fn waits_are_bounded_and_slots_run_out() {
        let gauge = Gauge::default();
        let waiting = Waiting::new(1, Duration::from_secs(60), gauge.clone());
        assert_eq!(waiting.parse_wait("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(waiting.parse_wait("2h").unwrap(), Duration::from_secs(60));
        assert_eq!(
            waiting.parse_wait("0s").unwrap_err().detail.code,
            "invalid_wait"
        );
        assert_eq!(
            waiting.parse_wait("soon").unwrap_err().detail.code,
            "invalid_wait"
        );
        let held = waiting.slot().unwrap();
        assert_eq!(gauge.get(), 1, "the gauge counts the waiting requests");
        let Err(refused) = waiting.slot() else {
            panic!("a second slot past max_waiting");
        };
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.detail.code, "too_many_waiting");
        assert_eq!(gauge.get(), 1);
        drop(held);
        assert_eq!(gauge.get(), 0);
        assert!(waiting.slot().is_ok());
    }
}
