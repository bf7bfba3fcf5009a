//! Wharf's device gateway. It holds device connections over WebSocket, MQTT
//! (3.1.1 and 5, over TCP and WebSocket), raw TCP and UDP, authenticates
//! them, turns every inbound frame into a `FrameReceived` event (or, for a
//! device's answer to a command, a `CommandReplied`), and writes the command
//! frames it is told to deliver. It keeps no business logic, so
//! it is rarely redeployed and connections survive deploys of everything
//! else. See `docs/socket.md` for the wire formats.
//!
//! # Layout
//! - [`config`]: [`SocketSettings`] and the `[socket]` section.
//! - [`metrics`]: every metric the Socket exports.
//! - `gateway`: the state every listener and connection task shares
//!   (configuration, token check, live connections, events, metrics).
//! - `accept`: the TCP accept loop, with the connection limit.
//! - `session`: what every transport shares: registration, takeover,
//!   announcing, the window of frames on their way to the bus, and the one
//!   loop every connection runs (`session::spawn`, over a `session::Link`).
//! - `close`: why a connection ends (`CloseReason`).
//! - `live`: the connection each device holds, and its command mailbox.
//! - `limits`: the per-device rate limit.
//! - `events_out`: builds and publishes the Socket's events.
//! - `replies`: tells a device's answers to commands from its other frames,
//!   for every transport (MQTT reply topics, `{"reply": …}` JSON frames).
//! - `stream`: a byte stream over TCP or WebSocket messages.
//! - `websocket`, `mqtt`, `tcp`, `udp`: one module per transport, each a
//!   codec (pure), a handshake that opens the session, and a `Link`.
//!   Adding a transport is those three (docs/socket.md, "adding a
//!   transport").
//! - `deliveries`: consumes this instance's deliveries topic.
//! - `revocations`: tokens of deleted devices, refused and disconnected.
//! - [`Socket`]: binds the listeners and runs the tasks.
//!
//! # Invariants
//! - A device has at most one live connection on an instance; a newer one
//!   replaces the older, which is closed with "session taken over".
//! - `DeviceConnected` is durable on the bus before the first frame of a
//!   connection is read, so presence is known before any reply can need it;
//!   a device is told it is connected (MQTT CONNACK, WebSocket `101`, TCP
//!   status 0) only then.
//! - Frames on their way to the bus are bounded per connection: when the
//!   bus is slow, the Socket stops reading (UDP: drops and counts).
//! - An MQTT QoS 1 PUBACK is sent only after the bus acknowledged the event.
//! - The Socket reads only its own `deliveries.<instance>` topic (and the
//!   whole revocations topic).
//! - A token issued before its device's revocation admits no connection.

mod accept;
mod close;
pub mod config;
mod deliveries;
mod events_out;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod gateway;
mod limits;
mod live;
pub mod metrics;
mod mqtt;
mod replies;
mod revocations;
mod session;
mod stream;
mod tcp;
mod udp;
mod websocket;

pub use websocket::{MQTT_PATH, WS_PATH};

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use wharf_auth::TokenVerifier;
use wharf_bus::{BusConsumer, BusHandle, CommitOffset, Publisher as _, Subscriber as _, TopicSpec};
use wharf_runtime::{OpsEndpoint, ReadyFlag, Reporting};

pub use config::{SocketConfig, SocketSettings};
use events_out::EventsOut;
use gateway::Gateway;
use live::LiveConnections;
use metrics::SocketMetrics;
use revocations::Revocations;

/// Where each enabled transport listens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Addresses {
    pub websocket: Option<SocketAddr>,
    pub mqtt: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub udp: Option<SocketAddr>,
}

/// What the Socket works with besides its configuration.
pub struct SocketParts {
    /// Checks the tokens devices present (from `auth.secret`).
    pub verifier: TokenVerifier,
    pub bus: BusHandle,
}

/// A bound Socket, ready to run.
pub struct Socket {
    gateway: Arc<Gateway>,
    websocket: Option<TcpListener>,
    mqtt: Option<TcpListener>,
    tcp: Option<TcpListener>,
    udp: Option<UdpSocket>,
    deliveries: BusConsumer,
    revocations: BusConsumer,
    /// Where the revocations topic ended at start: read that far before
    /// accepting devices.
    revocations_end: Vec<CommitOffset>,
    /// Set once devices are accepted.
    ready: ReadyFlag,
}

