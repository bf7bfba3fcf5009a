//! Where each device is connected, learned from the presence topic.

use std::collections::HashMap;

use uuid::Uuid;
use wharf_events::{Envelope, Event};

/// The Socket instance and connection holding each connected device.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    by_device: HashMap<String, (String, Uuid)>,
}

impl Presence {
    /// Applies a presence event. A disconnect only counts for the connection
    /// it names, so a late disconnect of an old connection cannot hide a
    /// newer one.
    pub(crate) fn apply(&mut self, envelope: &Envelope) {
        match &envelope.event {
            Event::DeviceConnected(connected) => {
                self.by_device.insert(
                    envelope.device.clone(),
                    (connected.instance.clone(), connected.connection),
                );
            }
            Event::DeviceDisconnected(disconnected)
                if self
                    .by_device
                    .get(&envelope.device)
                    .is_some_and(|(_, connection)| *connection == disconnected.connection) =>
            {
                self.by_device.remove(&envelope.device);
            }
            _ => {}
        }
    }

    /// The Socket instance holding `device`, if it is connected.
    pub(crate) fn instance_of(&self, device: &str) -> Option<&str> {
        self.by_device
            .get(device)
            .map(|(instance, _)| instance.as_str())
    }

    pub(crate) fn len(&self) -> usize {
        self.by_device.len()
    }
}

#[cfg(test)]
mod tests {
    use wharf_events::{DeviceConnected, DeviceDisconnected, Transport};

    use super::*;

    fn connected(instance: &str, connection: Uuid) -> Envelope {
        Envelope::new(
            "d",
            instance,
            Event::DeviceConnected(DeviceConnected {
                model: "m".into(),
                transport: Transport::Websocket,
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
                transport: Transport::Websocket,
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
        presence.apply(&connected("socket-0", old));
        presence.apply(&connected("socket-1", new));
        presence.apply(&disconnected("socket-0", old));
        assert_eq!(presence.instance_of("d"), Some("socket-1"));
        presence.apply(&disconnected("socket-1", new));
        assert_eq!(presence.instance_of("d"), None);
    }
}
