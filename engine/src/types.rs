//! Newtypes for the numbers a log is made of.
//!
//! Offsets, epochs, producer ids and file positions are all integers on the
//! wire and on disk; mixing them up is the classic log-engine bug (a file
//! position used as an offset, a relative offset used as an absolute one).
//! Each gets its own type so the compiler keeps them apart.

use std::fmt;
use std::sync::Arc;

/// A record's position in a partition: dense, starting at the log start
/// offset, never reused. Kafka's offsets are signed 64-bit integers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

impl Offset {
    /// The first offset of a new, empty partition.
    pub const ZERO: Offset = Offset(0);

    /// The offset `delta` records after this one.
    #[must_use]
    pub fn plus(self, delta: i64) -> Offset {
        Offset(self.0 + delta)
    }

    /// The offset right after this one.
    #[must_use]
    pub fn next(self) -> Offset {
        self.plus(1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A leader epoch: bumped by the controller each time a partition's leader
/// changes. Stored in every batch's `partitionLeaderEpoch` field, and in the
/// broker's metadata records (hence the rkyv derives).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// Batches written before any leader was elected carry this value.
    pub const UNKNOWN: LeaderEpoch = LeaderEpoch(-1);
}

/// An idempotent or transactional producer's id, assigned by InitProducerId.
/// `-1` means the batch is not idempotent. The broker's metadata records
/// carry the next unallocated one (hence the rkyv derives).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ProducerId(pub i64);

impl ProducerId {
    /// The id carried by batches of non-idempotent producers.
    pub const NONE: ProducerId = ProducerId(-1);
}

/// A producer's epoch: bumped on every InitProducerId for the same
/// transactional id, fencing older instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerEpoch(pub i16);

/// A byte position inside one segment's `.log` file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePosition(pub u64);

/// A millisecond Unix timestamp, as Kafka records carry them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    /// "No timestamp", as Kafka writes it (`-1`).
    pub const NONE: TimestampMs = TimestampMs(-1);

    /// The wall clock now.
    #[must_use]
    pub fn now() -> TimestampMs {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        TimestampMs(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A topic partition: the unit the engine stores, orders and shards.
/// Requests name thousands of them and every layer keys by them, so the
/// name is shared: a clone is a reference count, not an allocation.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Kafka topic name: `[a-zA-Z0-9._-]{1,249}`.
    pub topic: Arc<str>,
    /// Partition index within the topic.
    pub partition: i32,
}

impl TopicPartition {
    /// Builds a topic partition from its name and index.
    #[must_use]
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }

    /// The directory name Kafka uses for this partition: `<topic>-<partition>`.
    #[must_use]
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    /// Parses a partition directory name back; `None` for anything else,
    /// including [`CLUSTER_METADATA_TOPIC`]'s directory: it holds the
    /// broker's metadata log, not a data partition (Kafka's log manager
    /// skips it too), so neither the shards nor `verify-log` open it.
    #[must_use]
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (topic, partition) = name.rsplit_once('-')?;
        if topic == CLUSTER_METADATA_TOPIC {
            return None;
        }
        if !partition.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let partition: i32 = partition.parse().ok()?;
        if topic.is_empty() || partition < 0 || !is_valid_topic_name(topic) {
            return None;
        }
        Some(Self::new(topic, partition))
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// The name Kafka reserves for the metadata log's partition
/// (`__cluster_metadata-0`); no client may create a topic of that name.
pub const CLUSTER_METADATA_TOPIC: &str = "__cluster_metadata";

/// Kafka's topic name rule: 1..=249 characters of `[a-zA-Z0-9._-]`, and not
/// `.` or `..`.
#[must_use]
pub fn is_valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_name_round_trips_including_dashes_in_topic() {
        let tp = TopicPartition::new("my-topic.v2", 17);
        assert_eq!(tp.dir_name(), "my-topic.v2-17");
        assert_eq!(TopicPartition::from_dir_name(&tp.dir_name()), Some(tp));
    }

    #[test]
    fn non_partition_directories_are_not_parsed() {
        for name in [
            "lost+found",
            "topic",
            "-3",
            "topic-x",
            "bad topic-0",
            "t-1x",
            "t-+1",
            "__cluster_metadata-0",
        ] {
            assert_eq!(TopicPartition::from_dir_name(name), None, "{name}");
        }
    }
}
