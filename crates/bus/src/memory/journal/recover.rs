//! Reading a journal directory back at start-up.
//!
//! Segments are read in order and their frames folded into the state they
//! describe: later frames win (commits, log ends), records are de-duplicated
//! by offset (a snapshot may repeat records a later batch writes again). A
//! torn frame at the end of the last segment is a write the process did not
//! finish (nothing in it was acknowledged): the segment is cut back to its
//! last whole frame. A bad frame anywhere else is damage, not a crash, and
//! recovery refuses to go on rather than silently drop what follows it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::frame::{self, Frame, MAGIC};
use crate::error::{Error, Result};
use crate::record::Record;

/// A topic name and a partition number.
pub(in crate::memory) type Tp = (String, u32);

/// The state a journal describes.
#[derive(Default)]
pub(in crate::memory) struct Recovered {
    /// Each topic's partition count and whether it is compacted.
    pub(in crate::memory) topics: BTreeMap<String, (u32, bool)>,
    pub(in crate::memory) records: HashMap<Tp, BTreeMap<i64, Record>>,
    /// The highest log end written for each partition.
    pub(in crate::memory) ends: HashMap<Tp, i64>,
    /// Each group's latest committed offsets.
    pub(in crate::memory) commits: HashMap<String, HashMap<Tp, i64>>,
    /// The segment files, oldest first, with their sequence numbers and sizes.
    pub(in crate::memory) segments: Vec<(u64, PathBuf, u64)>,
    /// What was cut from the last segment, if anything.
    pub(in crate::memory) truncated: Option<String>,
}

/// The segment file of sequence number `seq` in `dir`.
pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.log"))
}

/// Reads every segment in `dir` (created when missing).
pub(in crate::memory) fn recover(dir: &Path) -> Result<Recovered> {
    let io = |error: std::io::Error| Error::Journal {
        path: dir.display().to_string(),
        reason: error.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io)?
        .flatten()
        .filter_map(|entry| {
            let path = entry.path();
            let seq = path
                .file_name()?
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()?;
            Some((seq, path))
        })
        .collect();
    segments.sort();

    let mut recovered = Recovered::default();
    let count = segments.len();
    for (index, (seq, path)) in segments.into_iter().enumerate() {
        let last = index + 1 == count;
        let fail = |reason: String| Error::Journal {
            path: path.display().to_string(),
            reason,
        };
        let data = std::fs::read(&path).map_err(|e| fail(e.to_string()))?;
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            if last && MAGIC.starts_with(&data) {
                // Created, but the process died before its first bytes.
                warn!(path = %path.display(), "removing an unfinished journal segment");
                std::fs::remove_file(&path).map_err(|e| fail(e.to_string()))?;
                continue;
            }
            return Err(fail(
                "not a Wharf journal segment (unknown format or version)".into(),
            ));
        }
        let decoded = frame::decode_all(&data[MAGIC.len()..]);
        let mut size = data.len() as u64;
        if let Some(torn) = decoded.torn {
            let valid = (MAGIC.len() + decoded.valid_len) as u64;
            if !last {
                return Err(fail(format!(
                    "damaged at byte {valid}: {torn}; only the newest segment can end in a torn write \
                     (move the directory aside to start empty)"
                )));
            }
            warn!(path = %path.display(), valid_bytes = valid, dropped_bytes = size - valid, %torn,
                "cutting a torn write from the end of the journal");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| fail(e.to_string()))?;
            file.set_len(valid).map_err(|e| fail(e.to_string()))?;
            file.sync_all().map_err(|e| fail(e.to_string()))?;
            recovered.truncated = Some(format!(
                "{}: {} bytes cut ({torn})",
                path.display(),
                size - valid
            ));
            size = valid;
        }
        for frame in decoded.frames {
            recovered.apply(frame);
        }
        recovered.segments.push((seq, path, size));
    }
    Ok(recovered)
}

impl Recovered {
    fn apply(&mut self, frame: Frame) {
        match frame {
            Frame::Record {
                partition,
                offset,
                record,
            } => {
                let tp = (record.topic.clone(), partition);
                let end = self.ends.entry(tp.clone()).or_default();
                *end = (*end).max(offset + 1);
                self.records.entry(tp).or_default().insert(offset, record);
            }
            Frame::Commit {
                group,
                topic,
                partition,
                next_offset,
            } => {
                self.commits
                    .entry(group)
                    .or_default()
                    .insert((topic, partition), next_offset);
            }
            Frame::Topic {
                topic,
                partitions,
                compacted,
            } => {
                self.topics.insert(topic, (partitions, compacted));
            }
            Frame::PartitionEnd {
                topic,
                partition,
                next_offset,
            } => {
                let end = self.ends.entry((topic, partition)).or_default();
                *end = (*end).max(next_offset);
            }
        }
    }
}
