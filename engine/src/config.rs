//! Per-partition log configuration, under Kafka's topic config names.
//!
//! A Kafka user's topic configs (`segment.bytes`, `retention.ms`, ...) carry
//! over unchanged: [`LogConfig::set`] takes the Kafka name and the value as a
//! string, validates it the way Kafka does, and reports a clear error for
//! anything else. Defaults are Kafka's.

use crate::batch::TimestampType;
use crate::error::{Error, Result};

/// Smallest `segment.bytes` Kafka accepts (14 bytes in Kafka; we need at least
/// one block so a segment holds at least one aligned write).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest `segment.bytes`: positions in `.index` entries are `u32`.
pub const SEGMENT_BYTES_MAX: u64 = i32::MAX as u64;

/// How a partition's log is written, rolled, flushed and retained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment at this size.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a segment this long after its first append.
    pub segment_ms: i64,
    /// `index.interval.bytes`: log bytes between offset index entries.
    pub index_interval_bytes: u32,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type`: keep the producer's timestamps or stamp
    /// batches with the append time.
    pub message_timestamp_type: TimestampType,
    /// `flush.messages`: fdatasync after this many records (`i64::MAX` = only
    /// when asked).
    pub flush_messages: i64,
    /// `flush.ms`: fdatasync when the oldest unflushed append is this old.
    pub flush_ms: i64,
    /// `retention.ms`: delete segments whose newest record is older (-1 = keep).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments beyond this size (-1 = keep).
    pub retention_bytes: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            message_timestamp_type: TimestampType::CreateTime,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
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
    pub const KEYS: [&'static str; 9] = [
        "segment.bytes",
        "segment.ms",
        "index.interval.bytes",
        "max.message.bytes",
        "message.timestamp.type",
        "flush.messages",
        "flush.ms",
        "retention.ms",
        "retention.bytes",
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
            "flush.messages" => self.flush_messages = parse_in(key, value, 1, i64::MAX)?,
            "flush.ms" => self.flush_ms = parse_in(key, value, 0, i64::MAX)?,
            "retention.ms" => self.retention_ms = parse_in(key, value, -1, i64::MAX)?,
            "retention.bytes" => self.retention_bytes = parse_in(key, value, -1, i64::MAX)?,
            _ => return Err(invalid(key, value, "unknown log config")),
        }
        Ok(())
    }

    /// The current value of one config by its Kafka name, as Kafka prints it.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => match self.message_timestamp_type {
                TimestampType::CreateTime => "CreateTime".to_owned(),
                TimestampType::LogAppendTime => "LogAppendTime".to_owned(),
            },
            "flush.messages" => self.flush_messages.to_string(),
            "flush.ms" => self.flush_ms.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
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
    }
}
