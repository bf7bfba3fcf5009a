//! The journal's writer thread.
//!
//! It takes everything queued, writes it with one `write` and one
//! `fdatasync` (group commit: appends arriving during a sync form the next
//! batch), then makes the batch readable and resolves its acknowledgements.
//! When the active segment is full it starts a new one; if what is still
//! live is at most half of what the segments hold, the new segment begins
//! with a snapshot of it and the older segments are deleted.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::mpsc::Receiver;

use tracing::{debug, error, info};

use super::frame::MAGIC;
use super::recover::segment_path;
use super::{Item, JournalOptions, Tp};
use crate::error::{Error, Result};

/// Most bytes written in one batch.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// The bus's side of the journal.
pub(in crate::memory) trait LiveState: Send + Sync {
    /// Records of each partition below the given end are durable.
    fn made_durable(&self, ends: &HashMap<Tp, i64>);
    /// Appends frames for everything still live: topics, log ends, group
    /// commits, retained records.
    fn encode_live(&self, out: &mut Vec<u8>);
}

struct Writer {
    dir: PathBuf,
    options: JournalOptions,
    live: Weak<dyn LiveState>,
    /// Closed segments, oldest first: (sequence, path, bytes).
    closed: Vec<(u64, PathBuf, u64)>,
    active: File,
    active_seq: u64,
    active_bytes: u64,
    /// Set after a write failed: the journal no longer promises anything.
    broken: Option<String>,
}

pub(super) fn spawn(
    dir: &Path,
    recovered: Vec<(u64, PathBuf, u64)>,
    options: JournalOptions,
    live: Weak<dyn LiveState>,
    queue: Receiver<Item>,
) -> Result<std::thread::JoinHandle<()>> {
    let next_seq = recovered.last().map_or(0, |(seq, _, _)| seq + 1);
    let (active, active_bytes) = create_segment(dir, next_seq)?;
    let mut writer = Writer {
        dir: dir.to_owned(),
        options,
        live,
        closed: recovered,
        active,
        active_seq: next_seq,
        active_bytes,
        broken: None,
    };
    // A fresh start is a good moment to drop what earlier runs left behind.
    writer.snapshot_if_worthwhile()?;
    std::thread::Builder::new()
        .name("wharf-bus-journal".into())
        .spawn(move || writer.run(queue))
        .map_err(|error| Error::Journal {
            path: dir.display().to_string(),
            reason: format!("cannot start the writer thread: {error}"),
        })
}

impl Writer {
    fn run(mut self, queue: Receiver<Item>) {
        let mut buffer = Vec::with_capacity(1 << 20);
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            let mut bytes = frame_len(&batch[0]);
            while bytes < MAX_BATCH_BYTES {
                match queue.try_recv() {
                    Ok(item) => {
                        bytes += frame_len(&item);
                        batch.push(item);
                    }
                    Err(_) => break,
                }
            }
            self.write_batch(batch, &mut buffer);
        }
        debug!("journal writer stopped: the bus is gone");
    }

    fn write_batch(&mut self, batch: Vec<Item>, buffer: &mut Vec<u8>) {
        let result = match &self.broken {
            Some(reason) => Err(reason.clone()),
            None => {
                buffer.clear();
                for item in &batch {
                    buffer.extend_from_slice(match item {
                        Item::Append { frame, .. } | Item::Meta { frame, .. } => frame,
                    });
                }
                self.append(buffer).map_err(|error| {
                    let reason = format!("journal write failed: {error}");
                    error!(%error, dir = %self.dir.display(), "the bus journal cannot write; nothing more is acknowledged");
                    self.broken = Some(reason.clone());
                    reason
                })
            }
        };
        if result.is_ok() {
            let mut ends: HashMap<Tp, i64> = HashMap::new();
            for item in &batch {
                if let Item::Append { tp, offset, .. } = item {
                    let end = ends.entry(tp.clone()).or_default();
                    *end = (*end).max(offset + 1);
                }
            }
            if let Some(live) = self.live.upgrade() {
                live.made_durable(&ends);
            }
        }
        let outcome = || {
            result.clone().map_err(|reason| Error::Journal {
                path: self.dir.display().to_string(),
                reason,
            })
        };
        for item in batch {
            match item {
                Item::Append { ack, .. } => drop(ack.send(outcome())),
                Item::Meta {
                    done: Some(done), ..
                } => drop(done.send(outcome())),
                Item::Meta { done: None, .. } => {}
            }
        }
        if result.is_ok()
            && self.active_bytes >= self.options.segment_bytes
            && let Err(error) = self.roll()
        {
            error!(%error, "the bus journal cannot start a new segment; nothing more is acknowledged");
            self.broken = Some(format!("journal roll failed: {error}"));
        }
    }

    /// Writes `bytes` to the active segment and waits until they are on disk.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.active.write_all(bytes)?;
        self.active.sync_data()?;
        self.active_bytes += bytes.len() as u64;
        Ok(())
    }

    /// Closes the active segment and starts the next.
    fn roll(&mut self) -> Result<()> {
        let seq = self.active_seq + 1;
        let (file, bytes) = create_segment(&self.dir, seq)?;
        let closed = std::mem::replace(&mut self.active, file);
        drop(closed);
        self.closed.push((
            self.active_seq,
            segment_path(&self.dir, self.active_seq),
            self.active_bytes,
        ));
        self.active_seq = seq;
        self.active_bytes = bytes;
        self.snapshot_if_worthwhile()
    }

    /// When what is live is at most half of what the closed segments hold,
    /// writes it to the (new, empty) active segment and deletes the closed
    /// ones: write amplification stays at most two.
    fn snapshot_if_worthwhile(&mut self) -> Result<()> {
        let held: u64 = self.closed.iter().map(|(_, _, bytes)| bytes).sum();
        if held == 0 {
            return Ok(());
        }
        let Some(live) = self.live.upgrade() else {
            return Ok(());
        };
        let mut snapshot = Vec::new();
        live.encode_live(&mut snapshot);
        drop(live);
        if snapshot.len() as u64 * 2 > held {
            return Ok(());
        }
        self.append(&snapshot)
            .map_err(|error| self.io_error(error))?;
        for (_, path, _) in self.closed.drain(..) {
            std::fs::remove_file(&path).map_err(|error| Error::Journal {
                path: path.display().to_string(),
                reason: error.to_string(),
            })?;
        }
        sync_dir(&self.dir)?;
        info!(
            live_bytes = snapshot.len(),
            freed_bytes = held,
            "bus journal compacted"
        );
        Ok(())
    }

    fn io_error(&self, error: std::io::Error) -> Error {
        Error::Journal {
            path: self.dir.display().to_string(),
            reason: error.to_string(),
        }
    }
}

fn frame_len(item: &Item) -> usize {
    match item {
        Item::Append { frame, .. } | Item::Meta { frame, .. } => frame.len(),
    }
}

/// Creates segment `seq` with its magic, durable along with its directory entry.
fn create_segment(dir: &Path, seq: u64) -> Result<(File, u64)> {
    let path = segment_path(dir, seq);
    let fail = |error: std::io::Error| Error::Journal {
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    let mut file = File::options()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(fail)?;
    file.write_all(MAGIC).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    sync_dir(dir)?;
    Ok((file, MAGIC.len() as u64))
}

/// Makes file creations and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|error| Error::Journal {
            path: dir.display().to_string(),
            reason: error.to_string(),
        })
}
