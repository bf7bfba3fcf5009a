//! Wharf's business-logic runtime. Each device is an actor: its state is
//! loaded from the store on the device's first event (in batches when many
//! wake at once), changed in memory on every event by the [`DeviceLogic`],
//! and written back in batches (write-behind) together with the consumed
//! offsets, in one transaction. Database load grows with the devices active
//! per flush, not with the message rate.
//!
//! # Layout
//! - [`config`]: [`ReceiverSettings`] and the `[receiver]` section.
//! - [`logic`]: [`DeviceLogic`], the extension point, and [`Replies`].
//! - [`twin`]: [`TwinLogic`], the built-in device twin with rules.
//! - [`rules`]: rules from configuration.
//! - `resident`: the devices resident in memory, with their states.
//! - `write_behind`: dirty devices and positions between flushes.
//! - `positions`: the bus's positions to and from the store's rows.
//! - `state`: [`DeviceState`], and its store row.
//! - `replies_out`: publishing the events the logic causes, and knowing
//!   they are durable before their cause is committed.
//! - `db`: the store, every operation retried through outages.
//! - `lag`: how far the stored positions are behind the log's end (a gauge).
//! - [`metrics`]: every metric the Receiver exports.
//! - [`Receiver`]: the consume → apply → flush loop, and rebalances.
//! - [`guide`]: how to put your own logic in (`docs/receiver.md`).
//!
//! # Invariants
//! - States and the offsets that produced them commit in one transaction;
//!   offsets go to the bus only after it (the bus's copy feeds lag
//!   monitoring; the database is the source of truth).
//! - A partition assigned to this Receiver is read from the offset stored
//!   with the state; an event below a stored offset is never applied again.
//! - A revoked partition's states and offsets are written before it is
//!   given up, so its next owner starts exactly where this one stopped.
//! - Every flush is fenced: it commits only while this Receiver's claim on
//!   each of its partitions is the latest (`wharf_store::PartitionClaim`).
//!   A Receiver that lost a partition while stalled (a long store outage,
//!   a paused process) writes nothing more for it; it drops the partition's
//!   actors and ignores its events until the bus assigns it again.
//! - Replies are durable on the bus before the flush that commits their
//!   cause, and their ids derive from it: a replay emits the same ids.
//! - When the store fails, the Receiver retries with backoff, stops
//!   consuming, and reports not ready; it never drops an event.

pub mod config;
mod db;
mod lag;
pub mod logic;
pub mod metrics;
mod positions;
mod replies_out;
mod resident;
pub mod rules;
mod state;
pub mod twin;
mod write_behind;

/// How to write your own business logic.
#[doc = include_str!("../../docs/receiver.md")]
pub mod guide {}

use std::collections::HashSet;
use std::time::Instant;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use wharf_bus::{
    Assigned, Batch, BusConsumer, BusHandle, CommitOffset, Consumer as _, Message, PartitionId,
    Publisher as _, Revoked, Subscriber as _, TopicSpec,
};
use wharf_events::Envelope;
use wharf_runtime::{Checked, OpsEndpoint, Reporting};
use wharf_store::{Committed, PartitionClaim, Store};

pub use config::{ReceiverConfig, ReceiverSettings};
use db::Db;
pub use logic::{Change, DeviceLogic, DeviceState, Replies};
use metrics::ReceiverMetrics;
use replies_out::RepliesOut;
use resident::ResidentDevices;
pub use twin::{TwinLimits, TwinLogic};
use write_behind::WriteBehind;

/// What the Receiver works with besides its configuration.
pub struct ReceiverParts {
    /// What events do to a device's state.
    pub logic: Box<dyn DeviceLogic>,
    pub bus: BusHandle,
    pub store: Store,
}

/// A Receiver subscribed to the device events, ready to run.
pub struct Receiver {
    config: ReceiverConfig,
    /// The key of this Receiver's offsets in the store: the consumer group,
    /// plus the bus incarnation for the in-process bus.
    group: String,
    logic: Box<dyn DeviceLogic>,
    bus: BusHandle,
    db: Db,
    consumer: BusConsumer,
    resident: ResidentDevices,
    write_behind: WriteBehind,
    replies_out: RepliesOut,
    /// Partitions a later owner claimed while the bus still delivers them
    /// here: their events are ignored until the bus assigns them again.
    fenced: HashSet<PartitionId>,
    metrics: ReceiverMetrics,
}

