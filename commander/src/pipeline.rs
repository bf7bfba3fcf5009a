//! The Commander's loop: requests, presence, delivery outcomes and expiry
//! sweeps fed to the desk, each retried through store outages, and offsets
//! committed only for what the store holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wharf_bus::{BusConsumer, CommitOffset, Consumer as _, Message, OffsetTracker};
use wharf_events::{Envelope, Event};
use wharf_runtime::{Backoff, ConfigError, ReadyFlag, Reload};
use wharf_store::Store;

use crate::desk::{Desk, Handled, Recorded};
use crate::metrics::CommanderMetrics;
use crate::presence::Presence;
use crate::profiles::LiveProfiles;
use crate::relay::OutboxWaker;

/// How often handled requests' and outcomes' offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// Sweeps between two rescans of the devices with queued commands.
const RESCAN_EVERY: u32 = 10;
/// Devices with queued commands read per page of a rescan (all pages are read).
pub(crate) const RESCAN_PAGE: u32 = 10_000;

/// The loop that feeds requests, presence, outcomes and expiry to the desk.
pub(crate) struct Pipeline {
    pub(crate) profiles: LiveProfiles,
    pub(crate) store: Store,
    pub(crate) desk: Arc<Desk>,
    pub(crate) waker: OutboxWaker,
    pub(crate) requests: BusConsumer,
    pub(crate) outcomes: BusConsumer,
    pub(crate) presence_feed: BusConsumer,
    pub(crate) presence: Presence,
    /// Devices known to have queued commands: a connect of one flushes.
    pub(crate) queued_devices: HashSet<String>,
    pub(crate) request_offsets: OffsetTracker,
    pub(crate) outcome_offsets: OffsetTracker,
    pub(crate) sweep_interval: Duration,
    pub(crate) metrics: CommanderMetrics,
    pub(crate) ready: ReadyFlag,
}

