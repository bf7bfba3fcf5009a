//! The Receiver keeps positions as the bus's [`CommitOffset`]; the store
//! keeps them as [`StoredOffset`] rows. These are the only conversions,
//! at the store's door.

use wharf_bus::CommitOffset;
use wharf_store::StoredOffset;

pub(crate) fn to_store(position: &CommitOffset) -> StoredOffset {
    StoredOffset {
        topic: position.topic.clone(),
        partition: position.partition,
        next_offset: position.next_offset,
    }
}

pub(crate) fn from_store(row: StoredOffset) -> CommitOffset {
    CommitOffset {
        topic: row.topic,
        partition: row.partition,
        next_offset: row.next_offset,
    }
}
