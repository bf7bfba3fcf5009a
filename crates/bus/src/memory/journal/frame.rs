//! The journal's on-disk frames: pure encoding and decoding, no I/O.
//!
//! A segment file starts with [`MAGIC`], then holds frames back to back:
//!
//! ```text
//! frame := body_len: u32 LE | crc32c(body): u32 LE | body
//! body  := 1 topic | partition u32 | offset i64 | key | header count u16 | (name, value)* | payload
//!        | 2 group | topic | partition u32 | next offset i64            (a group's commit)
//!        | 3 topic | partitions u32 | compacted u8                        (a topic exists)
//!        | 4 topic | partition u32 | next offset i64                      (a partition's log end)
//! strings: u16 LE length + UTF-8; payload: u32 LE length + bytes
//! ```
//!
//! A frame whose length runs past the end of the data, or whose checksum does
//! not match, is a torn write (the process died while writing it): decoding
//! stops there and reports how many bytes were whole.

use crc::{CRC_32_ISCSI, Crc};

use crate::record::Record;

/// The first bytes of every segment: the format and its version.
pub(super) const MAGIC: &[u8; 8] = b"WHARFJ01";

const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);
const HEADER: usize = 8;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Frame {
    Record {
        partition: u32,
        offset: i64,
        record: Record,
    },
    Commit {
        group: String,
        topic: String,
        partition: u32,
        next_offset: i64,
    },
    Topic {
        topic: String,
        partitions: u32,
        compacted: bool,
    },
    PartitionEnd {
        topic: String,
        partition: u32,
        next_offset: i64,
    },
}

/// Appends the frame of `record` at `partition`/`offset` to `out`.
pub(in crate::memory) fn encode_record(
    out: &mut Vec<u8>,
    partition: u32,
    offset: i64,
    record: &Record,
) {
    framed(out, |body| {
        body.push(1);
        put_str(body, &record.topic);
        body.extend_from_slice(&partition.to_le_bytes());
        body.extend_from_slice(&offset.to_le_bytes());
        put_str(body, &record.key);
        body.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
        for (name, value) in &record.headers {
            put_str(body, name);
            put_str(body, value);
        }
        body.extend_from_slice(&(record.payload.len() as u32).to_le_bytes());
        body.extend_from_slice(&record.payload);
    });
}

/// Appends the frame of a group's commit to `out`.
pub(in crate::memory) fn encode_commit(
    out: &mut Vec<u8>,
    group: &str,
    topic: &str,
    partition: u32,
    next_offset: i64,
) {
    framed(out, |body| {
        body.push(2);
        put_str(body, group);
        put_str(body, topic);
        body.extend_from_slice(&partition.to_le_bytes());
        body.extend_from_slice(&next_offset.to_le_bytes());
    });
}

/// Appends the frame saying `topic` exists with `partitions` partitions.
pub(in crate::memory) fn encode_topic(
    out: &mut Vec<u8>,
    topic: &str,
    partitions: u32,
    compacted: bool,
) {
    framed(out, |body| {
        body.push(3);
        put_str(body, topic);
        body.extend_from_slice(&partitions.to_le_bytes());
        body.push(u8::from(compacted));
    });
}

/// Appends the frame of a partition's log end (its next offset).
pub(in crate::memory) fn encode_partition_end(
    out: &mut Vec<u8>,
    topic: &str,
    partition: u32,
    next: i64,
) {
    framed(out, |body| {
        body.push(4);
        put_str(body, topic);
        body.extend_from_slice(&partition.to_le_bytes());
        body.extend_from_slice(&next.to_le_bytes());
    });
}

/// Writes the frame header around what `body` appends.
fn framed(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    body(out);
    let len = (out.len() - start - HEADER) as u32;
    let crc = CRC32C.checksum(&out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
}

/// Strings longer than a u16 length can say are cut (names and keys are
/// short; a device id is at most 128 bytes).
fn put_str(out: &mut Vec<u8>, value: &str) {
    let mut len = value.len().min(u16::MAX as usize);
    while !value.is_char_boundary(len) {
        len -= 1;
    }
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&value.as_bytes()[..len]);
}

/// What [`decode_all`] found in a segment's frames.
#[derive(Debug, Default)]
pub(super) struct Decoded {
    pub(super) frames: Vec<Frame>,
    /// Bytes of whole, valid frames from the start of the data.
    pub(super) valid_len: usize,
    /// Why decoding stopped before the end of the data, if it did.
    pub(super) torn: Option<String>,
}

