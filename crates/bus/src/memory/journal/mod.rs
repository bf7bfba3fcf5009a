//! The durable in-process bus's journal: every record, topic and group
//! commit appended to segment files before it is acknowledged.
//!
//! # Layout
//! - [`frame`]: the on-disk frames (pure; checksummed, torn writes detected).
//! - [`recover`]: folding the segments back into state at start-up.
//! - [`writer`]: the writer thread: group commit, segment roll, snapshots.
//!
//! # Invariants
//! - An append's acknowledgement resolves only after the `fdatasync` of the
//!   batch that holds it; consumers read only such records.
//! - One `fdatasync` per batch: everything queued while the previous sync ran
//!   goes into the next (group commit, no added delay).
//! - Old segments are deleted only once a snapshot of everything still live
//!   (retained records, group commits, topics, log ends) is durable.
//! - Only one process uses a directory (an exclusive lock on `LOCK`).

mod frame;
mod recover;
mod writer;

use std::fs::File;
use std::path::Path;

use tokio::sync::oneshot;

pub(in crate::memory) use frame::{
    encode_commit, encode_partition_end, encode_record, encode_topic,
};
pub(super) use recover::{Recovered, Tp, recover};
pub(super) use writer::LiveState;

use crate::error::{Error, Result};

/// Tunables of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// A segment is closed once it holds this many bytes; closing is when old
    /// segments are replaced by a snapshot of what is still live.
    pub segment_bytes: u64,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 << 20,
        }
    }
}

/// What waits for the writer thread.
pub(super) enum Item {
    /// A record; `ack` resolves once it is durable.
    Append {
        frame: Vec<u8>,
        tp: Tp,
        offset: i64,
        ack: oneshot::Sender<Result<()>>,
    },
    /// Group commits (or other metadata); `done` resolves once durable.
    Meta {
        frame: Vec<u8>,
        done: Option<oneshot::Sender<Result<()>>>,
    },
}

/// The handle the bus appends through. Dropping it stops the writer once
/// everything queued is written, and then releases the directory.
pub(super) struct Journal {
    /// Unbounded: every record queued here is also held by a partition,
    /// whose capacity bounds them (publishers wait when partitions are full).
    /// `None` only while dropping.
    items: Option<std::sync::mpsc::Sender<Item>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Held (and so the directory locked) until the writer has stopped.
    _lock: File,
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(self.items.take());
        if let Some(writer) = self.writer.take() {
            // The writer itself may drop the bus's last reference while it
            // holds one briefly; it cannot wait for itself.
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

impl Journal {
    /// Locks `dir` for this process: call before reading it back.
    pub(super) fn lock(dir: &Path) -> Result<File> {
        std::fs::create_dir_all(dir).map_err(|error| Error::Journal {
            path: dir.display().to_string(),
            reason: error.to_string(),
        })?;
        lock_dir(dir)
    }

    /// Starts the writer thread on the locked `dir`; it begins a new segment
    /// (after a snapshot, when worthwhile).
    pub(super) fn start(
        dir: &Path,
        lock: File,
        recovered_segments: Vec<(u64, std::path::PathBuf, u64)>,
        options: JournalOptions,
        live: std::sync::Weak<dyn LiveState>,
    ) -> Result<Journal> {
        let (items, queue) = std::sync::mpsc::channel();
        let writer = writer::spawn(dir, recovered_segments, options, live, queue)?;
        Ok(Journal {
            items: Some(items),
            writer: Some(writer),
            _lock: lock,
        })
    }

    /// Queues `item`; if the writer is gone, its acknowledgement fails.
    pub(super) fn send(&self, item: Item) {
        let sent = match &self.items {
            Some(items) => items.send(item),
            None => Err(std::sync::mpsc::SendError(item)),
        };
        if let Err(std::sync::mpsc::SendError(item)) = sent {
            let closed = || Err(Error::Closed);
            match item {
                Item::Append { ack, .. } => drop(ack.send(closed())),
                Item::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(closed());
                    }
                }
            }
        }
    }
}

/// Takes an exclusive lock on `dir/LOCK`: a second process on the same
/// directory would interleave its writes with ours.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let fail = |reason: String| Error::Journal {
        path: path.display().to_string(),
        reason,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| fail(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(fail(
            "the bus directory is in use by another process (is another `wharf up` running on this data directory?)".into(),
        )),
        Err(std::fs::TryLockError::Error(error)) => Err(fail(error.to_string())),
    }
}
