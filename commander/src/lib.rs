//! Wharf's command side. It turns abstract command requests into the frames
//! a device model understands (per-model profiles), learns from the presence
//! topic which Socket instance holds each device, sends each frame to that
//! instance's deliveries topic, queues commands for offline devices, tracks
//! every command to its terminal status, and serves the REST API.
//!
//! # Layout
//! - [`config`]: [`CommanderSettings`] and the `[commander]` section.
//! - [`profiles`]: [`Profiles`], per-model commands, arguments and templates.
//! - `presence`: which Socket instance holds each device.
//! - `desk`: every command decision, as one transaction plus its events:
//!   `desk::intake` starts commands (reject, send, queue), `desk::settle`
//!   ends them (outcomes, queue flushes, expiry, overdue dispatches).
//! - `relay`: publishes the outbox those transactions write.
//! - [`api`]: the REST API.
//! - [`metrics`]: every metric the Commander exports.
//! - [`Commander`]: the loop that feeds requests, presence, delivery
//!   outcomes and expiry to the desk.
//!
//! # Invariants
//! - Every command reaches exactly one terminal status (`delivered`,
//!   `failed`, `rejected`, `expired`), in the `commands` table and as an
//!   event on the command-status topic.
//! - A request id handled before is not sent again: replays from the
//!   Receiver produce the same ids, and the `commands` table remembers them.
//! - Events are written to the outbox in the transaction that makes them
//!   true, and published from there: never lost, never published for a
//!   change that did not commit.
//! - Offsets are committed only after what they carried is in the database.

pub mod api;
pub mod config;
mod desk;
pub mod metrics;
mod presence;
pub mod profiles;
mod relay;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wharf_auth::{ApiKeys, TokenIssuer};
use wharf_bus::{
    BusConsumer, BusHandle, CommitOffset, Consumer as _, Message, OffsetTracker, Publisher as _,
    Subscriber as _, TopicSpec,
};
use wharf_events::{Envelope, Event};
use wharf_runtime::{Backoff, Checked, ConfigError};
use wharf_runtime::{OpsEndpoint, ReadyFlag, Reload, Reporting};
use wharf_store::Store;

pub use config::{ApiConfig, CommanderConfig, CommanderParsed, CommanderSettings};
use desk::{Desk, Handled, Recorded};
use metrics::CommanderMetrics;
use presence::Presence;
pub use profiles::{LiveProfiles, Profiles};
use relay::{OutboxRelay, OutboxWaker};

/// How often handled requests' and outcomes' offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// Sweeps between two rescans of the devices with queued commands.
const RESCAN_EVERY: u32 = 10;
/// Devices with queued commands read per page of a rescan (all pages are read).
const RESCAN_PAGE: u32 = 10_000;

/// What the Commander works with besides its configuration.
pub struct CommanderParts {
    pub profiles: LiveProfiles,
    pub bus: BusHandle,
    pub store: Store,
    /// Signs the device tokens the API hands out (from `auth.secret`).
    pub issuer: TokenIssuer,
    pub api_keys: ApiKeys,
}

/// A Commander subscribed to its topics with its API bound, ready to run.
pub struct Commander {
    pipeline: Pipeline,
    relay: OutboxRelay,
    api: api::ApiServer,
}

/// The loop that feeds requests, presence, outcomes and expiry to the desk.
struct Pipeline {
    profiles: LiveProfiles,
    store: Store,
    desk: Arc<Desk>,
    waker: OutboxWaker,
    requests: BusConsumer,
    outcomes: BusConsumer,
    presence_feed: BusConsumer,
    presence: Presence,
    /// Devices known to have queued commands: a connect of one flushes.
    queued_devices: HashSet<String>,
    request_offsets: OffsetTracker,
    outcome_offsets: OffsetTracker,
    sweep_interval: Duration,
    metrics: CommanderMetrics,
    ready: ReadyFlag,
}

