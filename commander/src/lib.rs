//! Wharf's command side. It turns abstract command requests into the frames
//! a device model understands (per-model profiles), learns from the presence
//! topic which Socket instance holds each device, and sends each frame to
//! that instance's deliveries topic.
//!
//! # Layout
//! - [`config`]: [`CommanderSettings`] and the `[commander]` section.
//! - [`profiles`]: [`Profiles`], per-model command templates.
//! - `presence`: which Socket instance holds each device.
//! - `dedupe`: recently seen command ids.
//! - [`metrics`]: every metric the Commander exports.
//! - [`Commander`]: the consume → render → route loop.
//!
//! # Invariants
//! - A request id seen recently is not sent again: replays from the
//!   Receiver produce the same ids, and devices get each command once.
//! - Every request ends in an event on the command-status topic:
//!   `CommandDispatched`, or `CommandFailed` with a reason.
//! - Offsets of requests are committed only after their outcome is durable.

pub mod config;
mod dedupe;
pub mod metrics;
mod presence;
pub mod profiles;

use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wharf_bus::{
    Bus, BusConsumer, BusHandle, Consumer as _, Message, OffsetTracker, Publisher as _, Record,
    Subscriber as _, TopicSpec,
};
use wharf_events::{CommandDispatched, CommandFailed, CommandRequested, Envelope, Event, Topics};
use wharf_runtime::{OpsEndpoint, Readiness, Registry};

pub use config::{CommanderConfig, CommanderSettings};
use dedupe::RecentIds;
use metrics::CommanderMetrics;
use presence::Presence;
pub use profiles::Profiles;

/// How often handled requests' offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// A Commander subscribed to requests and presence, ready to run.
pub struct Commander {
    config: CommanderConfig,
    profiles: Profiles,
    bus: Bus,
    topics: Topics,
    requests: BusConsumer,
    presence_feed: BusConsumer,
    presence: Presence,
    recent: RecentIds,
    offsets: OffsetTracker,
    metrics: CommanderMetrics,
}

impl Commander {
    /// Creates the topics the Commander uses and subscribes to the command
    /// requests and to the whole presence topic.
    pub async fn bind(
        config: CommanderConfig,
        profiles: Profiles,
        bus: BusHandle,
        registry: &mut Registry,
        readiness: &Readiness,
    ) -> anyhow::Result<Self> {
        let BusHandle {
            bus,
            topics,
            partitions,
        } = bus;
        bus.ensure_topics(&[
            TopicSpec::new(topics.command_requests(), partitions),
            TopicSpec::new(topics.command_status(), partitions),
            TopicSpec::compacted(topics.presence(), partitions),
        ])
        .await
        .context("failed to create the commander's topics")?;
        let group = config.group_name(&topics);
        let requests = bus
            .subscribe(&group, &[topics.command_requests()])
            .await
            .context("failed to subscribe to the command requests")?;
        // A group of its own that never commits: every start reads the whole
        // (compacted) presence topic.
        let presence_group = format!("{group}.presence.{}", wharf_events::new_id().simple());
        let presence_feed = bus
            .subscribe(&presence_group, &[topics.presence()])
            .await
            .context("failed to subscribe to presence")?;
        readiness.flag("commander").set(true);
        info!(profiles = profiles.len(), %group, "commander ready");
        Ok(Commander {
            recent: RecentIds::new(config.dedupe_window),
            config,
            profiles,
            bus,
            topics,
            requests,
            presence_feed,
            presence: Presence::default(),
            offsets: OffsetTracker::default(),
            metrics: CommanderMetrics::register(registry),
        })
    }

