//! WebSocket frames of `/v1/ws` devices after the handshake (RFC 6455,
//! server side, no extensions), without sockets: client frames decoded and
//! unmasked into whole messages (fragments joined, control frames between
//! them answered), server frames encoded unmasked.
//!
//! Our own, rather than tungstenite's, because an idle device connection
//! must cost little: tungstenite keeps a read buffer allocated and
//! zero-filled for every connection, two waker proxies and its protocol
//! state; here an idle connection holds a decoder of one pointer and no
//! buffer. The handshake, and MQTT over WebSocket, stay with tungstenite.

use bytes::{Buf as _, Bytes, BytesMut};

/// What the decoder found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole text message: valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    /// Answered with a pong carrying the same bytes.
    Ping(Bytes),
    Pong,
    /// The device closes, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the connection must close.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A message longer than the limit (its announced length, or the
    /// fragments so far): refused before its bytes are read.
    TooLarge(u64),
    /// The device broke RFC 6455 (unmasked frame, reserved bits, unknown
    /// opcode, a fragmented control frame, a continuation of nothing…).
    Protocol(&'static str),
    /// A text message that is not UTF-8.
    InvalidUtf8,
}

/// How much the buffer grows ahead of a large frame's bytes: room comes as
/// the bytes arrive, not up front.
const RESERVE_AHEAD: usize = 64 * 1024;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A message arriving in fragments.
#[derive(Debug)]
struct Partial {
    text: bool,
    bytes: BytesMut,
}

/// Splits a device's byte stream into messages. Holds nothing but a
/// message arriving in fragments, boxed: most connections never have one.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    partial: Option<Box<Partial>>,
}

impl FrameDecoder {
    /// Takes the next message or control frame out of `buf`; `Ok(None)`
    /// when more bytes are needed. A message over `max` bytes is refused.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Decoded>, FrameError> {
        loop {
            let Some(header) = Header::parse(buf)? else {
                return Ok(None);
            };
            let control = header.opcode >= CLOSE;
            if control && (!header.fin || header.len > 125) {
                return Err(FrameError::Protocol(
                    "a control frame must be whole and short",
                ));
            }
            let so_far = self.partial.as_ref().map_or(0, |p| p.bytes.len()) as u64;
            if !control && header.len + so_far > max as u64 {
                return Err(FrameError::TooLarge(header.len + so_far));
            }
            let whole = header.header_len + header.len as usize;
            if buf.len() < whole {
                buf.reserve((whole - buf.len()).min(RESERVE_AHEAD));
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.len as usize);
            unmask(&mut payload, header.mask);
            match header.opcode {
                TEXT | BINARY if self.partial.is_some() => {
                    return Err(FrameError::Protocol(
                        "a new message before the last one ended",
                    ));
                }
                TEXT | BINARY if header.fin => {
                    return message(header.opcode == TEXT, payload).map(Some);
                }
                TEXT | BINARY => {
                    self.partial = Some(Box::new(Partial {
                        text: header.opcode == TEXT,
                        bytes: payload,
                    }));
                }
                CONTINUATION => {
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(FrameError::Protocol("a continuation of no message"));
                    };
                    partial.bytes.extend_from_slice(&payload);
                    if header.fin {
                        let partial = self.partial.take().expect("a message in fragments");
                        return message(partial.text, partial.bytes).map(Some);
                    }
                }
                CLOSE => {
                    return match payload.len() {
                        0 => Ok(Some(Decoded::Close(None))),
                        1 => Err(FrameError::Protocol("a close frame of one byte")),
                        _ => Ok(Some(Decoded::Close(Some(u16::from_be_bytes([
                            payload[0], payload[1],
                        ]))))),
                    };
                }
                PING => return Ok(Some(Decoded::Ping(payload.freeze()))),
                PONG => return Ok(Some(Decoded::Pong)),
                _ => return Err(FrameError::Protocol("an unknown opcode")),
            }
        }
    }
}

fn message(text: bool, bytes: BytesMut) -> Result<Decoded, FrameError> {
    if text {
        std::str::from_utf8(&bytes).map_err(|_| FrameError::InvalidUtf8)?;
        Ok(Decoded::Text(bytes.freeze()))
    } else {
        Ok(Decoded::Binary(bytes.freeze()))
    }
}

/// A frame's header, once all of it is in the buffer.
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
    header_len: usize,
}

impl Header {
    fn parse(buf: &BytesMut) -> Result<Option<Header>, FrameError> {
        let [first, second, ..] = buf[..] else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(FrameError::Protocol(
                "reserved bits set (no extension was agreed)",
            ));
        }
        if second & 0x80 == 0 {
            return Err(FrameError::Protocol("an unmasked frame from a client"));
        }
        let (len, at) = match second & 0x7f {
            126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 if buf.len() >= 10 => {
                let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
                if len >> 63 != 0 {
                    return Err(FrameError::Protocol("a length with its top bit set"));
                }
                (len, 10)
            }
            126 | 127 => return Ok(None),
            len => (u64::from(len), 2),
        };
        if buf.len() < at + 4 {
            return Ok(None);
        }
        Ok(Some(Header {
            fin: first & 0x80 != 0,
            opcode: first & 0x0f,
            mask: buf[at..at + 4].try_into().expect("4 bytes"),
            len,
            header_len: at + 4,
        }))
    }
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Appends a server frame (unmasked, whole) to `out`.
fn encode(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        len if len < 126 => out.push(len as u8),
        len if len <= usize::from(u16::MAX) => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A text (`text`) or binary message as one frame.
pub(crate) fn message_frame(text: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    encode(if text { TEXT } else { BINARY }, payload, &mut out);
    out
}

/// A pong answering a ping's bytes.
pub(crate) fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2);
    encode(PONG, payload, &mut out);
    out
}

