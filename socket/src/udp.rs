//! UDP devices. A datagram `HELLO <token>` opens a session; the Socket
//! answers with its 8-byte session id. Data datagrams are
//! `<8-byte session id><payload>`; an empty payload is a keep-alive.
//! Commands are sent, as plain datagrams, to the address that opened the
//! session. A session without datagrams for `udp.session_idle` ends.
//!
//! Replies are ASCII words: `UNAUTHORIZED`, `UNKNOWN_SESSION` (send `HELLO`
//! again), `BUSY` (connection limit), `TRY_LATER` (bus unavailable),
//! `GOING_AWAY` (shutdown), `TAKEN_OVER`, `SLOW_DOWN` (too many `HELLO`s).
//!
//! UDP sources can be forged, so what an unauthenticated datagram gets is
//! kept small and rare: a datagram that is itself one of these words is
//! never answered (two Sockets, or a Socket and a forged copy of its own
//! address, would otherwise answer each other forever); refusals are sent at
//! most [`REFUSALS_PER_SECOND`] a second in all; a session belongs to the
//! address that opened it (a datagram with its id from elsewhere is
//! refused: the device says `HELLO` again after its address changed); and a
//! device may open at most one session per [`HELLO_INTERVAL`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, debug_span, warn};
use wharf_events::Transport;

use crate::close::CloseReason;
use crate::gateway::{Admitted, Gateway};
use crate::live::Outbound;
use crate::session::{Frame, Link, Session, command_written, spawn};

type SessionId = [u8; 8];

/// Every word the Socket sends; a datagram that is one of them is dropped.
const REPLY_WORDS: [&str; 7] = [
    "UNAUTHORIZED",
    "UNKNOWN_SESSION",
    "BUSY",
    "TRY_LATER",
    "GOING_AWAY",
    "TAKEN_OVER",
    "SLOW_DOWN",
];

/// Refusals sent to unauthenticated sources, a second, all sources together.
const REFUSALS_PER_SECOND: u32 = 100;

/// The least time between two sessions of one device.
const HELLO_INTERVAL: Duration = Duration::from_secs(1);

const TRANSPORT: [(&str, &str); 1] = [("transport", "udp")];

/// A datagram for a session (from the address that opened it).
struct Datagram {
    payload: Vec<u8>,
}

/// What a received datagram is, before any session is looked up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed<'a> {
    /// One of the Socket's own reply words: never answered.
    ReplyWord,
    /// `HELLO <token>`: the token's bytes, without surrounding whitespace.
    Hello(&'a [u8]),
    /// Data for session `id`; an empty payload is a keep-alive.
    Data { id: SessionId, payload: &'a [u8] },
    /// Shorter than a session id.
    Malformed,
}

/// Reads a datagram.
pub(crate) fn parse(datagram: &[u8]) -> Parsed<'_> {
    if REPLY_WORDS.iter().any(|word| datagram == word.as_bytes()) {
        return Parsed::ReplyWord;
    }
    if let Some(token) = datagram.strip_prefix(b"HELLO ") {
        return Parsed::Hello(token.trim_ascii());
    }
    match datagram.split_first_chunk::<8>() {
        Some((id, payload)) => Parsed::Data { id: *id, payload },
        None => Parsed::Malformed,
    }
}