impl Receiver {
    /// Creates the topics the Receiver uses and joins the consumer group,
    /// with `logic` deciding what events do.
    pub async fn bind(
        config: ReceiverConfig,
        ReceiverParts { logic, bus, store }: ReceiverParts,
        reporting: &mut Reporting,
    ) -> anyhow::Result<Self> {
        let Reporting {
            registry,
            readiness,
        } = reporting;
        let topics = &bus.topics;
        bus.connection
            .ensure_topics(&[
                TopicSpec::new(topics.device_events(), bus.partitions),
                TopicSpec::new(topics.command_requests(), bus.partitions),
            ])
            .await
            .context("failed to create the receiver's topics")?;
        let group = config.group_name(topics);
        let offsets_key = match bus.connection.incarnation() {
            None => group.clone(),
            // The in-process bus starts empty: offsets stored during another
            // run point into logs that no longer exist, so this run keeps its
            // own and forgets those of earlier ones.
            Some(incarnation) => {
                let key = format!("{group}@{incarnation}");
                store
                    .forget_other_runs(&format!("{group}@"), &key)
                    .await
                    .context("failed to forget offsets of earlier runs")?;
                key
            }
        };
        let consumer = bus
            .connection
            .subscribe(&group, &[topics.device_events()])
            .await
            .context("failed to subscribe to the device events")?;
        let ready = readiness.flag("receiver");
        ready.set(true);
        let metrics = ReceiverMetrics::register(registry);
        logic.register_metrics(registry.sub_registry_with_prefix("wharf_receiver"));
        info!(%group, "receiver ready");
        Ok(Receiver {
            group: offsets_key,
            logic,
            db: Db {
                store,
                metrics: metrics.clone(),
                ready,
            },
            consumer,
            resident: ResidentDevices::default(),
            write_behind: WriteBehind::default(),
            replies_out: RepliesOut::new(bus.clone(), metrics.clone()),
            bus,
            fenced: HashSet::new(),
            metrics,
            config,
        })
    }

