//! MQTT 3.1.1 and 5 devices, over TCP and over WebSocket.
//!
//! - CONNECT: username = device id, password = device token. Bad
//!   credentials get CONNACK "not authorized" (v4 code 5, v5 0x87), then close.
//! - A device publishes only under `devices/{id}/…` (the topic becomes the
//!   event's `channel`) and subscribes only to `devices/{id}/commands/#` or
//!   below. Otherwise: v5 PUBACK/SUBACK 0x87; v4 SUBACK 0x80, and for a
//!   publish, a disconnect.
//! - QoS 0 and 1 in; a QoS 1 PUBACK is sent only once the bus acknowledged
//!   the event. QoS 2 is refused (v5 DISCONNECT 0x9B; v4 disconnect).
//! - Commands go out as QoS 1 PUBLISH on the profile's topic; the device's
//!   PUBACK makes them delivered, none within `delivery_timeout` fails them.
//! - Keep-alive is enforced (1.5 × the client's value); the clean-session
//!   flag is accepted but sessions are not kept across connections; the last
//!   will becomes a `FrameReceived` on its topic when a device drops without
//!   DISCONNECT.

mod acl;
pub(crate) mod codec;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, LastWill, Packet, PingResp, PubAck,
    PubAckReason, Publish, QoS, SubAck, SubscribeReasonCode, UnsubAck, UnsubAckReason,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info_span};
use wharf_events::{FailureReason, Transport};

use crate::Shared;
use crate::accept::Listener;
use crate::limits::MAX_PRE_AUTH_BYTES;
use crate::live::{Outbound, Outcome, Signal};
use crate::session::{CloseReason, Session, Window, command_written, frame_lost};
use crate::stream::ByteStream;
use codec::{Codec, CodecError, Received};

/// Room for the topic and headers around a payload of `max_frame_bytes`.
const PACKET_OVERHEAD: usize = 1024;

/// Serves MQTT over TCP from `listener` until `stop`.
pub(crate) async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    Listener::new(shared, listener, "mqtt")
        .serve(stop, |shared, stream: TcpStream, peer, stop, permit| {
            async move {
                let _ = stream.set_nodelay(true);
                let _permit: OwnedSemaphorePermit = permit;
                serve(shared, stream, peer, Transport::Mqtt, stop).await;
            }
            .instrument(info_span!("mqtt", %peer, device = tracing::field::Empty))
        })
        .await;
}

/// Runs one MQTT connection, from CONNECT to close.
pub(crate) async fn serve<S: ByteStream>(
    shared: Arc<Shared>,
    mut stream: S,
    peer: SocketAddr,
    transport: Transport,
    stop: CancellationToken,
) {
    // The handshake is boxed and gone once done: an idle connection's task
    // holds only what the session needs.
    let Some(accepted) = Box::pin(accept(&shared, &mut stream, peer, transport)).await else {
        return;
    };
    let Accepted {
        mut conn,
        mut state,
        will,
        idle,
    } = accepted;
    let reason = state
        .run(&shared, &mut conn, &mut stream, idle, &stop)
        .await;
    Box::pin(state.finish(&shared, &mut conn, &mut stream, reason, will)).await;
}

/// A device past CONNECT: authenticated, announced, acknowledged.
struct Accepted {
    conn: Connection,
    state: SessionState,
    will: Option<LastWill>,
    /// How long the device may stay silent.
    idle: Duration,
}