impl Socket {
    /// Creates the topics the Socket uses, subscribes to its deliveries topic
    /// and binds the listeners of the enabled transports (port 0 picks a
    /// free port).
    pub async fn bind(
        config: SocketConfig,
        SocketParts { verifier, bus }: SocketParts,
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
        } = bus;
        let deliveries_topic = topics.deliveries(&config.instance_id);
        bus.ensure_topics(&[
            TopicSpec::new(topics.device_events(), partitions),
            TopicSpec::new(topics.command_status(), partitions),
            TopicSpec::compacted(topics.presence(), partitions),
            TopicSpec::compacted(topics.revocations(), partitions),
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
        // Every start reads every revocation still retained (the topic is
        // compacted by device).
        // Where the revocations end now: devices are accepted, and the
        // Socket reports ready, only once it has read that far.
        let revocations_end = bus
            .log_end(&topics.revocations())
            .await
            .context("failed to read where the revocations topic ends")?;
        let revocations = bus
            .subscribe_from_start(&format!("{group}.revocations"), &[topics.revocations()])
            .await
            .context("failed to subscribe to the revocations topic")?;
        let websocket = bind_tcp(config.websocket.enabled, config.websocket.listen).await?;
        let mqtt = bind_tcp(config.mqtt.enabled, config.mqtt.listen).await?;
        let tcp = bind_tcp(config.tcp.enabled, config.tcp.listen).await?;
        let udp = match config.udp.enabled {
            false => None,
            true => Some(
                UdpSocket::bind(config.udp.listen)
                    .await
                    .with_context(|| format!("failed to listen on udp {}", config.udp.listen))?,
            ),
        };
        let ready = readiness.flag("socket");
        let metrics = SocketMetrics::register(registry);
        let events = EventsOut::new(bus, topics, config.instance_id.clone());
        Ok(Socket {
            gateway: Arc::new(Gateway {
                verifier,
                revocations: Revocations::default(),
                live: LiveConnections::default(),
                connection_slots: Arc::new(Semaphore::new(config.max_connections)),
                connection_tasks: TaskTracker::new(),
                stopping: Default::default(),
                admissions: Default::default(),
                events,
                metrics,
                config,
            }),
            websocket,
            mqtt,
            tcp,
            udp,
            deliveries,
            revocations,
            revocations_end,
            ready,
        })
    }

    /// Where each enabled transport listens.
    pub fn addresses(&self) -> Addresses {
        Addresses {
            websocket: self.websocket.as_ref().and_then(|l| l.local_addr().ok()),
            mqtt: self.mqtt.as_ref().and_then(|l| l.local_addr().ok()),
            tcp: self.tcp.as_ref().and_then(|l| l.local_addr().ok()),
            udp: self.udp.as_ref().and_then(|s| s.local_addr().ok()),
        }
    }

    /// Accepts devices and delivers commands until `shutdown`. Then it stops
    /// accepting, closes every connection with "going away" (publishing its
    /// disconnect), waits up to `shutdown_grace`, and flushes the bus.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addresses = self.addresses();
        let Socket {
            gateway,
            websocket,
            mqtt,
            tcp,
            udp,
            deliveries,
            revocations,
            revocations_end,
            ready,
        } = self;
        // A failed delivery or revocation task stops the whole Socket:
        // accepting devices that can never receive commands, or that should
        // be refused, would hide the failure.
        let stop = shutdown.child_token();
        let delivering = spawn_essential(
            &stop,
            deliveries::run(gateway.clone(), deliveries, stop.clone()),
        );
        let (read, caught_up) = revocations::backlog(&revocations_end);
        let revoking = spawn_essential(
            &stop,
            revocations::run(gateway.clone(), revocations, read, stop.clone()),
        );
        // Connections wait in the listeners' backlogs meanwhile.
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = caught_up.wait() => {}
        }
        if !stop.is_cancelled() {
            ready.set(true);
            info!(instance = %gateway.config.instance_id, ?addresses, "socket accepting devices");
        }
        let mut listeners = tokio::task::JoinSet::new();
        if let Some(listener) = websocket {
            listeners.spawn(websocket::serve(gateway.clone(), listener, stop.clone()));
        }
        if let Some(listener) = mqtt {
            listeners.spawn(mqtt::serve_tcp(gateway.clone(), listener, stop.clone()));
        }
        if let Some(listener) = tcp {
            listeners.spawn(tcp::serve(gateway.clone(), listener, stop.clone()));
        }
        if let Some(socket) = udp {
            listeners.spawn(udp::serve(gateway.clone(), socket, stop.clone()));
        }
        stop.cancelled().await;
        while listeners.join_next().await.is_some() {}
        gateway.stop_sessions();
        gateway.connection_tasks.close();
        let grace = gateway.config.shutdown_grace;
        if tokio::time::timeout(grace, gateway.connection_tasks.wait())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "connections still open after the shutdown grace; leaving them"
            );
        }
        let delivered = delivering.await.context("the deliveries task panicked")?;
        let revoked = revoking.await.context("the revocations task panicked")?;
        gateway.events.flush().await;
        delivered.and(revoked)
    }
}

/// Spawns a task the Socket cannot do without: its failure stops the Socket.
fn spawn_essential(
    stop: &CancellationToken,
    task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let stop = stop.clone();
    tokio::spawn(async move {
        let result = task.await;
        if result.is_err() {
            stop.cancel();
        }
        result
    })
}

async fn bind_tcp(enabled: bool, addr: SocketAddr) -> anyhow::Result<Option<TcpListener>> {
    if !enabled {
        return Ok(None);
    }
    TcpListener::bind(addr)
        .await
        .map(Some)
        .with_context(|| format!("failed to listen on {addr}"))
}

/// Runs the Socket as its own process: connects to the bus, binds the
/// device and operations listeners, and serves until `shutdown`.
pub async fn run(
    checked: wharf_runtime::Checked<SocketSettings>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = checked.settings;
    let bus = BusHandle::connect(&settings.bus).context("failed to connect to the bus")?;
    let ops = OpsEndpoint::bind(settings.socket.ops_listen).await?;
    let mut reporting = Reporting::default();
    let parts = SocketParts {
        verifier: TokenVerifier::new(&settings.auth.secret),
        bus,
    };
    let socket = Socket::bind(settings.socket, parts, &mut reporting).await?;
    ops.serve_while(reporting, socket.run(shutdown)).await
}
