//! The engine's one error type.
//!
//! Expected failures (bad input from a producer, a read past the log end, a
//! fenced producer, a failed disk) are variants here, structured so the broker
//! can map each to its Kafka error code at the edge without parsing strings.
//! Programmer errors (broken invariants) are assertions, not variants.

use std::path::PathBuf;

use crate::types::{Offset, ProducerEpoch, ProducerId, TopicPartition};

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an engine operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk refused an operation. On the append path this also poisons
    /// the partition (see [`Error::Poisoned`]).
    #[error("{context} {path}: {source}")]
    Io {
        /// What the engine was doing.
        context: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A producer sent a batch that is not valid Kafka record batch v2
    /// (Kafka: `CORRUPT_MESSAGE`).
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),

    /// A batch holds a record the partition refuses although the batch is
    /// well formed, such as a record without a key for a compacted topic
    /// (Kafka: `INVALID_RECORD`).
    #[error("invalid record: {0}")]
    InvalidRecord(String),

    /// Records of a well-formed batch the partition refuses, each named by
    /// its index in the batch (Kafka's record errors, KIP-467): the batch is
    /// refused whole, and a client fails those records with the fault's
    /// error and retries the others.
    #[error("{}", describe_record_errors(.records))]
    InvalidRecords {
        /// What is wrong with them.
        fault: RecordFault,
        /// Every refused record, by its index in its batch.
        records: Vec<RecordError>,
    },

    /// A batch exceeds `max.message.bytes` (Kafka: `MESSAGE_TOO_LARGE`).
    #[error("record batch of {size} bytes exceeds max.message.bytes {max}")]
    MessageTooLarge {
        /// The batch's size in bytes.
        size: usize,
        /// The configured limit.
        max: usize,
    },

    /// Bytes on disk fail validation (bad CRC, impossible length) where a torn
    /// tail cannot explain them. Such data is never served
    /// (Kafka: `KAFKA_STORAGE_ERROR` / `CORRUPT_MESSAGE`).
    #[error("corrupt log data in {path} at position {position}: {reason}")]
    CorruptLog {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What check failed.
        reason: String,
    },

    /// A checkpoint or snapshot file does not decode.
    #[error("corrupt checkpoint {path}: {reason}")]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What check failed.
        reason: Corruption,
    },

    /// An earlier write or fdatasync failed, so the partition's on-disk state
    /// is unknown; it refuses every further append until reopened
    /// (Kafka: `KAFKA_STORAGE_ERROR`).
    #[error("partition {partition} is poisoned by an earlier I/O failure: {cause}")]
    Poisoned {
        /// The poisoned partition.
        partition: TopicPartition,
        /// The failure that poisoned it.
        cause: String,
    },

    /// A read or truncation asked for an offset the log does not hold
    /// (Kafka: `OFFSET_OUT_OF_RANGE`).
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The log start offset.
        log_start: Offset,
        /// The log end offset.
        log_end: Offset,
    },

    /// A follower was given a batch that does not follow its log: it starts
    /// below the log end or overlaps the batch before it (Kafka's
    /// `UnexpectedAppendOffsetException` and `OffsetsOutOfOrderException`).
    /// Its log and the leader's disagree, so it must truncate or fetch
    /// again from its log end; nothing was appended.
    #[error("replicated batch starts at offset {found}, expected at least {expected}")]
    OffsetMismatch {
        /// The lowest base offset the batch could have had: the log end, or
        /// the offset after the previous batch of the same append.
        expected: Offset,
        /// The batch's base offset.
        found: Offset,
    },

    /// An idempotent producer's batch does not continue its sequence
    /// (Kafka: `OUT_OF_ORDER_SEQUENCE_NUMBER`).
    #[error(
        "out of order sequence for producer {producer_id:?}: expected {expected}, got {received}"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: ProducerId,
        /// The sequence the partition expected next.
        expected: i32,
        /// The first sequence of the rejected batch.
        received: i32,
    },

    /// A batch from an older producer epoch than the partition has seen
    /// (Kafka: `INVALID_PRODUCER_EPOCH`).
    #[error("producer {producer_id:?} epoch {received:?} is older than current {current:?}")]
    ProducerFenced {
        /// The producer.
        producer_id: ProducerId,
        /// The epoch the partition knows.
        current: ProducerEpoch,
        /// The epoch the batch carries.
        received: ProducerEpoch,
    },

    /// The partition is not hosted here (Kafka: `UNKNOWN_TOPIC_OR_PARTITION`).
    #[error("unknown partition {0}")]
    UnknownPartition(TopicPartition),

    /// The partition already exists (Kafka: `TOPIC_ALREADY_EXISTS`).
    #[error("partition {0} already exists")]
    PartitionExists(TopicPartition),

    /// A configuration key has a value the engine cannot use
    /// (Kafka: `INVALID_CONFIG`).
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidConfig {
        /// The Kafka config name.
        key: String,
        /// The rejected value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The engine or partition is shutting down and takes no new work.
    #[error("shutting down")]
    ShuttingDown,

    /// A shard's thread ended abnormally (a panic outside the shard's own
    /// tasks, which abort the process instead).
    #[error("shard thread failed: {0}")]
    ShardFailed(String),
}

