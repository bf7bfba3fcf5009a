//! UDP devices. A datagram `HELLO <token>` opens a session; the Socket
//! answers with its 8-byte session id. Data datagrams are
//! `<8-byte session id><payload>`; an empty payload is a keep-alive.
//! Commands are sent, as plain datagrams, to the address the device last
//! used. A session without datagrams for `udp.session_idle` ends.
//!
//! Replies are ASCII words: `UNAUTHORIZED`, `UNKNOWN_SESSION` (send `HELLO`
//! again), `BUSY` (connection limit), `TRY_LATER` (bus unavailable),
//! `GOING_AWAY` (shutdown), `TAKEN_OVER`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info_span, warn};
use wharf_auth::DeviceClaims;
use wharf_events::Transport;

use crate::Shared;
use crate::live::Signal;
use crate::session::{CloseReason, Session, Window, command_written, frame_lost};

type SessionId = [u8; 8];

const TRANSPORT: [(&str, &str); 1] = [("transport", "udp")];

/// A datagram for a session.
struct Datagram {
    payload: Vec<u8>,
    from: SocketAddr,
}

/// Serves UDP devices on `socket` until `stop`.
pub(crate) async fn serve(shared: Arc<Shared>, socket: UdpSocket, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let mut sessions: HashMap<SessionId, mpsc::Sender<Datagram>> = HashMap::new();
    // One message per ended session: bounded by the number of sessions.
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<SessionId>();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            Some(id) = ended.recv() => {
                sessions.remove(&id);
                continue;
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    debug!(%error, "udp receive failed");
                    continue;
                }
            },
        };
        let datagram = &buf[..len];
        if let Some(token) = datagram.strip_prefix(b"HELLO ") {
            let token = String::from_utf8_lossy(token);
            match hello(&shared, token.trim()) {
                Err(reply) => reply_to(&socket, from, reply).await,
                Ok((claims, permit)) => {
                    let id = new_session_id();
                    let (tx, rx) = mpsc::channel(shared.config.udp.queue);
                    sessions.insert(id, tx);
                    let task = session(
                        shared.clone(),
                        socket.clone(),
                        id,
                        claims,
                        from,
                        rx,
                        SessionEnd(id, ended_tx.clone()),
                        stop.clone(),
                        permit,
                    );
                    shared
                        .sessions
                        .spawn(task.instrument(info_span!("udp", peer = %from)));
                }
            }
            continue;
        }
        let Some((id, payload)) = datagram.split_first_chunk::<8>() else {
            shared.metrics.dropped("malformed");
            continue;
        };
        match sessions.get(id) {
            None => {
                shared.metrics.dropped("unknown_session");
                reply_to(&socket, from, "UNKNOWN_SESSION").await;
            }
            Some(session) => {
                let datagram = Datagram {
                    payload: payload.to_vec(),
                    from,
                };
                // The publish path is bounded: beyond it, datagrams are dropped.
                if session.try_send(datagram).is_err() {
                    shared.metrics.dropped("udp_queue_full");
                }
            }
        }
    }
}

/// Authenticates a `HELLO`; the refusal to send back otherwise.
fn hello(
    shared: &Shared,
    token: &str,
) -> Result<(DeviceClaims, OwnedSemaphorePermit), &'static str> {
    let claims = shared
        .authenticate("udp", token, None)
        .map_err(|_| "UNAUTHORIZED")?;
    let permit = shared
        .connection_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            shared
                .metrics
                .connections_refused
                .get_or_create(&[("reason", "max_connections")])
                .inc();
            "BUSY"
        })?;
    Ok((claims, permit))
}

/// Tells the dispatcher a session ended, whichever way it ends.
struct SessionEnd(SessionId, mpsc::UnboundedSender<SessionId>);

impl Drop for SessionEnd {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

#[allow(clippy::too_many_arguments)] // one task's whole context, built in one place
async fn session(
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    id: SessionId,
    claims: DeviceClaims,
    mut address: SocketAddr,
    mut datagrams: mpsc::Receiver<Datagram>,
    _end: SessionEnd,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let opened = Session::open(&shared, claims, Transport::Udp, Some(address.to_string())).await;
    let mut session = match opened {
        Ok(session) => session,
        Err(_) => return reply_to(&socket, address, "TRY_LATER").await,
    };
    let _ = socket.send_to(&id, address).await;
    let mut window = Window::new(shared.config.max_in_flight);
    let reason = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break CloseReason::ShuttingDown,
            (result, ()) = window.oldest_acked(), if !window.is_empty() => {
                if let Err(error) = result {
                    frame_lost(&shared, &session.who, &error);
                }
            }
            signal = session.mailbox.next() => {
                let command = match signal {
                    Signal::Command(command) => command,
                    Signal::Close(reason) => break reason,
                };
                let bytes = command.payload.to_bytes();
                let result = socket.send_to(&bytes, address).await.map(drop);
                command_written(&shared, &TRANSPORT, command.outcome, result, bytes.len());
            }
            // While the window is full the session's queue fills, and the
            // dispatcher drops what does not fit: backpressure for UDP.
            received = tokio::time::timeout(shared.config.udp.session_idle, datagrams.recv()), if !window.is_full() => {
                let Ok(received) = received else { break CloseReason::IdleTimeout };
                let Some(datagram) = received else { break CloseReason::ShuttingDown };
                address = datagram.from;
                if datagram.payload.is_empty() {
                    continue; // keep-alive
                }
                if datagram.payload.len() > shared.config.max_frame_bytes {
                    shared.metrics.dropped("oversized");
                    warn!(device = %session.who.device, "datagram exceeds max_frame_bytes; dropped");
                    continue;
                }
                match session.publish(None, &datagram.payload).await {
                    Ok(ack) => window.push(ack, ()),
                    // Over the rate, a datagram is dropped (and counted), not the session.
                    Err(CloseReason::RateLimited) => {}
                    Err(reason) => break reason,
                }
            }
        }
    };
    let farewell = match reason {
        CloseReason::ShuttingDown => Some("GOING_AWAY"),
        CloseReason::TakenOver => Some("TAKEN_OVER"),
        CloseReason::BusUnavailable => Some("TRY_LATER"),
        CloseReason::Revoked => Some("UNAUTHORIZED"),
        _ => None,
    };
    if let Some(word) = farewell {
        reply_to(&socket, address, word).await;
    }
    while !window.is_empty() {
        if let (Err(error), ()) = window.oldest_acked().await {
            frame_lost(&shared, &session.who, &error);
        }
    }
    session.close(reason, None).await;
}

async fn reply_to(socket: &UdpSocket, to: SocketAddr, word: &str) {
    let _ = socket.send_to(word.as_bytes(), to).await;
}

fn new_session_id() -> SessionId {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the operating system provides randomness");
    id
}
