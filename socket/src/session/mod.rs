//! A device's session, whatever its transport: registering its connection
//! (taking over an older one), announcing it on the bus, feeding its frames
//! to the bus through a bounded window of unacknowledged ones
//! ([`window`]), the per-device rate limit, and closing with a reason. The
//! loop every transport's connection runs is `drive`, in a task of its
//! own ([`spawn`]).

mod drive;
mod window;

pub(crate) use drive::{Frame, Link, spawn};
pub(crate) use window::Window;

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tracing::{debug, warn};
use wharf_bus::PendingAck;
use wharf_events::{FailureReason, Transport};

use crate::close::CloseReason;
use crate::events_out::DeviceIdentity;
use crate::gateway::{Admitted, Gateway};
use crate::limits::TokenBucket;
use crate::live::{ConnectionHandle, DeliveryFailure, LiveConnection, Mailbox, Outcome};
use crate::replies::{self, Inbound};

/// An authenticated device connection, registered and announced.
pub(crate) struct Session {
    gateway: Arc<Gateway>,
    pub(crate) who: DeviceIdentity,
    /// This connection as the live map holds it, with its mailbox: commands
    /// in the order the Commander sent them, and the news of a takeover.
    connection: ConnectionHandle,
    bucket: TokenBucket,
    gauge: Gauge,
}