/// Reads the CONNECT, authenticates, opens the session and answers with a
/// CONNACK; `None` when the device was refused or went away.
async fn accept<S: ByteStream>(
    shared: &Arc<Shared>,
    stream: &mut S,
    peer: SocketAddr,
    transport: Transport,
) -> Option<Accepted> {
    let mut conn = Connection::new(shared.config.max_frame_bytes + PACKET_OVERHEAD);
    let label = transport.as_str();
    let connect =
        tokio::time::timeout(shared.config.handshake_timeout, conn.read_connect(stream)).await;
    let (connect, will, login) = match connect {
        Err(_) => {
            handshake_failed(shared, label, "timeout");
            return None;
        }
        Ok(Err(CodecError::TooLarge(length))) => {
            debug!(length, "CONNECT exceeds the pre-authentication limit");
            handshake_failed(shared, label, "too_large");
            return None;
        }
        Ok(Err(error)) => {
            debug!(?error, "no valid CONNECT");
            handshake_failed(shared, label, "protocol");
            return None;
        }
        Ok(Ok(Packet::Connect(connect, _, will, _, login))) => (connect, will, login),
        Ok(Ok(_)) => unreachable!("read_connect returns only CONNECT"),
    };
    // username = device id, password = token, and the token must name the device.
    let (token, device) = login.as_ref().map_or(("", None), |login| {
        (login.password.as_str(), Some(login.username.as_str()))
    });
    let claims = match shared.authenticate(label, token, device) {
        Ok(claims) => claims,
        Err(_) => {
            let _ = conn
                .send_connack(stream, ConnectReturnCode::NotAuthorized)
                .await;
            return None;
        }
    };
    tracing::Span::current().record("device", claims.sub.as_str());
    if let Some(will) = &will
        && !acl::may_publish(&claims.sub, &String::from_utf8_lossy(&will.topic))
    {
        shared
            .metrics
            .acl_denied
            .get_or_create(&[("kind", "will")])
            .inc();
        let _ = conn
            .send_connack(stream, ConnectReturnCode::NotAuthorized)
            .await;
        return None;
    }
    let opened = Session::open(shared, claims, transport, Some(peer.to_string())).await;
    let Ok(session) = opened else {
        let code = if conn.is_v5() {
            ConnectReturnCode::ServerUnavailable
        } else {
            ConnectReturnCode::ServiceUnavailable
        };
        let _ = conn.send_connack(stream, code).await;
        return None;
    };
    if conn
        .send_connack(stream, ConnectReturnCode::Success)
        .await
        .is_err()
    {
        session.close(CloseReason::ConnectionLost, None).await;
        return None;
    }
    // 1.5 × the keep-alive the client asked for, within idle_timeout.
    let keep_alive = Duration::from_millis(u64::from(connect.keep_alive) * 1500);
    let idle = match keep_alive.is_zero() {
        true => shared.config.idle_timeout,
        false => keep_alive.min(shared.config.idle_timeout),
    };
    let state = SessionState {
        session,
        window: Window::new(shared.config.max_in_flight),
        subscriptions: Vec::new(),
        awaiting_ack: HashMap::new(),
        next_pkid: 0,
        transport: label,
    };
    Some(Accepted {
        conn,
        state,
        will,
        idle,
    })
}

/// The byte-level side of a connection: buffers and the codec.
pub(crate) struct Connection {
    pub(crate) buf: BytesMut,
    out: BytesMut,
    max_packet: usize,
    codec: Option<Codec>,
}

impl Connection {
    fn is_v5(&self) -> bool {
        self.codec.as_ref().is_some_and(Codec::is_v5)
    }

    /// A connection's buffers before anything was read.
    pub(crate) fn new(max_packet: usize) -> Self {
        Connection {
            buf: BytesMut::new(),
            out: BytesMut::new(),
            max_packet,
            codec: None,
        }
    }

    /// The CONNECT, once the buffered bytes hold it (picking the codec from
    /// it): at most [`MAX_PRE_AUTH_BYTES`], whatever `max_frame_bytes`
    /// allows once the device is authenticated.
    pub(crate) fn buffered_connect(&mut self) -> Result<Option<Packet>, CodecError> {
        if self.codec.is_none() {
            self.codec = Codec::detect(&self.buf)?;
        }
        let max = self.max_packet.min(MAX_PRE_AUTH_BYTES);
        let Some(codec) = self.codec.as_mut() else {
            return Ok(None);
        };
        match codec.read(&mut self.buf, max)? {
            None => Ok(None),
            Some(Received {
                packet: packet @ Packet::Connect(..),
                ..
            }) => Ok(Some(packet)),
            Some(_) => Err(CodecError::Malformed(
                "the first packet must be CONNECT".into(),
            )),
        }
    }

