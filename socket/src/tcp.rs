//! Raw TCP devices. Frames are length-prefixed (a u32 big-endian length,
//! then the bytes) or, with `framing = "lines"`, newline-delimited. The
//! first frame is the device token; the Socket answers with a status frame
//! (`0` ok, `1` unauthorized then close). Every later frame is a
//! `FrameReceived`; an empty frame is a keep-alive and is not published.
//! Commands are written as frames the same way. Before the Socket closes a
//! connection it writes one status frame saying why ([`Status`]).

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, info_span};
use wharf_events::{Payload, Transport};

use crate::Shared;
use crate::accept::Listener;
use crate::config::Framing;
use crate::limits::MAX_PRE_AUTH_BYTES;
use crate::live::Signal;
use crate::session::{CloseReason, Session, Window, command_written, frame_lost};

const TRANSPORT: [(&str, &str); 1] = [("transport", "tcp")];

/// The one-byte status frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    Ok = 0,
    Unauthorized = 1,
    FrameTooLarge = 2,
    RateLimited = 3,
    GoingAway = 4,
    TakenOver = 5,
    /// The bus is unavailable; reconnect later.
    TryLater = 6,
    IdleTimeout = 7,
    ProtocolError = 8,
}

impl Status {
    fn of(reason: CloseReason) -> Status {
        match reason {
            CloseReason::FrameTooLarge => Status::FrameTooLarge,
            CloseReason::RateLimited => Status::RateLimited,
            CloseReason::ShuttingDown => Status::GoingAway,
            CloseReason::TakenOver => Status::TakenOver,
            // The token no longer admits the device: as at the handshake.
            CloseReason::Revoked => Status::Unauthorized,
            CloseReason::BusUnavailable => Status::TryLater,
            CloseReason::IdleTimeout => Status::IdleTimeout,
            _ => Status::ProtocolError,
        }
    }
}

/// What the codec found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    Frame(Vec<u8>),
    NeedMore,
    /// A frame longer than the limit: the connection closes.
    TooLarge(usize),
}

/// How much the buffer grows ahead of a length-prefixed frame's bytes: a
/// peer announcing a large frame gets room as its bytes arrive, not up
/// front.
const RESERVE_AHEAD: usize = 64 * 1024;

/// Splits a connection's byte stream into frames.
pub(crate) struct FrameDecoder {
    framing: Framing,
    /// Lines framing: how far from the buffer's start no newline was found,
    /// so each byte is scanned once however the line arrives.
    scanned: usize,
}

impl FrameDecoder {
    pub(crate) fn new(framing: Framing) -> Self {
        FrameDecoder {
            framing,
            scanned: 0,
        }
    }

    /// Takes the next frame out of `buf`; a frame over `max` bytes is
    /// refused before its bytes are read.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut, max: usize) -> Decoded {
        match self.framing {
            Framing::Length => {
                if buf.len() < 4 {
                    return Decoded::NeedMore;
                }
                let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if length > max {
                    return Decoded::TooLarge(length);
                }
                if buf.len() < 4 + length {
                    buf.reserve((4 + length - buf.len()).min(RESERVE_AHEAD));
                    return Decoded::NeedMore;
                }
                buf.advance(4);
                Decoded::Frame(buf.split_to(length).to_vec())
            }
            Framing::Lines => {
                let start = self.scanned.min(buf.len());
                match buf[start..].iter().position(|b| *b == b'\n') {
                    Some(at) if start + at > max => Decoded::TooLarge(start + at),
                    Some(at) => {
                        self.scanned = 0;
                        let mut line = buf.split_to(start + at + 1).to_vec();
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        Decoded::Frame(line)
                    }
                    None if buf.len() > max => Decoded::TooLarge(buf.len()),
                    None => {
                        self.scanned = buf.len();
                        Decoded::NeedMore
                    }
                }
            }
        }
    }

    /// Lines framing: where the next scan starts (for tests).
    #[cfg(test)]
    fn scanned(&self) -> usize {
        self.scanned
    }
}

/// Appends `payload` as one frame to `out`. In lines framing, JSON goes as
/// compact text and anything else as base64, so a frame never holds a newline.
pub(crate) fn encode(framing: Framing, payload: &Payload, out: &mut Vec<u8>) {
    match framing {
        Framing::Length => {
            let bytes = payload.to_bytes();
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(&bytes);
        }
        Framing::Lines => {
            match payload {
                Payload::Json(value) => out.extend_from_slice(value.to_string().as_bytes()),
                Payload::Binary(bytes) => out.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .as_bytes(),
                ),
            }
            out.push(b'\n');
        }
    }
}

