//! Where each device is connected, learned from the presence topic.

use std::collections::HashMap;

use uuid::Uuid;
use wharf_events::{Envelope, Event, Transport};

/// The Socket instance holding a device's connection, and how the device
/// is connected (which decides how commands are rendered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub(crate) instance: String,
    pub(crate) transport: Transport,
    pub(crate) connection: Uuid,
}

/// The Socket instance and connection holding each connected device.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    by_device: HashMap<String, Location>,
}

impl Presence {
    /// Applies a presence event; the device when it just connected. A
    /// disconnect only counts for the connection it names, so a late
    /// disconnect of an old connection cannot hide a newer one.
    pub(crate) fn apply(&mut self, envelope: &Envelope) -> Option<String> {
        match &envelope.event {
            Event::DeviceConnected(connected) => {
                self.by_device.insert(
                    envelope.device.clone(),
                    Location {
                        instance: connected.instance.clone(),
                        transport: connected.transport,
                        connection: connected.connection,
                    },
                );
                return Some(envelope.device.clone());
            }
            Event::DeviceDisconnected(disconnected)
                if self
                    .by_device
                    .get(&envelope.device)
                    .is_some_and(|location| location.connection == disconnected.connection) =>
            {
                self.by_device.remove(&envelope.device);
            }
            _ => {}
        }
        None
    }

    /// Where `device` is connected, if it is.
    pub(crate) fn location(&self, device: &str) -> Option<&Location> {
        self.by_device.get(device)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_device.len()
    }
}

#[cfg(test)]
mod tests {
    use wharf_events::{DeviceConnected, DeviceDisconnected};

    use super::*;

    fn connected(instance: &str, connection: Uuid) -> Envelope {
        Envelope::new(
            "d",
            instance,
            Event::DeviceConnected(DeviceConnected {
                model: "m".into(),
                transport: Transport::Mqtt,
                instance: instance.into(),
                connection,
                remote: None,
            }),
        )
    }

    fn disconnected(instance: &str, connection: Uuid) -> Envelope {
        Envelope::new(
            "d",
            instance,
            Event::DeviceDisconnected(DeviceDisconnected {
                model: "m".into(),
                transport: Transport::Mqtt,
                instance: instance.into(),
                connection,
                reason: "closed".into(),
            }),
        )
    }

    #[test]
    fn follows_the_newest_connection() {
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let mut presence = Presence::default();
        assert_eq!(
            presence.apply(&connected("socket-0", old)),
            Some("d".to_owned())
        );
        presence.apply(&connected("socket-1", new));
        assert_eq!(presence.apply(&disconnected("socket-0", old)), None);
        let location = presence.location("d").unwrap();
        assert_eq!(
            (location.instance.as_str(), location.transport),
            ("socket-1", Transport::Mqtt)
        );
        presence.apply(&disconnected("socket-1", new));
        assert_eq!(presence.location("d"), None);
    }
}