/// A close frame with `code` and as much of `reason` as fits (123 bytes,
/// cut at a character boundary).
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    let mut out = Vec::with_capacity(payload.len() + 2);
    encode(CLOSE, &payload, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as a client must send it.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len if len < 126 => out.push(0x80 | len as u8),
            len if len <= 65535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(bytes: &[u8], max: usize) -> Vec<Result<Decoded, FrameError>> {
        let mut decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // A byte at a time: every split of a frame is seen.
        for byte in bytes {
            buf.extend_from_slice(&[*byte]);
            loop {
                match decoder.decode(&mut buf, max) {
                    Ok(Some(decoded)) => out.push(Ok(decoded)),
                    Ok(None) => break,
                    Err(error) => {
                        out.push(Err(error));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_arrive() {
        let mut bytes = client(true, TEXT, b"{\"t\":21}");
        bytes.extend(client(true, BINARY, &[0, 1, 2]));
        bytes.extend(client(true, BINARY, &vec![7; 300]));
        bytes.extend(client(true, BINARY, &vec![9; 70_000]));
        let out = decode_all(&bytes, 1 << 20);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], Ok(Decoded::Text(Bytes::from_static(b"{\"t\":21}"))));
        assert_eq!(out[1], Ok(Decoded::Binary(Bytes::from_static(&[0, 1, 2]))));
        assert_eq!(out[2], Ok(Decoded::Binary(Bytes::from(vec![7; 300]))));
        assert_eq!(out[3], Ok(Decoded::Binary(Bytes::from(vec![9; 70_000]))));
    }

    #[test]
    fn fragments_join_and_control_frames_come_between() {
        let mut bytes = client(false, TEXT, b"hel");
        bytes.extend(client(true, PING, b"p"));
        bytes.extend(client(false, CONTINUATION, b"lo "));
        bytes.extend(client(true, CONTINUATION, b"you"));
        bytes.extend(client(true, CLOSE, &1000u16.to_be_bytes()));
        let out = decode_all(&bytes, 1024);
        assert_eq!(
            out,
            [
                Ok(Decoded::Ping(Bytes::from_static(b"p"))),
                Ok(Decoded::Text(Bytes::from_static(b"hello you"))),
                Ok(Decoded::Close(Some(1000))),
            ]
        );
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let unmasked = [0x81, 0x01, b'a'];
        assert_eq!(
            decode_all(&unmasked, 64),
            [Err(FrameError::Protocol("an unmasked frame from a client"))]
        );
        let mut reserved = client(true, TEXT, b"a");
        reserved[0] |= 0x40;
        assert!(matches!(
            decode_all(&reserved, 64)[..],
            [Err(FrameError::Protocol(_))]
        ));
        let orphan = client(true, CONTINUATION, b"a");
        assert!(matches!(
            decode_all(&orphan, 64)[..],
            [Err(FrameError::Protocol(_))]
        ));
        let fragmented_ping = client(false, PING, b"a");
        assert!(matches!(
            decode_all(&fragmented_ping, 64)[..],
            [Err(FrameError::Protocol(_))]
        ));
        let mut interleaved = client(false, BINARY, b"a");
        interleaved.extend(client(true, BINARY, b"b"));
        assert!(matches!(
            decode_all(&interleaved, 64)[..],
            [Err(FrameError::Protocol(_))]
        ));
        let unknown = client(true, 0x3, b"a");
        assert!(matches!(
            decode_all(&unknown, 64)[..],
            [Err(FrameError::Protocol(_))]
        ));
        assert_eq!(
            decode_all(&client(true, TEXT, &[0xff, 0xfe]), 64),
            [Err(FrameError::InvalidUtf8)]
        );
    }

    #[test]
    fn a_large_message_is_refused_from_its_header_or_its_fragments() {
        let mut announced = vec![0x82, 0x80 | 127];
        announced.extend_from_slice(&(1u64 << 40).to_be_bytes());
        announced.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode_all(&announced, 1024),
            [Err(FrameError::TooLarge(1 << 40))]
        );
        let mut fragments = client(false, BINARY, &[1; 600]);
        fragments.extend(client(true, CONTINUATION, &[1; 600]));
        assert_eq!(
            decode_all(&fragments, 1024),
            [Err(FrameError::TooLarge(1200))]
        );
        // Room for a large frame is reserved as its bytes come.
        let mut buf = BytesMut::from(&client(true, BINARY, &vec![0; 1 << 20])[..10]);
        assert_eq!(FrameDecoder::default().decode(&mut buf, 1 << 21), Ok(None));
        assert!(
            buf.capacity() <= 10 + RESERVE_AHEAD + 64,
            "{}",
            buf.capacity()
        );
    }

    #[test]
    fn server_frames_are_unmasked_and_sized() {
        assert_eq!(message_frame(true, b"hi"), [0x81, 2, b'h', b'i']);
        let long = message_frame(false, &[0; 300]);
        assert_eq!(&long[..4], &[0x82, 126, 1, 44]);
        assert_eq!(pong_frame(b"p"), [0x8a, 1, b'p']);
        let close = close_frame(1009, &"é".repeat(100));
        assert_eq!(&close[..4], &[0x88, 124, 0x03, 0xf1]);
        assert!(std::str::from_utf8(&close[4..]).is_ok());
    }
}
