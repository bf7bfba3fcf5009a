//! WebSocket devices: `ws://HOST:PORT/v1/ws`, authenticated at the handshake
//! with `Authorization: Bearer <token>` or `?token=<token>`. Each text or
//! binary message is one frame; command frames are written back as text
//! (JSON) or binary messages.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, debug, info_span, warn};
use wharf_auth::DeviceClaims;
use wharf_bus::PendingAck;
use wharf_events::{Payload, Transport};

use crate::Shared;
use crate::events_out::DeviceIdentity;
use crate::live::{ConnectionHandle, Outbound};

/// The path devices connect to.
pub const WS_PATH: &str = "/v1/ws";

const TRANSPORT: [(&str, &str); 1] = [("transport", "websocket")];

type WsStream = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Accepts connections until `shutdown`, then waits for every session to
/// close and publish its disconnect.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    let sessions = TaskTracker::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let span = info_span!("ws", %peer, device = tracing::field::Empty);
                    sessions.spawn(
                        session(shared.clone(), stream, peer, shutdown.clone()).instrument(span),
                    );
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(%error, "failed to accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
    sessions.close();
    sessions.wait().await;
}

async fn session(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut claims = None;
    #[allow(clippy::result_large_err)] // tungstenite's callback signature
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |request: &Request, response: Response| authorize(&shared, request, response, &mut claims),
        Some(ws_config(shared.config.max_frame_bytes)),
    );
    let ws = match tokio::time::timeout(shared.config.handshake_timeout, handshake).await {
        Err(_) => {
            shared
                .metrics
                .handshake_failures
                .get_or_create(&[("reason", "timeout")])
                .inc();
            debug!("handshake timed out");
            return;
        }
        Ok(Err(WsError::Http(_))) => return, // refused by `authorize`, already counted
        Ok(Err(error)) => {
            shared
                .metrics
                .handshake_failures
                .get_or_create(&[("reason", "protocol")])
                .inc();
            debug!(%error, "handshake failed");
            return;
        }
        Ok(Ok(ws)) => ws,
    };
    let claims = claims.expect("a completed handshake passed authorization");
    let who = DeviceIdentity {
        device: claims.sub,
        model: claims.model,
        transport: Transport::Websocket,
        connection: wharf_events::new_id(),
    };
    tracing::Span::current().record("device", who.device.as_str());
    let (outbound_tx, outbound_rx) = mpsc::channel(shared.config.outbound_queue);
    let taken_over = CancellationToken::new();
    let handle = ConnectionHandle {
        id: who.connection,
        outbound: outbound_tx,
        taken_over: taken_over.clone(),
    };
    if let Some(previous) = shared.live.insert(&who.device, handle) {
        shared.metrics.takeovers.inc();
        previous.taken_over.cancel();
    }
    let gauge = shared.metrics.connections.get_or_create(&TRANSPORT).clone();
    gauge.inc();

    let reason = match shared.events.connected(&who, Some(peer.to_string())).await {
        Ok(()) => {
            debug!(device = %who.device, "device connected");
            run_session(&shared, ws, &who, outbound_rx, &taken_over, &shutdown).await
        }
        Err(error) => {
            warn!(%error, device = %who.device, "failed to publish the connect; closing");
            let mut ws = ws;
            close(
                &mut ws,
                CloseCode::Error,
                "bus unavailable, try again later",
            )
            .await;
            "bus unavailable"
        }
    };
    shared.live.remove(&who.device, who.connection);
    gauge.dec();
    if let Err(error) = shared.events.disconnected(&who, reason).await {
        warn!(%error, device = %who.device, "failed to publish the disconnect");
    }
    debug!(device = %who.device, reason, "device disconnected");
}

