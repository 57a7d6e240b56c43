//! Per-partition log configuration, under Kafka's topic config names.
//!
//! A Kafka user's topic configs (`segment.bytes`, `retention.ms`, ...) carry
//! over unchanged: [`LogConfig::set`] takes the Kafka name and the value as a
//! string, validates it the way Kafka does, and reports a clear error for
//! anything else. Defaults are Kafka's.

use crate::batch::TimestampType;
use crate::error::{Error, Result};
use crate::index::{IndexPolicy, SEGMENT_INDEX_BYTES_DEFAULT};

/// Smallest `segment.bytes` Kafka accepts (14 bytes in Kafka; we need at least
/// one block so a segment holds at least one aligned write).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest `segment.bytes`: positions in `.index` entries are `u32`.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// `cleanup.policy`: what happens to old segments. Kafka's list of `delete`
/// and `compact`; at least one is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// `delete`: `retention.ms` / `retention.bytes` delete old segments.
    pub delete: bool,
    /// `compact`: the log cleaner keeps only the latest record of each key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// Kafka's default, `delete`.
    pub const DELETE: Self = Self {
        delete: true,
        compact: false,
    };
    /// `compact`.
    pub const COMPACT: Self = Self {
        delete: false,
        compact: true,
    };

    /// Parses Kafka's comma-separated list (`delete`, `compact`,
    /// `compact,delete` in any order, spaces allowed).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an empty list or any other word.
    pub fn parse(key: &str, value: &str) -> Result<Self> {
        let mut policy = Self {
            delete: false,
            compact: false,
        };
        for word in value.split(',').map(str::trim) {
            match word {
                "delete" => policy.delete = true,
                "compact" => policy.compact = true,
                _ => return Err(invalid(key, value, "must be a list of delete and compact")),
            }
        }
        Ok(policy)
    }
}

impl std::fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.compact, self.delete) {
            (true, true) => f.write_str("compact,delete"),
            (true, false) => f.write_str("compact"),
            _ => f.write_str("delete"),
        }
    }
}

