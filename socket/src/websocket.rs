//! The WebSocket listener. `/v1/ws` serves devices that send frames as
//! WebSocket messages and authenticate at the handshake
//! (`Authorization: Bearer <token>` or `?token=<token>`); `/mqtt` serves
//! MQTT over WebSocket (subprotocol `mqtt`), authenticated by its CONNECT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, debug_span};
use wharf_events::{Payload, Transport};

use crate::accept::Listener;
use crate::close::CloseReason;
use crate::gateway::{Admitted, Gateway};
use crate::live::Outbound;
use crate::session::{Frame, Link, Session, command_written, spawn};
use crate::stream::WsBytes;

/// The path WebSocket devices connect to.
pub const WS_PATH: &str = "/v1/ws";
/// The path of MQTT over WebSocket.
pub const MQTT_PATH: &str = "/mqtt";

const TRANSPORT: [(&str, &str); 1] = [("transport", "websocket")];

type WsStream = WebSocketStream<TcpStream>;

/// What the handshake decided.
enum Route {
    Device(Admitted),
    Mqtt,
}

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
    stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut route = None;
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response: Response| {
            route_request(&gateway, request, response, &mut route)
        },
        Some(ws_config(gateway.config.max_frame_bytes)),
    );
    // Boxed: the handshake's state is large and gone once it completes.
    let ws = match tokio::time::timeout(gateway.config.handshake_timeout, Box::pin(handshake)).await
    {
        Err(_) => return gateway.handshake_failed("websocket", "timeout"),
        Ok(Err(WsError::Http(_))) => return, // refused by `route_request`, already counted
        Ok(Err(error)) => {
            debug!(%error, "handshake failed");
            return gateway.handshake_failed("websocket", "protocol");
        }
        Ok(Ok(ws)) => ws,
    };
    // Boxed: the handshake's locals need not stay in the task.
    match route.expect("a completed handshake was routed") {
        Route::Mqtt => {
            let mqtt = crate::mqtt::serve(
                gateway,
                WsBytes::new(ws),
                peer,
                Transport::MqttWebsocket,
                slot,
            );
            Box::pin(mqtt).await
        }
        Route::Device(claims) => Box::pin(device(gateway, ws, claims, peer, slot)).await,
    }
}

/// A `/v1/ws` device: each text or binary message is a frame.
async fn device(
    gateway: Arc<Gateway>,
    mut ws: WsStream,
    claims: Admitted,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    tracing::Span::current().record("device", claims.sub.as_str());
    let opened = Session::open(
        &gateway,
        claims,
        Transport::Websocket,
        Some(peer.to_string()),
    );
    match opened.await {
        Ok(session) => {
            let link = WsLink {
                ws,
                idle: gateway.config.idle_timeout,
                max_frame_bytes: gateway.config.max_frame_bytes,
            };
            spawn(session, link, slot)
        }
        Err(reason) => close(&mut ws, reason, gateway.config.max_frame_bytes).await,
    }
}

/// A `/v1/ws` device's connection. One stream for both directions: the
/// driver drops the read before it writes, so no split (and its lock) is
/// needed.
struct WsLink {
    ws: WsStream,
    idle: Duration,
    max_frame_bytes: usize,
}

impl Link for WsLink {
    type Then = ();
    type Inbound = Result<Message, WsError>;

    fn idle_timeout(&self) -> Duration {
        self.idle
    }

    async fn read(&mut self) -> Result<Self::Inbound, CloseReason> {
        self.ws.next().await.ok_or(CloseReason::ConnectionLost)
    }