/// Serves UDP devices on `socket` until `stop`.
pub(crate) async fn serve(gateway: Arc<Gateway>, socket: UdpSocket, stop: CancellationToken) {
    let socket = Arc::new(socket);
    // Each session's queue and the address that opened it.
    let mut sessions: HashMap<SessionId, (mpsc::Sender<Datagram>, SocketAddr)> = HashMap::new();
    let mut refusals = Refusals::default();
    // When each device last opened a session; swept as it grows.
    let mut hellos: HashMap<String, Instant> = HashMap::new();
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
        let (id, payload) = match parse(&buf[..len]) {
            Parsed::ReplyWord => {
                gateway.metrics.dropped("reply_word");
                continue;
            }
            Parsed::Malformed => {
                gateway.metrics.dropped("malformed");
                continue;
            }
            Parsed::Hello(token) => {
                // A token is ASCII: other bytes make it one that fails.
                let token = std::str::from_utf8(token).unwrap_or_default();
                match hello(&gateway, token, &mut hellos) {
                    Err(reply) => refusals.send(&gateway, &socket, from, reply).await,
                    Ok((claims, permit)) => {
                        let id = new_session_id();
                        let (tx, rx) = mpsc::channel(gateway.config.udp.queue);
                        sessions.insert(id, (tx, from));
                        let task = session(
                            gateway.clone(),
                            socket.clone(),
                            id,
                            claims,
                            from,
                            rx,
                            SessionEnd(id, ended_tx.clone()),
                            permit,
                        );
                        gateway
                            .connection_tasks
                            .spawn(task.instrument(debug_span!("udp", peer = %from)));
                    }
                }
                continue;
            }
            Parsed::Data { id, payload } => (id, payload),
        };
        match sessions.get(&id) {
            None => {
                gateway.metrics.dropped("unknown_session");
                refusals
                    .send(&gateway, &socket, from, "UNKNOWN_SESSION")
                    .await;
            }
            // A session id is no password: datagrams count only from the
            // address that opened the session.
            Some((_, opened_by)) if *opened_by != from => {
                gateway.metrics.dropped("foreign_address");
                refusals
                    .send(&gateway, &socket, from, "UNKNOWN_SESSION")
                    .await;
            }
            Some((session, _)) => {
                let datagram = Datagram {
                    payload: payload.to_vec(),
                };
                // The publish path is bounded: beyond it, datagrams are dropped.
                if session.try_send(datagram).is_err() {
                    gateway.metrics.dropped("udp_queue_full");
                }
            }
        }
    }
}

/// Authenticates a `HELLO`; the refusal to send back otherwise.
fn hello(
    gateway: &Gateway,
    token: &str,
    hellos: &mut HashMap<String, Instant>,
) -> Result<(Admitted, OwnedSemaphorePermit), &'static str> {
    let claims = gateway
        .authenticate("udp", token, None)
        .map_err(|_| "UNAUTHORIZED")?;
    let now = Instant::now();
    if hellos
        .get(&claims.sub)
        .is_some_and(|last| now.duration_since(*last) < HELLO_INTERVAL)
    {
        gateway.metrics.dropped("hello_rate");
        return Err("SLOW_DOWN");
    }
    if hellos.len() >= 10_000 {
        hellos.retain(|_, last| now.duration_since(*last) < HELLO_INTERVAL);
    }
    hellos.insert(claims.sub.clone(), now);
    let permit = gateway
        .connection_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            gateway
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
    gateway: Arc<Gateway>,
    socket: Arc<UdpSocket>,
    id: SessionId,
    claims: Admitted,
    address: SocketAddr,
    datagrams: mpsc::Receiver<Datagram>,
    end: SessionEnd,
    slot: OwnedSemaphorePermit,
) {
    let opened = Session::open(&gateway, claims, Transport::Udp, Some(address.to_string())).await;
    let session = match opened {
        Ok(session) => session,
        Err(_) => return reply_to(&socket, address, "TRY_LATER").await,
    };
    let _ = socket.send_to(&id, address).await;
    let link = UdpLink {
        socket,
        address,
        datagrams,
        idle: gateway.config.udp.session_idle,
        max_frame_bytes: gateway.config.max_frame_bytes,
        _end: end,
    };
    spawn(session, link, slot)
}

/// A UDP session: datagrams come from the dispatcher's queue, commands go
/// to the address that opened it. While the window is full the queue
/// fills, and the dispatcher drops what does not fit: backpressure for UDP.
struct UdpLink {
    socket: Arc<UdpSocket>,
    address: SocketAddr,
    datagrams: mpsc::Receiver<Datagram>,
    idle: Duration,
    max_frame_bytes: usize,
    /// Tells the dispatcher when the session ends.
    _end: SessionEnd,
}

impl Link for UdpLink {
    type Then = ();
    type Inbound = Datagram;