impl Session {
    /// This connection's commands, and the news that it must close.
    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.connection.mailbox
    }

    /// The Socket's state this session runs in.
    pub(crate) fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// Registers the device's connection (closing an older one) and
    /// publishes `DeviceConnected`, durable before any frame is read.
    pub(crate) async fn open(
        gateway: &Arc<Gateway>,
        admitted: Admitted,
        transport: Transport,
        remote: Option<String>,
    ) -> Result<Session, CloseReason> {
        // Boxed here, and in `publish` and `close`: a connection's task
        // keeps its state for as long as the connection lives, so one-off
        // steps must not make it larger.
        Box::pin(Self::open_boxed(gateway, admitted, transport, remote)).await
    }

    async fn open_boxed(
        gateway: &Arc<Gateway>,
        admitted: Admitted,
        transport: Transport,
        remote: Option<String>,
    ) -> Result<Session, CloseReason> {
        let Admitted { claims, order } = admitted;
        let who = DeviceIdentity {
            device: claims.sub,
            model: claims.model,
            transport,
            connection: wharf_events::new_id(),
        };
        let connection = Arc::new(LiveConnection {
            id: who.connection,
            issued_at: claims.iat,
            order,
            mailbox: Mailbox::new(gateway.config.outbound_queue),
        });
        let mailbox = &connection.mailbox;
        // The connection admitted later stays, whichever registers first:
        // one that lost never announces itself (its connect after the newer
        // one's would move the device's presence back to it).
        match gateway.live.insert(&who.device, connection.clone()) {
            Some(lost) if lost.id == who.connection => return Err(CloseReason::TakenOver),
            Some(older) => older.mailbox.close_for(CloseReason::TakenOver),
            None => {}
        }
        // A revocation that arrived since the token was checked: the
        // revocations task may have looked before this connection was live.
        if gateway.revocations.is_revoked(&who.device, claims.iat) {
            mailbox.close_for(CloseReason::Revoked);
        }
        // The Socket began stopping before this connection was live: the
        // sweep over live connections may have missed it.
        if gateway.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            mailbox.close_for(CloseReason::ShuttingDown);
        }
        let gauge = gateway
            .metrics
            .connections
            .get_or_create(&[("transport", transport.as_str())])
            .clone();
        gauge.inc();
        if let Err(error) = gateway.events.connected(&who, remote).await {
            warn!(%error, device = %who.device, "failed to publish a connect");
            gateway.live.remove(&who.device, who.connection);
            gauge.dec();
            return Err(CloseReason::BusUnavailable);
        }
        debug!(device = %who.device, transport = transport.as_str(), "device connected");
        Ok(Session {
            bucket: TokenBucket::new(gateway.config.rate_limit),
            gateway: gateway.clone(),
            who,
            connection,
            gauge,
        })
    }

    /// Hands one frame to the bus; the returned acknowledgement resolves
    /// once it is durable. Refused frames are counted and logged.
    pub(crate) async fn publish(
        &mut self,
        channel: Option<String>,
        bytes: &[u8],
    ) -> Result<PendingAck, CloseReason> {
        Box::pin(self.publish_boxed(channel, bytes)).await
    }

    async fn publish_boxed(
        &mut self,
        channel: Option<String>,
        bytes: &[u8],
    ) -> Result<PendingAck, CloseReason> {
        let metrics = &self.gateway.metrics;
        let transport = [("transport", self.who.transport.as_str())];
        if !self.bucket.take() {
            metrics.dropped("rate_limited");
            warn!(device = %self.who.device, "frame over the rate limit; closing");
            return Err(CloseReason::RateLimited);
        }
        metrics.frames_received.get_or_create(&transport).inc();
        metrics
            .frame_bytes_received
            .get_or_create(&transport)
            .inc_by(bytes.len() as u64);
        let events = &self.gateway.events;
        let max_reply_bytes = self.gateway.config.max_reply_bytes;
        let published = match replies::recognise(
            &self.who.device,
            channel.as_deref(),
            bytes,
            max_reply_bytes,
        ) {
            Inbound::Frame => events.frame(&self.who, channel, bytes).await,
            Inbound::Reply(answer) => {
                metrics
                    .replies
                    .get_or_create(&[("outcome", "published")])
                    .inc();
                events.reply(&self.who, answer).await
            }
            Inbound::Refused(reason) => {
                // Refused, not lost: nothing was taken from the device that
                // could be kept (the command ends timed_out).
                metrics.replies.get_or_create(&[("outcome", reason)]).inc();
                debug!(device = %self.who.device, reason, max_reply_bytes, "answer to a command refused");
                return Ok(PendingAck::ready(Ok(wharf_bus::Delivered {
                    partition: -1,
                    offset: -1,
                })));
            }
        };
        let ack = published.map_err(|error| {
            frame_lost(&self.gateway, &self.who, &error);
            CloseReason::BusUnavailable
        })?;
        let latency = metrics.publish_ack_seconds.clone();
        let queued = Instant::now();
        Ok(PendingAck::from_future(async move {
            let result = ack.await;
            latency.observe(queued.elapsed().as_secs_f64());
            result
        }))
    }

    /// Ends the session: publishes the device's last will (MQTT), then
    /// unregisters it and publishes `DeviceDisconnected`.
    pub(crate) async fn close(self, reason: CloseReason, will: Option<(String, Vec<u8>)>) {
        Box::pin(self.close_boxed(reason, will)).await
    }

    async fn close_boxed(self, reason: CloseReason, will: Option<(String, Vec<u8>)>) {
        let gateway = self.gateway.clone();
        if let Some((topic, message)) = will {
            match gateway.events.frame(&self.who, Some(topic), &message).await {
                Ok(ack) => {
                    if let Err(error) = ack.await {
                        frame_lost(&gateway, &self.who, &error);
                    }
                }
                Err(error) => frame_lost(&gateway, &self.who, &error),
            }
        }
        // Commands waiting for this connection were never written: they
        // fail now as "not connected", which the Commander queues again.
        for command in self.connection.mailbox.close() {
            let _ = command.outcome.send(Err(DeliveryFailure::new(
                FailureReason::DeviceNotConnected,
                format!(
                    "the connection closed ({}) before the command was written",
                    reason.as_str()
                ),
            )));
        }
        gateway.live.remove(&self.who.device, self.who.connection);
        self.gauge.dec();
        if !matches!(
            reason,
            CloseReason::ClosedByDevice | CloseReason::ConnectionLost
        ) {
            gateway
                .metrics
                .closes
                .get_or_create(&[("reason", reason.label())])
                .inc();
        }
        if let Err(error) = gateway
            .events
            .disconnected(&self.who, reason.as_str())
            .await
        {
            warn!(%error, device = %self.who.device, "failed to publish a disconnect");
        }
        debug!(device = %self.who.device, reason = reason.as_str(), "device disconnected");
    }
}

/// Counts and logs a frame the bus did not take.
pub(crate) fn frame_lost(gateway: &Gateway, who: &DeviceIdentity, error: &wharf_bus::Error) {
    gateway.metrics.dropped("bus_unavailable");
    warn!(%error, device = %who.device, "frame did not reach the bus");
}

/// Counts a command frame written to a device and answers its delivery; a
/// failed write is `WriteFailed`, which ends the connection (UDP, where
/// nothing is connected, ignores it).
pub(crate) fn command_written<E: std::fmt::Display>(
    gateway: &Gateway,
    transport: &crate::metrics::Label,
    outcome: tokio::sync::oneshot::Sender<Outcome>,
    result: Result<(), E>,
    bytes: usize,
) -> Result<(), CloseReason> {
    let written = result.is_ok();
    if written {
        gateway.metrics.frames_sent.get_or_create(transport).inc();
        gateway
            .metrics
            .frame_bytes_sent
            .get_or_create(transport)
            .inc_by(bytes as u64);
    }
    let _ = outcome.send(
        result.map_err(|error| DeliveryFailure::new(FailureReason::WriteFailed, error.to_string())),
    );
    match written {
        true => Ok(()),
        false => Err(CloseReason::WriteFailed),
    }
}