    /// Consumes, applies and flushes until `shutdown`; then flushes once more.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (ends_tx, ends) = tokio::sync::mpsc::channel(1);
        let measuring = tokio::spawn(lag::log_ends(
            self.bus.connection.clone(),
            self.bus.topics.device_events(),
            ends_tx,
        ));
        let result = self.consume(shutdown, ends).await;
        measuring.abort();
        result
    }

    async fn consume(
        mut self,
        shutdown: CancellationToken,
        mut ends: tokio::sync::mpsc::Receiver<Vec<CommitOffset>>,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    self.flush(&shutdown).await?;
                    self.passivate();
                }
                Some(ends) = ends.recv() => {
                    self.metrics.lag.set(self.write_behind.behind(&ends));
                }
                batch = self.consumer.next_batch(self.config.batch_size) => {
                    match batch.context("failed to read the device events")? {
                        Batch::Messages(messages) => self.handle(messages, &shutdown).await?,
                        Batch::Assigned(assigned) => self.on_assigned(assigned, &shutdown).await?,
                        Batch::Revoked(revoked) => self.on_revoked(revoked, &shutdown).await?,
                    }
                    if self.write_behind.dirty_count() >= self.config.flush_max_dirty {
                        self.flush(&shutdown).await?;
                    }
                }
            }
        }
        // The last write-back retries through a store outage for at most
        // `shutdown_grace`; what it could not write is not lost: the stored
        // offsets did not move, so the next start replays those events.
        let grace = self.config.shutdown_grace;
        let retries_end = CancellationToken::new();
        let ending = {
            let retries_end = retries_end.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                retries_end.cancel();
            })
        };
        let dirty = self.write_behind.dirty_count();
        let flushed = self.flush(&retries_end).await;
        ending.abort();
        match flushed {
            Ok(()) => info!("receiver stopped after a final flush"),
            Err(error) if retries_end.is_cancelled() => warn!(
                error = format!("{error:#}"),
                ?grace,
                unwritten_devices = dirty,
                "the store stayed unavailable through the shutdown grace; stopping without the last write-back: \
                 the next start replays the events since the stored offsets"
            ),
            Err(error) => return Err(error.context("failed to write back before stopping")),
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut events = Vec::with_capacity(messages.len());
        for message in &messages {
            if !self.fenced.is_empty() && self.fenced.contains(&PartitionId::of(message)) {
                self.skipped("fenced");
                continue;
            }
            if self.write_behind.already_stored(message) {
                self.skipped("replayed");
                continue;
            }
            self.write_behind.consumed(message);
            match Envelope::from_json(&message.payload) {
                Ok(envelope) => events.push((envelope, message)),
                Err(error) => {
                    self.skipped("undecodable");
                    warn!(%error, partition = message.partition, offset = message.offset, "skipping an undecodable event");
                }
            }
        }
        self.load_missing(&events, shutdown).await?;
        let source = self.config.instance_id.clone();
        for (envelope, _) in &events {
            let state = self
                .resident
                .touch(&envelope.device)
                .expect("every device of the batch was made resident");
            let mut replies = Replies::new(envelope, &source);
            if self.logic.apply(state, envelope, &mut replies) == Change::Changed {
                self.write_behind.dirty(&envelope.device);
            }
            for reply in replies.into_events() {
                self.replies_out.publish(&reply, envelope).await?;
            }
        }
        self.metrics.events_applied.inc_by(events.len() as u64);
        Ok(())
    }

    /// Makes every device of `events` resident, loading the stored states
    /// of those not in memory with one query.
    async fn load_missing(
        &mut self,
        events: &[(Envelope, &Message)],
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut missing: Vec<(String, PartitionId)> = Vec::new();
        for (envelope, message) in events {
            if !self.resident.contains(&envelope.device)
                && !missing.iter().any(|(device, _)| *device == envelope.device)
            {
                missing.push((envelope.device.clone(), PartitionId::of(message)));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let devices: Vec<String> = missing.iter().map(|(device, _)| device.clone()).collect();
        let store = &self.db.store;
        let mut stored = self
            .db
            .retrying("load device states", shutdown, || {
                store.load_device_states(&devices)
            })
            .await?;
        self.metrics.state_loads.inc_by(stored.len() as u64);
        for (device, partition) in missing {
            let state = match stored.iter().position(|row| row.device == device) {
                Some(index) => DeviceState::from(stored.swap_remove(index)),
                None => DeviceState::new(&device),
            };
            self.resident.insert(state, partition);
        }
        self.metrics.actors.set(self.resident.len() as i64);
        Ok(())
    }

    /// Claims newly owned partitions in the store (fencing off any earlier
    /// owner's write-backs) and starts them where the database says they
    /// stopped.
    async fn on_assigned(
        &mut self,
        assigned: Assigned,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let partitions: Vec<(String, i32)> = assigned
            .partitions
            .iter()
            .map(|p| (p.topic.clone(), p.partition))
            .collect();
        let (store, group) = (&self.db.store, &self.group);
        let claimed = self
            .db
            .retrying("claim the assigned partitions", shutdown, || {
                store.claim_partitions(group, &partitions)
            })
            .await?;
        let positions: Vec<CommitOffset> = claimed
            .offsets
            .into_iter()
            .map(positions::from_store)
            .collect();
        self.write_behind.set_stored(positions.iter().cloned());
        self.write_behind.set_claims(claimed.claims);
        for partition in &assigned.partitions {
            self.fenced.remove(partition);
        }
        info!(
            partitions = assigned.partitions.len(),
            resumed = positions.len(),
            "partitions assigned"
        );
        self.metrics
            .partitions
            .inc_by(assigned.partitions.len() as i64);
        assigned.start_at(positions);
        Ok(())
    }

    /// Writes back everything, then lets the partitions go with their actors.
    async fn on_revoked(
        &mut self,
        revoked: Revoked,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.flush(shutdown).await?;
        let partitions: HashSet<PartitionId> = revoked.partitions.iter().cloned().collect();
        let dropped = self.resident.drop_partitions(&partitions);
        self.write_behind.forget(&partitions, &dropped);
        for partition in &partitions {
            self.fenced.remove(partition);
        }
        self.metrics.actors.set(self.resident.len() as i64);
        self.metrics.partitions.dec_by(partitions.len() as i64);
        info!(
            partitions = partitions.len(),
            actors = dropped.len(),
            "partitions revoked after a flush"
        );
        drop(revoked);
        Ok(())
    }

    /// Writes every dirty state and the consumed offsets in one transaction,
    /// after the replies are durable; then mirrors the offsets to the bus.
    async fn flush(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        if self.write_behind.is_empty() && self.replies_out.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.replies_out.durable().await?;
        let (batch, states) = loop {
            let batch = self.write_behind.batch();
            let states: Vec<wharf_store::DeviceStateRow> = batch
                .devices
                .iter()
                .filter_map(|device| self.resident.state(device).map(Into::into))
                .collect();
            let offsets: Vec<_> = batch.offsets.iter().map(positions::to_store).collect();
            let (store, group) = (&self.db.store, &self.group);
            let committed = self
                .db
                .retrying("write back device states", shutdown, || {
                    store.commit_batch(group, &batch.claims, &states, &offsets)
                })
                .await?;
            match committed {
                Committed::Written => break (batch, states),
                // What is left after giving the fenced partitions up is
                // written in the next round.
                Committed::Fenced(lost) => self.fenced_out(lost),
            }
        };
        let commits = self.write_behind.stored_batch(batch);
        if let Err(error) = self.consumer.commit(&commits).await {
            // The database holds the truth; the bus's copy only feeds lag
            // monitoring.
            warn!(%error, "failed to mirror offsets to the bus");
        }
        self.metrics.flushes.inc();
        self.metrics.flushed_states.inc_by(states.len() as u64);
        self.metrics
            .flush_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Gives up partitions a later owner has claimed: their actors and
    /// unwritten changes are dropped (the owner replays their events from
    /// the stored offsets) and their events ignored until assigned again.
    fn fenced_out(&mut self, lost: Vec<PartitionClaim>) {
        let partitions: HashSet<PartitionId> = lost
            .into_iter()
            .map(|claim| PartitionId {
                topic: claim.topic,
                partition: claim.partition,
            })
            .collect();
        let dropped = self.resident.drop_partitions(&partitions);
        self.write_behind.forget(&partitions, &dropped);
        self.metrics.actors.set(self.resident.len() as i64);
        self.metrics.fenced.inc_by(partitions.len() as u64);
        warn!(
            partitions = ?partitions.iter().map(|p| format!("{}[{}]", p.topic, p.partition)).collect::<Vec<_>>(),
            dropped_actors = dropped.len(),
            "another receiver claimed these partitions while this one held unwritten changes \
             (it was stalled past the group's timeouts); dropping them: the new owner replays their events"
        );
        self.fenced.extend(partitions);
    }

    fn passivate(&mut self) {
        let write_behind = &self.write_behind;
        let dropped = self.resident.passivate(self.config.actor_idle, |device| {
            write_behind.is_dirty(device)
        });
        if dropped > 0 {
            self.metrics.passivated.inc_by(dropped as u64);
            self.metrics.actors.set(self.resident.len() as i64);
        }
    }

    fn skipped(&self, reason: &'static str) {
        self.metrics
            .events_skipped
            .get_or_create(&[("reason", reason)])
            .inc();
    }
}

/// The built-in logic for `config`: the device twin with `rules`, as the
/// configuration's check compiled them (`ReceiverConfig::check`).
pub fn twin_logic(config: &ReceiverConfig, rules: rules::Rules) -> TwinLogic {
    TwinLogic::new(rules, &config.set_desired_command).with_limits(config.twin)
}

/// Runs the Receiver as its own process with the built-in logic and the
/// rules its check compiled: connects to the bus and the store, binds the
/// operations listener, and serves until `shutdown`.
pub async fn run(
    checked: Checked<ReceiverSettings>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Checked {
        settings,
        parsed: rules,
    } = checked;
    let logic = twin_logic(&settings.receiver, rules);
    let bus = BusHandle::connect(&settings.bus).context("failed to connect to the bus")?;
    let store = Store::connect(&settings.store)
        .await
        .context("failed to open the store")?;
    let ops = OpsEndpoint::bind(settings.receiver.ops_listen).await?;
    let mut reporting = Reporting::default();
    let parts = ReceiverParts {
        logic: Box::new(logic),
        bus,
        store: store.clone(),
    };
    let receiver = Receiver::bind(settings.receiver, parts, &mut reporting).await?;
    let result = ops.serve_while(reporting, receiver.run(shutdown)).await;
    store.close().await;
    result
}
