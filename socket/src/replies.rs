//! Telling a device's answer to a command from its other frames, in one
//! place for every transport:
//!
//! - MQTT (3.1.1 and 5): a PUBLISH on `devices/{id}/replies/{command id}`
//!   (the Response Topic an MQTT 5 command carries). Its payload is
//!   `{"ok": true, "result": …}` or `{"ok": false, "error": …}`; any other
//!   payload is the result of a command that succeeded.
//! - WebSocket, TCP, UDP: a JSON frame `{"reply": "<command id>", "ok": …,
//!   "result" | "error": …}`. Binary devices answer with the same JSON frame
//!   (there is no binary reply layout yet).
//!
//! A device answers only under its own topics (the MQTT ACL), and the
//! Commander accepts an answer only from the device the command was for.

use serde_json::{Map, Value};
use uuid::Uuid;

/// What a frame from a device is.
#[derive(Debug, PartialEq)]
pub(crate) enum Inbound {
    /// Not an answer: a frame for the device-events topic.
    Frame,
    /// An answer to a command.
    Reply(Answer),
    /// An answer that is refused, and why (a metric label).
    Refused(&'static str),
}

/// A device's answer to one command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) command_id: Uuid,
    pub(crate) ok: bool,
    pub(crate) result: Option<Value>,
    pub(crate) error: Option<Value>,
}

/// Where `device` answers `command_id` over MQTT.
pub(crate) fn reply_topic(device: &str, command_id: Uuid) -> String {
    format!("devices/{device}/replies/{command_id}")
}

/// What the frame `bytes`, received from `device` on `channel` (the MQTT
/// topic; `None` on other transports), is. Answers larger than
/// `max_reply_bytes` are refused.
pub(crate) fn recognise(
    device: &str,
    channel: Option<&str>,
    bytes: &[u8],
    max_reply_bytes: usize,
) -> Inbound {
    match channel {
        Some(topic) => {
            let Some(id) = topic
                .strip_prefix("devices/")
                .and_then(|rest| rest.strip_prefix(device))
                .and_then(|rest| rest.strip_prefix("/replies/"))
            else {
                return Inbound::Frame;
            };
            if bytes.len() > max_reply_bytes {
                return Inbound::Refused("too_large");
            }
            let Ok(command_id) = id.parse::<Uuid>() else {
                return Inbound::Refused("malformed");
            };
            match serde_json::from_slice::<Value>(bytes) {
                Ok(Value::Object(answer)) if answer.get("ok").is_some_and(Value::is_boolean) => {
                    answer_of(command_id, answer)
                }
                Ok(result) => Inbound::Reply(Answer {
                    command_id,
                    ok: true,
                    result: Some(result),
                    error: None,
                }),
                Err(_) => Inbound::Reply(Answer {
                    command_id,
                    ok: true,
                    result: Some(Value::String(String::from_utf8_lossy(bytes).into_owned())),
                    error: None,
                }),
            }
        }
        None => {
            // Telemetry is read once more only when it may be an answer.
            if bytes.first() != Some(&b'{') || !contains(bytes, b"\"reply\"") {
                return Inbound::Frame;
            }
            let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(bytes) else {
                return Inbound::Frame;
            };
            let Some(id) = answer.remove("reply") else {
                return Inbound::Frame;
            };
            if bytes.len() > max_reply_bytes {
                return Inbound::Refused("too_large");
            }
            let Some(command_id) = id.as_str().and_then(|id| id.parse::<Uuid>().ok()) else {
                return Inbound::Refused("malformed");
            };
            if !answer.get("ok").is_some_and(Value::is_boolean) {
                return Inbound::Refused("malformed");
            }
            answer_of(command_id, answer)
        }
    }
}

