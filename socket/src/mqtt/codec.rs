//! MQTT 3.1.1 and 5 packets, on rumqttd's codecs (`V4`, `V5`). Only the
//! codecs: the session, authentication and topic rules are Wharf's.
//!
//! Two things rumqttd's public API does not offer are done here on the raw
//! bytes: picking the protocol version from the CONNECT, and reading a
//! PUBLISH's QoS and packet id (its fields are crate-private). Packets a
//! client never sends to a server are refused before decoding: rumqttd's
//! decoders assume well-formed input for some of them.

use bytes::{Bytes, BytesMut};
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{Packet, Protocol as _, Publish, QoS};

/// A codec error that ends the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CodecError {
    /// The packet is larger than the limit.
    TooLarge(usize),
    /// Not a valid MQTT packet for a server to receive.
    Malformed(String),
    /// A protocol level other than 4 (3.1.1) or 5.
    UnsupportedVersion(u8),
}

/// The name of a packet's kind, for logs: never its fields (a CONNECT
/// holds the device's token).
pub(crate) fn packet_kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(..) => "CONNACK",
        Packet::Publish(..) => "PUBLISH",
        Packet::PubAck(..) => "PUBACK",
        Packet::PingReq(..) => "PINGREQ",
        Packet::PingResp(..) => "PINGRESP",
        Packet::Subscribe(..) => "SUBSCRIBE",
        Packet::SubAck(..) => "SUBACK",
        Packet::PubRec(..) => "PUBREC",
        Packet::PubRel(..) => "PUBREL",
        Packet::PubComp(..) => "PUBCOMP",
        Packet::Unsubscribe(..) => "UNSUBSCRIBE",
        Packet::UnsubAck(..) => "UNSUBACK",
        Packet::Disconnect(..) => "DISCONNECT",
    }
}

/// The fixed header of the packet at the start of a buffer.
struct FixedHeader {
    first: u8,
    /// Bytes of the fixed header: the first byte and the length varint.
    header_len: usize,
    remaining: usize,
}

impl FixedHeader {
    fn kind(&self) -> u8 {
        self.first >> 4
    }

    fn frame_len(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Parses the fixed header; `None` until enough bytes arrived.
fn fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for (index, byte) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                first,
                header_len: index + 2,
                remaining,
            }));
        }
    }
    if buf.len() >= 5 {
        Err(CodecError::Malformed(
            "remaining length longer than 4 bytes".into(),
        ))
    } else {
        Ok(None)
    }
}

/// QoS and packet id of a complete PUBLISH at the start of `buf`.
fn publish_qos_and_id(buf: &[u8], header: &FixedHeader) -> Option<(u8, u16)> {
    let qos = (header.first >> 1) & 0b11;
    if qos == 0 {
        return Some((0, 0));
    }
    let topic_len_at = header.header_len;
    let topic_len = u16::from_be_bytes([*buf.get(topic_len_at)?, *buf.get(topic_len_at + 1)?]);
    let id_at = topic_len_at + 2 + usize::from(topic_len);
    Some((
        qos,
        u16::from_be_bytes([*buf.get(id_at)?, *buf.get(id_at + 1)?]),
    ))
}

/// A packet and, for a PUBLISH, its QoS and packet id.
pub(crate) struct Received {
    pub(crate) packet: Packet,
    pub(crate) qos: u8,
    pub(crate) pkid: u16,
}

/// The codec of the protocol version the client connected with.
pub(crate) enum Codec {
    V4(V4),
    V5(V5),
}

impl Codec {
    /// Picks the codec from the CONNECT at the start of `buf`; `None` until
    /// enough bytes arrived.
    pub(crate) fn detect(buf: &[u8]) -> Result<Option<Codec>, CodecError> {
        let Some(header) = fixed_header(buf)? else {
            return Ok(None);
        };
        if header.kind() != 1 {
            return Err(CodecError::Malformed(
                "the first packet must be CONNECT".into(),
            ));
        }
        let at = header.header_len;
        if buf.len() < at + 7 {
            return Ok(None);
        }
        if buf[at..at + 6] != [0, 4, b'M', b'Q', b'T', b'T'] {
            return Err(CodecError::UnsupportedVersion(3));
        }
        match buf[at + 6] {
            4 => Ok(Some(Codec::V4(V4))),
            5 => Ok(Some(Codec::V5(V5))),
            level => Err(CodecError::UnsupportedVersion(level)),
        }
    }

    pub(crate) fn is_v5(&self) -> bool {
        matches!(self, Codec::V5(_))
    }

