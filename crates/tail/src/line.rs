//! [`Output`]: how a record becomes one line.

use std::fmt::Write as _;

use wharf_events::{DecodeError, Envelope, Topics};

use crate::record::TailedRecord;
use crate::topics::short_name;

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `time topic type device data`, aligned; `colour` on a terminal.
    Pretty { colour: bool },
    /// The envelope exactly as it is on the bus, one per line, for `jq`.
    Json,
}

/// Where a line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Stdout(String),
    /// A record that is not an envelope, in JSON output: stdout keeps only
    /// envelopes, so every line there parses.
    Stderr(String),
}

const DIM: &str = "\x1b[2m";
const BOLD: &str = "\x1b[1m";
const CYAN: &str = "\x1b[36m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const RESET: &str = "\x1b[0m";

impl Output {
    /// The line for `record`, decoded as `envelope`.
    pub fn line(
        self,
        topics: &Topics,
        record: &TailedRecord,
        envelope: &Result<Envelope, DecodeError>,
    ) -> Line {
        match (self, envelope) {
            (Output::Json, Ok(_)) => Line::Stdout(String::from_utf8_lossy(&record.value).into()),
            (Output::Json, Err(error)) => Line::Stderr(undecodable(topics, record, error, false)),
            (Output::Pretty { colour }, Err(error)) => {
                Line::Stdout(undecodable(topics, record, error, colour))
            }
            (Output::Pretty { colour }, Ok(envelope)) => {
                let paint = |code: &str, text: &str| {
                    if colour {
                        format!("{code}{text}{RESET}")
                    } else {
                        text.to_owned()
                    }
                };
                let time = humantime::format_rfc3339_millis(envelope.time).to_string();
                let data = serde_json::to_string(&envelope.event)
                    .unwrap_or_else(|error| format!("<{error}>"));
                Line::Stdout(format!(
                    "{} {} {} {} {}",
                    paint(DIM, &time),
                    paint(CYAN, &format!("{:<16}", short_name(topics, &record.topic))),
                    paint(
                        kind_colour(envelope.kind()),
                        &format!("{:<19}", envelope.kind())
                    ),
                    paint(BOLD, &envelope.device),
                    data
                ))
            }
        }
    }
}

fn kind_colour(kind: &str) -> &'static str {
    match kind {
        "CommandFailed" | "CommandExpired" | "CommandRejected" | "DeviceRevoked" => RED,
        kind if kind.starts_with("Command") => YELLOW,
        _ => "",
    }
}

/// `device-events[3]@42 not an envelope (malformed envelope: …): 15 bytes: "not an envelope"`
fn undecodable(
    topics: &Topics,
    record: &TailedRecord,
    error: &DecodeError,
    colour: bool,
) -> String {
    const HEAD: usize = 64;
    let head = &record.value[..record.value.len().min(HEAD)];
    let mut shown = String::new();
    for &byte in head {
        if byte.is_ascii_graphic() || byte == b' ' {
            shown.push(byte as char);
        } else {
            let _ = write!(shown, "\\x{byte:02x}");
        }
    }
    let more = if record.value.len() > HEAD { "…" } else { "" };
    let text = format!(
        "{}[{}]@{} not an envelope ({error}): {} bytes: \"{shown}\"{more}",
        short_name(topics, &record.topic),
        record.partition,
        record.offset,
        record.value.len(),
    );
    if colour {
        format!("{RED}{text}{RESET}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use wharf_events::{DeviceConnected, Event, Transport};

    use super::*;

    fn record(value: Vec<u8>) -> TailedRecord {
        TailedRecord {
            topic: "wharf.device-events".into(),
            partition: 1,
            offset: 9,
            key: Some("thermo-1".into()),
            headers: Vec::new(),
            value,
        }
    }

    #[test]
    fn json_prints_the_envelope_as_it_is_on_the_bus() {
        let envelope = Envelope::new(
            "thermo-1",
            "socket-0",
            Event::DeviceConnected(DeviceConnected {
                model: "demo-thermostat".into(),
                transport: Transport::Mqtt,
                instance: "socket-0".into(),
                connection: wharf_events::new_id(),
                remote: None,
            }),
        );
        let record = record(envelope.to_json());
        let line = Output::Json.line(&Topics::default(), &record, &record.decode());
        assert_eq!(
            line,
            Line::Stdout(String::from_utf8(envelope.to_json()).unwrap())
        );
        let Line::Stdout(pretty) =
            Output::Pretty { colour: false }.line(&Topics::default(), &record, &record.decode())
        else {
            panic!("a pretty line goes to stdout");
        };
        assert!(
            pretty.contains("device-events    DeviceConnected     thermo-1 {"),
            "{pretty}"
        );
        assert!(
            !pretty.contains('\x1b'),
            "no colour when not asked: {pretty}"
        );
    }

    #[test]
    fn an_undecodable_record_says_where_it_is_and_what_it_holds() {
        let record = record(b"\x00binary\xff".to_vec());
        let line = Output::Json.line(&Topics::default(), &record, &record.decode());
        let Line::Stderr(text) = line else {
            panic!("json output keeps stdout for envelopes");
        };
        assert!(
            text.starts_with("device-events[1]@9 not an envelope (malformed envelope"),
            "{text}"
        );
        assert!(text.ends_with("8 bytes: \"\\x00binary\\xff\""), "{text}");
    }
}
