//! Helpers shared by the engine's integration tests: a seeded random source,
//! opening a partition log on in-memory storage, decoding batches read back,
//! filling a partition and reading it whole through the shards, and running
//! a test's engine in a child process the crash tests can kill.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fjord_engine::batch::{build_batch, crc_matches, records, BatchHeader};
use fjord_engine::cache::BatchCache;
use fjord_engine::clock::SystemClock;
use fjord_engine::config::LogConfig;
use fjord_engine::log::{LogOffsets, PartitionLog};
use fjord_engine::shard::{self, AppendRequest, EngineConfig, ReadBound, ReadRequest, Shard};
use fjord_engine::storage::memory::MemoryStorage;
use fjord_engine::storage::Storage;
use fjord_engine::{LeaderEpoch, Offset, TimestampMs, TopicPartition};
use futures_lite::future::block_on;

/// The data directory every test log lives under.
pub const DATA_DIR: &str = "/data";

/// The partition every test log stores.
#[must_use]
pub fn partition() -> TopicPartition {
    TopicPartition::new("t", 0)
}

/// The directory of [`partition`] under [`DATA_DIR`].
#[must_use]
pub fn partition_dir() -> PathBuf {
    Path::new(DATA_DIR).join(partition().dir_name())
}

/// Opens the test partition's log on `storage`, as a shard would: each open
/// gets a fresh cache key in the shared `cache`.
///
/// # Errors
/// Whatever [`PartitionLog::open`] returns.
pub fn try_open(
    storage: &MemoryStorage,
    config: &LogConfig,
    cache: &Rc<RefCell<BatchCache>>,
    cache_key: u64,
) -> fjord_engine::Result<PartitionLog<MemoryStorage>> {
    block_on(PartitionLog::open(
        storage.clone(),
        Rc::new(SystemClock),
        Path::new(DATA_DIR),
        partition(),
        config.clone(),
        cache.clone(),
        cache_key,
    ))
}

/// A cache that holds nothing, so every read goes to the segment files.
#[must_use]
pub fn no_cache() -> Rc<RefCell<BatchCache>> {
    Rc::new(RefCell::new(BatchCache::new(0)))
}

/// A config with small segments, so tests roll often.
#[must_use]
pub fn small_segments(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

/// One record as read back: its value and absolute timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// The record's value (`None` for a null value).
    pub value: Option<Vec<u8>>,
    /// The record's timestamp in ms.
    pub timestamp_ms: i64,
}

/// Checks a batch read from the log (its CRC verifies, its records decode)
/// and returns its header and records.
///
/// # Panics
/// If the batch is corrupt in any way: the engine must never return such.
#[must_use]
pub fn decode(batch: &Bytes) -> (BatchHeader, Vec<ReadRecord>) {
    let header = BatchHeader::parse(batch).expect("read batch has a valid header");
    assert_eq!(header.total_bytes(), batch.len(), "read batch is whole");
    assert!(crc_matches(batch), "read batch fails its CRC");
    let decoded: Vec<ReadRecord> = records(batch)
        .expect("read batch decodes")
        .map(|record| {
            let record = record.expect("read record decodes");
            ReadRecord {
                value: record.value.map(<[u8]>::to_vec),
                timestamp_ms: header.base_timestamp.0 + record.timestamp_delta,
            }
        })
        .collect();
    assert_eq!(
        decoded.len(),
        header.record_count as usize,
        "record count matches"
    );
    (header, decoded)
}

/// The base offsets of the partition's `.log` files, ascending.
#[must_use]
pub fn segment_bases(storage: &MemoryStorage) -> Vec<Offset> {
    let dir = partition_dir();
    storage
        .file_paths()
        .into_iter()
        .filter(|path| path.parent() == Some(dir.as_path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            fjord_engine::segment::parse_segment_file_name(&name, "log")
        })
        .collect()
}

/// The offsets of `partition`, from the shard that owns it.
///
/// # Panics
/// If the request fails.
pub async fn offsets<S: Storage>(shard: &Rc<Shard<S>>, partition: &TopicPartition) -> LogOffsets {
    shard
        .offsets(partition.clone())
        .await
        .unwrap_or_else(|error| panic!("{partition}: offsets failed: {error}"))
}

/// Every batch of `partition` in `offsets`, read through the shard that owns
/// it with reads of `max_bytes`, bounded by `offsets.end` and, if
/// `committed`, by the high watermark.
///
/// Stops at the first read that returns nothing, since only the caller knows
/// whether that is a failure (a log read to its end must not stop early; a
/// compacted log may have no batch left before its end): each caller asserts
/// where the batches it got end.
///
/// # Panics
/// If a read fails, a batch read has no valid header, or a read returns only
/// batches before the offset asked for (the loop would never end).
pub async fn read_batches<S: Storage>(
    shard: &Rc<Shard<S>>,
    partition: &TopicPartition,
    offsets: Range<Offset>,
    max_bytes: usize,
    committed: bool,
) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut next = offsets.start;
    while next < offsets.end {
        let request = ReadRequest {
            partition: partition.clone(),
            offset: next,
            max_bytes,
            upper_bound: offsets.end,
            bound: if committed {
                ReadBound::HighWatermark
            } else {
                ReadBound::LogEnd
            },
        };
        let read = shard
            .read(request)
            .await
            .unwrap_or_else(|error| panic!("{partition}: read at {next} failed: {error}"));
        let Some(last) = read.batches.last() else {
            break;
        };
        let last_offset = BatchHeader::parse(last)
            .unwrap_or_else(|error| panic!("{partition}: batch read at {next}: {error}"))
            .last_offset();
        assert!(
            last_offset >= next,
            "{partition}: read at {next} returned only batches before it"
        );
        next = last_offset.next();
        batches.extend(read.batches);
    }
    batches
}