    /// Reads the CONNECT ([`Connection::buffered_connect`]).
    async fn read_connect<S: ByteStream>(&mut self, stream: &mut S) -> Result<Packet, CodecError> {
        loop {
            if let Some(connect) = self.buffered_connect()? {
                return Ok(connect);
            }
            match stream.read_into(&mut self.buf).await {
                Ok(0) | Err(_) => {
                    return Err(CodecError::Malformed("closed before CONNECT".into()));
                }
                Ok(_) => {}
            }
        }
    }

    pub(crate) fn read_buffered(&mut self) -> Result<Option<Received>, CodecError> {
        let codec = self.codec.as_mut().expect("the codec is chosen at CONNECT");
        codec.read(&mut self.buf, self.max_packet)
    }

    /// The next packet; `Ok(None)` when the stream ended. Cancel-safe.
    async fn read<S: ByteStream>(
        &mut self,
        stream: &mut S,
    ) -> Result<Option<Received>, CodecError> {
        loop {
            if let Some(received) = self.read_buffered()? {
                return Ok(Some(received));
            }
            match stream.read_into(&mut self.buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    async fn send<S: ByteStream>(&mut self, stream: &mut S, packet: Packet) -> std::io::Result<()> {
        self.out.clear();
        let codec = self.codec.as_ref().expect("the codec is chosen at CONNECT");
        codec.write(packet, &mut self.out).map_err(|error| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{error:?}"))
        })?;
        stream.write_all(&self.out).await
    }

    async fn send_connack<S: ByteStream>(
        &mut self,
        stream: &mut S,
        code: ConnectReturnCode,
    ) -> std::io::Result<()> {
        let properties =
            (self.is_v5() && code == ConnectReturnCode::Success).then(|| ConnAckProperties {
                max_qos: Some(1),
                retain_available: Some(0),
                max_packet_size: Some(self.max_packet as u32),
                wildcard_subscription_available: Some(1),
                shared_subscription_available: Some(0),
                ..ConnAckProperties::default()
            });
        let connack = ConnAck {
            session_present: false,
            code,
        };
        // Boxed: a CONNACK is sent once; its state need not stay in the task.
        Box::pin(self.send(stream, Packet::ConnAck(connack, properties))).await
    }

    /// Tells a v5 client why it is disconnected; v4 has no way to say.
    async fn send_disconnect<S: ByteStream>(&mut self, stream: &mut S, reason: u8) {
        if self.is_v5() {
            let _ = stream.write_all(&codec::disconnect_v5(reason)).await;
        }
    }
}

/// A connected device's MQTT state.
struct SessionState {
    session: Session,
    /// Events on their way to the bus, with the packet id to PUBACK (QoS 1).
    window: Window<Option<u16>>,
    /// Granted subscription filters: commands go out only on matching topics.
    subscriptions: Vec<String>,
    /// Commands sent, by packet id, waiting for the device's PUBACK.
    awaiting_ack: HashMap<u16, (oneshot::Sender<Outcome>, Instant)>,
    next_pkid: u16,
    transport: &'static str,
}

impl SessionState {
    async fn run<S: ByteStream>(
        &mut self,
        shared: &Shared,
        conn: &mut Connection,
        stream: &mut S,
        idle: Duration,
        stop: &CancellationToken,
    ) -> CloseReason {
        loop {
            let next_ack_deadline = self
                .awaiting_ack
                .values()
                .map(|(_, deadline)| *deadline)
                .min();
            tokio::select! {
                biased;
                _ = stop.cancelled() => return CloseReason::ShuttingDown,
                (result, pkid) = self.window.oldest_acked(), if !self.window.is_empty() => {
                    if let Err(error) = result {
                        frame_lost(shared, &self.session.who, &error);
                        return CloseReason::BusUnavailable;
                    }
                    if let Some(pkid) = pkid {
                        let ack = Packet::PubAck(PubAck { pkid, reason: PubAckReason::Success }, None);
                        if Box::pin(conn.send(stream, ack)).await.is_err() {
                            return CloseReason::ConnectionLost;
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_ack_deadline.unwrap_or_else(Instant::now)), if next_ack_deadline.is_some() => {
                    self.expire_acks();
                }
                // Commands wait until the device subscribed: one sent
                // between CONNACK and SUBSCRIBE would find no subscription.
                signal = self.session.mailbox.next_if(!self.subscriptions.is_empty()) => {
                    let command = match signal {
                    Signal::Command(command) => command,
                    Signal::Close(reason) => return reason,
                };
                    // Handlers are boxed: their state exists only while they
                    // run, not in every idle connection's task.
                    if let Err(reason) = Box::pin(self.send_command(shared, conn, stream, command)).await {
                        return reason;
                    }
                }
                // Reading stops while the window is full: backpressure.
                read = tokio::time::timeout(idle, conn.read(stream)), if !self.window.is_full() => {
                    let received = match read {
                        Err(_) => return CloseReason::IdleTimeout,
                        Ok(Ok(Some(received))) => received,
                        Ok(Ok(None)) => return CloseReason::ConnectionLost,
                        Ok(Err(CodecError::TooLarge(size))) => {
                            shared.metrics.dropped("oversized");
                            debug!(size, "packet exceeds max_frame_bytes");
                            return CloseReason::FrameTooLarge;
                        }
                        Ok(Err(error)) => {
                            debug!(?error, "malformed packet");
                            return CloseReason::ProtocolError;
                        }
                    };
                    if let Err(reason) = Box::pin(self.handle(shared, conn, stream, received)).await {
                        return reason;
                    }
                }
            }
        }
    }

    /// Handles one packet from the device; an error ends the connection.
    async fn handle<S: ByteStream>(
        &mut self,
        shared: &Shared,
        conn: &mut Connection,
        stream: &mut S,
        received: Received,
    ) -> Result<(), CloseReason> {
        let device = self.session.who.device.clone();
        let reply = match received.packet {
            Packet::Publish(publish, _) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                if received.qos == 2 {
                    return Err(CloseReason::QosNotSupported);
                }
                if !acl::may_publish(&device, &topic) {
                    shared
                        .metrics
                        .acl_denied
                        .get_or_create(&[("kind", "publish")])
                        .inc();
                    debug!(topic, "publish outside the device's topics");
                    if !conn.is_v5() {
                        return Err(CloseReason::NotAuthorized);
                    }
                    if received.qos == 0 {
                        return Ok(());
                    }
                    Packet::PubAck(
                        PubAck {
                            pkid: received.pkid,
                            reason: PubAckReason::NotAuthorized,
                        },
                        None,
                    )
                } else if publish.payload.len() > shared.config.max_frame_bytes {
                    shared.metrics.dropped("oversized");
                    return Err(CloseReason::FrameTooLarge);
                } else {
                    let ack = self.session.publish(Some(topic), &publish.payload).await?;
                    self.window
                        .push(ack, (received.qos == 1).then_some(received.pkid));
                    return Ok(());
                }
            }
            Packet::PubAck(ack, _) => {
                if let Some((outcome, _)) = self.awaiting_ack.remove(&ack.pkid) {
                    shared
                        .metrics
                        .frames_sent
                        .get_or_create(&[("transport", self.transport)])
                        .inc();
                    let _ = outcome.send(Ok(()));
                }
                return Ok(());
            }
            Packet::Subscribe(subscribe, _) => {
                let codes = subscribe
                    .filters
                    .iter()
                    .map(|filter| {
                        let known = self.subscriptions.contains(&filter.path);
                        let full = self.subscriptions.len() >= shared.config.mqtt.max_subscriptions;
                        if !known && full && acl::may_subscribe(&device, &filter.path) {
                            shared.metrics.dropped("subscription_quota");
                            debug!(filter = filter.path, "subscription over max_subscriptions");
                            return if conn.is_v5() {
                                SubscribeReasonCode::QuotaExceeded
                            } else {
                                SubscribeReasonCode::Failure
                            };
                        }
                        if acl::may_subscribe(&device, &filter.path) {
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
                            shared
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
        conn.send(stream, reply)
            .await
            .map_err(|_| CloseReason::ConnectionLost)
    }

    /// Publishes a command on its topic, if the device subscribed to it: at
    /// QoS 1, where the device's PUBACK (or its absence) settles it, or at
    /// QoS 0 when the profile asks, where writing it settles it.
    async fn send_command<S: ByteStream>(
        &mut self,
        shared: &Shared,
        conn: &mut Connection,
        stream: &mut S,
        command: Outbound,
    ) -> Result<(), CloseReason> {
        let device = &self.session.who.device;
        if command.deadline <= Instant::now() {
            // It waited for a SUBSCRIBE past its deadline: it fails now, and is
            // never written after the deliveries task has given up on it.
            let _ = command.outcome.send(Err((
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
            let _ = command.outcome.send(Err((
                FailureReason::WriteFailed,
                format!("{device} has no subscription matching {topic}"),
            )));
            return Ok(());
        }
        let payload = command.payload.to_bytes();
        if command.qos == Some(0) {
            let publish = Publish::new(topic.into_bytes(), payload.to_vec(), false);
            let result = conn.send(stream, Packet::Publish(publish, None)).await;
            let label = [("transport", self.transport)];
            return match command_written(shared, &label, command.outcome, result, payload.len()) {
                true => Ok(()),
                false => Err(CloseReason::WriteFailed),
            };
        }
        let pkid = self.next_free_pkid();
        let publish = codec::publish_qos1(&topic, &payload, pkid);
        if conn
            .send(stream, Packet::Publish(publish, None))
            .await
            .is_err()
        {
            let _ = command.outcome.send(Err((
                FailureReason::WriteFailed,
                "the connection closed".into(),
            )));
            return Err(CloseReason::WriteFailed);
        }
        shared
            .metrics
            .frame_bytes_sent
            .get_or_create(&[("transport", self.transport)])
            .inc_by(payload.len() as u64);
        self.awaiting_ack
            .insert(pkid, (command.outcome, command.deadline));
        Ok(())
    }

    fn next_free_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid != 0 && !self.awaiting_ack.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Fails the commands whose PUBACK did not come in time.
    fn expire_acks(&mut self) {
        let now = Instant::now();
        let expired: Vec<u16> = self
            .awaiting_ack
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(pkid, _)| *pkid)
            .collect();
        for pkid in expired {
            if let Some((outcome, _)) = self.awaiting_ack.remove(&pkid) {
                let _ = outcome.send(Err((FailureReason::NoAck, "no ack".into())));
            }
        }
    }

    /// Says goodbye as the protocol allows, settles what is pending, and
    /// ends the session (with the last will when the device just vanished).
    async fn finish<S: ByteStream>(
        mut self,
        shared: &Shared,
        conn: &mut Connection,
        stream: &mut S,
        reason: CloseReason,
        will: Option<LastWill>,
    ) {
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
        let still_connected = !matches!(
            reason,
            CloseReason::ConnectionLost | CloseReason::WriteFailed
        );
        // Frames already handed to the bus: acknowledge what becomes durable.
        while !self.window.is_empty() {
            match self.window.oldest_acked().await {
                (Err(error), _) => frame_lost(shared, &self.session.who, &error),
                (Ok(_), Some(pkid)) if still_connected => {
                    let ack = Packet::PubAck(
                        PubAck {
                            pkid,
                            reason: PubAckReason::Success,
                        },
                        None,
                    );
                    let _ = conn.send(stream, ack).await;
                }
                _ => {}
            }
        }
        if let Some(code) = code {
            conn.send_disconnect(stream, code).await;
        }
        if still_connected {
            stream.close().await;
        }
        for (_, (outcome, _)) in self.awaiting_ack.drain() {
            let _ = outcome.send(Err((
                FailureReason::NoAck,
                format!("the connection closed before the ack: {}", reason.as_str()),
            )));
        }
        let will = match reason {
            CloseReason::ClosedByDevice => None,
            _ => will.map(|will| {
                (
                    String::from_utf8_lossy(&will.topic).into_owned(),
                    will.message.to_vec(),
                )
            }),
        };
        self.session.close(reason, will).await;
    }
}

fn handshake_failed(shared: &Shared, transport: &'static str, reason: &'static str) {
    shared
        .metrics
        .handshake_failures
        .get_or_create(&[("transport", transport), ("reason", reason)])
        .inc();
}
