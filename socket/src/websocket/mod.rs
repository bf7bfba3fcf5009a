//! The WebSocket listener. `/v1/ws` serves devices that send frames as
//! WebSocket messages and authenticate at the handshake
//! (`Authorization: Bearer <token>` or `?token=<token>`); `/mqtt` serves
//! MQTT over WebSocket (subprotocol `mqtt`), authenticated by its CONNECT.
//! The upgrade handshake is our own ([`upgrade`]) and so is the decoder of a
//! `/v1/ws` device's frames ([`frames`]), which keeps an idle connection
//! small; MQTT over WebSocket runs on tungstenite after the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, debug_span};
use wharf_events::{Payload, Transport};

use crate::accept::Listener;
use crate::close::CloseReason;
use crate::gateway::{Admitted, Gateway};
use crate::live::Outbound;
use crate::session::{Frame, Link, Session, command_written, spawn};
use crate::stream::{ByteStream, WsBytes, poll_decoded};
use frames::{Decoded, FrameDecoder, FrameError};

/// The path WebSocket devices connect to.
pub const WS_PATH: &str = "/v1/ws";
/// The path of MQTT over WebSocket.
pub const MQTT_PATH: &str = "/mqtt";

pub(crate) mod frames;
pub(crate) mod upgrade;

use upgrade::UpgradeError;

const TRANSPORT: [(&str, &str); 1] = [("transport", "websocket")];

/// Serves WebSocket connections from `listener` until `stop`.
pub(crate) async fn serve(gateway: Arc<Gateway>, listener: TcpListener, stop: CancellationToken) {
    Listener::new(gateway, listener, "websocket")
        .serve(stop, |gateway, stream, peer, permit| {
            connection(gateway, stream, peer, permit)
                .instrument(debug_span!("ws", %peer, device = tracing::field::Empty))
        })
        .await;
}

