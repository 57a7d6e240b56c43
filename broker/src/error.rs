//! The broker's error type and the mapping of every failure to the Kafka
//! error code a client expects.

use std::path::PathBuf;

use fjord_engine::error::RecordFault;
use fjord_engine::Error as EngineError;
use kafka_protocol::ResponseError;

/// Everything that can fail in the broker shell.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A configuration key is unknown or its value malformed.
    #[error("invalid configuration {key}={value:?}: {reason}")]
    Config {
        /// The Kafka config name.
        key: String,
        /// The rejected value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The controller cannot start from the metadata log (or the legacy
    /// metadata file) under `metadata.log.dir`.
    #[error("cannot start the controller from metadata.log.dir={}: {source}", dir.display())]
    Controller {
        /// The configured `metadata.log.dir`.
        dir: PathBuf,
        /// What failed, naming the file.
        #[source]
        source: crate::controller::OpenError,
    },
    /// This node's controller quorum member stopped on a fatal error while
    /// the broker ran.
    #[error("the controller quorum member failed: {reason}")]
    ControllerFailed {
        /// openraft's error.
        reason: String,
    },
    /// A data directory's `meta.properties` forbids this node to start on
    /// it, or cannot be read or written.
    #[error(transparent)]
    MetaProperties(#[from] crate::meta_properties::MetaPropertiesError),
    /// The storage engine refused.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Socket or file I/O outside the engine.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A request frame that cannot be decoded; the connection is closed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The `kafka-protocol` crate's codec refused a message, with its
    /// reason.
    #[error("{0}")]
    Codec(String),
}

/// The Kafka error code for an engine failure.
///
/// Handlers reach the engine only for partitions the metadata image has
/// (an unknown one is refused before, with `UNKNOWN_TOPIC_OR_PARTITION`),
/// so a partition the engine does not hold is one this broker has not
/// opened yet (it acts on a new image within moments): Kafka's
/// `NOT_LEADER_OR_FOLLOWER` for a broker not yet leading, which clients
/// retry after refreshing their metadata.
#[must_use]
pub fn engine_error_code(error: &EngineError) -> i16 {
    let kind = match error {
        EngineError::InvalidBatch(_) => ResponseError::CorruptMessage,
        EngineError::InvalidRecord(_)
        | EngineError::InvalidRecords {
            fault: RecordFault::KeylessInCompactedTopic,
            ..
        } => ResponseError::InvalidRecord,
        EngineError::InvalidRecords {
            fault: RecordFault::TimestampOutOfRange,
            ..
        } => ResponseError::InvalidTimestamp,
        EngineError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        EngineError::CorruptLog { .. } | EngineError::Io { .. } | EngineError::Poisoned { .. } => {
            ResponseError::KafkaStorageError
        }
        EngineError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        EngineError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        EngineError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch,
        EngineError::UnknownPartition(_) | EngineError::ShuttingDown => {
            ResponseError::NotLeaderOrFollower
        }
        EngineError::PartitionExists(_) => ResponseError::TopicAlreadyExists,
        EngineError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        // A follower's own fault in following its leader, never a client's
        // (Kafka's `UnexpectedAppendOffsetException` has no code either).
        EngineError::ShardFailed(_) | EngineError::OffsetMismatch { .. } => {
            ResponseError::UnknownServerError
        }
        EngineError::CorruptCheckpoint { .. } => ResponseError::KafkaStorageError,
    };
    kind.code()
}

/// The code for "no error".
pub const NONE: i16 = 0;