    const CONNECTIONLESS: bool = true;

    fn idle_timeout(&self) -> Duration {
        self.idle
    }

    async fn read(&mut self) -> Result<Datagram, CloseReason> {
        // The dispatcher is gone: the Socket is stopping.
        self.datagrams.recv().await.ok_or(CloseReason::ShuttingDown)
    }

    async fn handle(
        &mut self,
        datagram: Datagram,
        session: &Session,
    ) -> Result<Option<Frame<()>>, CloseReason> {
        if datagram.payload.is_empty() {
            return Ok(None); // keep-alive
        }
        if datagram.payload.len() > self.max_frame_bytes {
            session.gateway().metrics.dropped("oversized");
            warn!(device = %session.who.device, "datagram exceeds max_frame_bytes; dropped");
            return Ok(None);
        }
        Ok(Some(Frame::of(datagram.payload.into())))
    }

    async fn write_command(
        &mut self,
        command: Outbound,
        session: &Session,
    ) -> Result<(), CloseReason> {
        let bytes = command.payload.to_bytes();
        let result = self.socket.send_to(&bytes, self.address).await.map(drop);
        // Nothing is connected: a failed send fails the command, not the session.
        let _ = command_written(
            session.gateway(),
            &TRANSPORT,
            command.outcome,
            result,
            bytes.len(),
        );
        Ok(())
    }

    async fn goodbye(&mut self, reason: CloseReason) {
        let farewell = match reason {
            CloseReason::ShuttingDown => Some("GOING_AWAY"),
            CloseReason::TakenOver => Some("TAKEN_OVER"),
            CloseReason::BusUnavailable => Some("TRY_LATER"),
            CloseReason::Revoked => Some("UNAUTHORIZED"),
            _ => None,
        };
        if let Some(word) = farewell {
            reply_to(&self.socket, self.address, word).await;
        }
    }
}

async fn reply_to(socket: &UdpSocket, to: SocketAddr, word: &str) {
    let _ = socket.send_to(word.as_bytes(), to).await;
}

/// A token bucket over the refusals sent to unauthenticated sources: a
/// flood of forged datagrams cannot turn the Socket into an amplifier.
struct Refusals {
    tokens: u32,
    refilled: Instant,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            tokens: REFUSALS_PER_SECOND,
            refilled: Instant::now(),
        }
    }
}

impl Refusals {
    async fn send(&mut self, gateway: &Gateway, socket: &UdpSocket, to: SocketAddr, word: &str) {
        if self.refilled.elapsed() >= Duration::from_secs(1) {
            self.tokens = REFUSALS_PER_SECOND;
            self.refilled = Instant::now();
        }
        if self.tokens == 0 {
            gateway.metrics.dropped("refusal_rate");
            return;
        }
        self.tokens -= 1;
        reply_to(socket, to, word).await;
    }
}

fn new_session_id() -> SessionId {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the operating system provides randomness");
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_told_apart() {
        assert_eq!(parse(b"UNKNOWN_SESSION"), Parsed::ReplyWord);
        assert_eq!(parse(b"HELLO  abc.def \n"), Parsed::Hello(b"abc.def"));
        assert_eq!(parse(b"short"), Parsed::Malformed);
        assert_eq!(
            parse(b"12345678{\"t\":1}"),
            Parsed::Data {
                id: *b"12345678",
                payload: b"{\"t\":1}"
            }
        );
    }

    /// Found by fuzz/udp_datagram: a token that is not UTF-8 stays the
    /// bytes it was (it fails authentication) instead of growing by lossy
    /// replacement characters.
    #[test]
    fn a_token_that_is_not_utf8_is_kept_as_bytes() {
        let mut datagram = b"HELLO ".to_vec();
        datagram.extend_from_slice(&[0xc2; 50]);
        datagram.extend_from_slice(b"TRY_LATER");
        let Parsed::Hello(token) = parse(&datagram) else {
            panic!("a HELLO");
        };
        assert_eq!(token.len(), 59);
        assert!(std::str::from_utf8(token).is_err());
    }
}
