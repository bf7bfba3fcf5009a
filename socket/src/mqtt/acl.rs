//! What an MQTT device may do: publish under `devices/{id}/…`, subscribe
//! only to its own commands, `devices/{id}/commands/#` or below.

/// Whether `device` may publish on `topic`.
pub(crate) fn may_publish(device: &str, topic: &str) -> bool {
    topic
        .strip_prefix("devices/")
        .and_then(|rest| rest.strip_prefix(device))
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['+', '#']))
}

/// Whether `device` may subscribe to `filter`.
pub(crate) fn may_subscribe(device: &str, filter: &str) -> bool {
    let Some(rest) = filter
        .strip_prefix("devices/")
        .and_then(|rest| rest.strip_prefix(device))
    else {
        return false;
    };
    rest == "/commands" || rest.starts_with("/commands/")
}

/// Whether `topic` matches the subscription `filter` (`+` one level, `#` the rest).
pub(crate) fn matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

/// The topic a command goes to when its profile names none.
pub(crate) fn default_command_topic(device: &str) -> String {
    format!("devices/{device}/commands")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_publish_only_under_their_own_prefix() {
        assert!(may_publish("t-1", "devices/t-1/telemetry"));
        assert!(may_publish("t-1", "devices/t-1/a/b"));
        assert!(!may_publish("t-1", "devices/t-2/telemetry"));
        assert!(
            !may_publish("t-1", "devices/t-10/telemetry"),
            "a longer id is another device"
        );
        assert!(!may_publish("t-1", "devices/t-1"));
        assert!(!may_publish("t-1", "devices/t-1/"));
        assert!(!may_publish("t-1", "other/t-1/x"));
    }

    #[test]
    fn devices_subscribe_only_to_their_commands() {
        assert!(may_subscribe("t-1", "devices/t-1/commands/#"));
        assert!(may_subscribe("t-1", "devices/t-1/commands/fan"));
        assert!(may_subscribe("t-1", "devices/t-1/commands/+"));
        assert!(may_subscribe("t-1", "devices/t-1/commands"));
        assert!(!may_subscribe("t-1", "devices/t-2/commands/#"));
        assert!(!may_subscribe("t-1", "devices/+/commands/#"));
        assert!(!may_subscribe("t-1", "devices/t-1/#"));
        assert!(!may_subscribe("t-1", "#"));
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(matches("devices/d/commands/#", "devices/d/commands/fan"));
        assert!(matches("devices/d/commands/#", "devices/d/commands"));
        assert!(matches("devices/d/commands/+", "devices/d/commands/fan"));
        assert!(!matches("devices/d/commands/+", "devices/d/commands/fan/x"));
        assert!(matches("devices/d/commands", "devices/d/commands"));
        assert!(!matches("devices/d/commands", "devices/d/commands/fan"));
    }
}
