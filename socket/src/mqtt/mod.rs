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
mod connection;
mod link;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rumqttd::protocol::{ConnectReturnCode, LastWill, Packet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, debug_span};
use wharf_events::Transport;

use crate::accept::Listener;
use crate::close::CloseReason;
use crate::gateway::Gateway;
use crate::session::{Session, spawn};
use crate::stream::ByteStream;
use codec::CodecError;
pub(crate) use connection::Connection;
use link::MqttLink;

/// Room for the topic and headers around a payload of `max_frame_bytes`.
const PACKET_OVERHEAD: usize = 1024;

/// Serves MQTT over TCP from `listener` until `stop`.
pub(crate) async fn serve_tcp(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    stop: CancellationToken,
) {
    Listener::new(gateway, listener, "mqtt")
        .serve(stop, |gateway, stream: TcpStream, peer, permit| {
            serve(gateway, stream, peer, Transport::Mqtt, permit)
                .instrument(debug_span!("mqtt", %peer, device = tracing::field::Empty))
        })
        .await;
}

/// Runs one MQTT connection, from CONNECT to close.
pub(crate) async fn serve<S: ByteStream + 'static>(
    gateway: Arc<Gateway>,
    mut stream: S,
    peer: SocketAddr,
    transport: Transport,
    slot: OwnedSemaphorePermit,
) {
    // The handshake is boxed, and the session runs in a task of its own:
    // an idle connection holds only what the session needs.
    let accepted = Box::pin(accept(&gateway, &mut stream, peer, transport)).await;
    let Some((session, conn, will, idle)) = accepted else {
        return;
    };
    let link = MqttLink {
        stream,
        conn,
        subscriptions: Vec::new(),
        awaiting_ack: Vec::new(),
        next_pkid: 0,
        transport,
        will: will.map(|will| {
            Box::new((
                String::from_utf8_lossy(&will.topic).into_owned(),
                will.message.to_vec(),
            ))
        }),
        idle,
    };
    spawn(session, link, slot)
}

/// A device past CONNECT: its announced session, its connection, its last
/// will and how long it may stay silent.
type Accepted = (Session, Connection, Option<LastWill>, Duration);

/// Reads the CONNECT, authenticates, opens the session and answers with a
/// CONNACK; `None` when the device was refused or went away.
async fn accept<S: ByteStream>(
    gateway: &Arc<Gateway>,
    stream: &mut S,
    peer: SocketAddr,
    transport: Transport,
) -> Option<Accepted> {
    let mut conn = Connection::new(gateway.config.max_frame_bytes + PACKET_OVERHEAD);
    let label = transport.as_str();
    let connect =
        tokio::time::timeout(gateway.config.handshake_timeout, conn.read_connect(stream)).await;
    let (connect, will, login) = match connect {
        Err(_) => {
            gateway.handshake_failed(label, "timeout");
            return None;
        }
        Ok(Err(CodecError::TooLarge(length))) => {
            debug!(length, "CONNECT exceeds the pre-authentication limit");
            gateway.handshake_failed(label, "too_large");
            return None;
        }
        Ok(Err(error)) => {
            debug!(?error, "no valid CONNECT");
            gateway.handshake_failed(label, "protocol");
            return None;
        }
        Ok(Ok(Packet::Connect(connect, _, will, _, login))) => (connect, will, login),
        Ok(Ok(_)) => unreachable!("read_connect returns only CONNECT"),
    };
    // username = device id, password = token, and the token must name the device.
    let (token, device) = login.as_ref().map_or(("", None), |login| {
        (login.password.as_str(), Some(login.username.as_str()))
    });
    let claims = match gateway.authenticate(label, token, device) {
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
        gateway
            .metrics
            .acl_denied
            .get_or_create(&[("kind", "will")])
            .inc();
        let _ = conn
            .send_connack(stream, ConnectReturnCode::NotAuthorized)
            .await;
        return None;
    }
    let opened = Session::open(gateway, claims, transport, Some(peer.to_string())).await;
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
        true => gateway.config.idle_timeout,
        false => keep_alive.min(gateway.config.idle_timeout),
    };
    Some((session, conn, will, idle))
}
