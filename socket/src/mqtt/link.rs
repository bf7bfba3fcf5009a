//! A connected MQTT device, as the session driver runs it: packets read
//! and answered (SUBSCRIBE, PINGREQ, the PUBACKs of commands), PUBLISHes
//! handed on as frames and acknowledged once the bus has them, commands
//! published on the device's subscriptions, and the goodbye an MQTT 5
//! client can be told.

use std::time::Duration;

use rumqttd::protocol::{
    Packet, PingResp, PubAck, PubAckReason, Publish, PublishProperties, QoS, SubAck,
    SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;
use wharf_events::{FailureReason, Transport};

use super::acl;
use super::codec::{self, CodecError, Received};
use super::connection::Connection;
use crate::close::CloseReason;
use crate::gateway::Gateway;
use crate::live::{DeliveryFailure, Outbound, Outcome};
use crate::session::{Frame, Link, Session, command_written};
use crate::stream::ByteStream;

/// An MQTT device's connection past CONNECT.
pub(super) struct MqttLink<S> {
    pub(super) stream: S,
    pub(super) conn: Connection,
    /// Granted subscription filters: commands go out only on matching topics.
    pub(super) subscriptions: Vec<String>,
    /// Commands sent, by packet id, waiting for the device's PUBACK (a
    /// few at most: a list is smaller than a map in every idle connection).
    pub(super) awaiting_ack: Vec<(u16, oneshot::Sender<Outcome>, Instant)>,
    pub(super) next_pkid: u16,
    /// MQTT over TCP or over WebSocket (the metrics label).
    pub(super) transport: Transport,
    /// Published when the device vanishes without DISCONNECT (topic,
    /// message); boxed, as most devices have none, and copied out of the
    /// CONNECT, so the buffer it came in is not kept.
    pub(super) will: Option<Box<(String, Vec<u8>)>>,
    /// How long the device may stay silent (from its keep-alive).
    pub(super) idle: Duration,
}

impl<S: ByteStream> Link for MqttLink<S> {
    /// The packet id of a QoS 1 PUBLISH, acknowledged once the bus has it.
    type Then = Option<u16>;
    /// Whether a whole packet is buffered (false: the stream ended).
    type Inbound = Result<bool, CodecError>;

    const ACKNOWLEDGES_FRAMES: bool = true;

    fn idle_timeout(&self) -> Duration {
        self.idle
    }

    /// Commands wait until the device subscribed: one sent between CONNACK
    /// and SUBSCRIBE would find no subscription.
    fn takes_commands(&self) -> bool {
        !self.subscriptions.is_empty()
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.awaiting_ack
            .iter()
            .map(|(_, _, deadline)| *deadline)
            .min()
    }

    /// Fails the commands whose PUBACK did not come in time.
    fn deadline_passed(&mut self) {
        let now = Instant::now();
        let (expired, waiting) = std::mem::take(&mut self.awaiting_ack)
            .into_iter()
            .partition(|(_, _, deadline)| *deadline <= now);
        self.awaiting_ack = waiting;
        for (_, outcome, _) in expired {
            let _ = outcome.send(Err(DeliveryFailure::new(FailureReason::NoAck, "no ack")));
        }
    }

    async fn read(&mut self) -> Result<Self::Inbound, CloseReason> {
        Ok(self.conn.wait_packet(&mut self.stream).await)
    }

    async fn handle(
        &mut self,
        inbound: Self::Inbound,
        session: &Session,
    ) -> Result<Option<Frame<Option<u16>>>, CloseReason> {
        let gateway = session.gateway();
        // In a block: the decoded packet must not outlive it in this
        // future's state, which the driver's task holds.
        let handling = {
            let decoded = inbound.and_then(|buffered| match buffered {
                true => self.conn.read_buffered(),
                false => Ok(None),
            });
            let received = match decoded {
                Ok(Some(received)) => received,
                Ok(None) => return Err(CloseReason::ConnectionLost),
                Err(CodecError::TooLarge(size)) => {
                    gateway.metrics.dropped("oversized");
                    debug!(size, "packet exceeds max_frame_bytes");
                    return Err(CloseReason::FrameTooLarge);
                }
                Err(error) => {
                    debug!(?error, "malformed packet");
                    return Err(CloseReason::ProtocolError);
                }
            };
            // Boxed: a packet's handling exists only while it runs, not in
            // every idle connection's task.
            Box::pin(self.handle_packet(gateway, &session.who.device, received))
        };
        handling.await
    }

    async fn write_command(
        &mut self,
        command: Outbound,
        session: &Session,
    ) -> Result<(), CloseReason> {
        Box::pin(self.send_command(session.gateway(), &session.who.device, command)).await
    }

    async fn frame_acked(&mut self, pkid: Option<u16>) -> Result<(), CloseReason> {
        let Some(pkid) = pkid else { return Ok(()) };
        let ack = Packet::PubAck(
            PubAck {
                pkid,
                reason: PubAckReason::Success,
            },
            None,
        );
        match Box::pin(self.conn.send(&mut self.stream, ack)).await {
            Ok(()) => Ok(()),
            Err(_) => Err(CloseReason::ConnectionLost),
        }
    }

    async fn goodbye(&mut self, reason: CloseReason) {
        // MQTT 5 reason codes (section 3.14.2.1).
        let code = match reason {
            CloseReason::ShuttingDown => Some(0x8b),
            CloseReason::TakenOver => Some(0x8e),
            CloseReason::FrameTooLarge => Some(0x95),
            CloseReason::RateLimited => Some(0x96),
            CloseReason::QosNotSupported => Some(0x9b),
            CloseReason::IdleTimeout => Some(0x8d),
            CloseReason::NotAuthorized => Some(0x87),
            CloseReason::ProtocolError => Some(0x82),
            CloseReason::BusUnavailable => Some(0x89),
            // "Administrative action": the device was deleted.
            CloseReason::Revoked => Some(0x98),
            _ => None,
        };
        if let Some(code) = code {
            self.conn.send_disconnect(&mut self.stream, code).await;
        }
        if !matches!(
            reason,
            CloseReason::ConnectionLost | CloseReason::WriteFailed
        ) {
            self.stream.close().await;
        }
    }

    fn finish(&mut self, reason: CloseReason) -> Option<(String, Vec<u8>)> {
        for (_, outcome, _) in self.awaiting_ack.drain(..) {
            let _ = outcome.send(Err(DeliveryFailure::new(
                FailureReason::NoAck,
                format!("the connection closed before the ack: {}", reason.as_str()),
            )));
        }
        match reason {
            CloseReason::ClosedByDevice => None,
            _ => self.will.take().map(|will| *will),
        }
    }
}

/// What an MQTT 5 command PUBLISH carries when the device is expected to
/// answer: where to answer (its own reply topic for this command) and the
/// command id as Correlation Data, for clients that match answers by it.
fn reply_properties(device: &str, command_id: uuid::Uuid) -> PublishProperties {
    PublishProperties {
        response_topic: Some(crate::replies::reply_topic(device, command_id)),
        correlation_data: Some(bytes::Bytes::from(command_id.to_string())),
        ..PublishProperties::default()
    }
}

impl<S: ByteStream> MqttLink<S> {
    /// Handles one packet from the device: a PUBLISH becomes a frame for
    /// the bus; the rest is answered here. An error ends the connection.
    async fn handle_packet(
        &mut self,
        gateway: &Gateway,
        device: &str,
        received: Received,
    ) -> Result<Option<Frame<Option<u16>>>, CloseReason> {
        let conn = &mut self.conn;
        let reply = match received.packet {
            Packet::Publish(publish, _) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                if received.qos == 2 {
                    return Err(CloseReason::QosNotSupported);
                }
                if !acl::may_publish(device, &topic) {
                    gateway
                        .metrics
                        .acl_denied
                        .get_or_create(&[("kind", "publish")])
                        .inc();
                    debug!(topic, "publish outside the device's topics");
                    if !conn.is_v5() {
                        return Err(CloseReason::NotAuthorized);
                    }
                    if received.qos == 0 {
                        return Ok(None);
                    }
                    Packet::PubAck(
                        PubAck {
                            pkid: received.pkid,
                            reason: PubAckReason::NotAuthorized,
                        },
                        None,
                    )
                } else if publish.payload.len() > gateway.config.max_frame_bytes {
                    gateway.metrics.dropped("oversized");
                    return Err(CloseReason::FrameTooLarge);
                } else {
                    return Ok(Some(Frame {
                        channel: Some(topic),
                        bytes: publish.payload,
                        then: (received.qos == 1).then_some(received.pkid),
                    }));
                }
            }
            Packet::PubAck(ack, _) => {
                if let Some(at) = self
                    .awaiting_ack
                    .iter()
                    .position(|(pkid, ..)| *pkid == ack.pkid)
                {
                    let (_, outcome, _) = self.awaiting_ack.swap_remove(at);
                    gateway
                        .metrics
                        .frames_sent
                        .get_or_create(&[("transport", self.transport.as_str())])
                        .inc();
                    let _ = outcome.send(Ok(()));
                }
                return Ok(None);
            }
            Packet::Subscribe(subscribe, _) => {
                let codes = subscribe
                    .filters
                    .iter()
                    .map(|filter| {
                        let known = self.subscriptions.contains(&filter.path);
                        let full =
                            self.subscriptions.len() >= gateway.config.mqtt.max_subscriptions;
                        if !known && full && acl::may_subscribe(device, &filter.path) {
                            gateway.metrics.dropped("subscription_quota");
                            debug!(filter = filter.path, "subscription over max_subscriptions");
                            return if conn.is_v5() {
                                SubscribeReasonCode::QuotaExceeded
                            } else {
                                SubscribeReasonCode::Failure
                            };
                        }
                        if acl::may_subscribe(device, &filter.path) {
                            // A filter subscribed again replaces itself.
                            if !known {
                                self.subscriptions.push(filter.path.clone());
                            }
                            match (conn.is_v5(), filter.qos) {
                                (true, QoS::AtMostOnce) => {
                                    SubscribeReasonCode::Success(QoS::AtMostOnce)
                                }
                                (true, _) => SubscribeReasonCode::Success(QoS::AtLeastOnce),
                                (false, QoS::AtMostOnce) => SubscribeReasonCode::QoS0,
                                (false, _) => SubscribeReasonCode::QoS1,
                            }
                        } else {
                            gateway
                                .metrics
                                .acl_denied
                                .get_or_create(&[("kind", "subscribe")])
                                .inc();
                            debug!(
                                filter = filter.path,
                                "subscription outside the device's commands"
                            );
                            if conn.is_v5() {
                                SubscribeReasonCode::NotAuthorized
                            } else {
                                SubscribeReasonCode::Failure
                            }
                        }
                    })
                    .collect();
                Packet::SubAck(
                    SubAck {
                        pkid: subscribe.pkid,
                        return_codes: codes,
                    },
                    None,
                )
            }
            Packet::Unsubscribe(unsubscribe, _) => {
                self.subscriptions
                    .retain(|filter| !unsubscribe.filters.contains(filter));
                let reasons = unsubscribe
                    .filters
                    .iter()
                    .map(|_| UnsubAckReason::Success)
                    .collect();
                Packet::UnsubAck(
                    UnsubAck {
                        pkid: unsubscribe.pkid,
                        reasons,
                    },
                    None,
                )
            }
            Packet::PingReq(_) => Packet::PingResp(PingResp),
            Packet::Disconnect(..) => return Err(CloseReason::ClosedByDevice),
            other => {
                // The packet's kind only: a second CONNECT carries the
                // device's token as its password, which never reaches a log.
                debug!(packet = codec::packet_kind(&other), "unexpected packet");
                return Err(CloseReason::ProtocolError);
            }
        };
        match conn.send(&mut self.stream, reply).await {
            Ok(()) => Ok(None),
            Err(_) => Err(CloseReason::ConnectionLost),
        }
    }

    /// Publishes a command on its topic, if the device subscribed to it: at
    /// QoS 1, where the device's PUBACK (or its absence) settles it, or at
    /// QoS 0 when the profile asks, where writing it settles it.
    async fn send_command(
        &mut self,
        gateway: &Gateway,
        device: &str,
        command: Outbound,
    ) -> Result<(), CloseReason> {
        if command.deadline <= Instant::now() {
            // It waited for a SUBSCRIBE past its deadline: it fails now, and is
            // never written after the deliveries task has given up on it.
            let _ = command.outcome.send(Err(DeliveryFailure::new(
                FailureReason::WriteFailed,
                format!("{device} did not subscribe within delivery_timeout"),
            )));
            return Ok(());
        }
        let topic = command
            .channel
            .unwrap_or_else(|| acl::default_command_topic(device));
        if !self
            .subscriptions
            .iter()
            .any(|filter| acl::matches(filter, &topic))
        {
            let _ = command.outcome.send(Err(DeliveryFailure::new(
                FailureReason::WriteFailed,
                format!("{device} has no subscription matching {topic}"),
            )));
            return Ok(());
        }
        let payload = command.payload.to_bytes();
        let properties = command
            .reply_to
            .filter(|_| self.conn.is_v5())
            .map(|command_id| reply_properties(device, command_id));
        if command.qos == Some(0) {
            let publish = Publish::new(topic.into_bytes(), payload.to_vec(), false);
            let result = self
                .conn
                .send(&mut self.stream, Packet::Publish(publish, properties))
                .await;
            let label = [("transport", self.transport.as_str())];
            return command_written(gateway, &label, command.outcome, result, payload.len());
        }
        let pkid = self.next_free_pkid();
        let publish = codec::publish_qos1(&topic, &payload, pkid);
        if self
            .conn
            .send(&mut self.stream, Packet::Publish(publish, properties))
            .await
            .is_err()
        {
            let _ = command.outcome.send(Err(DeliveryFailure::new(
                FailureReason::WriteFailed,
                "the connection closed",
            )));
            return Err(CloseReason::WriteFailed);
        }
        gateway
            .metrics
            .frame_bytes_sent
            .get_or_create(&[("transport", self.transport.as_str())])
            .inc_by(payload.len() as u64);
        self.awaiting_ack
            .push((pkid, command.outcome, command.deadline));
        Ok(())
    }

    fn next_free_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0
                && !self
                    .awaiting_ack
                    .iter()
                    .any(|(pkid, ..)| *pkid == self.next_pkid)
            {
                return self.next_pkid;
            }
        }
    }
}