/// Reads frames and writes commands until the connection ends; returns why.
async fn run_session(
    shared: &Shared,
    ws: WsStream,
    who: &DeviceIdentity,
    mut outbound: mpsc::Receiver<Outbound>,
    taken_over: &CancellationToken,
    shutdown: &CancellationToken,
) -> &'static str {
    let (mut sink, mut stream) = ws.split();
    let mut in_flight: VecDeque<PendingAck> = VecDeque::new();
    let reason = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                close(&mut sink, CloseCode::Away, "server shutting down").await;
                break "socket shutting down";
            }
            _ = taken_over.cancelled() => {
                close(&mut sink, CloseCode::Normal, "session taken over").await;
                break "session taken over";
            }
            Some(command) = outbound.recv() => {
                let bytes = command.payload.len() as u64;
                let result = sink.send(to_message(command.payload)).await;
                let failed = result.is_err();
                if !failed {
                    shared.metrics.frames_sent.get_or_create(&TRANSPORT).inc();
                    shared.metrics.frame_bytes_sent.get_or_create(&TRANSPORT).inc_by(bytes);
                }
                let _ = command.written.send(result.map_err(|error| error.to_string()));
                if failed {
                    break "write failed";
                }
            }
            message = stream.next() => {
                let bytes = match message {
                    None => break "connection closed",
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(bytes))) => bytes.to_vec(),
                    Some(Ok(Message::Close(_))) => break "closed by device",
                    Some(Ok(_)) => continue, // ping, pong: answered by tungstenite
                    Some(Err(WsError::Capacity(error))) => {
                        shared.metrics.frames_dropped.get_or_create(&[("reason", "oversized")]).inc();
                        warn!(%error, device = %who.device, "frame exceeds max_frame_bytes; closing");
                        let text = format!("frame exceeds max_frame_bytes ({})", shared.config.max_frame_bytes);
                        close(&mut sink, CloseCode::Size, &text).await;
                        break "frame too large";
                    }
                    Some(Err(error)) => {
                        debug!(%error, "connection error");
                        break "connection error";
                    }
                };
                if let Err(reason) = publish_frame(shared, who, &bytes, &mut in_flight).await {
                    close(&mut sink, CloseCode::Error, "bus unavailable, try again later").await;
                    break reason;
                }
            }
        }
    };
    for ack in in_flight {
        if let Err(error) = ack.await {
            frame_lost(shared, who, &error);
        }
    }
    reason
}

/// Queues the frame on the bus; stops reading (by waiting on the oldest
/// acknowledgement) once `max_in_flight` frames are unacknowledged.
async fn publish_frame(
    shared: &Shared,
    who: &DeviceIdentity,
    bytes: &[u8],
    in_flight: &mut VecDeque<PendingAck>,
) -> Result<(), &'static str> {
    shared
        .metrics
        .frames_received
        .get_or_create(&TRANSPORT)
        .inc();
    shared
        .metrics
        .frame_bytes_received
        .get_or_create(&TRANSPORT)
        .inc_by(bytes.len() as u64);
    let ack = shared
        .events
        .frame(who, None, bytes)
        .await
        .map_err(|error| {
            frame_lost(shared, who, &error);
            "bus unavailable"
        })?;
    in_flight.push_back(ack);
    loop {
        let must_wait = in_flight.len() > shared.config.max_in_flight;
        let Some(front) = in_flight.front_mut() else {
            break;
        };
        let result = if must_wait {
            Some(front.await)
        } else {
            front.now_or_never()
        };
        match result {
            None => break,
            Some(result) => {
                in_flight.pop_front();
                if let Err(error) = result {
                    frame_lost(shared, who, &error);
                    return Err("bus unavailable");
                }
            }
        }
    }
    Ok(())
}

fn frame_lost(shared: &Shared, who: &DeviceIdentity, error: &wharf_bus::Error) {
    shared
        .metrics
        .frames_dropped
        .get_or_create(&[("reason", "bus_unavailable")])
        .inc();
    warn!(%error, device = %who.device, "frame did not reach the bus");
}

/// Checks the path and the token while the handshake is under way.
// The signature is tungstenite's handshake callback.
#[allow(clippy::result_large_err)]
fn authorize(
    shared: &Shared,
    request: &Request,
    response: Response,
    claims: &mut Option<DeviceClaims>,
) -> Result<Response, ErrorResponse> {
    let path = request.uri().path();
    if path != WS_PATH {
        return Err(reject(
            StatusCode::NOT_FOUND,
            format!("no websocket endpoint at {path}; devices connect to {WS_PATH}"),
        ));
    }
    match shared
        .verifier
        .verify(token_of(request).unwrap_or_default())
    {
        Ok(verified) => {
            *claims = Some(verified);
            Ok(response)
        }
        Err(error) => {
            shared
                .metrics
                .auth_failures
                .get_or_create(&[("reason", error.label())])
                .inc();
            debug!(%error, "refused a device");
            Err(reject(StatusCode::UNAUTHORIZED, error.to_string()))
        }
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
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
        // Allocated up front for every connection: keep it small.
        .read_buffer_size(4096)
}

fn to_message(payload: Payload) -> Message {
    match payload {
        Payload::Json(value) => Message::text(value.to_string()),
        Payload::Binary(bytes) => Message::binary(bytes),
    }
}

async fn close<S>(sink: &mut S, code: CloseCode, reason: &str)
where
    S: futures_util::Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}
