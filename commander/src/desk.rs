//! The command desk: every decision about a command — reject it, send it,
//! queue it, expire it, settle it — made as one transaction that changes
//! the command's row (compare-and-set on its status) and writes the events
//! describing the change to the outbox. A command therefore reaches
//! exactly one terminal status, and its events are published if and only
//! if the change committed.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use wharf_events::{
    CommandDispatched, CommandExpired, CommandFailed, CommandQueued, CommandRejected,
    CommandRequested, Envelope, Event, ExpiryReason, FailureReason, Topics,
};
use wharf_store::{CommandRow, CommandStatus, StatusChange, Store, StoreTx, unix_millis};

use crate::presence::{Location, Presence};
use crate::profiles::{CommandProfile, Profiles, Rejection};

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
}

/// Expired commands settled per transaction.
const EXPIRY_BATCH: u32 = 500;

impl Desk {
    /// Decides a requested command: rejected, sent to the device's Socket
    /// instance, or queued while the device is offline.
    pub(crate) async fn handle_request(
        &self,
        store: &Store,
        profiles: &Profiles,
        presence: &Presence,
        envelope: &Envelope,
        request: &CommandRequested,
    ) -> wharf_store::Result<Handled> {
        let requested = CommandRow::requested(
            envelope.id,
            envelope.correlation,
            &envelope.device,
            &request.model,
            &request.command,
            request.args.clone(),
            request.ttl_ms.map(|ms| ms.min(i64::MAX as u64) as i64),
        );
        let firmware = match profiles.command(&request.model, &request.command) {
            Ok(profile) if profile.needs_firmware() => firmware_of(store, &envelope.device).await?,
            _ => None,
        };
        let mut tx = store.begin().await?;
        tx.insert_command(&requested).await?;
        // The API records its commands before requesting them; a row past
        // `requested` was handled already.
        let row = match tx.command(envelope.id).await? {
            Some(row) if row.status == CommandStatus::Requested => row,
            _ => return Ok(Handled::Duplicate),
        };
        let handled = match prepare(profiles, &row, firmware.as_deref()) {
            Err(rejection) => {
                self.reject(&mut tx, &row, CommandStatus::Requested, &rejection)
                    .await?;
                Handled::Rejected
            }
            Ok((profile, args)) => match presence.location(&row.device) {
                Some(location) => {
                    self.dispatch(
                        &mut tx,
                        &row,
                        CommandStatus::Requested,
                        profile,
                        &args,
                        location,
                    )
                    .await?
                }
                None => {
                    self.queue(&mut tx, &row, profile).await?;
                    Handled::Queued
                }
            },
        };
        tx.commit().await?;
        Ok(handled)
    }

