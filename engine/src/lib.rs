//! fjord-engine: the storage engine under fjord's Kafka-compatible broker.
//!
//! A thread-per-core segmented log. Each core runs one pinned glommio
//! executor (a *shard*) that exclusively owns a set of partitions; a partition's
//! log is a sequence of segments in Kafka's on-disk format, appended with
//! `O_DIRECT` writes from aligned buffers and made durable by group-committed
//! `fdatasync`s. The engine knows record batches, offsets, timestamps, leader
//! epochs and producer sequences; it knows nothing of the Kafka wire protocol.

pub mod batch;
pub mod cache;
pub mod checkpoint;
pub mod clock;
pub mod codec;
pub mod config;
pub mod error;
pub mod index;
pub mod leader_epoch;
pub mod limits;
pub mod log;
pub mod producer_state;
pub mod segment;
pub mod shard;
pub mod storage;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod types;

pub use error::{Error, Result};
pub use types::{
    FilePosition, LeaderEpoch, Offset, ProducerEpoch, ProducerId, TimestampMs, TopicPartition,
};