fn answer_of(command_id: Uuid, mut answer: Map<String, Value>) -> Inbound {
    let ok = answer.get("ok").and_then(Value::as_bool).unwrap_or(false);
    Inbound::Reply(Answer {
        command_id,
        ok,
        result: answer.remove("result").filter(|_| ok),
        error: answer.remove("error").filter(|_| !ok),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: &str = "0193a0c4-3c1e-7000-8000-000000000003";

    fn id() -> Uuid {
        ID.parse().unwrap()
    }

    #[test]
    fn mqtt_answers_come_on_the_devices_own_reply_topic() {
        let topic = reply_topic("t-1", id());
        assert_eq!(topic, format!("devices/t-1/replies/{ID}"));
        assert_eq!(
            recognise(
                "t-1",
                Some(&topic),
                br#"{"ok":true,"result":{"v":2}}"#,
                1024
            ),
            Inbound::Reply(Answer {
                command_id: id(),
                ok: true,
                result: Some(json!({"v": 2})),
                error: None
            })
        );
        assert_eq!(
            recognise(
                "t-1",
                Some(&topic),
                br#"{"ok":false,"error":{"code":"busy"}}"#,
                1024
            ),
            Inbound::Reply(Answer {
                command_id: id(),
                ok: false,
                result: None,
                error: Some(json!({"code": "busy"}))
            })
        );
        // Any other payload is the result.
        assert_eq!(
            recognise("t-1", Some(&topic), b"21.5", 1024),
            Inbound::Reply(Answer {
                command_id: id(),
                ok: true,
                result: Some(json!(21.5)),
                error: None
            })
        );
        assert_eq!(
            recognise("t-1", Some(&topic), b"plain text", 1024),
            Inbound::Reply(Answer {
                command_id: id(),
                ok: true,
                result: Some(json!("plain text")),
                error: None
            })
        );
        // Telemetry, another device's topic (the ACL refuses it before
        // this), a longer id that is another device: frames.
        for topic in [
            "devices/t-1/telemetry".to_owned(),
            format!("devices/t-2/replies/{ID}"),
            format!("devices/t-10/replies/{ID}"),
        ] {
            assert_eq!(recognise("t-1", Some(&topic), b"{}", 1024), Inbound::Frame);
        }
        assert_eq!(
            recognise("t-1", Some("devices/t-1/replies/not-an-id"), b"{}", 1024),
            Inbound::Refused("malformed")
        );
        assert_eq!(
            recognise("t-1", Some(&topic), &[b'1'; 2000], 1024),
            Inbound::Refused("too_large")
        );
    }

    #[test]
    fn json_frames_with_a_reply_key_are_answers() {
        let frame = format!(r#"{{"reply":"{ID}","ok":true,"result":[1,2]}}"#);
        assert_eq!(
            recognise("t-1", None, frame.as_bytes(), 1024),
            Inbound::Reply(Answer {
                command_id: id(),
                ok: true,
                result: Some(json!([1, 2])),
                error: None
            })
        );
        let frame = format!(r#"{{"reply":"{ID}","ok":false,"error":"no"}}"#);
        assert_eq!(
            recognise("t-1", None, frame.as_bytes(), 1024),
            Inbound::Reply(Answer {
                command_id: id(),
                ok: false,
                result: None,
                error: Some(json!("no"))
            })
        );
        for telemetry in [
            &br#"{"temperature":21}"#[..],
            br#"{"note":"the word \"reply\" in a value"}"#,
            b"\x01\x02binary",
            b"[1,2]",
        ] {
            assert_eq!(recognise("t-1", None, telemetry, 1024), Inbound::Frame);
        }
        for malformed in [
            r#"{"reply":"nope","ok":true}"#.to_owned(),
            format!(r#"{{"reply":"{ID}"}}"#),
            format!(r#"{{"reply":"{ID}","ok":"yes"}}"#),
        ] {
            assert_eq!(
                recognise("t-1", None, malformed.as_bytes(), 1024),
                Inbound::Refused("malformed"),
                "{malformed}"
            );
        }
        let large = format!(
            r#"{{"reply":"{ID}","ok":true,"result":"{}"}}"#,
            "x".repeat(2000)
        );
        assert_eq!(
            recognise("t-1", None, large.as_bytes(), 1024),
            Inbound::Refused("too_large")
        );
    }
}
