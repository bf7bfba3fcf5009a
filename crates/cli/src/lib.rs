//! The `wharf` command. `wharf up` runs the Socket, the Receiver and the
//! Commander in one process on the in-process bus and SQLite, with a demo
//! device model and rule built in; `wharf token` mints device tokens;
//! `wharf tail` follows the topics.
//!
//! # Layout
//! - [`embedded`]: the all-in-one wiring behind `wharf up` (also used by
//!   the end-to-end tests).
//! - [`secret`]: the token secret kept in the data directory.
//! - [`demo`]: the built-in demo profile and rule.
//! - [`probe`]: `wharf probe URL`, a health check for images without a shell.
//! - [`tail`]: `wharf tail`, choosing where records come from (Kafka, or the
//!   event stream of a running `wharf up`) and printing them; the reading,
//!   filtering and formatting are the `wharf-tail` crate's.
//! - [`sim`]: `wharf sim`, choosing where simulated devices connect and
//!   printing the report; the devices are the `wharf-sim` crate's.

pub mod demo;
pub mod embedded;
pub mod probe;
pub mod secret;
pub mod sim;
pub mod tail;
