//! The WebSocket listener. `/v1/ws` serves devices that send frames as
//! WebSocket messages and authenticate at the handshake
//! (`Authorization: Bearer <token>` or `?token=<token>`); `/mqtt` serves
//! MQTT over WebSocket (subprotocol `mqtt`), authenticated by its CONNECT.

use std::net::SocketAddr;
use std::sync::Arc;

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
use tracing::{Instrument as _, debug, info_span};
use wharf_events::{Payload, Transport};

use crate::accept::Listener;
use crate::live::Signal;
use crate::session::{CloseReason, Session, Window, command_written, frame_lost};
use crate::stream::WsBytes;
use crate::{Admitted, Shared};

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
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    Listener::new(shared, listener, "websocket")
        .serve(stop, |shared, stream, peer, stop, permit| {
            connection(shared, stream, peer, stop, permit)
                .instrument(info_span!("ws", %peer, device = tracing::field::Empty))
        })
        .await;
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut route = None;
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response: Response| {
            route_request(&shared, request, response, &mut route)
        },
        Some(ws_config(shared.config.max_frame_bytes)),
    );
    // Boxed: the handshake's state is large and gone once it completes.
    let ws = match tokio::time::timeout(shared.config.handshake_timeout, Box::pin(handshake)).await
    {
        Err(_) => return handshake_failed(&shared, "timeout"),
        Ok(Err(WsError::Http(_))) => return, // refused by `route_request`, already counted
        Ok(Err(error)) => {
            debug!(%error, "handshake failed");
            return handshake_failed(&shared, "protocol");
        }
        Ok(Ok(ws)) => ws,
    };
    // Boxed: the handshake's locals need not stay in the task.
    match route.expect("a completed handshake was routed") {
        Route::Mqtt => {
            let mqtt = crate::mqtt::serve(
                shared,
                WsBytes::new(ws),
                peer,
                Transport::MqttWebsocket,
                stop,
            );
            Box::pin(mqtt).await
        }
        Route::Device(claims) => Box::pin(device(shared, ws, claims, peer, stop)).await,
    }
}

/// A `/v1/ws` device: each text or binary message is a frame.
async fn device(
    shared: Arc<Shared>,
    mut ws: WsStream,
    claims: Admitted,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    tracing::Span::current().record("device", claims.sub.as_str());
    let mut session = match Session::open(
        &shared,
        claims,
        Transport::Websocket,
        Some(peer.to_string()),
    )
    .await
    {
        Ok(session) => session,
        Err(reason) => {
            close(&mut ws, reason, &shared).await;
            return;
        }
    };
    // One stream for both directions: select! drops the read future before
    // a branch's handler writes, so no split (and its lock) is needed.
    let mut window = Window::new(shared.config.max_in_flight);
    let idle = shared.config.idle_timeout;
    let reason = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break CloseReason::ShuttingDown,
            (result, ()) = window.oldest_acked(), if !window.is_empty() => {
                if let Err(error) = result {
                    frame_lost(&shared, &session.who, &error);
                    break CloseReason::BusUnavailable;
                }
            }
            signal = session.mailbox.next() => {
                let command = match signal {
                    Signal::Command(command) => command,
                    Signal::Close(reason) => break reason,
                };
                let bytes = command.payload.len();
                // Boxed: the write's state exists only while it runs.
                let result = Box::pin(ws.send(to_message(command.payload))).await;
                if !command_written(&shared, &TRANSPORT, command.outcome, result, bytes) {
                    break CloseReason::WriteFailed;
                }
            }
            // Reading stops while the window is full: backpressure.
            message = tokio::time::timeout(idle, ws.next()), if !window.is_full() => {
                let bytes = match message {
                    Err(_) => break CloseReason::IdleTimeout,
                    Ok(None) => break CloseReason::ConnectionLost,
                    Ok(Some(Ok(Message::Text(text)))) => text.as_bytes().to_vec(),
                    Ok(Some(Ok(Message::Binary(bytes)))) => bytes.to_vec(),
                    Ok(Some(Ok(Message::Close(_)))) => break CloseReason::ClosedByDevice,
                    Ok(Some(Ok(_))) => continue, // ping, pong: answered by tungstenite
                    Ok(Some(Err(WsError::Capacity(error)))) => {
                        shared.metrics.dropped("oversized");
                        debug!(%error, "frame exceeds max_frame_bytes");
                        break CloseReason::FrameTooLarge;
                    }
                    Ok(Some(Err(error))) => {
                        debug!(%error, "connection error");
                        break CloseReason::ConnectionLost;
                    }
                };
                if bytes.len() > shared.config.max_frame_bytes {
                    shared.metrics.dropped("oversized");
                    break CloseReason::FrameTooLarge;
                }
                match session.publish(None, &bytes).await {
                    Ok(ack) => window.push(ack, ()),
                    Err(reason) => break reason,
                }
            }
        }
    };
    if !matches!(
        reason,
        CloseReason::ClosedByDevice | CloseReason::ConnectionLost
    ) {
        let (code, text) = close_frame(reason, shared.config.max_frame_bytes);
        let frame = CloseFrame {
            code,
            reason: text.into(),
        };
        let _ = Box::pin(ws.send(Message::Close(Some(frame)))).await;
        let _ = Box::pin(ws.close(None)).await;
    }
    while !window.is_empty() {
        if let (Err(error), ()) = window.oldest_acked().await {
            frame_lost(&shared, &session.who, &error);
        }
    }
    session.close(reason, None).await;
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

async fn close(ws: &mut WsStream, reason: CloseReason, shared: &Shared) {
    let (code, text) = close_frame(reason, shared.config.max_frame_bytes);
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: text.into(),
        })))
        .await;
    let _ = ws.close(None).await;
}

fn handshake_failed(shared: &Shared, reason: &'static str) {
    shared
        .metrics
        .handshake_failures
        .get_or_create(&[("transport", "websocket"), ("reason", reason)])
        .inc();
}

/// Routes the handshake by path; authenticates `/v1/ws` devices.
// The signature is tungstenite's handshake callback.
#[allow(clippy::result_large_err)]
fn route_request(
    shared: &Shared,
    request: &Request,
    mut response: Response,
    route: &mut Option<Route>,
) -> Result<Response, ErrorResponse> {
    match request.uri().path() {
        MQTT_PATH if shared.config.mqtt.enabled => {
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
            match shared.authenticate("websocket", token_of(request).unwrap_or_default(), None) {
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
        // Allocated up front for every connection: keep it small.
        .read_buffer_size(512)
}

fn to_message(payload: Payload) -> Message {
    match payload {
        Payload::Json(value) => Message::text(value.to_string()),
        Payload::Binary(bytes) => Message::binary(bytes),
    }
}
