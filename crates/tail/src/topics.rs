//! [`TopicSelection`]: which topics to follow, named as users name them.

use anyhow::bail;
use wharf_events::Topics;

/// The topic names `--topic` takes: Wharf's topics without their prefix.
pub const NAMES: [&str; 6] = [
    "device-events",
    "command-requests",
    "command-status",
    "presence",
    "revocations",
    "deliveries.*",
];

/// Topic names as given on the command line: `device-events`,
/// `deliveries.socket-0`, `deliveries.*`; none means every Wharf topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicSelection(pub Vec<String>);

impl TopicSelection {
    /// Checks the names without a bus: an unknown name is an error that
    /// lists the known ones.
    pub fn check(&self) -> anyhow::Result<()> {
        for name in &self.0 {
            let known = NAMES.contains(&name.as_str())
                || name
                    .strip_prefix("deliveries.")
                    .is_some_and(|instance| Topics::check_instance_id(instance).is_ok());
            if !known {
                bail!(
                    "unknown topic {name:?}: expected one of {}, or deliveries.<socket instance>",
                    NAMES.join(", ")
                );
            }
        }
        Ok(())
    }

    /// The full names of the selected topics among `existing` (the bus's
    /// topics), sorted. Deliveries topics are those that exist now: a
    /// Socket instance started later is not followed.
    pub fn resolve(&self, topics: &Topics, existing: &[String]) -> anyhow::Result<Vec<String>> {
        self.check()?;
        let prefix = format!("{}.", topics.prefix());
        let deliveries = format!("{prefix}deliveries.");
        let wanted = |full: &str| -> bool {
            let Some(short) = full.strip_prefix(&prefix) else {
                return false;
            };
            let is_wharf_topic = full.starts_with(&deliveries) || NAMES.contains(&short);
            if self.0.is_empty() {
                return is_wharf_topic;
            }
            self.0.iter().any(|name| {
                name == short || (name == "deliveries.*" && full.starts_with(&deliveries))
            })
        };
        let mut chosen: Vec<String> = existing
            .iter()
            .filter(|name| wanted(name))
            .cloned()
            .collect();
        chosen.sort();
        chosen.dedup();
        Ok(chosen)
    }
}

impl TopicSelection {
    /// Whether the selection follows every Socket instance's deliveries.
    pub fn wants_all_deliveries(&self) -> bool {
        self.0.is_empty() || self.0.iter().any(|name| name == "deliveries.*")
    }
}

/// The Kafka pattern of every deliveries topic under the prefix, those
/// created later included.
pub fn deliveries_pattern(topics: &Topics) -> String {
    format!("^{}\\.deliveries\\..+", topics.prefix().replace('.', "\\."))
}

/// `wharf.device-events` → `device-events`: how a line names its topic.
pub fn short_name<'a>(topics: &Topics, full: &'a str) -> &'a str {
    full.strip_prefix(topics.prefix())
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing() -> Vec<String> {
        [
            "wharf.device-events",
            "wharf.command-status",
            "wharf.deliveries.socket-0",
            "wharf.deliveries.socket-1",
            "wharf.presence",
            "other.device-events",
            "__consumer_offsets",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn no_selection_means_every_wharf_topic_under_the_prefix() {
        let chosen = TopicSelection::default()
            .resolve(&Topics::default(), &existing())
            .unwrap();
        assert_eq!(
            chosen,
            [
                "wharf.command-status",
                "wharf.deliveries.socket-0",
                "wharf.deliveries.socket-1",
                "wharf.device-events",
                "wharf.presence"
            ]
        );
    }

    #[test]
    fn names_select_topics_and_deliveries_star_every_instance() {
        let selection = TopicSelection(vec!["device-events".into(), "deliveries.*".into()]);
        let chosen = selection.resolve(&Topics::default(), &existing()).unwrap();
        assert_eq!(
            chosen,
            [
                "wharf.deliveries.socket-0",
                "wharf.deliveries.socket-1",
                "wharf.device-events"
            ]
        );
        let one = TopicSelection(vec!["deliveries.socket-1".into()]);
        assert_eq!(
            one.resolve(&Topics::default(), &existing()).unwrap(),
            ["wharf.deliveries.socket-1"]
        );
    }

    #[test]
    fn the_deliveries_pattern_matches_only_deliveries_under_the_prefix() {
        let pattern = deliveries_pattern(&Topics::new("acme.prod").unwrap());
        assert_eq!(pattern, "^acme\\.prod\\.deliveries\\..+");
        assert!(TopicSelection::default().wants_all_deliveries());
        assert!(!TopicSelection(vec!["device-events".into()]).wants_all_deliveries());
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let error = TopicSelection(vec!["device_events".into()])
            .check()
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown topic \"device_events\""), "{error}");
        assert!(error.contains("command-status"), "{error}");
    }
}