    async fn handle(
        &mut self,
        inbound: Self::Inbound,
        session: &Session,
    ) -> Result<Option<Frame<()>>, CloseReason> {
        let metrics = &session.gateway().metrics;
        let bytes = match inbound {
            Ok(Message::Text(text)) => text.into(),
            Ok(Message::Binary(bytes)) => bytes,
            Ok(Message::Close(_)) => return Err(CloseReason::ClosedByDevice),
            Ok(_) => return Ok(None), // ping, pong: answered by tungstenite
            Err(WsError::Capacity(error)) => {
                metrics.dropped("oversized");
                debug!(%error, "frame exceeds max_frame_bytes");
                return Err(CloseReason::FrameTooLarge);
            }
            Err(error) => {
                debug!(%error, "connection error");
                return Err(CloseReason::ConnectionLost);
            }
        };
        if bytes.len() > self.max_frame_bytes {
            metrics.dropped("oversized");
            return Err(CloseReason::FrameTooLarge);
        }
        Ok(Some(Frame::of(bytes)))
    }

    async fn write_command(
        &mut self,
        command: Outbound,
        session: &Session,
    ) -> Result<(), CloseReason> {
        let bytes = command.payload.len();
        // Boxed: the write's state exists only while it runs.
        let result = Box::pin(self.ws.send(to_message(command.payload))).await;
        command_written(
            session.gateway(),
            &TRANSPORT,
            command.outcome,
            result,
            bytes,
        )
    }

    async fn goodbye(&mut self, reason: CloseReason) {
        if !matches!(
            reason,
            CloseReason::ClosedByDevice | CloseReason::ConnectionLost
        ) {
            Box::pin(close(&mut self.ws, reason, self.max_frame_bytes)).await;
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

/// Sends the close frame that says why, and closes.
async fn close(ws: &mut WsStream, reason: CloseReason, max_frame_bytes: usize) {
    let (code, text) = close_frame(reason, max_frame_bytes);
    let frame = CloseFrame {
        code,
        reason: text.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = ws.close(None).await;
}

/// Routes the handshake by path; authenticates `/v1/ws` devices.
// The signature is tungstenite's handshake callback.
#[allow(clippy::result_large_err)]
fn route_request(
    gateway: &Gateway,
    request: &Request,
    mut response: Response,
    route: &mut Option<Route>,
) -> Result<Response, ErrorResponse> {
    match request.uri().path() {
        MQTT_PATH if gateway.config.mqtt.enabled => {
            let offers_mqtt = request
                .headers()
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .any(|protocol| protocol.trim() == "mqtt");
            if !offers_mqtt {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "MQTT over WebSocket needs the subprotocol \"mqtt\"".into(),
                ));
            }
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static("mqtt"),
            );
            *route = Some(Route::Mqtt);
            Ok(response)
        }
        WS_PATH => {
            match gateway.authenticate("websocket", token_of(request).unwrap_or_default(), None) {
                Ok(claims) => {
                    *route = Some(Route::Device(claims));
                    Ok(response)
                }
                Err(error) => Err(reject(StatusCode::UNAUTHORIZED, error.to_string())),
            }
        }
        path => Err(reject(
            StatusCode::NOT_FOUND,
            format!(
                "no websocket endpoint at {path}; devices connect to {WS_PATH} (or {MQTT_PATH} for MQTT)"
            ),
        )),
    }
}

/// The token from `Authorization: Bearer …`, or else from `?token=…`.
fn token_of(request: &Request) -> Option<&str> {
    let from_header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    from_header.or_else(|| {
        request
            .uri()
            .query()?
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    })
}

fn reject(status: StatusCode, message: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{message}\n")));
    *response.status_mut() = status;
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    // MQTT packets carry a few bytes of header around the payload; the MQTT
    // codec enforces max_frame_bytes on the payload itself.
    let max = max_frame_bytes + 1024;
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        // Allocated up front (and zero-filled) for every connection, and the
        // most one read takes: 256 bytes costs an idle connection ~390 bytes
        // less than 512, with the same ingest (docs/BENCHMARKS.md); a larger
        // frame gets room for its whole length as its header arrives.
        .read_buffer_size(256)
}

fn to_message(payload: Payload) -> Message {
    match payload {
        Payload::Json(value) => Message::text(value.to_string()),
        Payload::Binary(bytes) => Message::binary(bytes),
    }
}