impl Pipeline {
    pub(crate) async fn serve(
        &mut self,
        shutdown: &CancellationToken,
        reload: &mut Reload,
    ) -> anyhow::Result<()> {
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        let mut sweep_tick = tokio::time::interval(self.sweep_interval);
        let mut sweeps = 0u32;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                true = reload.requested() => self.reload_profiles(),
                // Presence first: a device's connect must be known before
                // the commands its frames cause.
                update = self.presence_feed.recv() => {
                    let message = update.context("failed to read presence")?;
                    self.on_presence(&message, shutdown).await?;
                }
                request = self.requests.recv() => {
                    let message = request.context("failed to read the command requests")?;
                    match self.on_request(&message, shutdown).await? {
                        Handling::Done => self.request_offsets.consumed(&message),
                        // Not handled: its offset stays uncommitted, so the
                        // request is read again at the next start.
                        Handling::Interrupted => return Ok(()),
                    }
                }
                outcome = self.outcomes.recv() => {
                    let message = outcome.context("failed to read the command status")?;
                    match self.on_outcome(&message, shutdown).await? {
                        Handling::Done => self.outcome_offsets.consumed(&message),
                        Handling::Interrupted => return Ok(()),
                    }
                }
                _ = sweep_tick.tick() => {
                    sweeps = sweeps.wrapping_add(1);
                    self.sweep(sweeps.is_multiple_of(RESCAN_EVERY), shutdown).await?;
                }
                _ = commit_tick.tick() => self.commit().await?,
            }
        }
    }

    fn reload_profiles(&self) {
        match self.profiles.reload() {
            Ok(models) => {
                self.metrics
                    .profile_reloads
                    .get_or_create(&[("outcome", "ok")])
                    .inc();
                info!(models, "profiles reloaded");
            }
            Err(ConfigError { problems }) => {
                self.metrics
                    .profile_reloads
                    .get_or_create(&[("outcome", "failed")])
                    .inc();
                warn!(
                    problems = problems.join("; "),
                    "profiles not reloaded; the previous ones stay"
                );
            }
        }
    }

    async fn on_presence(
        &mut self,
        message: &Message,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let envelope = match Envelope::from_json(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                warn!(%error, offset = message.offset, "skipping an undecodable presence record");
                return Ok(());
            }
        };
        let connected = self.presence.apply(&envelope);
        self.metrics
            .connected_devices
            .set(self.presence.len() as i64);
        if let Some(device) = connected
            && self.queued_devices.contains(&device)
        {
            self.flush(&device, shutdown).await?;
        }
        Ok(())
    }

    /// Sends `device`'s queued commands, if it is connected.
    async fn flush(&mut self, device: &str, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let Some(location) = self.presence.location(device).cloned() else {
            return Ok(());
        };
        let profiles = self.profiles.current();
        let (desk, store) = (&self.desk, &self.store);
        let Some(settled) = retry_store(&self.ready, shutdown, || {
            desk.flush_queue(store, &profiles, device, &location)
        })
        .await?
        else {
            return Ok(());
        };
        self.queued_devices.remove(device);
        self.metrics.count_queue("dispatched", settled.dispatched);
        self.metrics.count_queue("rejected", settled.rejected);
        self.metrics.count_queue("expired", settled.expired);
        debug!(device, ?settled, "queue flushed");
        self.waker.wake();
        Ok(())
    }

    async fn on_request(
        &mut self,
        message: &Message,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Handling> {
        let envelope = match Envelope::from_json(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.metrics.count("undecodable");
                warn!(%error, offset = message.offset, "skipping an undecodable request");
                return Ok(Handling::Done);
            }
        };
        let Event::CommandRequested(request) = &envelope.event else {
            self.metrics.count("unexpected");
            return Ok(Handling::Done);
        };
        debug!(trace_id = %envelope.correlation.simple(), command_id = %envelope.id,
            device = %envelope.device, command = %request.command, topic = %message.topic,
            partition = message.partition, offset = message.offset, "command requested");
        let profiles = self.profiles.current();
        let (desk, store, presence) = (&self.desk, &self.store, &self.presence);
        let Some(handled) = retry_store(&self.ready, shutdown, || {
            desk.handle_request(store, &profiles, presence, &envelope, request)
        })
        .await?
        else {
            return Ok(Handling::Interrupted);
        };
        debug!(id = %envelope.id, device = %envelope.device, outcome = handled.label(), "command request handled");
        self.metrics.count(handled.label());
        if handled == Handled::Queued {
            self.queued_devices.insert(envelope.device.clone());
        }
        self.waker.wake();
        Ok(Handling::Done)
    }

    async fn on_outcome(
        &mut self,
        message: &Message,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Handling> {
        // Only what Sockets report; the Commander's own events come back
        // too, and the `type` header skips them without decoding.
        if message.header("type").is_some_and(|kind| {
            !matches!(
                kind,
                "CommandDelivered" | "CommandFailed" | "CommandReplied"
            )
        }) {
            return Ok(Handling::Done);
        }
        let Ok(envelope) = Envelope::from_json(&message.payload) else {
            return Ok(Handling::Done);
        };
        if !matches!(
            envelope.event,
            Event::CommandDelivered(_) | Event::CommandFailed(_) | Event::CommandReplied(_)
        ) {
            return Ok(Handling::Done);
        }
        let profiles = self.profiles.current();
        let (desk, store) = (&self.desk, &self.store);
        let recorded = retry_store(&self.ready, shutdown, || {
            desk.record_outcome(store, &profiles, &envelope)
        })
        .await?;
        match recorded {
            Some(Recorded::Ended) => {
                self.metrics.outcomes_recorded.inc();
                if let Event::CommandReplied(replied) = &envelope.event {
                    let outcome = if replied.ok {
                        "succeeded"
                    } else {
                        "device_error"
                    };
                    self.metrics.count_reply(outcome, 1);
                }
                self.desk.ended.notify_waiters();
            }
            Some(Recorded::AwaitingReply) => {
                self.metrics.outcomes_recorded.inc();
            }
            Some(Recorded::NotItsCommand) => {
                self.metrics.count_reply("not_its_command", 1);
                warn!(device = %envelope.device, source = %envelope.source,
                    "a device answered a command that was not for it; ignored");
            }
            Some(Recorded::Requeued) => {
                self.metrics.count_queue("requeued", 1);
                // Sent on its next connect. Not flushed now: the presence
                // map may still hold the connection that just failed; if the
                // device is back already, the next rescan sends it.
                self.queued_devices.insert(envelope.device.clone());
            }
            Some(Recorded::Ignored) => {}
            None => return Ok(Handling::Interrupted),
        }
        Ok(Handling::Done)
    }

    /// Expires what is due and fails dispatched commands whose outcome is
    /// overdue; on `rescan`, also flushes devices that are
    /// connected with queued commands the loop did not know about (queued
    /// by another Commander instance, or while this one was down).
    async fn sweep(&mut self, rescan: bool, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let (desk, store) = (&self.desk, &self.store);
        if let Some(expired) = retry_store(&self.ready, shutdown, || desk.expire_due(store)).await?
            && expired > 0
        {
            self.metrics.count_queue("expired", expired);
            self.waker.wake();
        }
        if let Some(failed) =
            retry_store(&self.ready, shutdown, || desk.fail_overdue(store)).await?
            && failed > 0
        {
            warn!(
                commands = failed,
                "dispatched commands failed with no_outcome: no socket reported on them within outcome_timeout"
            );
            self.metrics.outcomes_overdue.inc_by(failed as u64);
            self.waker.wake();
        }
        let profiles = self.profiles.current();
        if let Some(timed_out) = retry_store(&self.ready, shutdown, || {
            desk.time_out_replies(store, &profiles)
        })
        .await?
            && timed_out > 0
        {
            self.metrics.count_reply("timed_out", timed_out);
            self.desk.ended.notify_waiters();
            self.waker.wake();
        }
        if !rescan {
            return Ok(());
        }
        let Some(devices) = retry_store(&self.ready, shutdown, || {
            store.devices_with_queued_commands(RESCAN_PAGE)
        })
        .await?
        else {
            return Ok(());
        };
        self.queued_devices = devices.into_iter().collect();
        let connected: Vec<String> = self
            .queued_devices
            .iter()
            .filter(|device| self.presence.location(device).is_some())
            .cloned()
            .collect();
        for device in connected {
            self.flush(&device, shutdown).await?;
        }
        Ok(())
    }

    pub(crate) async fn commit(&mut self) -> anyhow::Result<()> {
        if self.request_offsets.has_pending() {
            commit_or_leave_to_next_owner(
                &mut self.requests,
                &self.request_offsets.take(),
                "handled requests",
            )
            .await?;
        }
        if self.outcome_offsets.has_pending() {
            commit_or_leave_to_next_owner(
                &mut self.outcomes,
                &self.outcome_offsets.take(),
                "recorded outcomes",
            )
            .await?;
        }
        Ok(())
    }
}