/// How a partition's log is written, rolled, flushed, retained and compacted.
#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment at this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment this long after its first append.
    pub segment_ms: i64,
    /// `index.interval.bytes`: log bytes between index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: the largest a segment's offset or time index
    /// may grow; a segment whose index is full rolls. Below 12 bytes the
    /// time index holds no entry, and a closed segment's greatest timestamp
    /// is not known after a restart: time retention then keeps it.
    pub segment_index_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`: keep the producer's timestamps or stamp
    /// batches with the append time.
    pub message_timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: with `CreateTime`, refuse a record
    /// stamped more than this before the broker's clock.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: with `CreateTime`, refuse a record
    /// stamped more than this after the broker's clock.
    pub message_timestamp_after_max_ms: i64,
    /// `flush.messages`: fdatasync after this many records (`i64::MAX` = only
    /// when asked).
    pub flush_messages: i64,
    /// `flush.ms`: fdatasync when the oldest unflushed append is this old.
    pub flush_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older (-1 = keep).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments beyond this size (-1 = keep).
    pub retention_bytes: i64,
    /// `cleanup.policy`: retention applies only with `delete`, the cleaner
    /// only with `compact`.
    pub cleanup_policy: CleanupPolicy,
    /// `min.cleanable.dirty.ratio`: the cleaner compacts a log once its dirty
    /// bytes are at least this share of its cleanable bytes.
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms`: how long a tombstone stays after the cleaner
    /// first saw it, so consumers reading from behind see the delete.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log whose oldest dirty records are older is
    /// compacted whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            segment_index_bytes: SEGMENT_INDEX_BYTES_DEFAULT,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            // Kafka's default since 4.0: an hour ahead of the broker's clock.
            message_timestamp_after_max_ms: 3_600_000,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy::DELETE,
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> Error {
    Error::InvalidConfig {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_in(key: &str, value: &str, min: i64, max: i64) -> Result<i64> {
    let parsed: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(key, value, "not an integer"))?;
    if parsed < min || parsed > max {
        return Err(invalid(key, value, &format!("must be in [{min}, {max}]")));
    }
    Ok(parsed)
}

impl LogConfig {
    /// The Kafka names this type understands.
    pub const KEYS: [&'static str; 17] = [
        "segment.bytes",
        "segment.ms",
        "index.interval.bytes",
        "segment.index.bytes",
        "max.message.bytes",
        "message.timestamp.type",
        "message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms",
        "flush.messages",
        "flush.ms",
        "retention.ms",
        "retention.bytes",
        "cleanup.policy",
        "min.cleanable.dirty.ratio",
        "delete.retention.ms",
        "min.compaction.lag.ms",
        "max.compaction.lag.ms",
    ];

    /// Sets one config by its Kafka name.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown key or a value Kafka would
    /// reject; the config is unchanged then.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "segment.bytes" => {
                self.segment_bytes = parse_in(
                    key,
                    value,
                    SEGMENT_BYTES_MIN as i64,
                    SEGMENT_BYTES_MAX as i64,
                )? as u64;
            }
            "segment.ms" => self.segment_ms = parse_in(key, value, 1, i64::MAX)?,
            "index.interval.bytes" => {
                self.index_interval_bytes = parse_in(key, value, 0, i64::from(i32::MAX))? as u32;
            }
            // Kafka's bound: at least 4 bytes, at most an `int`.
            "segment.index.bytes" => {
                self.segment_index_bytes = parse_in(key, value, 4, i64::from(i32::MAX))? as u32;
            }
            "max.message.bytes" => {
                self.max_message_bytes = parse_in(key, value, 0, i64::from(i32::MAX))? as usize;
            }
            "message.timestamp.type" => {
                self.message_timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(invalid(key, value, "must be CreateTime or LogAppendTime")),
                };
            }
            "message.timestamp.before.max.ms" => {
                self.message_timestamp_before_max_ms = parse_in(key, value, 0, i64::MAX)?;
            }
            "message.timestamp.after.max.ms" => {
                self.message_timestamp_after_max_ms = parse_in(key, value, 0, i64::MAX)?;
            }
            "flush.messages" => self.flush_messages = parse_in(key, value, 1, i64::MAX)?,
            "flush.ms" => self.flush_ms = parse_in(key, value, 0, i64::MAX)?,
            "retention.ms" => self.retention_ms = parse_in(key, value, -1, i64::MAX)?,
            "retention.bytes" => self.retention_bytes = parse_in(key, value, -1, i64::MAX)?,
            "cleanup.policy" => self.cleanup_policy = CleanupPolicy::parse(key, value)?,
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(key, value, "not a number"))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(invalid(key, value, "must be in [0, 1]"));
                }
                self.min_cleanable_dirty_ratio = ratio;
            }
            "delete.retention.ms" => self.delete_retention_ms = parse_in(key, value, 0, i64::MAX)?,
            "min.compaction.lag.ms" => {
                self.min_compaction_lag_ms = parse_in(key, value, 0, i64::MAX)?;
            }
            "max.compaction.lag.ms" => {
                self.max_compaction_lag_ms = parse_in(key, value, 1, i64::MAX)?;
            }
            _ => return Err(invalid(key, value, "unknown log config")),
        }
        Ok(())
    }

    /// How this log's segments index their batches.
    #[must_use]
    pub fn index_policy(&self) -> IndexPolicy {
        IndexPolicy {
            interval_bytes: self.index_interval_bytes,
            max_bytes: self.segment_index_bytes,
        }
    }

    /// The current value of one config by its Kafka name, as Kafka prints it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => match self.message_timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_owned(),
                TimestampType::LogAppendTime => "LogAppendTime".to_owned(),
            },
            "message.timestamp.before.max.ms" => self.message_timestamp_before_max_ms.to_string(),
            "message.timestamp.after.max.ms" => self.message_timestamp_after_max_ms.to_string(),
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "cleanup.policy" => self.cleanup_policy.to_string(),
            "min.cleanable.dirty.ratio" => format!("{:?}", self.min_cleanable_dirty_ratio),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.max_compaction_lag_ms.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_round_trips_through_get_and_set() {
        let mut config = LogConfig::default();
        for key in LogConfig::KEYS {
            let value = config.get(key).expect(key);
            config.set(key, &value).expect(key);
        }
        assert_eq!(config, LogConfig::default());
    }

    #[test]
    fn bad_values_and_unknown_keys_are_rejected_without_change() {
        let mut config = LogConfig::default();
        assert!(config.set("segment.bytes", "12").is_err());
        assert!(config.set("retention.ms", "soon").is_err());
        assert!(config.set("message.timestamp.type", "Now").is_err());
        assert!(config.set("no.such.key", "1").is_err());
        assert_eq!(config, LogConfig::default());
        config.set("retention.ms", "-1").unwrap();
        assert_eq!(config.retention_ms, -1);
        assert!(config.set("segment.index.bytes", "3").is_err());
        config.set("segment.index.bytes", "4").unwrap();
        assert_eq!(config.index_policy().max_bytes, 4);
    }

    #[test]
    fn cleanup_policies_parse_in_any_order_and_print_as_kafka_does() {
        let mut config = LogConfig::default();
        assert_eq!(config.get("cleanup.policy").unwrap(), "delete");
        config.set("cleanup.policy", "delete, compact").unwrap();
        assert_eq!(config.get("cleanup.policy").unwrap(), "compact,delete");
        config.set("cleanup.policy", "compact").unwrap();
        assert_eq!(config.cleanup_policy, CleanupPolicy::COMPACT);
        assert!(config.set("cleanup.policy", "").is_err());
        assert!(config.set("cleanup.policy", "compact,shred").is_err());
        assert!(config.set("min.cleanable.dirty.ratio", "1.5").is_err());
        assert_eq!(config.get("min.cleanable.dirty.ratio").unwrap(), "0.5");
        assert!(config.set("max.compaction.lag.ms", "0").is_err());
    }
}