impl Error {
    /// Wraps an I/O error with what was being done to which path.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }
}

/// What is wrong with the bytes of a checkpoint, snapshot or index file.
///
/// The decoders of those formats work on bytes and do not know the file;
/// they return this, and whoever read the file names it in
/// [`Error::CorruptCheckpoint`] (an index that does not decode is rebuilt
/// from the log instead, see [`crate::index`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// Fewer bytes than a frame header.
    #[error("{length} bytes is shorter than the {header_bytes}-byte frame header")]
    ShorterThanHeader {
        /// Bytes present.
        length: usize,
        /// Bytes of a frame header.
        header_bytes: usize,
    },
    /// A frame of another kind of file.
    #[error("magic {found:02x?} is not the expected {expected:02x?}")]
    WrongMagic {
        /// The magic read.
        found: [u8; 4],
        /// The magic of the kind expected.
        expected: [u8; 4],
    },
    /// A frame of a format version this build does not read.
    #[error("format version {found} is not the supported version {supported}")]
    UnsupportedVersion {
        /// The version read.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A truncated or extended frame.
    #[error("header states a {stated}-byte payload but {present} bytes follow it")]
    LengthMismatch {
        /// The length the header states.
        stated: u32,
        /// Bytes after the header.
        present: usize,
    },
    /// A payload whose bytes changed since it was written.
    #[error("payload CRC-32C {actual:#010x} does not match the stored {stored:#010x}")]
    CrcMismatch {
        /// The CRC the header stores.
        stored: u32,
        /// The CRC of the payload read.
        actual: u32,
    },
    /// A payload that is not a valid archive of the expected type.
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    /// An offset or epoch that must not be negative is.
    #[error("negative {what} {value}")]
    Negative {
        /// Which value.
        what: &'static str,
        /// The value read.
        value: i64,
    },
    /// Entries that must ascend strictly do not (leader epochs, producer
    /// ids, a producer's batches, index entries), named by their position.
    #[error("{what} entry {entry} does not ascend from the one before it")]
    NotAscending {
        /// Which list.
        what: &'static str,
        /// The entry's position in it, from 0.
        entry: usize,
    },
    /// A producer with no cached batch or more than a producer keeps.
    #[error("producer {producer_id} has {count} cached batches, expected 1..={max}")]
    CachedBatchCount {
        /// The producer.
        producer_id: i64,
        /// Batches in the snapshot.
        count: usize,
        /// Batches a producer keeps at most.
        max: usize,
    },
    /// A cached batch at or past the snapshot's offset, which a snapshot
    /// must cover.
    #[error("producer {producer_id} batch ending at {last_offset} is not below the snapshot offset {snapshot_offset}")]
    BatchPastSnapshot {
        /// The producer.
        producer_id: i64,
        /// The batch's last offset.
        last_offset: i64,
        /// The snapshot's offset.
        snapshot_offset: i64,
    },
    /// A length that is not a whole number of fixed-size entries.
    #[error("length {length} is not a multiple of {entry_bytes}")]
    PartialEntry {
        /// Bytes present.
        length: usize,
        /// Bytes per entry.
        entry_bytes: usize,
    },
}

/// Why records of a well-formed batch are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordFault {
    /// A record without a key for a compacted topic (Kafka:
    /// `INVALID_RECORD`).
    KeylessInCompactedTopic,
    /// A `CreateTime` timestamp outside `message.timestamp.before.max.ms` /
    /// `message.timestamp.after.max.ms` of the broker's clock (Kafka:
    /// `INVALID_TIMESTAMP`).
    TimestampOutOfRange,
}

/// One refused record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// The record's index in its batch, from 0.
    pub batch_index: i32,
    /// Why, in Kafka's words.
    pub message: String,
}

/// How many record errors an error's text shows, as Kafka does.
const RECORD_ERRORS_SHOWN: usize = 3;

fn describe_record_errors(records: &[RecordError]) -> String {
    let shown: Vec<String> = records
        .iter()
        .take(RECORD_ERRORS_SHOWN)
        .map(|error| format!("record {}: {}", error.batch_index, error.message))
        .collect();
    format!(
        "One or more records have been rejected due to {} record errors in total, \
         and only showing the first three errors at most: [{}]",
        records.len(),
        shown.join("; ")
    )
}