/// An append of `batch` to `partition` as its only replica's leader does it
/// (leader epoch 0, the high watermark moved to the batch's end once it is
/// acknowledged), acknowledged once flushed if `flush` (`acks=all`), else
/// once written.
#[must_use]
pub fn leader_append(partition: &TopicPartition, batch: Vec<u8>, flush: bool) -> AppendRequest {
    AppendRequest {
        partition: partition.clone(),
        batches: vec![batch.into()],
        leader_epoch: LeaderEpoch(0),
        flush,
        advance_high_watermark: true,
    }
}

/// Runs the engine on `config` once: the shard owning `partition` creates it
/// with `log_config` and appends `batches` one-record batches, the one at
/// offset `n` holding `value_of(n)`, the high watermark following; then the
/// engine shuts down cleanly. Tests that read segment files cold start from
/// the data directory this leaves.
///
/// # Panics
/// If the engine does not start, or the create or an append fails.
pub fn fill_partition(
    config: &EngineConfig,
    partition: &TopicPartition,
    log_config: LogConfig,
    batches: i64,
    value_of: fn(i64) -> Vec<u8>,
) {
    fill_partitions(
        config,
        std::slice::from_ref(partition),
        log_config,
        batches,
        value_of,
    );
}

/// [`fill_partition`] for several partitions in one run of the engine.
///
/// # Panics
/// If the engine does not start, or a create or an append fails.
pub fn fill_partitions(
    config: &EngineConfig,
    partitions: &[TopicPartition],
    log_config: LogConfig,
    batches: i64,
    value_of: fn(i64) -> Vec<u8>,
) {
    let partitions = partitions.to_vec();
    shard::run(config, move |shard: Rc<Shard>| {
        let partitions = partitions.clone();
        let log_config = log_config.clone();
        async move {
            for partition in partitions
                .iter()
                .filter(|partition| shard.owner_of(partition) == shard.id())
            {
                shard
                    .create_partition(partition.clone(), log_config.clone())
                    .await
                    .expect("create");
                for offset in 0..batches {
                    let batch =
                        build_batch(&[(None, Some(&value_of(offset)))], TimestampMs(1), None);
                    shard
                        .append(leader_append(partition, batch, false))
                        .await
                        .expect("append");
                }
            }
        }
    })
    .expect("the engine runs");
}

/// The seed of a crash test's workload and kill delays: the one `env` names,
/// to replay a run, else one from the clock, so each run tries another.
///
/// # Panics
/// If `env` is set but not a `u64`.
#[must_use]
pub fn seed_from_env(env: &str) -> u64 {
    std::env::var(env).map_or_else(
        |_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is past 1970")
                .as_nanos() as u64
        },
        |seed| seed.parse().unwrap_or_else(|_| panic!("{env} is a u64")),
    )
}

/// Makes a panic on any thread end the whole process with exit code 101 (a
/// failed test's), after the usual report. For a child running the engine:
/// a panic on one shard would otherwise leave the others waiting for it
/// forever, since `shard::run` joins every shard.
pub fn exit_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(101);
    }));
}

/// This test binary run again as a child process, running one test: how the
/// crash tests run the engine in a process they can SIGKILL. The child tells
/// the parent what it did in lines on its stdout.
pub struct TestChild {
    /// The process; killing and waiting for it are the caller's.
    pub process: Child,
    /// The child's stdout lines, sent as it prints them.
    pub lines: Receiver<String>,
    reader: JoinHandle<()>,
}

impl TestChild {
    /// A command that runs only the test `test_name` of this binary, for the
    /// caller to add the environment that makes it act as a child.
    ///
    /// # Panics
    /// If the path of this binary is unknown.
    #[must_use]
    pub fn command(test_name: &str) -> Command {
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command.args(["--exact", test_name, "--nocapture", "--test-threads=1"]);
        command
    }

    /// Starts `command`, its stderr shared with this process (so a child's
    /// panic shows in the test's output) and its stdout read a line at a time
    /// by a thread into [`TestChild::lines`] until the child closes it.
    ///
    /// # Panics
    /// If the child does not start.
    pub fn spawn(command: &mut Command) -> Self {
        let mut process = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = process.stdout.take().expect("stdout is piped");
        let (sender, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            process,
            lines,
            reader,
        }
    }

    /// The lines not received yet. Call it once the process ended: it waits
    /// for the reader thread, which ends with the child's stdout.
    ///
    /// # Panics
    /// If the reader thread panicked.
    pub fn remaining_lines(self) -> Vec<String> {
        self.reader.join().expect("the stdout reader ends");
        self.lines.try_iter().collect()
    }
}
