//! The devices resident in memory (the "actors" of the design: a state
//! changed in place by its device's events, with no mailbox of its own):
//! each one's state, the partition its events come from, and when it last
//! had one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use wharf_bus::PartitionId;

use crate::logic::DeviceState;

/// The resident devices, by id.
#[derive(Default)]
pub(crate) struct ResidentDevices {
    slots: HashMap<String, Slot>,
}

struct Slot {
    state: DeviceState,
    /// Where the device's events come from: the actor goes when it goes.
    partition: PartitionId,
    touched: Instant,
}

impl ResidentDevices {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn contains(&self, device: &str) -> bool {
        self.slots.contains_key(device)
    }

    /// Makes `state` resident for events from `partition`.
    pub(crate) fn insert(&mut self, state: DeviceState, partition: PartitionId) {
        let device = state.device.clone();
        self.slots.insert(
            device,
            Slot {
                state,
                partition,
                touched: Instant::now(),
            },
        );
    }

    /// The device's state, marked as just used.
    pub(crate) fn touch(&mut self, device: &str) -> Option<&mut DeviceState> {
        self.slots.get_mut(device).map(|slot| {
            slot.touched = Instant::now();
            &mut slot.state
        })
    }

    pub(crate) fn state(&self, device: &str) -> Option<&DeviceState> {
        self.slots.get(device).map(|slot| &slot.state)
    }

    /// Drops the actors of `partitions` (they now belong to another
    /// member); returns their devices.
    pub(crate) fn drop_partitions(&mut self, partitions: &HashSet<PartitionId>) -> Vec<String> {
        let mut dropped = Vec::new();
        self.slots.retain(|device, slot| {
            let keep = !partitions.contains(&slot.partition);
            if !keep {
                dropped.push(device.clone());
            }
            keep
        });
        dropped
    }

    /// Drops the actors idle for `idle` or longer whose state is written
    /// back (`is_dirty` says which are not).
    pub(crate) fn passivate(&mut self, idle: Duration, is_dirty: impl Fn(&str) -> bool) -> usize {
        let before = self.slots.len();
        let now = Instant::now();
        self.slots
            .retain(|device, slot| now.duration_since(slot.touched) < idle || is_dirty(device));
        before - self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(n: i32) -> PartitionId {
        PartitionId {
            topic: "events".into(),
            partition: n,
        }
    }

    #[test]
    fn revoked_partitions_take_their_actors_along() {
        let mut actors = ResidentDevices::default();
        actors.insert(DeviceState::new("a"), partition(0));
        actors.insert(DeviceState::new("b"), partition(1));
        let dropped = actors.drop_partitions(&HashSet::from([partition(1)]));
        assert_eq!(dropped, vec!["b".to_owned()]);
        assert!(actors.contains("a") && !actors.contains("b"));
    }

    #[test]
    fn only_idle_clean_actors_are_passivated() {
        let mut actors = ResidentDevices::default();
        actors.insert(DeviceState::new("idle"), partition(0));
        actors.insert(DeviceState::new("dirty"), partition(0));
        std::thread::sleep(Duration::from_millis(20));
        actors.insert(DeviceState::new("fresh"), partition(0));
        let dropped = actors.passivate(Duration::from_millis(10), |device| device == "dirty");
        assert_eq!(dropped, 1);
        assert!(!actors.contains("idle") && actors.contains("dirty") && actors.contains("fresh"));
    }
}
