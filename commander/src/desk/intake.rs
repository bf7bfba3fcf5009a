//! Decisions that start a command: record the request, then reject it, send
//! it to its device's Socket instance, or queue it while the device is
//! offline.

use std::time::SystemTime;

use serde_json::{Map, Value};
use wharf_events::{
    CommandDispatched, CommandQueued, CommandRejected, CommandRequested, Envelope, Event,
    ExpiryReason,
};
use wharf_store::{CommandRow, CommandStatus, StatusChange, Store, StoreTx};

use super::{Desk, Handled, firmware_of, prepare};
use crate::clock;
use crate::presence::{Location, Presence};
use crate::profiles::{CommandProfile, Profiles, Rejection};

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

    pub(super) async fn reject(
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

    pub(super) async fn dispatch(
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
        let expires_at_ms = row
            .expires_at_ms
            .unwrap_or_else(|| clock::after(row.requested_at_ms, self.ttl(row, Some(profile))));
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
                expires_at: Some(clock::system_time(expires_at_ms)),
                reply: profile.reply().is_some(),
            }),
        );
        // The deliveries topic carries the frame; the status topic tells
        // everyone else it left.
        self.emit(tx, &self.topics.deliveries(&location.instance), &event)
            .await?;
        self.emit(tx, &self.topics.command_status(), &event).await?;
        Ok(Handled::Dispatched)
    }

    pub(super) async fn queue(
        &self,
        tx: &mut StoreTx,
        row: &CommandRow,
        profile: &CommandProfile,
    ) -> wharf_store::Result<()> {
        let expires_at_ms = clock::after(clock::now_ms(), self.ttl(row, Some(profile)));
        let change = StatusChange {
            expires_at_ms: Some(expires_at_ms),
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
                expires_at: clock::system_time(expires_at_ms),
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
}
