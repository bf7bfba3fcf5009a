//! Wharf's business-logic runtime. Each device is an actor: its state is
//! loaded from the store on the device's first event, changed in memory on
//! every event, and written back in batches (write-behind) together with the
//! consumed offsets, in one transaction. Database load therefore grows with
//! the devices active per flush, not with the message rate.
//!
//! # Layout
//! - [`config`]: [`ReceiverSettings`] and the `[receiver]` section.
//! - [`rules`]: rules from configuration that request commands.
//! - [`actor`]: [`DeviceActor`], one device's state and how events change it.
//! - `write_behind`: dirty devices and consumed offsets between flushes.
//! - [`metrics`]: every metric the Receiver exports.
//! - [`Receiver`]: the consume → apply → flush loop.
//!
//! # Invariants
//! - States and the offsets that produced them commit in one transaction;
//!   offsets are committed to the bus only after it (the bus's copy is a
//!   mirror for lag monitoring; the database is the source of truth).
//! - An event below a stored offset is never applied again, so a crash at
//!   any point replays exactly the events whose effects were not committed.
//! - Replies are durable on the bus before the flush that commits their cause.
//! - Reply ids derive from their cause, so a replay emits the same ids.

pub mod actor;
pub mod config;
pub mod metrics;
pub mod rules;
mod write_behind;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wharf_bus::{
    Bus, BusConsumer, Consumer as _, Message, PendingAck, Publisher as _, Record, Subscriber as _,
    TopicSpec,
};
use wharf_events::{Envelope, Topics};
use wharf_runtime::{OpsEndpoint, Readiness, Registry};
use wharf_store::Store;

pub use actor::DeviceActor;
pub use config::{ReceiverConfig, ReceiverSettings};
use metrics::ReceiverMetrics;
use rules::Rules;
use write_behind::WriteBehind;

/// A Receiver subscribed to the device events, ready to run.
pub struct Receiver {
    config: ReceiverConfig,
    group: String,
    rules: Rules,
    bus: Bus,
    topics: Topics,
    store: Store,
    consumer: BusConsumer,
    actors: HashMap<String, DeviceActor>,
    write_behind: WriteBehind,
    /// Replies queued on the bus, awaited before the next flush commits.
    pending_replies: Vec<PendingAck>,
    metrics: ReceiverMetrics,
}

impl Receiver {
    /// Creates the topics the Receiver uses, reads where the group stopped,
    /// and joins the consumer group.
    pub async fn bind(
        config: ReceiverConfig,
        bus: Bus,
        topics: Topics,
        partitions: i32,
        store: Store,
        registry: &mut Registry,
        readiness: &Readiness,
    ) -> anyhow::Result<Self> {
        let rules = Rules::compile(&config.rules)
            .map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
        bus.ensure_topics(&[
            TopicSpec::new(topics.device_events(), partitions),
            TopicSpec::new(topics.command_requests(), partitions),
        ])
        .await
        .context("failed to create the receiver's topics")?;
        let group = config.group_name(&topics);
        if !bus.is_persistent() {
            // The in-process bus starts empty: offsets of an earlier run
            // point into logs that no longer exist.
            store
                .reset_offsets(&group)
                .await
                .context("failed to reset stored offsets")?;
        }
        let stored = store
            .load_offsets(&group)
            .await
            .context("failed to load stored offsets")?;
        let consumer = bus
            .subscribe(&group, &[topics.device_events()])
            .await
            .context("failed to subscribe to the device events")?;
        readiness.flag("receiver").set(true);
        info!(rules = rules.len(), %group, "receiver ready");
        Ok(Receiver {
            group,
            rules,
            bus,
            topics,
            store,
            consumer,
            actors: HashMap::new(),
            write_behind: WriteBehind::new(stored),
            pending_replies: Vec::new(),
            metrics: ReceiverMetrics::register(registry),
            config,
        })
    }

    /// Consumes, applies and flushes until `shutdown`; then flushes once more.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => self.flush().await?,
                message = self.consumer.recv() => {
                    let message = message.context("failed to read the device events")?;
                    self.handle(&message).await?;
                    if self.write_behind.dirty_count() >= self.config.flush_max_dirty {
                        self.flush().await?;
                    }
                }
            }
        }
        self.flush().await?;
        info!("receiver stopped after a final flush");
        Ok(())
    }

    async fn handle(&mut self, message: &Message) -> anyhow::Result<()> {
        if self.write_behind.already_stored(message) {
            self.skipped("replayed");
            return Ok(());
        }
        self.write_behind.consumed(message);
        let envelope = match Envelope::from_json(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                self.skipped("undecodable");
                warn!(%error, partition = message.partition, offset = message.offset, "skipping an undecodable event");
                return Ok(());
            }
        };
        let actor = match self.actors.get_mut(&envelope.device) {
            Some(actor) => actor,
            None => {
                let stored = self
                    .store
                    .load_device_state(&envelope.device)
                    .await
                    .context("failed to load a device's state")?;
                self.metrics.state_loads.inc();
                self.metrics.actors.inc();
                self.actors
                    .entry(envelope.device.clone())
                    .or_insert(DeviceActor::new(&envelope.device, stored))
            }
        };
        let applied = actor.apply(&envelope, &self.rules, &self.config.instance_id);
        self.metrics.events_applied.inc();
        if applied.changed {
            self.write_behind.dirty(&envelope.device);
        }
        for reply in applied.replies {
            debug!(device = %reply.device, kind = reply.kind(), id = %reply.id, "reply");
            let record = Record::event(self.topics.command_requests(), &reply);
            let ack = self
                .bus
                .enqueue(record)
                .await
                .context("failed to queue a reply")?;
            self.pending_replies.push(ack);
            self.metrics.replies.inc();
        }
        Ok(())
    }

    /// Writes every dirty state and the consumed offsets in one transaction,
    /// after the replies are durable; then mirrors the offsets to the bus.
    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.write_behind.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        for ack in self.pending_replies.drain(..) {
            ack.await.context("a reply did not reach the bus")?;
        }
        let batch = self.write_behind.batch();
        let states: Vec<_> = batch
            .devices
            .iter()
            .filter_map(|device| self.actors.get(device).map(|actor| actor.state().clone()))
            .collect();
        self.store
            .commit_batch(&self.group, &states, &batch.offsets)
            .await
            .context("failed to write back device states")?;
        let commits = self.write_behind.stored_batch(&batch);
        if let Err(error) = self.consumer.commit(&commits).await {
            // The database holds the truth; the bus's copy only feeds lag
            // monitoring and the next start's first fetch.
            warn!(%error, "failed to mirror offsets to the bus");
        }
        self.metrics.flushes.inc();
        self.metrics.flushed_states.inc_by(states.len() as u64);
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn skipped(&self, reason: &'static str) {
        self.metrics
            .events_skipped
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

/// Runs the Receiver as its own process: connects to the bus and the store,
/// binds the operations listener, and serves until `shutdown`.
pub async fn run(settings: ReceiverSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = Bus::connect(&settings.bus).context("failed to connect to the bus")?;
    let store = Store::connect(&settings.store)
        .await
        .context("failed to open the store")?;
    let ops = OpsEndpoint::bind(settings.receiver.ops_listen).await?;
    let mut registry = Registry::default();
    let readiness = Readiness::default();
    let receiver = Receiver::bind(
        settings.receiver,
        bus,
        settings.bus.topics(),
        settings.bus.partitions,
        store.clone(),
        &mut registry,
        &readiness,
    )
    .await?;
    let result = ops
        .serve_while(registry, readiness, receiver.run(shutdown))
        .await;
    store.close().await;
    result
}