/// Decodes frames from `data` (a segment without its magic) up to the first
/// torn or corrupt one.
pub(super) fn decode_all(data: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    let mut at = 0;
    while at < data.len() {
        let Some(header) = data.get(at..at + HEADER) else {
            decoded.torn = Some(format!("{} bytes of a frame header", data.len() - at));
            break;
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let Some(body) = data.get(at + HEADER..at + HEADER + len) else {
            decoded.torn = Some(format!(
                "a frame of {len} bytes with {} written",
                data.len() - at - HEADER
            ));
            break;
        };
        if CRC32C.checksum(body) != crc {
            decoded.torn = Some(format!("a frame of {len} bytes with a wrong checksum"));
            break;
        }
        match decode_body(body) {
            Some(frame) => decoded.frames.push(frame),
            None => {
                decoded.torn = Some(format!("a frame of {len} bytes that does not parse"));
                break;
            }
        }
        at += HEADER + len;
        decoded.valid_len = at;
    }
    decoded
}

fn decode_body(body: &[u8]) -> Option<Frame> {
    let mut reader = Reader(body);
    let frame = match reader.u8()? {
        1 => {
            let topic = reader.str()?;
            let partition = reader.u32()?;
            let offset = reader.i64()?;
            let key = reader.str()?;
            let count = reader.u16()?;
            let mut headers = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                headers.push((reader.str()?, reader.str()?));
            }
            let len = reader.u32()? as usize;
            let payload = reader.take(len)?.to_vec();
            Frame::Record {
                partition,
                offset,
                record: Record {
                    topic,
                    key,
                    payload,
                    headers,
                },
            }
        }
        2 => Frame::Commit {
            group: reader.str()?,
            topic: reader.str()?,
            partition: reader.u32()?,
            next_offset: reader.i64()?,
        },
        3 => Frame::Topic {
            topic: reader.str()?,
            partitions: reader.u32()?,
            compacted: reader.u8()? != 0,
        },
        4 => Frame::PartitionEnd {
            topic: reader.str()?,
            partition: reader.u32()?,
            next_offset: reader.i64()?,
        },
        _ => return None,
    };
    reader.0.is_empty().then_some(frame)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let len = usize::from(self.u16()?);
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &[u8]) -> Record {
        let mut record = Record::new("wharf.device-events", "thermo-1", payload.to_vec());
        record.headers.push(("type".into(), "FrameReceived".into()));
        record
    }

    fn sample() -> (Vec<u8>, Vec<Frame>) {
        let mut out = Vec::new();
        encode_topic(&mut out, "wharf.presence", 4, true);
        encode_record(&mut out, 2, 41, &record(b"{\"t\":1}"));
        encode_commit(&mut out, "wharf.receiver", "wharf.device-events", 2, 42);
        encode_partition_end(&mut out, "wharf.device-events", 2, 42);
        let frames = vec![
            Frame::Topic {
                topic: "wharf.presence".into(),
                partitions: 4,
                compacted: true,
            },
            Frame::Record {
                partition: 2,
                offset: 41,
                record: record(b"{\"t\":1}"),
            },
            Frame::Commit {
                group: "wharf.receiver".into(),
                topic: "wharf.device-events".into(),
                partition: 2,
                next_offset: 42,
            },
            Frame::PartitionEnd {
                topic: "wharf.device-events".into(),
                partition: 2,
                next_offset: 42,
            },
        ];
        (out, frames)
    }

    #[test]
    fn frames_round_trip() {
        let (data, frames) = sample();
        let decoded = decode_all(&data);
        assert_eq!(decoded.frames, frames);
        assert_eq!(decoded.valid_len, data.len());
        assert!(decoded.torn.is_none());
    }

    #[test]
    fn a_torn_last_frame_is_cut_at_every_length() {
        let (data, frames) = sample();
        let last_start = data.len() - {
            let mut last = Vec::new();
            encode_partition_end(&mut last, "wharf.device-events", 2, 42);
            last.len()
        };
        for cut in last_start + 1..data.len() {
            let decoded = decode_all(&data[..cut]);
            assert_eq!(decoded.frames, frames[..3], "cut at {cut}");
            assert_eq!(decoded.valid_len, last_start, "cut at {cut}");
            assert!(decoded.torn.is_some(), "cut at {cut}");
        }
    }

    #[test]
    fn a_flipped_bit_stops_decoding_at_its_frame() {
        let (mut data, frames) = sample();
        let mut first = Vec::new();
        encode_topic(&mut first, "wharf.presence", 4, true);
        // A bit of the second frame's payload.
        let at = data.len() / 2;
        assert!(at > first.len());
        data[at] ^= 0x10;
        let decoded = decode_all(&data);
        assert_eq!(decoded.frames, frames[..1]);
        assert_eq!(decoded.valid_len, first.len());
        assert!(decoded.torn.unwrap().contains("checksum"));
    }

    #[test]
    fn garbage_never_decodes_as_a_frame() {
        // Zeroed space (a file extended but never written) and random bytes.
        assert!(decode_all(&[0; 64]).frames.is_empty());
        let mut noise = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                noise as u8
            })
            .collect();
        assert!(decode_all(&bytes).frames.is_empty());
    }
}
