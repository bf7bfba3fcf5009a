//! Topic names. Every topic lives under one prefix (default `wharf`) so that
//! several deployments, or several tests, can share a broker.

/// The characters Kafka accepts in a topic name, and its length limit.
const MAX_TOPIC_LEN: usize = 249;

/// Topic names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// A prefix or a Socket instance id that would make an invalid topic name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {value:?} is not a valid topic name part: {problem}")]
pub struct TopicNameError {
    what: &'static str,
    value: String,
    problem: &'static str,
}

impl Topics {
    /// The default prefix.
    pub const DEFAULT_PREFIX: &'static str = "wharf";

    /// Returns the topic names under `prefix`, or why the prefix is unusable.
    pub fn new(prefix: &str) -> Result<Self, TopicNameError> {
        check_part("topic prefix", prefix)?;
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix these names live under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Device connects, disconnects and frames; read by the Receiver.
    pub fn device_events(&self) -> String {
        format!("{}.device-events", self.prefix)
    }

    /// `CommandRequested` events; read by the Commander.
    pub fn command_requests(&self) -> String {
        format!("{}.command-requests", self.prefix)
    }

    /// Command lifecycle events.
    pub fn command_status(&self) -> String {
        format!("{}.command-status", self.prefix)
    }

    /// Which Socket instance holds each device (compacted, keyed by device).
    pub fn presence(&self) -> String {
        format!("{}.presence", self.prefix)
    }

    /// Device revocations (compacted, keyed by device); read by every
    /// Socket instance.
    pub fn revocations(&self) -> String {
        format!("{}.revocations", self.prefix)
    }

    /// Frames for the devices held by one Socket instance.
    pub fn deliveries(&self, instance: &str) -> String {
        format!("{}.deliveries.{instance}", self.prefix)
    }

    /// Checks that `instance` can be part of a deliveries topic name.
    pub fn check_instance_id(instance: &str) -> Result<(), TopicNameError> {
        check_part("socket instance id", instance)
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }
}

fn check_part(what: &'static str, value: &str) -> Result<(), TopicNameError> {
    let problem = if value.is_empty() {
        Some("it is empty")
    } else if value.len() > MAX_TOPIC_LEN - 40 {
        Some("it is too long")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(TopicNameError {
            what,
            value: value.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_live_under_the_prefix() {
        let t = Topics::new("acme").unwrap();
        assert_eq!(t.device_events(), "acme.device-events");
        assert_eq!(t.command_requests(), "acme.command-requests");
        assert_eq!(t.command_status(), "acme.command-status");
        assert_eq!(t.presence(), "acme.presence");
        assert_eq!(t.revocations(), "acme.revocations");
        assert_eq!(t.deliveries("socket-0"), "acme.deliveries.socket-0");
        assert_eq!(Topics::default().device_events(), "wharf.device-events");
    }

    #[test]
    fn rejects_unusable_prefixes_and_instance_ids() {
        assert!(Topics::new("").is_err());
        assert!(Topics::new("a b").is_err());
        let err = Topics::check_instance_id("pod/0").unwrap_err();
        assert!(
            err.to_string().contains("socket instance id \"pod/0\""),
            "{err}"
        );
        assert!(Topics::check_instance_id("socket-0").is_ok());
    }
}
