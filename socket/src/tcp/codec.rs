//! The raw TCP wire format, without sockets: frames length-prefixed (a u32
//! big-endian length, then the bytes) or newline-delimited, and the
//! one-byte status frames the Socket answers with.

use base64::Engine as _;
use bytes::{Buf as _, BytesMut};
use wharf_events::Payload;

use crate::close::CloseReason;
use crate::config::Framing;

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
    pub(crate) fn of(reason: CloseReason) -> Status {
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

pub(crate) fn encode_status(framing: Framing, status: Status) -> Vec<u8> {
    match framing {
        Framing::Length => vec![0, 0, 0, 1, status as u8],
        Framing::Lines => format!("{}\n", status as u8).into_bytes(),
    }
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
