//! What every transport's session shares: registering the device's
//! connection (taking over an older one), announcing it on the bus, feeding
//! its frames to the bus through a bounded window of unacknowledged ones,
//! the per-device rate limit, and closing with a reason.

use std::collections::VecDeque;
use std::future::Future as _;
use std::sync::Arc;
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tracing::{debug, warn};
use wharf_bus::{Delivered, PendingAck};
use wharf_events::{FailureReason, Transport};

use crate::events_out::DeviceIdentity;
use crate::limits::TokenBucket;
use crate::live::{ConnectionHandle, Mailbox, Outcome};
use crate::{Admitted, Shared};

/// Why a connection ended; named in `DeviceDisconnected` and the metrics,
/// and mapped by each transport to what the device sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The device said goodbye (WebSocket close, MQTT DISCONNECT).
    ClosedByDevice,
    /// The connection broke or ended without a goodbye.
    ConnectionLost,
    ShuttingDown,
    TakenOver,
    FrameTooLarge,
    RateLimited,
    IdleTimeout,
    /// The bus refused or lost a frame: the device should retry later.
    BusUnavailable,
    /// The device broke the protocol (or, MQTT v4, its ACL).
    ProtocolError,
    /// An MQTT v4 device published outside its topics (v4 has no way to
    /// refuse one publish).
    NotAuthorized,
    /// QoS 2 (MQTT).
    QosNotSupported,
    /// Writing to the device failed.
    WriteFailed,
    /// The device was deleted: its token no longer admits it.
    Revoked,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClosedByDevice => "closed by device",
            CloseReason::ConnectionLost => "connection lost",
            CloseReason::ShuttingDown => "socket shutting down",
            CloseReason::TakenOver => "session taken over",
            CloseReason::FrameTooLarge => "frame too large",
            CloseReason::RateLimited => "rate limit exceeded",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::BusUnavailable => "bus unavailable",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::NotAuthorized => "not authorized",
            CloseReason::QosNotSupported => "qos 2 not supported",
            CloseReason::WriteFailed => "write failed",
            CloseReason::Revoked => "device revoked",
        }
    }

    fn label(self) -> &'static str {
        match self {
            CloseReason::ClosedByDevice => "closed_by_device",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::ShuttingDown => "shutting_down",
            CloseReason::TakenOver => "taken_over",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::BusUnavailable => "bus_unavailable",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::NotAuthorized => "not_authorized",
            CloseReason::QosNotSupported => "qos_not_supported",
            CloseReason::WriteFailed => "write_failed",
            CloseReason::Revoked => "revoked",
        }
    }
}

/// An authenticated device connection, registered and announced.
pub(crate) struct Session {
    shared: Arc<Shared>,
    pub(crate) who: DeviceIdentity,
    /// Commands for this connection, in the order the Commander sent them,
    /// and the news of a takeover.
    pub(crate) mailbox: Arc<Mailbox>,
    bucket: TokenBucket,
    gauge: Gauge,
}

impl Session {
    /// Registers the device's connection (closing an older one) and
    /// publishes `DeviceConnected`, durable before any frame is read.
    pub(crate) async fn open(
        shared: &Arc<Shared>,
        admitted: Admitted,
        transport: Transport,
        remote: Option<String>,
    ) -> Result<Session, CloseReason> {
        // Boxed here, and in `publish` and `close`: a connection's task
        // keeps its state for as long as the connection lives, so one-off
        // steps must not make it larger.
        Box::pin(Self::open_boxed(shared, admitted, transport, remote)).await
    }

