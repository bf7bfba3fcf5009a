//! [`Filter`]: which records a tail prints.

use std::time::SystemTime;

use wharf_events::{DecodeError, Envelope};

use crate::record::TailedRecord;

/// What `--device`, `--type` and `--since` ask for; an empty list or `None`
/// lets everything through. (`--correlation` is a [`crate::Story`].)
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub devices: Vec<String>,
    pub types: Vec<String>,
    /// Events from this time on (the envelope's `time`).
    pub since: Option<SystemTime>,
}

impl Filter {
    /// Whether `record` (decoded as `envelope`) is printed. A record that is
    /// not an envelope is judged by its key (the device) alone: the other
    /// filters cannot tell, and it is shown rather than hidden.
    pub fn admits(&self, record: &TailedRecord, envelope: &Result<Envelope, DecodeError>) -> bool {
        let envelope = match envelope {
            Ok(envelope) => envelope,
            Err(_) => {
                return self.devices.is_empty()
                    || record
                        .key
                        .as_ref()
                        .is_some_and(|key| self.devices.contains(key));
            }
        };
        (self.devices.is_empty() || self.devices.contains(&envelope.device))
            && (self.types.is_empty() || self.types.iter().any(|kind| kind == envelope.kind()))
            && self.since.is_none_or(|since| envelope.time >= since)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wharf_events::{Event, FrameReceived, Payload};

    use super::*;

    fn frame(device: &str) -> (TailedRecord, Result<Envelope, DecodeError>) {
        let envelope = Envelope::new(
            device,
            "socket-0",
            Event::FrameReceived(FrameReceived {
                model: "demo-thermostat".into(),
                channel: None,
                payload: Payload::from_bytes(br#"{"temperature":35}"#),
            }),
        );
        let record = TailedRecord {
            topic: "wharf.device-events".into(),
            partition: 0,
            offset: 7,
            key: Some(device.into()),
            headers: Vec::new(),
            value: envelope.to_json(),
        };
        let decoded = record.decode();
        (record, decoded)
    }

    #[test]
    fn each_filter_filters() {
        let (record, decoded) = frame("thermo-1");
        let envelope = decoded.as_ref().unwrap();
        assert!(Filter::default().admits(&record, &decoded));
        let device = |d: &str| Filter {
            devices: vec![d.into()],
            ..Filter::default()
        };
        assert!(device("thermo-1").admits(&record, &decoded));
        assert!(!device("thermo-2").admits(&record, &decoded));
        let kind = |k: &str| Filter {
            types: vec![k.into()],
            ..Filter::default()
        };
        assert!(kind("FrameReceived").admits(&record, &decoded));
        assert!(!kind("CommandRequested").admits(&record, &decoded));
        let since = |t| Filter {
            since: Some(t),
            ..Filter::default()
        };
        assert!(since(envelope.time - Duration::from_secs(1)).admits(&record, &decoded));
        assert!(!since(envelope.time + Duration::from_secs(1)).admits(&record, &decoded));
    }

    #[test]
    fn an_undecodable_record_is_shown_unless_its_key_names_another_device() {
        let (mut record, _) = frame("thermo-1");
        record.value = b"not an envelope".to_vec();
        let decoded = record.decode();
        assert!(decoded.is_err());
        let types = Filter {
            types: vec!["FrameReceived".into()],
            ..Filter::default()
        };
        assert!(types.admits(&record, &decoded));
        let other = Filter {
            devices: vec!["thermo-2".into()],
            ..Filter::default()
        };
        assert!(!other.admits(&record, &decoded));
    }
}
