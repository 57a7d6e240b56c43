//! The one error type of fjord-bench.

use std::path::PathBuf;
use std::process::ExitStatus;

use fjord_engine::types::TopicPartition;

/// Every failure a `fjord-bench` command reports. Each renders as one line,
/// which `main` prints on stderr before exiting non-zero.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Options that contradict each other or a value out of range.
    #[error("{0}")]
    Usage(&'static str),

    /// A byte count (`--total-bytes 4GiB`) that does not parse.
    #[error("{0}")]
    ByteCount(#[from] ByteCountError),

    /// A workload file's field out of range.
    #[error("workload {workload}: {reason}")]
    InvalidWorkload { workload: String, reason: String },

    /// A file that cannot be read, written or created, or a directory
    /// that cannot be created.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A workload file that is not valid YAML for a workload.
    #[error("{}: {source}", path.display())]
    WorkloadFile {
        path: PathBuf,
        /// Boxed: the YAML error is large, and every result carries it.
        #[source]
        source: Box<serde_saphyr::Error>,
    },

    /// A file given to `compare` or `plot` that is not a `run` result.
    #[error("{}: not a fjord-bench run result: {source}", path.display())]
    RunResult {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// Other I/O: the working directory, a child process, a data directory.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// A JSON report that does not serialise.
    #[error(transparent)]
    Json(#[from] serde_json::Error),

    /// The storage engine failed to start or stop.
    #[error(transparent)]
    Engine(#[from] fjord_engine::Error),

    /// The storage engine refused an operation on one partition.
    #[error("{operation} {partition}: {source}")]
    Partition {
        /// `creating`, `appending to`, `flushing`, ...
        operation: &'static str,
        partition: TopicPartition,
        #[source]
        source: fjord_engine::Error,
    },

    /// A Kafka client call failed.
    #[error(transparent)]
    Client(#[from] fjord_tools::Error),

    /// Latency histograms that do not merge.
    #[error(transparent)]
    Histogram(#[from] hdrhistogram::errors::AdditionError),

    /// A size that does not fit this machine's `usize`.
    #[error(transparent)]
    Size(#[from] std::num::TryFromIntError),

    /// A duration in seconds that is negative, not finite or too large.
    #[error(transparent)]
    DurationSeconds(#[from] std::time::TryFromFloatSecsError),

    /// The system clock is before 1970.
    #[error(transparent)]
    Clock(#[from] std::time::SystemTimeError),

    /// The benchmark built a record batch the engine does not parse.
    #[error("built an invalid batch: {0}")]
    InvalidBatch(#[source] fjord_engine::Error),

    /// A measurement that could not be taken: what was missing.
    #[error("{0}")]
    Measurement(&'static str),

    /// The partitions of a topic have different leaders; a run drives one
    /// broker.
    #[error(
        "partitions {first_partition} and {other_partition} have different leaders ({first_leader} and {other_leader}); fjord-bench drives one broker per run"
    )]
    SeveralLeaders {
        first_partition: i32,
        first_leader: String,
        other_partition: i32,
        other_leader: String,
    },

    /// Producer or consumer threads of a `run` failed.
    #[error("{failed} load threads failed; the first: {first}")]
    LoadThreads { failed: usize, first: Box<Error> },

    /// `engine restart-child` exited before every shard had written.
    #[error("restart-child ended early ({status})")]
    ChildEndedEarly { status: ExitStatus },

    /// A shard of `engine restart-child` failed its appends.
    #[error("restart-child: {source}")]
    RestartChild {
        #[source]
        source: Box<Error>,
    },
}

/// Why a byte count does not parse (see [`crate::engine::parse_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteCountError {
    #[error("`{text}` does not start with a number")]
    NoNumber { text: String },
    #[error("unknown unit `{unit}` in `{text}`")]
    UnknownUnit { unit: String, text: String },
    #[error("`{text}` is too large")]
    TooLarge { text: String },
}

/// A fjord-bench result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