fn encode_status(framing: Framing, status: Status) -> Vec<u8> {
    match framing {
        Framing::Length => vec![0, 0, 0, 1, status as u8],
        Framing::Lines => format!("{}\n", status as u8).into_bytes(),
    }
}

/// Serves TCP devices from `listener` until `stop`.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    Listener::new(shared, listener, "tcp")
        .serve(stop, |shared, stream, peer, stop, permit| {
            connection(shared, stream, peer, stop, permit).instrument(info_span!("tcp", %peer))
        })
        .await;
}

/// Reads the next frame, reading from the stream as needed. Cancel-safe.
async fn read_frame(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    decoder: &mut FrameDecoder,
    max: usize,
) -> std::io::Result<Decoded> {
    loop {
        match decoder.decode(buf, max) {
            Decoded::NeedMore => {
                if stream.read_buf(buf).await? == 0 {
                    return Ok(Decoded::NeedMore);
                }
            }
            decoded => return Ok(decoded),
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (framing, max) = (shared.config.tcp.framing, shared.config.max_frame_bytes);
    let mut decoder = FrameDecoder::new(framing);
    let mut buf = BytesMut::new();
    let first = tokio::time::timeout(
        shared.config.handshake_timeout,
        read_frame(
            &mut stream,
            &mut buf,
            &mut decoder,
            max.min(MAX_PRE_AUTH_BYTES),
        ),
    )
    .await;
    let token = match first {
        Ok(Ok(Decoded::Frame(token))) => token,
        Err(_) => return handshake_failed(&shared, "timeout"),
        Ok(Ok(Decoded::TooLarge(length))) => {
            debug!(length, "token frame exceeds the pre-authentication limit");
            handshake_failed(&shared, "too_large");
            return refuse(&mut stream, framing, Status::FrameTooLarge).await;
        }
        _ => return handshake_failed(&shared, "protocol"),
    };
    let token = String::from_utf8_lossy(&token);
    let claims = match shared.authenticate("tcp", token.trim(), None) {
        Ok(claims) => claims,
        Err(_) => return refuse(&mut stream, framing, Status::Unauthorized).await,
    };
    let mut session =
        match Session::open(&shared, claims, Transport::Tcp, Some(peer.to_string())).await {
            Ok(session) => session,
            Err(reason) => return refuse(&mut stream, framing, Status::of(reason)).await,
        };
    if stream
        .write_all(&encode_status(framing, Status::Ok))
        .await
        .is_err()
    {
        return session.close(CloseReason::ConnectionLost, None).await;
    }
    let mut window = Window::new(shared.config.max_in_flight);
    let mut out = Vec::new();
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
                out.clear();
                encode(framing, &command.payload, &mut out);
                let result = Box::pin(stream.write_all(&out)).await;
                if !command_written(&shared, &TRANSPORT, command.outcome, result, out.len()) {
                    break CloseReason::WriteFailed;
                }
            }
            read = tokio::time::timeout(shared.config.idle_timeout, read_frame(&mut stream, &mut buf, &mut decoder, max)), if !window.is_full() => {
                match read {
                    Err(_) => break CloseReason::IdleTimeout,
                    Ok(Err(_)) | Ok(Ok(Decoded::NeedMore)) => break CloseReason::ConnectionLost,
                    Ok(Ok(Decoded::TooLarge(length))) => {
                        shared.metrics.dropped("oversized");
                        debug!(length, max, "frame exceeds max_frame_bytes");
                        break CloseReason::FrameTooLarge;
                    }
                    Ok(Ok(Decoded::Frame(frame))) if frame.is_empty() => {} // keep-alive
                    Ok(Ok(Decoded::Frame(frame))) => match session.publish(None, &frame).await {
                        Ok(ack) => window.push(ack, ()),
                        Err(reason) => break reason,
                    },
                }
            }
        }
    };
    if reason != CloseReason::ConnectionLost {
        let _ = stream
            .write_all(&encode_status(framing, Status::of(reason)))
            .await;
    }
    crate::stream::ByteStream::close(&mut stream).await;
    while !window.is_empty() {
        if let (Err(error), ()) = window.oldest_acked().await {
            frame_lost(&shared, &session.who, &error);
        }
    }
    session.close(reason, None).await;
}

