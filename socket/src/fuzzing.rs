//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): each
//! runs untrusted bytes through one decoder exactly as the Socket does,
//! without sockets or a bus. Not part of the Socket's API.

use bytes::BytesMut;

use crate::config::Framing;
use crate::limits::MAX_PRE_AUTH_BYTES;
use crate::mqtt::Connection;
use crate::tcp::{Decoded, FrameDecoder};

/// The MQTT path of a connection: the Socket's own [`Connection`] reads
/// the CONNECT under the pre-authentication limit (which picks the protocol
/// version), then packets under `max_packet`, fed in chunks of `chunk`
/// bytes as reads would bring them.
pub fn mqtt(bytes: &[u8], chunk: usize, max_packet: usize) {
    let mut connection = Connection::new(max_packet);
    let mut connected = false;
    for piece in bytes.chunks(chunk.max(1)) {
        connection.buf.extend_from_slice(piece);
        if !connected {
            match connection.buffered_connect() {
                Ok(Some(_)) => connected = true,
                Ok(None) => continue,
                Err(_) => return,
            }
        }
        loop {
            match connection.read_buffered() {
                Ok(Some(received)) => {
                    let _ = crate::mqtt::codec::packet_kind(&received.packet);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// TCP framing (`lines` or length-prefixed): the token frame under the
/// pre-authentication limit, then frames under `max`, in chunks.
pub fn tcp(bytes: &[u8], lines: bool, chunk: usize, max: usize) {
    let framing = if lines {
        Framing::Lines
    } else {
        Framing::Length
    };
    let mut decoder = FrameDecoder::new(framing);
    let mut buf = BytesMut::new();
    let mut authenticated = false;
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let limit = if authenticated {
                max
            } else {
                max.min(MAX_PRE_AUTH_BYTES)
            };
            match decoder.decode(&mut buf, limit) {
                Decoded::Frame(frame) => {
                    assert!(frame.len() <= limit, "a frame over the limit came out");
                    authenticated = true;
                }
                Decoded::NeedMore => break,
                Decoded::TooLarge(_) => return,
            }
        }
    }
}

/// A UDP datagram as the receive loop reads it.
pub fn udp(datagram: &[u8]) {
    match crate::udp::parse(datagram) {
        crate::udp::Parsed::Data { id, payload } => {
            assert_eq!(id.len() + payload.len(), datagram.len());
        }
        crate::udp::Parsed::Hello(token) => assert!(token.len() + 6 <= datagram.len()),
        crate::udp::Parsed::ReplyWord | crate::udp::Parsed::Malformed => {}
    }
}

/// `/v1/ws` frames after the handshake, fed in chunks of `chunk` bytes:
/// whatever comes out is within `max`, and text is UTF-8.
pub fn websocket_frames(bytes: &[u8], chunk: usize, max: usize) {
    use crate::websocket::frames::{Decoded, FrameDecoder};
    let mut decoder = FrameDecoder::default();
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf, max) {
                Ok(Some(Decoded::Text(text))) => {
                    assert!(text.len() <= max, "a message over the limit came out");
                    assert!(std::str::from_utf8(&text).is_ok(), "text that is not UTF-8");
                }
                Ok(Some(Decoded::Binary(bytes))) => {
                    assert!(bytes.len() <= max, "a message over the limit came out");
                }
                Ok(Some(Decoded::Ping(bytes))) => assert!(bytes.len() <= 125),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// A frame from device `t-1` as the Socket tells answers to commands from
/// other frames: on an MQTT topic (`topic` set) or as a JSON frame. What
/// comes out is an answer only within `max_reply_bytes`, with a result only
/// when it says `ok` and an error only when it does not.
pub fn device_answer(topic: Option<&str>, bytes: &[u8], max_reply_bytes: usize) {
    use crate::replies::{Inbound, recognise};
    match recognise("t-1", topic, bytes, max_reply_bytes) {
        Inbound::Reply(answer) => {
            assert!(bytes.len() <= max_reply_bytes, "an answer over the limit");
            assert!(answer.result.is_none() || answer.ok, "a result without ok");
            assert!(answer.error.is_none() || !answer.ok, "an error with ok");
        }
        Inbound::Frame | Inbound::Refused(_) => {}
    }
}

/// A WebSocket upgrade request arriving in reads of `chunk` bytes, through
/// the Socket's own handshake parser: a request is taken only whole, and
/// the bytes after it are kept, never more than came.
pub fn websocket_upgrade(bytes: &[u8], chunk: usize) {
    use crate::websocket::upgrade::{MAX_REQUEST_BYTES, parse};
    let mut buf = BytesMut::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        match parse(&mut buf) {
            Ok(None) if buf.len() < MAX_REQUEST_BYTES => continue,
            Ok(None) | Err(_) => return,
            Ok(Some(request)) => {
                assert!(request.early.len() < buf.len(), "kept more than came");
                assert!(request.path.len() < buf.len());
                return;
            }
        }
    }
}
