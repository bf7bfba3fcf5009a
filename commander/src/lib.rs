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
//! - `clock`: how times are held (Unix ms instants, `Duration` spans).
//! - `desk`: every command decision, as one transaction plus its events:
//!   `desk::intake` starts commands (reject, send, queue), `desk::settle`
//!   ends them (outcomes, queue flushes, expiry, overdue dispatches).
//! - `relay`: publishes the outbox those transactions write.
//! - `pipeline`: the loop that feeds requests, presence, delivery outcomes
//!   and expiry sweeps to the desk and commits what it handled.
//! - [`api`]: the REST API.
//! - [`metrics`]: every metric the Commander exports.
//! - [`Commander`]: binds the topics, the API and the relay, and runs them
//!   with the pipeline.
//!
//! # Invariants
//! - Every command reaches exactly one terminal status (`delivered`,
//!   `succeeded`, `failed`, `rejected`, `expired`, `timed_out`), in the
//!   `commands` table and as an event on the command-status topic.
//! - A request id handled before is not sent again: replays from the
//!   Receiver produce the same ids, and the `commands` table remembers them.
//! - Events are written to the outbox in the transaction that makes them
//!   true, and published from there: never lost, never published for a
//!   change that did not commit.
//! - Offsets are committed only after what they carried is in the database.

pub mod api;
mod clock;
pub mod config;
mod desk;
pub mod metrics;
mod pipeline;
mod presence;
pub mod profiles;
mod relay;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wharf_auth::{ApiKeys, TokenIssuer};
use wharf_bus::{BusHandle, OffsetTracker, Publisher as _, Subscriber as _, TopicSpec};
use wharf_runtime::{Checked, OpsEndpoint, Reload, Reporting};
use wharf_store::Store;

pub use config::{ApiConfig, CommanderConfig, CommanderParsed, CommanderSettings};
use desk::Desk;
use metrics::CommanderMetrics;
use pipeline::{Pipeline, RESCAN_PAGE};
use presence::Presence;
pub use profiles::{LiveProfiles, Profiles};
use relay::{OutboxRelay, OutboxWaker};

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
            ended: tokio::sync::Notify::new(),
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
                waiting: api::waiting::Waiting::new(
                    config.api.max_waiting,
                    config.api.max_wait,
                    metrics.api_waiting.clone(),
                ),
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