/// Commits `offsets`; a commit refused by a rebalancing group is logged and
/// left: the records are delivered again to their next owner, which drops
/// what is already recorded (command ids are kept durably).
async fn commit_or_leave_to_next_owner(
    consumer: &mut BusConsumer,
    offsets: &[CommitOffset],
    what: &str,
) -> anyhow::Result<()> {
    match consumer.commit(offsets).await {
        Err(error) if error.is_retryable() => {
            warn!(%error, "{what} not committed, the group is rebalancing");
            Ok(())
        }
        result => result.with_context(|| format!("failed to commit {what}")),
    }
}

/// Whether a consumed message was dealt with, and so may be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handling {
    Done,
    /// Shutdown came while the store was being retried: not handled.
    Interrupted,
}

/// Runs `op` until it succeeds, waiting out database outages (not ready
/// meanwhile); `None` when shutdown came first. Errors that a retry cannot
/// fix are returned.
async fn retry_store<T, F: Future<Output = wharf_store::Result<T>>>(
    ready: &ReadyFlag,
    shutdown: &CancellationToken,
    mut op: impl FnMut() -> F,
) -> anyhow::Result<Option<T>> {
    let mut backoff = Backoff::default();
    loop {
        match op().await {
            Ok(value) => {
                let failures = backoff.succeeded();
                if failures > 0 {
                    info!(failures, "the database is back");
                    ready.set(true);
                }
                return Ok(Some(value));
            }
            Err(error) if error.is_retryable() => {
                ready.set(false);
                warn!(%error, failures = backoff.failures() + 1, "the database is unavailable; retrying");
                if !backoff.wait(shutdown).await {
                    return Ok(None);
                }
            }
            Err(error) => return Err(error).context("the database refused a command change"),
        }
    }
}