    /// Sends `device`'s queued commands, in order, now that it connected at
    /// `location`; those past their time to live expire instead.
    pub(crate) async fn flush_queue(
        &self,
        store: &Store,
        profiles: &Profiles,
        device: &str,
        location: &Location,
    ) -> wharf_store::Result<SettledCounts> {
        let firmware = firmware_of(store, device).await?;
        let mut tx = store.begin().await?;
        let now_ms = unix_millis(SystemTime::now());
        let mut settled = SettledCounts::default();
        for row in tx.queued_commands(device).await? {
            if row.expires_at_ms.is_some_and(|at| at <= now_ms) {
                self.expire(&mut tx, &row, ExpiryReason::Ttl, ttl_passed(&row))
                    .await?;
                settled.expired += 1;
                continue;
            }
            match prepare(profiles, &row, firmware.as_deref()) {
                Err(rejection) => {
                    self.reject(&mut tx, &row, CommandStatus::Queued, &rejection)
                        .await?;
                    settled.rejected += 1;
                }
                Ok((profile, args)) => {
                    let sent = self
                        .dispatch(
                            &mut tx,
                            &row,
                            CommandStatus::Queued,
                            profile,
                            &args,
                            location,
                        )
                        .await?;
                    match sent {
                        Handled::Dispatched => settled.dispatched += 1,
                        Handled::Rejected => settled.rejected += 1,
                        _ => {}
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(settled)
    }

    /// Expires queued commands whose time to live has passed.
    pub(crate) async fn expire_due(&self, store: &Store) -> wharf_store::Result<usize> {
        let due = store
            .expired_queued(unix_millis(SystemTime::now()), EXPIRY_BATCH)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut tx = store.begin().await?;
        let mut expired = 0;
        for row in &due {
            if self
                .expire(&mut tx, row, ExpiryReason::Ttl, ttl_passed(row))
                .await?
            {
                expired += 1;
            }
        }
        tx.commit().await?;
        Ok(expired)
    }

    /// Fails dispatched commands no Socket reported on within
    /// `outcome_timeout` (their instance went away, or the report was lost):
    /// every command ends in exactly one terminal status. A report arriving
    /// later finds the command settled and is ignored.
    pub(crate) async fn fail_overdue(&self, store: &Store) -> wharf_store::Result<usize> {
        let timeout_ms = self.outcome_timeout.as_millis().min(i64::MAX as u128) as i64;
        let dispatched_before = unix_millis(SystemTime::now()).saturating_sub(timeout_ms);
        let overdue = store
            .overdue_dispatched(dispatched_before, EXPIRY_BATCH)
            .await?;
        if overdue.is_empty() {
            return Ok(0);
        }
        let mut tx = store.begin().await?;
        let mut failed = 0;
        for row in &overdue {
            let detail = format!(
                "socket instance {} reported no outcome within outcome_timeout ({}): \
                 the device may or may not have received it",
                row.instance.as_deref().unwrap_or("?"),
                humantime::format_duration(self.outcome_timeout)
            );
            let reason = FailureReason::NoOutcome;
            let change =
                StatusChange::to(CommandStatus::Failed).because(reason.as_str(), detail.clone());
            if !tx
                .transition(row.id, CommandStatus::Dispatched, &change)
                .await?
            {
                continue;
            }
            let event = self.event(
                row,
                "no_outcome",
                Event::CommandFailed(CommandFailed {
                    command_id: row.id,
                    reason,
                    detail,
                }),
            );
            self.emit(&mut tx, &self.topics.command_status(), &event)
                .await?;
            failed += 1;
        }
        tx.commit().await?;
        Ok(failed)
    }

    /// Records what a Socket reported about a dispatched command; whether
    /// the event settled one.
    pub(crate) async fn record_outcome(
        &self,
        store: &Store,
        profiles: &Profiles,
        envelope: &Envelope,
    ) -> wharf_store::Result<Recorded> {
        if let Event::CommandFailed(failed) = &envelope.event
            && failed.reason == FailureReason::DeviceNotConnected
        {
            return self.requeue(store, profiles, envelope, failed).await;
        }
        let (command_id, change) = match &envelope.event {
            Event::CommandDelivered(delivered) => (
                delivered.command_id,
                StatusChange::to(CommandStatus::Delivered),
            ),
            // Its time to live ended before the Socket could write it: it
            // was never sent, which is what `expired` says.
            Event::CommandFailed(failed) if failed.reason == FailureReason::Expired => (
                failed.command_id,
                StatusChange::to(CommandStatus::Expired)
                    .because(ExpiryReason::Ttl.as_str(), failed.detail.clone()),
            ),
            Event::CommandFailed(failed) => (
                failed.command_id,
                StatusChange::to(CommandStatus::Failed)
                    .because(failed.reason.as_str(), failed.detail.clone()),
            ),
            _ => return Ok(Recorded::Ignored),
        };
        let mut tx = store.begin().await?;
        let settled = tx
            .transition(command_id, CommandStatus::Dispatched, &change)
            .await?;
        tx.commit().await?;
        Ok(if settled {
            Recorded::Ended
        } else {
            Recorded::Ignored
        })
    }

    /// The Socket no longer held the device when the command got there (it
    /// disconnected meanwhile, or the connection closed before the frame
    /// was written): the command waits for the device again, until its time
    /// to live, counted from the request, passes.
    async fn requeue(
        &self,
        store: &Store,
        profiles: &Profiles,
        envelope: &Envelope,
        failed: &CommandFailed,
    ) -> wharf_store::Result<Recorded> {
        let mut tx = store.begin().await?;
        let Some(row) = tx.command(failed.command_id).await? else {
            return Ok(Recorded::Ignored);
        };
        if row.status != CommandStatus::Dispatched {
            return Ok(Recorded::Ignored);
        }
        let profile = profiles.command(&row.model, &row.command).ok();
        let expires_at_ms = row.expires_at_ms.unwrap_or_else(|| {
            let ttl = self.ttl(&row, profile);
            row.requested_at_ms + ttl.as_millis().min(i64::MAX as u128) as i64
        });
        let recorded = if expires_at_ms <= unix_millis(SystemTime::now()) {
            let detail = format!(
                "{} disconnected before the command reached it, and its ttl passed",
                row.device
            );
            let change = StatusChange::to(CommandStatus::Expired)
                .because(ExpiryReason::Ttl.as_str(), detail.clone());
            if tx
                .transition(row.id, CommandStatus::Dispatched, &change)
                .await?
            {
                let event = Event::CommandExpired(CommandExpired {
                    command_id: row.id,
                    reason: ExpiryReason::Ttl,
                    detail,
                });
                let event = self.event(&row, "expired", event);
                self.emit(&mut tx, &self.topics.command_status(), &event)
                    .await?;
            }
            Recorded::Ended
        } else {
            let change = StatusChange {
                expires_at_ms: Some(expires_at_ms),
                ..StatusChange::to(CommandStatus::Queued)
            };
            if !tx
                .transition(row.id, CommandStatus::Dispatched, &change)
                .await?
            {
                return Ok(Recorded::Ignored);
            }
            let event = Event::CommandQueued(CommandQueued {
                command_id: row.id,
                command: row.command.clone(),
                expires_at: std::time::UNIX_EPOCH
                    + Duration::from_millis(expires_at_ms.max(0) as u64),
            });
            // Derived from the failure: each return to the queue is a new fact.
            let mut event = self.event(&row, &format!("requeued:{}", envelope.id), event);
            event.causation = Some(envelope.id);
            self.emit(&mut tx, &self.topics.command_status(), &event)
                .await?;
            Recorded::Requeued
        };
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records a command asked for through the API and requests it; the
    /// request is then decided like any other.
    pub(crate) async fn record_request(
        &self,
        store: &Store,
        row: &CommandRow,
    ) -> wharf_store::Result<()> {
        let request = Envelope {
            id: row.id,
            time: SystemTime::now(),
            device: row.device.clone(),
            source: self.instance.clone(),
            correlation: row.correlation,
            causation: None,
            event: Event::CommandRequested(CommandRequested {
                model: row.model.clone(),
                command: row.command.clone(),
                args: row.args.clone(),
                ttl_ms: row.ttl_ms.map(|ms| ms.max(0) as u64),
            }),
        };
        let mut tx = store.begin().await?;
        tx.insert_command(row).await?;
        self.emit(&mut tx, &self.topics.command_requests(), &request)
            .await?;
        tx.commit().await
    }

    /// Records a command the API refused up front: it ends `rejected`.
    pub(crate) async fn record_rejected(
        &self,
        store: &Store,
        row: &CommandRow,
        rejection: &Rejection,
    ) -> wharf_store::Result<()> {
        let mut tx = store.begin().await?;
        tx.insert_command(row).await?;
        self.reject(&mut tx, row, CommandStatus::Requested, rejection)
            .await?;
        tx.commit().await
    }

    /// Checks a command for a device of `model` running `firmware`,
    /// as the pipeline will.
    pub(crate) fn check(
        profiles: &Profiles,
        row: &CommandRow,
        firmware: Option<&str>,
    ) -> Result<(), Rejection> {
        prepare(profiles, row, firmware).map(drop)
    }

    async fn reject(
        &self,
        tx: &mut StoreTx,
        row: &CommandRow,
        from: CommandStatus,
        rejection: &Rejection,
    ) -> wharf_store::Result<bool> {
        let change = StatusChange {
            argument: rejection.argument.clone(),
            ..StatusChange::to(CommandStatus::Rejected)
                .because(rejection.reason.as_str(), rejection.detail.clone())
        };
        if !tx.transition(row.id, from, &change).await? {
            return Ok(false);
        }
        let event = self.event(
            row,
            "rejected",
            Event::CommandRejected(CommandRejected {
                command_id: row.id,
                command: row.command.clone(),
                reason: rejection.reason,
                argument: rejection.argument.clone(),
                detail: rejection.detail.clone(),
            }),
        );
        self.emit(tx, &self.topics.command_status(), &event).await?;
        Ok(true)
    }

    async fn dispatch(
        &self,
        tx: &mut StoreTx,
        row: &CommandRow,
        from: CommandStatus,
        profile: &CommandProfile,
        args: &Map<String, Value>,
        location: &Location,
    ) -> wharf_store::Result<Handled> {
        let rendered = match profile.render(&row.device, args, row.id, location.transport) {
            Ok(rendered) => rendered,
            Err(rejection) => {
                self.reject(tx, row, from, &rejection).await?;
                return Ok(Handled::Rejected);
            }
        };
        // The Socket never writes the frame after this: a delivery that
        // arrives late, or is read again from the deliveries topic, fails
        // as `expired` instead.
        let expires_at_ms = row.expires_at_ms.unwrap_or_else(|| {
            let ttl = self.ttl(row, Some(profile));
            row.requested_at_ms
                .saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64)
        });
        let change = StatusChange {
            instance: Some(location.instance.clone()),
            expires_at_ms: Some(expires_at_ms),
            ..StatusChange::to(CommandStatus::Dispatched)
        };
        if !tx.transition(row.id, from, &change).await? {
            return Ok(Handled::Duplicate);
        }
        // One id per connection it is sent to: a command sent again after
        // its device reconnected is a new fact.
        let event = self.event(
            row,
            &format!("dispatched:{}", location.connection),
            Event::CommandDispatched(CommandDispatched {
                command_id: row.id,
                command: row.command.clone(),
                instance: location.instance.clone(),
                channel: Some(rendered.channel),
                qos: Some(rendered.qos),
                frame: rendered.frame,
                expires_at: Some(
                    std::time::UNIX_EPOCH + Duration::from_millis(expires_at_ms.max(0) as u64),
                ),
            }),
        );
        // The deliveries topic carries the frame; the status topic tells
        // everyone else it left.
        self.emit(tx, &self.topics.deliveries(&location.instance), &event)
            .await?;
        self.emit(tx, &self.topics.command_status(), &event).await?;
        Ok(Handled::Dispatched)
    }

    async fn queue(
        &self,
        tx: &mut StoreTx,
        row: &CommandRow,
        profile: &CommandProfile,
    ) -> wharf_store::Result<()> {
        let expires_at = SystemTime::now() + self.ttl(row, Some(profile));
        let change = StatusChange {
            expires_at_ms: Some(unix_millis(expires_at)),
            ..StatusChange::to(CommandStatus::Queued)
        };
        if !tx
            .transition(row.id, CommandStatus::Requested, &change)
            .await?
        {
            return Ok(());
        }
        let event = self.event(
            row,
            "queued",
            Event::CommandQueued(CommandQueued {
                command_id: row.id,
                command: row.command.clone(),
                expires_at,
            }),
        );
        self.emit(tx, &self.topics.command_status(), &event).await?;
        // Counted, not read: the rows are fetched only when some must go.
        let queued = tx.queued_count(&row.device).await?;
        let excess = queued.saturating_sub(self.queue_limit as u64);
        if excess == 0 {
            return Ok(());
        }
        let displaced = tx
            .oldest_queued(&row.device, u32::try_from(excess).unwrap_or(u32::MAX))
            .await?;
        for oldest in &displaced {
            let detail = format!(
                "{} was offline with queue_limit ({}) commands waiting; the oldest made room",
                row.device, self.queue_limit
            );
            self.expire(tx, oldest, ExpiryReason::Displaced, detail)
                .await?;
        }
        Ok(())
    }

    async fn expire(
        &self,
        tx: &mut StoreTx,
        row: &CommandRow,
        reason: ExpiryReason,
        detail: String,
    ) -> wharf_store::Result<bool> {
        let change =
            StatusChange::to(CommandStatus::Expired).because(reason.as_str(), detail.clone());
        if !tx
            .transition(row.id, CommandStatus::Queued, &change)
            .await?
        {
            return Ok(false);
        }
        let event = self.event(
            row,
            "expired",
            Event::CommandExpired(CommandExpired {
                command_id: row.id,
                reason,
                detail,
            }),
        );
        self.emit(tx, &self.topics.command_status(), &event).await?;
        Ok(true)
    }

    /// How long `row` may wait for its device: the request's ttl, else the
    /// profile's, else `default_ttl`; never more than `max_ttl`.
    fn ttl(&self, row: &CommandRow, profile: Option<&CommandProfile>) -> Duration {
        row.ttl_ms
            .map(|ms| Duration::from_millis(ms.max(0) as u64))
            .or(profile.and_then(CommandProfile::ttl))
            .unwrap_or(self.default_ttl)
            .min(self.max_ttl)
    }

    /// An event about `row`, with an id derived from the command's: a
    /// retried decision produces the same event.
    fn event(&self, row: &CommandRow, discriminator: &str, event: Event) -> Envelope {
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

    async fn emit(
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
        .unwrap_or_default()
        .max(0) as u64;
    let ttl = Duration::from_secs(ttl_ms.div_ceil(1000));
    format!(
        "{} stayed offline for the command's time to live ({})",
        row.device,
        humantime::format_duration(ttl)
    )
}