impl Commander {
    /// Creates the topics the Commander uses, subscribes to command
    /// requests, delivery outcomes and the whole presence topic, and binds
    /// the API.
    pub async fn bind(
        config: CommanderConfig,
        parts: CommanderParts,
        reporting: &mut Reporting,
    ) -> anyhow::Result<Self> {
        let Reporting {
            registry,
            readiness,
        } = reporting;
        let BusHandle {
            connection: bus,
            topics,
            partitions,
        } = parts.bus;
        bus.ensure_topics(&[
            TopicSpec::new(topics.command_requests(), partitions),
            TopicSpec::new(topics.command_status(), partitions),
            TopicSpec::new(topics.device_events(), partitions),
            TopicSpec::compacted(topics.presence(), partitions),
            TopicSpec::compacted(topics.revocations(), partitions),
        ])
        .await
        .context("failed to create the commander's topics")?;
        let group = config.group_name(&topics);
        let requests = bus
            .subscribe(&group, &[topics.command_requests()])
            .await
            .context("failed to subscribe to the command requests")?;
        let outcomes = bus
            .subscribe(&format!("{group}.outcomes"), &[topics.command_status()])
            .await
            .context("failed to subscribe to the command status")?;
        // Every start reads the whole (compacted) presence topic.
        let presence_feed = bus
            .subscribe_from_start(&format!("{group}.presence"), &[topics.presence()])
            .await
            .context("failed to subscribe to presence")?;
        let metrics = CommanderMetrics::register(registry);
        let desk = Arc::new(Desk {
            instance: config.instance_id.clone(),
            topics: topics.clone(),
            queue_limit: config.queue_limit,
            default_ttl: config.default_ttl,
            max_ttl: config.max_ttl,
            outcome_timeout: config.outcome_timeout,
        });
        let waker = OutboxWaker::default();
        let api = api::ApiServer::bind(
            config.api.listen,
            api::ApiState {
                store: parts.store.clone(),
                profiles: parts.profiles.clone(),
                desk: desk.clone(),
                issuer: parts.issuer,
                keys: parts.api_keys,
                waker: waker.clone(),
                cache: api::coalesce::Coalescer::new(config.api.read_cache),
                metrics: metrics.clone(),
                config: config.api.clone(),
            },
        )
        .await?;
        let queued_devices = parts
            .store
            .devices_with_queued_commands(RESCAN_PAGE)
            .await
            .context("failed to read the queued commands")?
            .into_iter()
            .collect();
        let ready = readiness.flag("commander");
        ready.set(true);
        info!(
            models = parts.profiles.current().len(),
            %group,
            api = %api.local_addr()?,
            "commander ready"
        );
        Ok(Commander {
            relay: OutboxRelay {
                store: parts.store.clone(),
                bus,
                instance: config.instance_id,
                waker: waker.clone(),
                metrics: metrics.clone(),
            },
            pipeline: Pipeline {
                profiles: parts.profiles,
                store: parts.store,
                desk,
                waker,
                requests,
                outcomes,
                presence_feed,
                presence: Presence::default(),
                queued_devices,
                request_offsets: OffsetTracker::default(),
                outcome_offsets: OffsetTracker::default(),
                sweep_interval: config.sweep_interval,
                metrics,
                ready,
            },
            api,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> std::io::Result<SocketAddr> {
        self.api.local_addr()
    }

    /// Runs until `shutdown`: stops the API, commits what it handled, and
    /// publishes what is left in the outbox. `reload` reloads the profiles.
    pub async fn run(self, shutdown: CancellationToken, mut reload: Reload) -> anyhow::Result<()> {
        let Commander {
            mut pipeline,
            relay,
            api,
        } = self;
        let relay_stop = CancellationToken::new();
        let relay_task = tokio::spawn(relay.run(relay_stop.clone()));
        let api_task = tokio::spawn(api.serve(shutdown.clone()));
        let result = pipeline.serve(&shutdown, &mut reload).await;
        let committed = pipeline.commit().await;
        api_task.await.context("the API panicked")??;
        relay_stop.cancel();
        relay_task.await.context("the outbox relay panicked")??;
        result.and(committed)
    }
}

impl Pipeline {
    async fn serve(
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
        if message
            .header("type")
            .is_some_and(|kind| !matches!(kind, "CommandDelivered" | "CommandFailed"))
        {
            return Ok(Handling::Done);
        }
        let Ok(envelope) = Envelope::from_json(&message.payload) else {
            return Ok(Handling::Done);
        };
        if !matches!(
            envelope.event,
            Event::CommandDelivered(_) | Event::CommandFailed(_)
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

    async fn commit(&mut self) -> anyhow::Result<()> {
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

/// Runs the Commander as its own process with the profiles and API keys its
/// check loaded: connects to the bus and the store, binds the API and the
/// operations listener, and serves until `shutdown`; `reload` reloads the
/// profiles.
pub async fn run(
    checked: Checked<CommanderSettings>,
    shutdown: CancellationToken,
    reload: Reload,
) -> anyhow::Result<()> {
    let Checked {
        settings,
        parsed: CommanderParsed { profiles, api_keys },
    } = checked;
    let dir = settings.commander.profiles_dir.clone();
    let profiles = LiveProfiles::loaded(profiles, move || Profiles::load_dir(&dir));
    let bus = BusHandle::connect(&settings.bus).context("failed to connect to the bus")?;
    let store = Store::connect(&settings.store)
        .await
        .context("failed to open the store")?;
    let ops = OpsEndpoint::bind(settings.commander.ops_listen).await?;
    let mut reporting = Reporting::default();
    let parts = CommanderParts {
        profiles,
        bus,
        store: store.clone(),
        issuer: TokenIssuer::new(&settings.auth.secret),
        api_keys,
    };
    let commander = Commander::bind(settings.commander, parts, &mut reporting).await?;
    let served = ops
        .serve_while(reporting, commander.run(shutdown, reload))
        .await;
    store.close().await;
    served
}