async fn connection(
    gateway: Arc<Gateway>,
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    let read = upgrade::read_request(&mut stream);
    let request = match tokio::time::timeout(gateway.config.handshake_timeout, read).await {
        Err(_) => return gateway.handshake_failed("websocket", "timeout"),
        Ok(Err(UpgradeError::TooLarge)) => {
            return gateway.handshake_failed("websocket", "too_large");
        }
        Ok(Err(UpgradeError::Closed)) => return gateway.handshake_failed("websocket", "protocol"),
        Ok(Err(UpgradeError::Malformed(why))) => {
            debug!(why, "not a WebSocket upgrade");
            refuse(&mut stream, 400, why).await;
            return gateway.handshake_failed("websocket", "protocol");
        }
        Ok(Ok(request)) => request,
    };
    match request.path.as_str() {
        MQTT_PATH if gateway.config.mqtt.enabled => {
            if !request.offers_mqtt {
                let why = "MQTT over WebSocket needs the subprotocol \"mqtt\"";
                return refuse(&mut stream, 400, why).await;
            }
            let answer = upgrade::switching_protocols(&request.accept, Some("mqtt"));
            if AsyncWriteExt::write_all(&mut stream, answer.as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let config = Some(ws_config(gateway.config.max_frame_bytes));
            let ws = if request.early.is_empty() {
                WebSocketStream::from_raw_socket(stream, Role::Server, config).await
            } else {
                let early = request.early.to_vec();
                WebSocketStream::from_partially_read(stream, early, Role::Server, config).await
            };
            let mqtt = crate::mqtt::serve(
                gateway,
                WsBytes::new(ws),
                peer,
                Transport::MqttWebsocket,
                slot,
            );
            Box::pin(mqtt).await
        }
        WS_PATH => {
            let token = token_of(request.authorization.as_deref(), request.query.as_deref());
            let claims = match gateway.authenticate("websocket", token.unwrap_or_default(), None) {
                Ok(claims) => claims,
                Err(error) => return refuse(&mut stream, 401, &error.to_string()).await,
            };
            let device = device(gateway, stream, request, claims, peer, slot);
            Box::pin(device).await
        }
        path => {
            let why = format!(
                "no websocket endpoint at {path}; devices connect to {WS_PATH} (or {MQTT_PATH} for MQTT)"
            );
            refuse(&mut stream, 404, &why).await
        }
    }
}

/// Answers the upgrade request with `status` and `message`, and closes.
async fn refuse(stream: &mut TcpStream, status: u16, message: &str) {
    let answer = upgrade::refusal(status, message);
    let _ = AsyncWriteExt::write_all(stream, answer.as_bytes()).await;
    ByteStream::close(stream).await;
}

/// A `/v1/ws` device: each text or binary message is a frame, read with
/// our own decoder ([`frames`]).
///
/// The handshake is answered once the session is open (its
/// `DeviceConnected` durable on the bus), as an MQTT CONNACK is: a device
/// that is told it is connected is known to be, and devices connecting all
/// at once wait for the bus instead of piling up half-open sessions.
async fn device(
    gateway: Arc<Gateway>,
    mut stream: TcpStream,
    request: upgrade::UpgradeRequest,
    claims: Admitted,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    tracing::Span::current().record("device", claims.sub.as_str());
    let max_frame_bytes = gateway.config.max_frame_bytes;
    let opened = Session::open(
        &gateway,
        claims,
        Transport::Websocket,
        Some(peer.to_string()),
    )
    .await;
    let answer = upgrade::switching_protocols(&request.accept, None);
    // A failed write shows as the session's first read failing.
    let _ = AsyncWriteExt::write_all(&mut stream, answer.as_bytes()).await;
    match opened {
        Ok(session) => {
            let link = WsLink {
                stream,
                buf: request.early,
                decoder: FrameDecoder::default(),
                idle: gateway.config.idle_timeout,
                max_frame_bytes,
                device_closed_with: None,
            };
            spawn(session, link, slot)
        }
        Err(reason) => close(&mut stream, reason, max_frame_bytes).await,
    }
}

/// A `/v1/ws` device's connection.
struct WsLink {
    stream: TcpStream,
    /// Bytes read and not yet decoded; freed when empty.
    buf: BytesMut,
    decoder: FrameDecoder,
    idle: Duration,
    max_frame_bytes: usize,
    /// The status code of the device's close frame, echoed in ours.
    device_closed_with: Option<u16>,
}

impl Link for WsLink {
    type Then = ();
    type Inbound = Result<Decoded, FrameError>;

    fn idle_timeout(&self) -> Duration {
        self.idle
    }

    fn read(&mut self) -> impl Future<Output = Result<Self::Inbound, CloseReason>> + Send {
        let WsLink {
            stream,
            buf,
            decoder,
            max_frame_bytes: max,
            ..
        } = self;
        std::future::poll_fn(move |cx| {
            let frame = |buf: &mut BytesMut| decoder.decode(buf, *max);
            poll_decoded(stream, cx, buf, frame).map(|read| match read {
                Ok(Some(decoded)) => Ok(Ok(decoded)),
                Ok(None) => Err(CloseReason::ConnectionLost),
                Err(error) => Ok(Err(error)),
            })
        })
    }

    async fn handle(
        &mut self,
        inbound: Self::Inbound,
        session: &Session,
    ) -> Result<Option<Frame<()>>, CloseReason> {
        let metrics = &session.gateway().metrics;
        let bytes = match inbound {
            Ok(Decoded::Text(bytes) | Decoded::Binary(bytes)) => bytes,
            Ok(Decoded::Ping(bytes)) => {
                let pong = frames::pong_frame(&bytes);
                return match AsyncWriteExt::write_all(&mut self.stream, &pong).await {
                    Ok(()) => Ok(None),
                    Err(_) => Err(CloseReason::ConnectionLost),
                };
            }
            Ok(Decoded::Pong) => return Ok(None),
            Ok(Decoded::Close(code)) => {
                self.device_closed_with = code;
                return Err(CloseReason::ClosedByDevice);
            }
            Err(FrameError::TooLarge(size)) => {
                metrics.dropped("oversized");
                debug!(size, "frame exceeds max_frame_bytes");
                return Err(CloseReason::FrameTooLarge);
            }
            Err(error) => {
                debug!(?error, "the device broke the WebSocket protocol");
                return Err(CloseReason::ProtocolError);
            }
        };
        Ok(Some(Frame::of(bytes)))
    }

    async fn write_command(
        &mut self,
        command: Outbound,
        session: &Session,
    ) -> Result<(), CloseReason> {
        let frame = match &command.payload {
            Payload::Json(value) => frames::message_frame(true, value.to_string().as_bytes()),
            Payload::Binary(bytes) => frames::message_frame(false, bytes),
        };
        let bytes = command.payload.len();
        let result = AsyncWriteExt::write_all(&mut self.stream, &frame).await;
        command_written(
            session.gateway(),
            &TRANSPORT,
            command.outcome,
            result,
            bytes,
        )
    }

    async fn goodbye(&mut self, reason: CloseReason) {
        match reason {
            CloseReason::ConnectionLost => {}
            // The close handshake: the device's close is answered with its
            // own code (RFC 6455 5.5.1).
            CloseReason::ClosedByDevice => {
                let echo = frames::close_frame(self.device_closed_with.unwrap_or(1000), "");
                let _ = AsyncWriteExt::write_all(&mut self.stream, &echo).await;
                ByteStream::close(&mut self.stream).await;
            }
            _ => Box::pin(close(&mut self.stream, reason, self.max_frame_bytes)).await,
        }
    }
}

/// The WebSocket close code and reason a device sees for `reason`.
fn close_frame(reason: CloseReason, max_frame_bytes: usize) -> (CloseCode, String) {
    match reason {
        CloseReason::ShuttingDown => (CloseCode::Away, "server shutting down".into()),
        CloseReason::TakenOver => (CloseCode::Normal, "session taken over".into()),
        CloseReason::FrameTooLarge => (
            CloseCode::Size,
            format!("frame exceeds max_frame_bytes ({max_frame_bytes})"),
        ),
        CloseReason::RateLimited => (CloseCode::Policy, "rate limit exceeded".into()),
        CloseReason::Revoked => (CloseCode::Policy, "device revoked".into()),
        CloseReason::IdleTimeout => (CloseCode::Away, "idle timeout".into()),
        CloseReason::BusUnavailable => {
            (CloseCode::Error, "bus unavailable, try again later".into())
        }
        other => (CloseCode::Error, other.as_str().into()),
    }
}

/// Sends the close frame that says why, and closes gracefully (what the
/// device still sends is read and dropped for a moment, so the close frame
/// is not lost to a reset).
async fn close(stream: &mut TcpStream, reason: CloseReason, max_frame_bytes: usize) {
    let (code, text) = close_frame(reason, max_frame_bytes);
    let frame = frames::close_frame(code.into(), &text);
    let _ = AsyncWriteExt::write_all(stream, &frame).await;
    ByteStream::close(stream).await;
}

/// The token from `Authorization: Bearer …`, or else from `?token=…`.
fn token_of<'a>(authorization: Option<&'a str>, query: Option<&'a str>) -> Option<&'a str> {
    let from_header = authorization.and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    });
    from_header.or_else(|| {
        query?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    })
}

fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    // MQTT packets carry a few bytes of header around the payload; the MQTT
    // codec enforces max_frame_bytes on the payload itself.
    let max = max_frame_bytes + 1024;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        // Allocated up front (and zero-filled) for every MQTT-over-WebSocket
        // connection (`/v1/ws` devices leave tungstenite after the
        // handshake), and the most one read takes; a larger frame gets room
        // for its whole length as its header arrives.
        .read_buffer_size(256)
}
