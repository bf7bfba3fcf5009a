//! [`DeviceState`]: a device's state as the Receiver and its logic hold it,
//! and its conversions to and from the store's row (the only place the two
//! meet).

use serde_json::{Map, Value};
use wharf_store::DeviceStateRow;

/// A device's state: loaded once, changed in memory by its events, written
/// back in batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceState {
    pub device: String,
    pub model: String,
    /// Last reported values, merged key by key.
    pub reported: Map<String, Value>,
    /// The values the device should have; `reported` catches up.
    pub desired: Map<String, Value>,
    pub connected: bool,
    /// Frames received from the device, over its whole life.
    pub message_count: i64,
    /// Unix milliseconds of the device's last event.
    pub last_seen_ms: Option<i64>,
    /// The business logic's own bookkeeping (rule cool-downs, …).
    pub meta: Map<String, Value>,
    /// What the twin last measured of `reported` and `desired`; not stored.
    pub sizes: MeasuredSizes,
}

/// The estimated encoded sizes of `reported` and `desired`, kept as the twin
/// changes them so that a frame adding a key costs no walk of the whole twin
/// (a walk per new key made a twin of n keys cost n² to build). `None` until
/// first measured: a state loaded from the store is measured once, when a
/// value first grows.
///
/// It is derived data: whatever changes `reported` or `desired` other than
/// the twin's own merge sets it back to `MeasuredSizes::default()`. Two
/// states compare equal whatever their measurements.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeasuredSizes {
    pub reported: Option<usize>,
    pub desired: Option<usize>,
}

impl PartialEq for MeasuredSizes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl DeviceState {
    /// An empty state for a device never seen before.
    pub fn new(device: &str) -> Self {
        DeviceState {
            device: device.to_owned(),
            ..DeviceState::default()
        }
    }

    /// The desired keys whose reported value differs, with their desired
    /// values: what the device still has to apply.
    pub fn delta(&self) -> Map<String, Value> {
        wharf_store::twin_delta(&self.desired, &self.reported)
    }
}

impl From<DeviceStateRow> for DeviceState {
    fn from(row: DeviceStateRow) -> Self {
        DeviceState {
            device: row.device,
            model: row.model,
            reported: row.reported,
            desired: row.desired,
            connected: row.connected,
            message_count: row.message_count,
            last_seen_ms: row.last_seen_ms,
            meta: row.meta,
            sizes: MeasuredSizes::default(),
        }
    }
}

impl From<&DeviceState> for DeviceStateRow {
    fn from(state: &DeviceState) -> Self {
        DeviceStateRow {
            device: state.device.clone(),
            model: state.model.clone(),
            reported: state.reported.clone(),
            desired: state.desired.clone(),
            connected: state.connected,
            message_count: state.message_count,
            last_seen_ms: state.last_seen_ms,
            meta: state.meta.clone(),
        }
    }
}
