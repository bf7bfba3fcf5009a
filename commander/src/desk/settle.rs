//! Decisions that end a command or put it back: a Socket's outcome, a
//! queue flushed on connect, expiry, and dispatched commands whose outcome
//! never came.

use serde_json::Value;
use wharf_events::{
    CommandExpired, CommandFailed, CommandQueued, CommandReplied, CommandTimedOut, Envelope, Event,
    ExpiryReason, FailureReason,
};
use wharf_store::{CommandRow, CommandStatus, StatusChange, Store, StoreTx};

use super::{Desk, Handled, Recorded, SettledCounts, firmware_of, prepare, ttl_passed};
use crate::clock;
use crate::presence::Location;
use crate::profiles::Profiles;

/// Expired or overdue commands settled per transaction.
const EXPIRY_BATCH: u32 = 500;

impl Desk {
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
        let now_ms = clock::now_ms();
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
        let due = store.expired_queued(clock::now_ms(), EXPIRY_BATCH).await?;
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
        let dispatched_before = clock::before(clock::now_ms(), self.outcome_timeout);
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
        if let Event::CommandReplied(replied) = &envelope.event {
            return self.record_reply(store, envelope, replied).await;
        }
        let (command_id, change) = match &envelope.event {
            Event::CommandDelivered(delivered) => {
                return self
                    .record_delivered(store, profiles, delivered.command_id)
                    .await;
            }
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

    /// The Socket wrote the command (or the device acknowledged it): it ends
    /// `delivered`, unless its profile says the device answers it; then it
    /// awaits the answer until `reply_timeout` from now.
    async fn record_delivered(
        &self,
        store: &Store,
        profiles: &Profiles,
        command_id: uuid::Uuid,
    ) -> wharf_store::Result<Recorded> {
        let mut tx = store.begin().await?;
        let Some(row) = tx.command(command_id).await? else {
            return Ok(Recorded::Ignored);
        };
        let reply = profiles
            .command(&row.model, &row.command)
            .ok()
            .and_then(|profile| profile.reply());
        let change = match reply {
            None => StatusChange::to(CommandStatus::Delivered),
            Some(reply) => StatusChange {
                expires_at_ms: Some(clock::after(clock::now_ms(), reply.timeout)),
                ..StatusChange::to(CommandStatus::AwaitingReply)
            },
        };
        let moved = tx
            .transition(command_id, CommandStatus::Dispatched, &change)
            .await?;
        tx.commit().await?;
        Ok(match (moved, reply) {
            (false, _) => Recorded::Ignored,
            (true, None) => Recorded::Ended,
            (true, Some(_)) => Recorded::AwaitingReply,
        })
    }

    /// A device's answer: the command succeeds, or fails with the device's
    /// error. Only the device the command was for may answer it, and only
    /// while it is dispatched (the answer overtook the delivery report) or
    /// awaited.
    async fn record_reply(
        &self,
        store: &Store,
        envelope: &Envelope,
        replied: &CommandReplied,
    ) -> wharf_store::Result<Recorded> {
        let mut tx = store.begin().await?;
        let Some(row) = tx.command(replied.command_id).await? else {
            return Ok(Recorded::Ignored);
        };
        if row.device != envelope.device {
            return Ok(Recorded::NotItsCommand);
        }
        if !matches!(
            row.status,
            CommandStatus::AwaitingReply | CommandStatus::Dispatched
        ) {
            return Ok(Recorded::Ignored);
        }
        let change = if replied.ok {
            StatusChange {
                reply: Some(replied.result.clone().unwrap_or(Value::Null)),
                ..StatusChange::to(CommandStatus::Succeeded)
            }
        } else {
            let error = replied.error.clone().unwrap_or(Value::Null);
            let detail = match &error {
                Value::Object(map) => map
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| error.to_string()),
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            StatusChange {
                reply: Some(error),
                ..StatusChange::to(CommandStatus::Failed).because(
                    FailureReason::DeviceError.as_str(),
                    format!("{} answered with an error: {detail}", row.device),
                )
            }
        };
        // From the status just read: a concurrent change makes it miss.
        let settled = tx.transition(row.id, row.status, &change).await?;
        tx.commit().await?;
        Ok(if settled {
            Recorded::Ended
        } else {
            Recorded::Ignored
        })
    }

    /// Ends commands whose device's answer is overdue (`timed_out`), with a
    /// `CommandTimedOut` through the outbox; how many.
    pub(crate) async fn time_out_replies(
        &self,
        store: &Store,
        profiles: &Profiles,
    ) -> wharf_store::Result<usize> {
        let overdue = store.overdue_replies(clock::now_ms(), EXPIRY_BATCH).await?;
        if overdue.is_empty() {
            return Ok(0);
        }
        let mut tx = store.begin().await?;
        let mut timed_out = 0;
        for row in &overdue {
            let timeout = profiles
                .command(&row.model, &row.command)
                .ok()
                .and_then(|profile| profile.reply())
                .map_or(crate::profiles::DEFAULT_REPLY_TIMEOUT, |reply| {
                    reply.timeout
                });
            let detail = format!(
                "{} did not answer within reply_timeout ({})",
                row.device,
                humantime::format_duration(timeout)
            );
            let change = StatusChange::to(CommandStatus::TimedOut).because("reply_timeout", detail);
            if !tx
                .transition(row.id, CommandStatus::AwaitingReply, &change)
                .await?
            {
                continue;
            }
            timed_out += 1;
            let event = self.event(
                row,
                "timed_out",
                Event::CommandTimedOut(CommandTimedOut {
                    command_id: row.id,
                    reply_timeout_ms: clock::millis(timeout) as u64,
                }),
            );
            self.emit(&mut tx, &self.topics.command_status(), &event)
                .await?;
        }
        tx.commit().await?;
        Ok(timed_out)
    }

    /// The Socket no longer held the device when the command got there (it
    /// disconnected meanwhile, or the connection closed before the frame
    /// was written): the command waits for the device again, until its time
    /// to live, counted from the request, passes.
    pub(super) async fn requeue(
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
        let expires_at_ms = row
            .expires_at_ms
            .unwrap_or_else(|| clock::after(row.requested_at_ms, self.ttl(&row, profile)));
        let recorded = if expires_at_ms <= clock::now_ms() {
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
                expires_at: clock::system_time(expires_at_ms),
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

    pub(super) async fn expire(
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
}
