//! [`Story`]: `--correlation ID`, one story's events.

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;
use wharf_events::{DecodeError, Envelope};

use crate::record::TailedRecord;

/// How many records outside the story are held back, in case a later
/// event shows they belong to it.
const HELD: usize = 10_000;

/// The events of one story: those whose id, correlation or causation is
/// the id asked for, or that name it as their command (lifecycle events);
/// and, once one of them names the chain it belongs to (a command's
/// correlation is the frame that caused it), every event of that chain —
/// those read before too, from the last 10,000 records held back. So
/// `--correlation <command id>` shows the frame that caused the command.
pub struct Story {
    ids: HashSet<Uuid>,
    held: VecDeque<(Uuid, TailedRecord)>,
}

impl Story {
    pub fn new(id: Uuid) -> Self {
        Story {
            ids: HashSet::from([id]),
            held: VecDeque::new(),
        }
    }

    /// The records to print now, in order: none, `record`, or earlier
    /// records of its chain and then `record`. A record that is not an
    /// envelope is printed: nothing tells it apart.
    pub fn offer(
        &mut self,
        record: TailedRecord,
        envelope: &Result<Envelope, DecodeError>,
    ) -> Vec<TailedRecord> {
        let Ok(envelope) = envelope else {
            return vec![record];
        };
        if !self.belongs(envelope) {
            if self.held.len() == HELD {
                self.held.pop_front();
            }
            self.held.push_back((envelope.correlation, record));
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.ids.insert(envelope.correlation) {
            let chain = envelope.correlation;
            let (earlier, rest): (VecDeque<_>, VecDeque<_>) = self
                .held
                .drain(..)
                .partition(|(correlation, _)| *correlation == chain);
            self.held = rest;
            out.extend(earlier.into_iter().map(|(_, record)| record));
        }
        out.push(record);
        out
    }

    fn belongs(&self, envelope: &Envelope) -> bool {
        if self.ids.contains(&envelope.id)
            || self.ids.contains(&envelope.correlation)
            || envelope.causation.is_some_and(|id| self.ids.contains(&id))
        {
            return true;
        }
        // Lifecycle events name their command in their data.
        serde_json::to_value(&envelope.event)
            .ok()
            .and_then(|data| data.get("command_id")?.as_str()?.parse::<Uuid>().ok())
            .is_some_and(|id| self.ids.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use wharf_events::{CommandRequested, Event, FrameReceived, Payload};

    use super::*;

    fn record(envelope: &Envelope) -> (TailedRecord, Result<Envelope, DecodeError>) {
        let record = TailedRecord {
            topic: "wharf.device-events".into(),
            partition: 0,
            offset: 0,
            key: Some(envelope.device.clone()),
            headers: Vec::new(),
            value: envelope.to_json(),
        };
        let decoded = record.decode();
        (record, decoded)
    }

    #[test]
    fn a_command_id_brings_the_frame_that_caused_it() {
        let frame = Envelope::new(
            "thermo-1",
            "socket-0",
            Event::FrameReceived(FrameReceived {
                model: "demo-thermostat".into(),
                channel: None,
                payload: Payload::from_bytes(br#"{"temperature":35}"#),
            }),
        );
        let other = Envelope::new(
            "thermo-2",
            "socket-0",
            Event::FrameReceived(FrameReceived {
                model: "demo-thermostat".into(),
                channel: None,
                payload: Payload::from_bytes(b"{}"),
            }),
        );
        let mut request = Envelope::new(
            "thermo-1",
            "receiver",
            Event::CommandRequested(CommandRequested {
                model: "demo-thermostat".into(),
                command: "fan".into(),
                args: serde_json::Map::new(),
                ttl_ms: None,
            }),
        );
        request.correlation = frame.correlation;
        request.causation = Some(frame.id);
        let mut story = Story::new(request.id);
        let (frame_record, frame_decoded) = record(&frame);
        assert!(story.offer(frame_record.clone(), &frame_decoded).is_empty());
        let (other_record, other_decoded) = record(&other);
        assert!(story.offer(other_record, &other_decoded).is_empty());
        let (request_record, request_decoded) = record(&request);
        let printed = story.offer(request_record.clone(), &request_decoded);
        assert_eq!(printed, [frame_record, request_record]);
    }
}
