//! Raw TCP devices. Frames are length-prefixed (a u32 big-endian length,
//! then the bytes) or, with `framing = "lines"`, newline-delimited
//! ([`codec`]). The first frame is the device token; the Socket answers
//! with a status frame (`0` ok, `1` unauthorized then close). Every later
//! frame is a `FrameReceived`; an empty frame is a keep-alive and is not
//! published. Commands are written as frames the same way. Before the
//! Socket closes a connection it writes one status frame saying why
//! ([`Status`]).

pub(crate) mod codec;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, debug_span};
use wharf_events::Transport;

use crate::accept::Listener;
use crate::close::CloseReason;
use crate::config::Framing;
use crate::gateway::Gateway;
use crate::limits::MAX_PRE_AUTH_BYTES;
use crate::live::Outbound;
use crate::session::{Frame, Link, Session, command_written, spawn};
use crate::stream::{ByteStream, poll_decoded};
pub(crate) use codec::{Decoded, FrameDecoder, Status};
use codec::{encode, encode_status};

const TRANSPORT: [(&str, &str); 1] = [("transport", "tcp")];

/// Serves TCP devices from `listener` until `stop`.
pub(crate) async fn serve(gateway: Arc<Gateway>, listener: TcpListener, stop: CancellationToken) {
    Listener::new(gateway, listener, "tcp")
        .serve(stop, |gateway, stream, peer, permit| {
            connection(gateway, stream, peer, permit).instrument(debug_span!("tcp", %peer))
        })
        .await;
}

/// Reads the next frame, reading from the stream as needed; `NeedMore`
/// when the stream ended first. Cancel-safe.
fn read_frame<'a>(
    stream: &'a mut TcpStream,
    buf: &'a mut BytesMut,
    decoder: &'a mut FrameDecoder,
    max: usize,
) -> impl Future<Output = Decoded> + Send + 'a {
    std::future::poll_fn(move |cx| {
        let frame = |buf: &mut BytesMut| {
            Ok::<_, std::convert::Infallible>(match decoder.decode(buf, max) {
                Decoded::NeedMore => None,
                decoded => Some(decoded),
            })
        };
        // The stream ended (or failed) before a whole frame: `NeedMore`.
        poll_decoded(stream, cx, buf, frame).map(|found| match found {
            Ok(found) => found.unwrap_or(Decoded::NeedMore),
        })
    })
}

async fn connection(
    gateway: Arc<Gateway>,
    mut stream: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
) {
    let (framing, max) = (gateway.config.tcp.framing, gateway.config.max_frame_bytes);
    let mut decoder = FrameDecoder::new(framing);
    let mut buf = BytesMut::new();
    let first = tokio::time::timeout(
        gateway.config.handshake_timeout,
        read_frame(
            &mut stream,
            &mut buf,
            &mut decoder,
            max.min(MAX_PRE_AUTH_BYTES),
        ),
    )
    .await;
    let token = match first {
        Ok(Decoded::Frame(token)) => token,
        Err(_) => return gateway.handshake_failed("tcp", "timeout"),
        Ok(Decoded::TooLarge(length)) => {
            debug!(length, "token frame exceeds the pre-authentication limit");
            gateway.handshake_failed("tcp", "too_large");
            return refuse(&mut stream, framing, Status::FrameTooLarge).await;
        }
        _ => return gateway.handshake_failed("tcp", "protocol"),
    };
    let token = String::from_utf8_lossy(&token);
    let claims = match gateway.authenticate("tcp", token.trim(), None) {
        Ok(claims) => claims,
        Err(_) => return refuse(&mut stream, framing, Status::Unauthorized).await,
    };
    let session =
        match Session::open(&gateway, claims, Transport::Tcp, Some(peer.to_string())).await {
            Ok(session) => session,
            Err(reason) => return refuse(&mut stream, framing, Status::of(reason)).await,
        };
    if AsyncWriteExt::write_all(&mut stream, &encode_status(framing, Status::Ok))
        .await
        .is_err()
    {
        return session.close(CloseReason::ConnectionLost, None).await;
    }
    let link = TcpLink {
        stream,
        buf,
        decoder,
        framing,
        max,
        idle: gateway.config.idle_timeout,
    };
    spawn(session, link, slot)
}

/// An authenticated TCP device's connection.
struct TcpLink {
    stream: TcpStream,
    /// Bytes read and not yet framed.
    buf: BytesMut,
    decoder: FrameDecoder,
    framing: Framing,
    max: usize,
    idle: Duration,
}

impl Link for TcpLink {
    type Then = ();
    type Inbound = Decoded;

    fn idle_timeout(&self) -> Duration {
        self.idle
    }

    async fn read(&mut self) -> Result<Decoded, CloseReason> {
        // `NeedMore` here means the stream ended: `handle` says so.
        Ok(read_frame(&mut self.stream, &mut self.buf, &mut self.decoder, self.max).await)
    }

    async fn handle(
        &mut self,
        decoded: Decoded,
        session: &Session,
    ) -> Result<Option<Frame<()>>, CloseReason> {
        match decoded {
            Decoded::NeedMore => Err(CloseReason::ConnectionLost),
            Decoded::TooLarge(length) => {
                session.gateway().metrics.dropped("oversized");
                debug!(length, max = self.max, "frame exceeds max_frame_bytes");
                Err(CloseReason::FrameTooLarge)
            }
            Decoded::Frame(frame) if frame.is_empty() => Ok(None), // keep-alive
            Decoded::Frame(bytes) => Ok(Some(Frame::of(bytes.into()))),
        }
    }

    async fn write_command(
        &mut self,
        command: Outbound,
        session: &Session,
    ) -> Result<(), CloseReason> {
        let mut out = Vec::new();
        encode(self.framing, &command.payload, &mut out);
        let result = Box::pin(AsyncWriteExt::write_all(&mut self.stream, &out)).await;
        command_written(
            session.gateway(),
            &TRANSPORT,
            command.outcome,
            result,
            out.len(),
        )
    }

    async fn goodbye(&mut self, reason: CloseReason) {
        if reason != CloseReason::ConnectionLost {
            let status = encode_status(self.framing, Status::of(reason));
            let _ = AsyncWriteExt::write_all(&mut self.stream, &status).await;
        }
        ByteStream::close(&mut self.stream).await;
    }
}

/// Writes a refusal's status and closes gracefully: the peer may still be
/// sending (the rest of a refused token frame), and closing a TCP socket
/// with unread input resets it, which can destroy the status before the peer
/// reads it.
async fn refuse(stream: &mut TcpStream, framing: Framing, status: Status) {
    let _ = AsyncWriteExt::write_all(stream, &encode_status(framing, status)).await;
    ByteStream::close(stream).await;
}
