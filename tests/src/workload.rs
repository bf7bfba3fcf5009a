//! Counter workloads: many devices each sending numbered frames, so a test
//! can check that every frame was applied exactly once.

use std::time::Duration;

use serde_json::json;
use wharf_bus::{Publisher, Record};
use wharf_events::{Envelope, Event, FrameReceived, Payload};
use wharf_store::Store;

use crate::unique;

/// `per_device` frames for each of `devices` devices.
pub struct CounterWorkload {
    pub devices: Vec<String>,
    pub per_device: i64,
    /// Every this many frames a device reports `"milestone": true`.
    pub milestone_every: i64,
}

impl CounterWorkload {
    pub fn new(devices: usize, per_device: i64) -> Self {
        CounterWorkload {
            devices: (0..devices)
                .map(|i| unique(&format!("counter-{i}")))
                .collect(),
            per_device,
            milestone_every: 1000,
        }
    }

    /// The number of frames in all.
    pub fn total(&self) -> i64 {
        self.devices.len() as i64 * self.per_device
    }

    /// The number of milestone frames in all.
    pub fn milestones(&self) -> i64 {
        self.devices.len() as i64 * (self.per_device / self.milestone_every)
    }

    /// Publishes every frame, devices interleaved, pausing `pause` after
    /// each round of one frame per device.
    pub async fn publish(&self, bus: &impl Publisher, topic: &str, pause: Duration) {
        let mut acks = Vec::new();
        for n in 1..=self.per_device {
            for device in &self.devices {
                let envelope = Envelope::new(
                    device,
                    "workload",
                    Event::FrameReceived(FrameReceived {
                        model: "demo-thermostat".into(),
                        channel: None,
                        payload: Payload::Json(
                            json!({"n": n, "milestone": n % self.milestone_every == 0}),
                        ),
                    }),
                );
                acks.push(bus.enqueue(Record::event(topic, &envelope)).await.unwrap());
            }
            if acks.len() >= 2000 {
                for ack in acks.drain(..) {
                    ack.await.expect("a frame reached the broker");
                }
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        for ack in acks {
            ack.await.expect("a frame reached the broker");
        }
    }

    /// The frames stored in all, once every offset of `group` has reached
    /// the end of the topic; `None` while some are still on their way.
    pub async fn stored_total(&self, store: &Store, group: &str) -> Option<i64> {
        let offsets = store.load_offsets(group).await.ok()?;
        let consumed: i64 = offsets.iter().map(|o| o.next_offset).sum();
        (consumed == self.total()).then_some(())?;
        Some(self.counts(store).await.iter().sum())
    }

    /// Waits up to `patience` until `group` consumed every frame, then
    /// asserts that each was counted exactly once: the total, and every
    /// device's count.
    pub async fn assert_exact(&self, store: &Store, group: &str, patience: std::time::Duration) {
        let total = crate::wait_until(
            patience,
            "every frame to be consumed and stored",
            || async { self.stored_total(store, group).await },
        )
        .await;
        assert_eq!(total, self.total());
        let counts = self.counts(store).await;
        assert!(
            counts.iter().all(|count| *count == self.per_device),
            "every device counts exactly {}: {counts:?}",
            self.per_device
        );
    }

    /// Each device's stored frame count, in the order of `devices`.
    pub async fn counts(&self, store: &Store) -> Vec<i64> {
        let rows = store.load_device_states(&self.devices).await.unwrap();
        self.devices
            .iter()
            .map(|device| {
                rows.iter()
                    .find(|row| row.device == *device)
                    .map_or(0, |row| row.message_count)
            })
            .collect()
    }
}

/// A small random source for kill moments; the seed is printed so a failing
/// run can be replayed.
pub struct Xorshift(u64);

impl Xorshift {
    /// Seeded from the clock.
    pub fn from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        eprintln!("kill moments seed: {seed}");
        Xorshift(seed)
    }

    /// A number in `0..limit`.
    pub fn below(&mut self, limit: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % limit
    }
}
