//! `fjordctl dump-log` and `fjordctl verify-log`: offline inspection of a
//! partition's files (segments, indexes, producer snapshots, checkpoint).
//!
//! Both read files with plain `std::fs` and never write: they are meant for a
//! data directory whose broker is stopped (a running broker's active segment
//! has appends in flight and indexes only in memory). Every decoder is the
//! engine's own ([`fjord_engine::batch`], [`fjord_engine::index`],
//! [`fjord_engine::checkpoint`], [`fjord_engine::producer_state`]), so the
//! tools accept exactly what the broker accepts at open.

pub mod dump;
pub mod files;
pub mod scan;
pub mod verify;
