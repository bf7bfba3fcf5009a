//! `wharf tail`: follow Wharf's topics and print decoded events, one per
//! line. Ops read Kafka directly; a running `wharf up`, whose bus lives in
//! its own process, serves the same records as a stream on its operations
//! port.
//!
//! # Layout
//! - [`record`]: [`TailedRecord`], one record as tail handles it, and
//!   [`TailedRecord::decode`].
//! - [`topics`]: [`TopicSelection`], the topic names a user gives
//!   (`device-events`, `deliveries.*`) resolved to the bus's topics.
//! - [`follow`]: reading topics with a throwaway group that never commits,
//!   from the end (default) or the beginning, following or not.
//! - [`filter`]: [`Filter`]: `--device`, `--type`, `--since`.
//! - [`story`]: [`Story`]: `--correlation`, one story's events, the frame
//!   that caused a command included.
//! - [`line`]: [`Output`]: one line per record, pretty (colour on a
//!   terminal) or the raw envelope as JSON.
//! - [`stream`]: the event stream of `wharf up` (`GET /v1/tail`, Server-Sent
//!   Events) and its client.
//!
//! # Guarantees
//! - Tail never commits offsets and never joins a service's group.
//! - A record that is not a valid envelope is printed as such (topic,
//!   partition, offset, size, first bytes), never skipped silently.

pub mod filter;
pub mod follow;
pub mod line;
pub mod record;
pub mod story;
pub mod stream;
pub mod topics;

pub use filter::Filter;
pub use follow::{FollowPlan, Start};
pub use line::Output;
pub use record::TailedRecord;
pub use story::Story;
pub use topics::TopicSelection;