    /// Routes commands until `shutdown`, then commits what it handled.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Presence first: a device's connect must be known before
                // the commands its frames cause.
                update = self.presence_feed.recv() => {
                    let message = update.context("failed to read presence")?;
                    match Envelope::from_json(&message.payload) {
                        Ok(envelope) => self.presence.apply(&envelope),
                        Err(error) => warn!(%error, offset = message.offset, "skipping an undecodable presence record"),
                    }
                    self.metrics.connected_devices.set(self.presence.len() as i64);
                }
                request = self.requests.recv() => {
                    let message = request.context("failed to read the command requests")?;
                    self.handle(&message).await?;
                    self.offsets.consumed(&message);
                }
                _ = commit_tick.tick() => self.commit().await?,
            }
        }
        self.commit().await
    }

    async fn commit(&mut self) -> anyhow::Result<()> {
        if self.offsets.has_pending() {
            self.requests
                .commit(&self.offsets.take())
                .await
                .context("failed to commit handled requests")?;
        }
        Ok(())
    }

    async fn handle(&mut self, message: &Message) -> anyhow::Result<()> {
        let envelope = match Envelope::from_json(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.metrics.count("undecodable");
                warn!(%error, offset = message.offset, "skipping an undecodable request");
                return Ok(());
            }
        };
        let Event::CommandRequested(request) = &envelope.event else {
            self.metrics.count("unexpected");
            return Ok(());
        };
        if !self.recent.insert(envelope.id) {
            self.metrics.count("duplicate");
            debug!(id = %envelope.id, "dropping a duplicate request");
            return Ok(());
        }
        let status = self.topics.command_status();
        match self.route(&envelope, request) {
            Route::Dispatch {
                instance,
                dispatched,
            } => {
                let deliveries = self.topics.deliveries(&instance);
                let to_socket = self
                    .bus
                    .enqueue(Record::event(deliveries, &dispatched))
                    .await?;
                let to_status = self.bus.enqueue(Record::event(status, &dispatched)).await?;
                to_socket
                    .await
                    .context("a dispatch did not reach the bus")?;
                to_status
                    .await
                    .context("a dispatch status did not reach the bus")?;
                self.metrics.count("dispatched");
            }
            Route::Fail(failed) => {
                self.bus
                    .publish(Record::event(status, &failed))
                    .await
                    .context("a failure status did not reach the bus")?;
                self.metrics.count("failed");
            }
        }
        Ok(())
    }

    /// Renders the command and finds the Socket instance holding the device.
    fn route(&self, envelope: &Envelope, request: &CommandRequested) -> Route {
        let source = &self.config.instance_id;
        let fail = |(reason, detail): (wharf_events::FailureReason, String)| {
            debug!(id = %envelope.id, device = %envelope.device, ?reason, %detail, "command failed");
            envelope.derive(
                "failed",
                source,
                Event::CommandFailed(CommandFailed {
                    command_id: envelope.id,
                    reason,
                    detail,
                }),
            )
        };
        let rendered = match self.profiles.render(
            &envelope.device,
            &request.model,
            &request.command,
            &request.args,
            envelope.id,
        ) {
            Ok(rendered) => rendered,
            Err(failure) => return Route::Fail(fail(failure)),
        };
        let Some(instance) = self.presence.instance_of(&envelope.device) else {
            return Route::Fail(fail((
                wharf_events::FailureReason::DeviceNotConnected,
                format!(
                    "{} is not connected to any socket instance",
                    envelope.device
                ),
            )));
        };
        let dispatched = envelope.derive(
            "dispatched",
            source,
            Event::CommandDispatched(CommandDispatched {
                command_id: envelope.id,
                command: request.command.clone(),
                instance: instance.to_owned(),
                channel: Some(rendered.mqtt_topic),
                frame: rendered.frame,
            }),
        );
        Route::Dispatch {
            instance: instance.to_owned(),
            dispatched,
        }
    }
}

/// Where a request goes: to a Socket instance, or to a failure status.
enum Route {
    Dispatch {
        instance: String,
        dispatched: Envelope,
    },
    Fail(Envelope),
}

/// Runs the Commander as its own process: loads the profiles, connects to
/// the bus, binds the operations listener, and serves until `shutdown`.
pub async fn run(settings: CommanderSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let profiles = Profiles::load_dir(&settings.commander.profiles_dir)
        .map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
    let bus = BusHandle::connect(&settings.bus).context("failed to connect to the bus")?;
    let ops = OpsEndpoint::bind(settings.commander.ops_listen).await?;
    let mut registry = Registry::default();
    let readiness = Readiness::default();
    let commander =
        Commander::bind(settings.commander, profiles, bus, &mut registry, &readiness).await?;
    ops.serve_while(registry, readiness, commander.run(shutdown))
        .await
}