    async fn open_boxed(
        shared: &Arc<Shared>,
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
        let mailbox = Mailbox::new(shared.config.outbound_queue);
        let handle = ConnectionHandle {
            id: who.connection,
            issued_at: claims.iat,
            order,
            mailbox: mailbox.clone(),
        };
        // The connection admitted later stays, whichever registers first:
        // one that lost never announces itself (its connect after the newer
        // one's would move the device's presence back to it).
        match shared.live.insert(&who.device, handle) {
            Some(lost) if lost.id == who.connection => return Err(CloseReason::TakenOver),
            Some(older) => older.mailbox.close_for(CloseReason::TakenOver),
            None => {}
        }
        // A revocation that arrived since the token was checked: the
        // revocations task may have looked before this connection was live.
        if shared.revocations.is_revoked(&who.device, claims.iat) {
            mailbox.close_for(CloseReason::Revoked);
        }
        let gauge = shared
            .metrics
            .connections
            .get_or_create(&[("transport", transport.as_str())])
            .clone();
        gauge.inc();
        if let Err(error) = shared.events.connected(&who, remote).await {
            warn!(%error, device = %who.device, "failed to publish a connect");
            shared.live.remove(&who.device, who.connection);
            gauge.dec();
            return Err(CloseReason::BusUnavailable);
        }
        debug!(device = %who.device, transport = transport.as_str(), "device connected");
        Ok(Session {
            bucket: TokenBucket::new(shared.config.rate_limit),
            shared: shared.clone(),
            who,
            mailbox,
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
        let metrics = &self.shared.metrics;
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
        let ack = self
            .shared
            .events
            .frame(&self.who, channel, bytes)
            .await
            .map_err(|error| {
                frame_lost(&self.shared, &self.who, &error);
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
        let shared = self.shared.clone();
        if let Some((topic, message)) = will {
            match shared.events.frame(&self.who, Some(topic), &message).await {
                Ok(ack) => {
                    if let Err(error) = ack.await {
                        frame_lost(&shared, &self.who, &error);
                    }
                }
                Err(error) => frame_lost(&shared, &self.who, &error),
            }
        }
        // Commands waiting for this connection were never written: they
        // fail now as "not connected", which the Commander queues again.
        for command in self.mailbox.close() {
            let _ = command.outcome.send(Err((
                FailureReason::DeviceNotConnected,
                format!(
                    "the connection closed ({}) before the command was written",
                    reason.as_str()
                ),
            )));
        }
        shared.live.remove(&self.who.device, self.who.connection);
        self.gauge.dec();
        if !matches!(
            reason,
            CloseReason::ClosedByDevice | CloseReason::ConnectionLost
        ) {
            shared
                .metrics
                .closes
                .get_or_create(&[("reason", reason.label())])
                .inc();
        }
        if let Err(error) = shared.events.disconnected(&self.who, reason.as_str()).await {
            warn!(%error, device = %self.who.device, "failed to publish a disconnect");
        }
        debug!(device = %self.who.device, reason = reason.as_str(), "device disconnected");
    }
}

/// Counts and logs a frame the bus did not take.
pub(crate) fn frame_lost(shared: &Shared, who: &DeviceIdentity, error: &wharf_bus::Error) {
    shared.metrics.dropped("bus_unavailable");
    warn!(%error, device = %who.device, "frame did not reach the bus");
}

/// Counts a command frame written to a device and answers its delivery;
/// whether the write succeeded (a failed one ends the connection, except
/// over UDP where nothing is connected).
pub(crate) fn command_written<E: std::fmt::Display>(
    shared: &Shared,
    transport: &crate::metrics::Label,
    outcome: tokio::sync::oneshot::Sender<Outcome>,
    result: Result<(), E>,
    bytes: usize,
) -> bool {
    let written = result.is_ok();
    if written {
        shared.metrics.frames_sent.get_or_create(transport).inc();
        shared
            .metrics
            .frame_bytes_sent
            .get_or_create(transport)
            .inc_by(bytes as u64);
    }
    let _ = outcome.send(result.map_err(|error| (FailureReason::WriteFailed, error.to_string())));
    written
}

/// Frames handed to the bus and not acknowledged yet, oldest first, each
/// with what to do once it is durable (an MQTT PUBACK to send, say).
pub(crate) struct Window<T> {
    frames: VecDeque<(PendingAck, T)>,
    limit: usize,
}

impl<T> Window<T> {
    pub(crate) fn new(limit: usize) -> Self {
        Window {
            frames: VecDeque::new(),
            limit,
        }
    }

    pub(crate) fn push(&mut self, ack: PendingAck, then: T) {
        self.frames.push_back((ack, then));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Whether the Socket must stop reading until the oldest is acknowledged.
    pub(crate) fn is_full(&self) -> bool {
        self.frames.len() >= self.limit
    }

    /// Waits for the oldest frame's acknowledgement; never resolves when
    /// the window is empty. Cancel-safe: the frame leaves the window only
    /// once acknowledged.
    pub(crate) async fn oldest_acked(&mut self) -> (wharf_bus::Result<Delivered>, T) {
        let result = std::future::poll_fn(|cx| match self.frames.front_mut() {
            Some((ack, _)) => std::pin::Pin::new(ack).poll(cx),
            None => std::task::Poll::Pending,
        })
        .await;
        let (_, then) = self
            .frames
            .pop_front()
            .expect("a frame was just acknowledged");
        (result, then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acknowledgements_come_back_in_order() {
        let mut window = Window::new(2);
        let delivered = |offset| {
            PendingAck::ready(Ok(Delivered {
                partition: 0,
                offset,
            }))
        };
        window.push(delivered(1), "first");
        assert!(!window.is_full());
        window.push(delivered(2), "second");
        assert!(window.is_full());
        let (result, then) = window.oldest_acked().await;
        assert_eq!((result.unwrap().offset, then), (1, "first"));
        let (_, then) = window.oldest_acked().await;
        assert_eq!(then, "second");
        assert!(window.is_empty());
        let never =
            tokio::time::timeout(std::time::Duration::from_millis(20), window.oldest_acked());
        assert!(never.await.is_err(), "an empty window never resolves");
    }
}