/// Writes a refusal's status and closes gracefully: the peer may still be
/// sending (the rest of a refused token frame), and closing a TCP socket
/// with unread input resets it, which can destroy the status before the peer
/// reads it.
async fn refuse(stream: &mut TcpStream, framing: Framing, status: Status) {
    let _ = stream.write_all(&encode_status(framing, status)).await;
    crate::stream::ByteStream::close(stream).await;
}

fn handshake_failed(shared: &Shared, reason: &'static str) {
    shared
        .metrics
        .handshake_failures
        .get_or_create(&[("transport", "tcp"), ("reason", reason)])
        .inc();
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(framing: Framing, buf: &mut BytesMut, max: usize) -> Decoded {
        FrameDecoder::new(framing).decode(buf, max)
    }

    #[test]
    fn length_frames_come_out_whole_and_in_order() {
        let mut buf = BytesMut::from(&[0, 0, 0, 2, b'h', b'i', 0, 0, 0, 3, b'y'][..]);
        assert_eq!(
            decode(Framing::Length, &mut buf, 16),
            Decoded::Frame(b"hi".to_vec())
        );
        assert_eq!(decode(Framing::Length, &mut buf, 16), Decoded::NeedMore);
        buf.extend_from_slice(b"ou");
        assert_eq!(
            decode(Framing::Length, &mut buf, 16),
            Decoded::Frame(b"you".to_vec())
        );
    }

    #[test]
    fn refuses_frames_over_the_limit_before_reading_them() {
        let mut buf = BytesMut::from(&[0, 0, 1, 0][..]);
        assert_eq!(
            decode(Framing::Length, &mut buf, 16),
            Decoded::TooLarge(256)
        );
        let mut lines = BytesMut::from(&b"0123456789abcdefXYZ"[..]);
        assert_eq!(
            decode(Framing::Lines, &mut lines, 16),
            Decoded::TooLarge(19)
        );
    }

    #[test]
    fn lines_drop_the_line_end() {
        let mut buf = BytesMut::from(&b"token\r\n{\"t\":1}\npart"[..]);
        assert_eq!(
            decode(Framing::Lines, &mut buf, 64),
            Decoded::Frame(b"token".to_vec())
        );
        assert_eq!(
            decode(Framing::Lines, &mut buf, 64),
            Decoded::Frame(b"{\"t\":1}".to_vec())
        );
        assert_eq!(decode(Framing::Lines, &mut buf, 64), Decoded::NeedMore);
    }

    #[test]
    fn a_line_arriving_in_pieces_is_scanned_once() {
        let mut decoder = FrameDecoder::new(Framing::Lines);
        let mut buf = BytesMut::new();
        for _ in 0..1000 {
            buf.extend_from_slice(b"0123456789");
            assert_eq!(decoder.decode(&mut buf, 1 << 20), Decoded::NeedMore);
            // The next read scans only what arrives after this point.
            assert_eq!(decoder.scanned(), buf.len());
        }
        buf.extend_from_slice(b"!\nnext");
        let Decoded::Frame(line) = decoder.decode(&mut buf, 1 << 20) else {
            panic!("a whole line");
        };
        assert_eq!(line.len(), 10_001);
        assert_eq!(decoder.scanned(), 0);
        assert_eq!(decoder.decode(&mut buf, 1 << 20), Decoded::NeedMore);
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn a_large_announced_frame_reserves_room_as_it_arrives() {
        let mut buf = BytesMut::from(&(1u32 << 24).to_be_bytes()[..]);
        assert_eq!(
            decode(Framing::Length, &mut buf, 1 << 25),
            Decoded::NeedMore
        );
        assert!(
            buf.capacity() <= 4 + RESERVE_AHEAD + 64,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn commands_encode_per_framing() {
        let mut out = Vec::new();
        encode(
            Framing::Length,
            &Payload::Json(json!({"on": true})),
            &mut out,
        );
        assert_eq!(out, b"\x00\x00\x00\x0b{\"on\":true}");
        out.clear();
        encode(Framing::Lines, &Payload::Binary(vec![0, 10, 255]), &mut out);
        assert_eq!(out, b"AAr/\n");
        assert_eq!(encode_status(Framing::Lines, Status::Unauthorized), b"1\n");
    }
}
