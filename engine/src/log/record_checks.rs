//! What a partition refuses in the records of a well-formed batch.
//!
//! Kafka checks each record against the topic's configs (a key on a
//! compacted topic, a `CreateTime` timestamp within
//! `message.timestamp.before.max.ms` / `message.timestamp.after.max.ms` of
//! the broker's clock) and refuses the whole batch naming every faulty
//! record (KIP-467), so a client fails exactly those records and retries
//! the rest. The checks read the records only when the batch's header
//! cannot settle them: a non-compacted topic whose batch's newest
//! timestamp is in range needs no decompression (the common case, with
//! `before.max.ms` unbounded by default).

use bytes::Bytes;

use crate::batch::{self, BatchHeader, TimestampType};
use crate::config::LogConfig;
use crate::error::{Error, RecordError, RecordFault, Result};
use crate::types::TimestampMs;

/// Kafka's timestamp for a record without one.
const NO_TIMESTAMP: i64 = -1;

/// The checks a partition's config asks of every incoming record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordChecks {
    /// Every record needs a key (compacted topics).
    keys_required: bool,
    /// With `CreateTime`, the timestamps accepted.
    timestamp_range: Option<TimestampRange>,
}

/// The `CreateTime` timestamps a partition accepts.
#[derive(Clone, Copy, Debug)]
struct TimestampRange {
    /// The earliest, unless `message.timestamp.before.max.ms` is unbounded.
    earliest: Option<i64>,
    /// The latest.
    latest: i64,
    /// The earliest as Kafka prints it in the record error.
    earliest_shown: i64,
}

impl TimestampRange {
    fn contains(&self, timestamp: i64) -> bool {
        self.earliest.is_none_or(|earliest| timestamp >= earliest) && timestamp <= self.latest
    }
}

impl RecordChecks {
    /// The checks `config` asks for, against the clock reading `now`.
    pub(crate) fn new(config: &LogConfig, now: TimestampMs) -> Self {
        let before = config.message_timestamp_before_max_ms;
        let timestamp_range =
            (config.message_timestamp_type == TimestampType::CreateTime).then(|| TimestampRange {
                earliest: (before != i64::MAX).then(|| now.0.saturating_sub(before)),
                latest: now.0.saturating_add(config.message_timestamp_after_max_ms),
                earliest_shown: now.0.saturating_sub(before),
            });
        Self {
            keys_required: config.cleanup_policy.compact,
            timestamp_range,
        }
    }

    /// Checks every record of a validated batch.
    ///
    /// # Errors
    /// [`Error::InvalidRecords`] naming every refused record (keyless ones
    /// first: Kafka reports one fault per batch); [`Error::InvalidBatch`] if
    /// the records do not decode.
    pub(crate) fn check(&self, header: &BatchHeader, bytes: &[u8]) -> Result<()> {
        let range = self
            .timestamp_range
            .filter(|_| header.timestamp_type() == TimestampType::CreateTime);
        // Without a lower bound, the batch's newest timestamp settles it.
        let header_settles_timestamps = range
            .is_none_or(|range| range.earliest.is_none() && header.max_timestamp.0 <= range.latest);
        if !self.keys_required && header_settles_timestamps {
            return Ok(());
        }
        let section =
            Bytes::copy_from_slice(&bytes[batch::BATCH_HEADER_BYTES..header.total_bytes()]);
        let section = crate::codec::decompress(header.compression()?, section)?;
        let mut keyless = Vec::new();
        let mut out_of_range = Vec::new();
        for (index, record) in batch::records_in(header, &section).enumerate() {
            let record = record?;
            let batch_index = i32::try_from(index).unwrap_or(i32::MAX);
            if self.keys_required && record.key.is_none() {
                keyless.push(RecordError {
                    batch_index,
                    message: "Compacted topic cannot accept message without key.".to_owned(),
                });
            }
            if let Some(range) = range {
                let timestamp = header
                    .base_timestamp
                    .0
                    .saturating_add(record.timestamp_delta);
                if timestamp != NO_TIMESTAMP && !range.contains(timestamp) {
                    out_of_range.push(RecordError {
                        batch_index,
                        message: format!(
                            "Timestamp {timestamp} of message with offset {index} is out of \
                             range. The timestamp should be within [{}, {}]",
                            range.earliest_shown, range.latest
                        ),
                    });
                }
            }
        }
        if !keyless.is_empty() {
            return Err(Error::InvalidRecords {
                fault: RecordFault::KeylessInCompactedTopic,
                records: keyless,
            });
        }
        if !out_of_range.is_empty() {
            return Err(Error::InvalidRecords {
                fault: RecordFault::TimestampOutOfRange,
                records: out_of_range,
            });
        }
        Ok(())
    }
}
