//! The command desk: every decision about a command — reject it, send it,
//! queue it, expire it, settle it — made as one transaction that changes
//! the command's row (compare-and-set on its status) and writes the events
//! describing the change to the outbox. A command therefore reaches
//! exactly one terminal status, and its events are published if and only
//! if the change committed.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use wharf_events::{Envelope, Event, Topics};
use wharf_store::{CommandRow, Store, StoreTx};

use crate::clock;
use crate::profiles::{CommandProfile, Profiles, Rejection};

mod intake;
mod settle;

/// What became of a command request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Its id was handled before (a replay): nothing is sent again.
    Duplicate,
    Rejected,
    Dispatched,
    Queued,
}

impl Handled {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Handled::Duplicate => "duplicate",
            Handled::Rejected => "rejected",
            Handled::Dispatched => "dispatched",
            Handled::Queued => "queued",
        }
    }
}

/// What a delivery outcome from a Socket did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The command reached its terminal status.
    Ended,
    /// The device was gone: the command waits in its queue again.
    Requeued,
    /// Delivered; the device's answer is awaited.
    AwaitingReply,
    /// An answer from a device the command was not for: ignored.
    NotItsCommand,
    /// Not about a command in flight (already settled, or unknown).
    Ignored,
}

/// The commands a queue flush or an expiry sweep settled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SettledCounts {
    pub(crate) dispatched: usize,
    pub(crate) rejected: usize,
    pub(crate) expired: usize,
}

/// The rules every command decision follows.
pub(crate) struct Desk {
    /// The `source` of the events, and the owner of the outbox rows.
    pub(crate) instance: String,
    pub(crate) topics: Topics,
    pub(crate) queue_limit: usize,
    pub(crate) default_ttl: Duration,
    pub(crate) max_ttl: Duration,
    /// How long a dispatched command waits for its Socket's report before
    /// it fails with `no_outcome`.
    pub(crate) outcome_timeout: Duration,
    /// Woken whenever this instance ends a command: API requests waiting for
    /// one look again (they also look on their own, since another instance
    /// may end it).
    pub(crate) ended: tokio::sync::Notify,
}

impl Desk {
    /// How long `row` may wait for its device: the request's ttl, else the
    /// profile's, else `default_ttl`; never more than `max_ttl`.
    pub(super) fn ttl(&self, row: &CommandRow, profile: Option<&CommandProfile>) -> Duration {
        row.ttl_ms
            .map(clock::span)
            .or(profile.and_then(CommandProfile::ttl))
            .unwrap_or(self.default_ttl)
            .min(self.max_ttl)
    }

    /// An event about `row`, with an id derived from the command's: a
    /// retried decision produces the same event.
    pub(super) fn event(&self, row: &CommandRow, discriminator: &str, event: Event) -> Envelope {
        Envelope {
            id: wharf_events::derive_id(row.id, discriminator),
            time: SystemTime::now(),
            device: row.device.clone(),
            source: self.instance.clone(),
            correlation: row.correlation,
            causation: Some(row.id),
            event,
        }
    }

    pub(super) async fn emit(
        &self,
        tx: &mut StoreTx,
        topic: &str,
        event: &Envelope,
    ) -> wharf_store::Result<()> {
        emit(tx, &self.instance, topic, event).await
    }
}

/// Writes `event` to `instance`'s outbox, for `topic`.
pub(crate) async fn emit(
    tx: &mut StoreTx,
    instance: &str,
    topic: &str,
    event: &Envelope,
) -> wharf_store::Result<()> {
    let json = String::from_utf8(event.to_json()).expect("serde_json writes UTF-8");
    tx.outbox(instance, topic, &event.device, event.kind(), json)
        .await
}

/// The command's profile and its checked arguments, or why it is refused.
fn prepare<'p>(
    profiles: &'p Profiles,
    row: &CommandRow,
    firmware: Option<&str>,
) -> Result<(&'p CommandProfile, Map<String, Value>), Rejection> {
    let profile = profiles.command(&row.model, &row.command)?;
    let args = profile.check(&row.model, &row.args, firmware)?;
    Ok((profile, args))
}

/// The firmware version a registered device's metadata names.
async fn firmware_of(store: &Store, device: &str) -> wharf_store::Result<Option<String>> {
    Ok(store
        .device(device)
        .await?
        .filter(|row| row.revoked_at_ms.is_none())
        .and_then(|row| row.metadata.get("firmware")?.as_str().map(str::to_owned)))
}

fn ttl_passed(row: &CommandRow) -> String {
    let ttl_ms = row
        .expires_at_ms
        .map(|at| at - row.requested_at_ms)
        .unwrap_or_default();
    // Whole seconds, as ttls are asked for.
    let ttl = Duration::from_secs(clock::span(ttl_ms).as_millis().div_ceil(1000) as u64);
    format!(
        "{} stayed offline for the command's time to live ({})",
        row.device,
        humantime::format_duration(ttl)
    )
}