    /// Takes the next packet out of `buf`; `None` until it is complete.
    pub(crate) fn read(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Option<Received>, CodecError> {
        let Some(header) = Self::whole_packet(buf, max)? else {
            return Ok(None);
        };
        let (qos, pkid) = if header.kind() == 3 {
            publish_qos_and_id(buf, &header)
                .ok_or_else(|| CodecError::Malformed("truncated PUBLISH".into()))?
        } else {
            (0, 0)
        };
        let packet = match self {
            Codec::V4(codec) => codec.read_mut(buf, max),
            Codec::V5(codec) => codec.read_mut(buf, max),
        }
        .map_err(|error| CodecError::Malformed(error.to_string()))?;
        Ok(Some(Received { packet, qos, pkid }))
    }

    /// Whether `buf` starts with a whole packet a client may send, without
    /// decoding it; a packet over `max` bytes, or of a kind no client
    /// sends, is refused from its fixed header.
    pub(crate) fn has_packet(buf: &mut BytesMut, max: usize) -> Result<bool, CodecError> {
        Self::whole_packet(buf, max).map(|header| header.is_some())
    }

    fn whole_packet(buf: &mut BytesMut, max: usize) -> Result<Option<FixedHeader>, CodecError> {
        let Some(header) = fixed_header(buf)? else {
            return Ok(None);
        };
        if header.frame_len() > max {
            return Err(CodecError::TooLarge(header.frame_len()));
        }
        // Only what a client sends to a server; PINGREQ has no body.
        let allowed = matches!(header.kind(), 1 | 3..=8 | 10 | 12 | 14);
        if !allowed || (header.kind() == 12 && header.remaining != 0) {
            return Err(CodecError::Malformed(format!(
                "unexpected packet type {}",
                header.kind()
            )));
        }
        if buf.len() < header.frame_len() {
            buf.reserve(header.frame_len() - buf.len());
            return Ok(None);
        }
        Ok(Some(header))
    }

    /// Encodes `packet` onto `out`. v4 packets must carry no properties.
    pub(crate) fn write(&self, packet: Packet, out: &mut BytesMut) -> Result<(), CodecError> {
        match self {
            Codec::V4(codec) => codec.write(packet, out),
            Codec::V5(codec) => codec.write(packet, out),
        }
        .map(drop)
        .map_err(|error| CodecError::Malformed(error.to_string()))
    }
}

/// An MQTT 5 DISCONNECT with `reason` and no properties. Written by hand:
/// rumqttd 0.20 encodes a remaining length of 1 but appends an empty
/// property length, a byte clients read as the start of another packet.
pub(crate) fn disconnect_v5(reason: u8) -> [u8; 3] {
    [0xe0, 0x01, reason]
}

/// A QoS 1 PUBLISH of `payload` on `topic` with packet id `pkid`.
pub(crate) fn publish_qos1(topic: &str, payload: &[u8], pkid: u16) -> Publish {
    // rumqttd keeps QoS and packet id crate-private but rebuilds a PUBLISH
    // from its own segment layout: header, packet id, topic, payload.
    let mut segment = Vec::with_capacity(5 + topic.len() + payload.len());
    segment.push(0b0011_0000 | (QoS::AtLeastOnce as u8) << 1);
    segment.extend_from_slice(&pkid.to_be_bytes());
    segment.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    segment.extend_from_slice(topic.as_bytes());
    segment.extend_from_slice(payload);
    Publish::deserialize(Bytes::from(segment))
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::{Connect, Login, PubAck, PubAckReason};

    use super::*;

    fn connect_bytes(codec: &Codec) -> BytesMut {
        let mut out = BytesMut::new();
        let connect = Connect {
            keep_alive: 30,
            client_id: "c".into(),
            clean_session: true,
        };
        let login = Some(Login {
            username: "d".into(),
            password: "t".into(),
        });
        codec
            .write(Packet::Connect(connect, None, None, None, login), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn tells_v4_from_v5_by_the_connect() {
        for codec in [Codec::V4(V4), Codec::V5(V5)] {
            let bytes = connect_bytes(&codec);
            assert!(Codec::detect(&bytes[..3]).unwrap().is_none());
            let detected = Codec::detect(&bytes).unwrap().unwrap();
            assert_eq!(detected.is_v5(), codec.is_v5());
        }
        let not_connect = [0x30, 0x02, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(Codec::detect(&not_connect).is_err());
    }

    #[test]
    fn reads_qos_and_packet_id_of_a_publish() {
        let codec = Codec::V4(V4);
        let mut out = BytesMut::new();
        codec
            .write(
                Packet::Publish(publish_qos1("devices/d/t", b"{}", 42), None),
                &mut out,
            )
            .unwrap();
        out.extend_from_slice(&[0xc0, 0x00]); // and a PINGREQ behind it
        let mut reader = Codec::V4(V4);
        let received = reader.read(&mut out, 1024).unwrap().unwrap();
        assert_eq!((received.qos, received.pkid), (1, 42));
        let Packet::Publish(publish, _) = received.packet else {
            panic!("expected a PUBLISH");
        };
        assert_eq!(&publish.topic[..], b"devices/d/t");
        assert!(matches!(
            reader.read(&mut out, 1024).unwrap().unwrap().packet,
            Packet::PingReq(_)
        ));
        assert!(reader.read(&mut out, 1024).unwrap().is_none());
    }

    #[test]
    fn refuses_oversized_and_server_only_packets() {
        let codec = Codec::V5(V5);
        let mut out = BytesMut::new();
        codec
            .write(
                Packet::Publish(publish_qos1("t", &[0; 300], 1), None),
                &mut out,
            )
            .unwrap();
        let mut reader = Codec::V5(V5);
        assert!(matches!(
            reader.read(&mut out, 100),
            Err(CodecError::TooLarge(_))
        ));
        let mut connack = BytesMut::from(&[0x20, 0x03, 0, 0, 0][..]);
        assert!(matches!(
            reader.read(&mut connack, 100),
            Err(CodecError::Malformed(_))
        ));
        let mut odd_ping = BytesMut::from(&[0xc0, 0x01, 0][..]);
        assert!(matches!(
            reader.read(&mut odd_ping, 100),
            Err(CodecError::Malformed(_))
        ));
        let ack = Packet::PubAck(
            PubAck {
                pkid: 1,
                reason: PubAckReason::Success,
            },
            None,
        );
        assert!(codec.write(ack, &mut BytesMut::new()).is_ok());
    }
}
