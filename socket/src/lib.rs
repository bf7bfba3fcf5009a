//! Wharf's device gateway. It holds device connections, authenticates them
//! at the handshake, turns every inbound frame into a `FrameReceived` event,
//! and writes the command frames it is told to deliver. It keeps no business
//! logic, so it is rarely redeployed and connections survive deploys of
//! everything else.
//!
//! # Layout
//! - [`config`]: [`SocketSettings`] (the binary's whole configuration) and
//!   [`SocketConfig`] (the `[socket]` section).
//! - [`metrics`]: every metric the Socket exports.
//! - `live`: the connections this instance holds, one per device.
//! - `events_out`: builds and publishes the Socket's events.
//! - `websocket`: the WebSocket listener and one session task per connection.
//! - `deliveries`: consumes this instance's deliveries topic and writes frames.
//! - [`Socket`]: binds the listener and runs the tasks.
//!
//! # Invariants
//! - A device has at most one live connection on an instance; a newer one
//!   replaces the older, which is closed.
//! - `DeviceConnected` is durable on the bus before the first frame of a
//!   connection is read, so presence is known before any reply can need it.
//! - The Socket reads only its own `deliveries.<instance>` topic.

pub mod config;
mod deliveries;
mod events_out;
mod live;
pub mod metrics;
mod websocket;

pub use websocket::WS_PATH;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;
use wharf_auth::TokenVerifier;
use wharf_bus::{BusHandle, Publisher as _, Subscriber as _, TopicSpec};
use wharf_runtime::{OpsEndpoint, Readiness, Registry};

pub use config::{SocketConfig, SocketSettings};
use events_out::EventsOut;
use live::LiveConnections;
use metrics::SocketMetrics;

/// What every task of the Socket shares.
struct Shared {
    config: SocketConfig,
    verifier: TokenVerifier,
    live: LiveConnections,
    events: EventsOut,
    metrics: SocketMetrics,
}

/// A bound Socket, ready to run.
pub struct Socket {
    shared: Arc<Shared>,
    listener: TcpListener,
    deliveries: wharf_bus::BusConsumer,
}

impl Socket {
    /// Creates the topics the Socket uses, subscribes to its deliveries topic
    /// and binds the WebSocket listener (port 0 picks a free port).
    pub async fn bind(
        config: SocketConfig,
        secret: &str,
        bus: BusHandle,
        registry: &mut Registry,
        readiness: &Readiness,
    ) -> anyhow::Result<Self> {
        let BusHandle {
            bus,
            topics,
            partitions,
        } = bus;
        let deliveries_topic = topics.deliveries(&config.instance_id);
        bus.ensure_topics(&[
            TopicSpec::new(topics.device_events(), partitions),
            TopicSpec::new(topics.command_status(), partitions),
            TopicSpec::compacted(topics.presence(), partitions),
            TopicSpec::new(&deliveries_topic, partitions),
        ])
        .await
        .context("failed to create the socket's topics")?;
        // Scoped by the topic prefix: deployments sharing a broker must not
        // share the group.
        let group = format!("{}.socket.{}", topics.prefix(), config.instance_id);
        let deliveries = bus
            .subscribe(&group, &[deliveries_topic])
            .await
            .context("failed to subscribe to the deliveries topic")?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("failed to listen on {}", config.listen))?;
        let ready = readiness.flag("socket");
        ready.set(true);
        let metrics = SocketMetrics::register(registry);
        let events = EventsOut::new(bus, topics, config.instance_id.clone());
        Ok(Socket {
            shared: Arc::new(Shared {
                verifier: TokenVerifier::new(secret),
                live: LiveConnections::default(),
                events,
                metrics,
                config,
            }),
            listener,
            deliveries,
        })
    }

    /// The address devices connect to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts devices and delivers commands until `shutdown`; then closes
    /// every connection with "going away" and publishes its disconnect.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Socket {
            shared,
            listener,
            deliveries,
        } = self;
        info!(
            listen = %listener.local_addr()?,
            instance = %shared.config.instance_id,
            "socket accepting websocket devices"
        );
        // A failed delivery task stops the whole Socket: accepting devices
        // that can never receive commands would hide the failure.
        let stop = shutdown.child_token();
        let delivering = {
            let (shared, stop) = (shared.clone(), stop.clone());
            tokio::spawn(async move {
                let result = deliveries::run(shared, deliveries, stop.clone()).await;
                if result.is_err() {
                    stop.cancel();
                }
                result
            })
        };
        websocket::accept_loop(shared.clone(), listener, stop).await;
        let result = delivering.await.context("the deliveries task panicked")?;
        shared.events.flush().await;
        result
    }
}

/// Runs the Socket as its own process: connects to the bus, binds the
/// device and operations listeners, and serves until `shutdown`.
pub async fn run(settings: SocketSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus = BusHandle::connect(&settings.bus).context("failed to connect to the bus")?;
    let ops = OpsEndpoint::bind(settings.socket.ops_listen).await?;
    let mut registry = Registry::default();
    let readiness = Readiness::default();
    let socket = Socket::bind(
        settings.socket,
        &settings.auth.secret,
        bus,
        &mut registry,
        &readiness,
    )
    .await?;
    ops.serve_while(registry, readiness, socket.run(shutdown))
        .await
}
