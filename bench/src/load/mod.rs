//! `fjord-bench run`: `OpenMessaging`-Benchmark-style workloads over the Kafka
//! protocol, and `fjord-bench compare` of their results.
//!
//! A workload (YAML, OMB's field names where OMB has one, or flags) gives
//! topics, partitions, message size and payload randomness, producers and
//! consumers per topic, a target rate or none (max rate), acks, linger,
//! batch size, compression, and warm-up and measured durations. Every run
//! creates fresh topics (so consumers start at offset 0 of empty
//! partitions) and deletes them afterwards unless `--keep-topics`.
//!
//! Two latencies are measured per message, both without coordinated
//! omission: *publish* (intended send time to acknowledgement) and
//! *end-to-end* (intended send time, carried in the first 8 bytes of the
//! value, to the consumer decoding it). On a rate-limited run the intended
//! send time is the schedule slot (`start + n / rate`), not when the
//! producer got round to it, so a stalled broker shows up as latency rather
//! than as fewer, faster samples. Producers and consumers share one clock
//! (one process), so end-to-end needs no clock sync.
//!
//! Results: a summary table, a JSON document ([`report::RunReport`]),
//! `.hgrm` percentile files and SVG plots in `--output-dir`.

pub mod compare;
pub mod consumer;
pub mod producer;
pub mod report;
pub mod run;
pub mod svg;

use std::path::{Path, PathBuf};

use fjord_tools::client::records::Codec;
use serde::{Deserialize, Serialize};

use crate::engine::{parse_bytes, BenchResult};
use crate::Error;

/// Bytes at the start of every value that carry its intended send time
/// (nanoseconds since the run's epoch, big-endian).
pub const STAMP_BYTES: usize = 8;
/// The largest message: a bound on every batch buffer.
pub const MESSAGE_BYTES_MAX: u32 = 1 << 20;
/// The most producers or consumers per topic (one thread each).
pub const CLIENTS_PER_TOPIC_MAX: u32 = 256;

/// A workload, as YAML or after flags are applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    /// Names the run's files and topics.
    pub name: String,
    /// Topics, each with its own producers and consumers.
    pub topics: u32,
    /// Partitions per topic.
    pub partitions_per_topic: u32,
    /// Replication factor of the created topics.
    #[serde(default = "one")]
    pub replication_factor: i16,
    /// Bytes of each message's value (at least [`STAMP_BYTES`]).
    pub message_size: u32,
    /// Fraction of each value that is random (the rest zeros), 0.0 to 1.0:
    /// 1.0 is incompressible, lower values let codecs work.
    #[serde(default = "one_f64")]
    pub payload_randomness: f64,
    /// Producer threads per topic, one connection each.
    pub producers_per_topic: u32,
    /// Consumer threads per topic, one connection each, splitting the
    /// partitions between them.
    pub consumer_per_subscription: u32,
    /// Whether the consumers of a topic form a consumer group (named after
    /// the topic) that assigns them partitions and stores their offsets,
    /// instead of a fixed split. Needs a broker with group support.
    #[serde(default)]
    pub use_consumer_group: bool,
    /// Messages per second over all producers; 0 means as fast as the
    /// broker acknowledges.
    pub producer_rate: u64,
    /// `acks`: 0, 1 or -1.
    #[serde(default = "one")]
    pub acks: i16,
    /// Milliseconds a batch waits for more messages before it is sent.
    #[serde(default = "one_u32")]
    pub linger_ms: u32,
    /// Largest batch in bytes (`batch.size`).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Produce requests outstanding per producer connection.
    #[serde(default = "default_in_flight")]
    pub max_in_flight: u32,
    /// Compression of every batch.
    #[serde(default)]
    pub compression: Codec,
    /// Seconds run before measuring.
    pub warmup_duration_seconds: u32,
    /// Seconds measured.
    pub test_duration_seconds: u32,
}

fn one() -> i16 {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn one_u32() -> u32 {
    1
}
fn default_batch_size() -> u32 {
    64 << 10
}
fn default_in_flight() -> u32 {
    5
}

impl Workload {
    /// Reads a workload file.
    ///
    /// # Errors
    /// If the file cannot be read or is not a valid workload.
    pub fn from_file(path: &Path) -> BenchResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        let workload: Self =
            serde_saphyr::from_str(&text).map_err(|source| Error::WorkloadFile {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        workload.validate()?;
        Ok(workload)
    }

    /// Checks every bound.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> BenchResult<()> {
        let in_range = |ok: bool, what: &str| -> BenchResult<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidWorkload {
                    workload: self.name.clone(),
                    reason: what.to_owned(),
                })
            }
        };
        in_range(
            !self.name.is_empty()
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "name is [a-zA-Z0-9._-]+",
        )?;
        in_range((1..=100).contains(&self.topics), "topics is 1 to 100")?;
        in_range(
            (1..=10_000).contains(&self.partitions_per_topic),
            "partitionsPerTopic is 1 to 10000",
        )?;
        in_range(
            (STAMP_BYTES as u32..=MESSAGE_BYTES_MAX).contains(&self.message_size),
            "messageSize is 8 B to 1 MiB",
        )?;
        in_range(
            (0.0..=1.0).contains(&self.payload_randomness),
            "payloadRandomness is 0.0 to 1.0",
        )?;
        in_range(
            (1..=CLIENTS_PER_TOPIC_MAX).contains(&self.producers_per_topic),
            "producersPerTopic is 1 to 256",
        )?;
        in_range(
            (1..=CLIENTS_PER_TOPIC_MAX).contains(&self.consumer_per_subscription),
            "consumerPerSubscription is 1 to 256",
        )?;
        in_range([0, 1, -1].contains(&self.acks), "acks is 0, 1 or -1")?;
        in_range(
            (1..=64 << 20).contains(&self.batch_size),
            "batchSize is 1 B to 64 MiB",
        )?;
        in_range(
            (1..=1_000).contains(&self.max_in_flight),
            "maxInFlight is 1 to 1000",
        )?;
        in_range(self.linger_ms <= 60_000, "lingerMs is at most 60000")?;
        in_range(self.test_duration_seconds > 0, "testDurationSeconds > 0")
    }
}

/// Options of `fjord-bench run`: a workload file, flags that override its
/// fields (or give them all without a file), and where results go.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// A broker to bootstrap from, `host:port`.
    #[arg(long, default_value = "localhost:9092")]
    pub bootstrap_server: String,
    /// A workload YAML file (see bench/workloads/).
    #[arg(long)]
    pub workload: Option<PathBuf>,
    /// Where the JSON, `.hgrm` and SVG files go.
    #[arg(long, default_value = "bench-results")]
    pub output_dir: PathBuf,
    /// Keep the run's topics instead of deleting them at the end.
    #[arg(long)]
    pub keep_topics: bool,
    /// Workload name.
    #[arg(long)]
    pub name: Option<String>,
    /// Topics.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Partitions per topic.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Replication factor.
    #[arg(long)]
    pub replication_factor: Option<i16>,
    /// Message size (e.g. 1KiB).
    #[arg(long, value_parser = parse_bytes)]
    pub message_size: Option<u64>,
    /// Fraction of each value that is random, 0.0 to 1.0.
    #[arg(long)]
    pub payload_randomness: Option<f64>,
    /// Producers per topic.
    #[arg(long)]
    pub producers: Option<u32>,
    /// Consumers per topic.
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Consumers of a topic join one consumer group instead of splitting
    /// the partitions themselves.
    #[arg(long)]
    pub consumer_group: bool,
    /// Target messages per second over all producers; 0 for max rate.
    #[arg(long)]
    pub rate: Option<u64>,
    /// `acks`: 0, 1 or -1.
    #[arg(long, allow_negative_numbers = true)]
    pub acks: Option<i16>,
    /// Linger in milliseconds.
    #[arg(long)]
    pub linger_ms: Option<u32>,
    /// Batch size (e.g. 64KiB).
    #[arg(long, value_parser = parse_bytes)]
    pub batch_size: Option<u64>,
    /// Produce requests outstanding per producer.
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// Compression codec.
    #[arg(long, value_enum)]
    pub compression: Option<Codec>,
    /// Warm-up seconds (not measured).
    #[arg(long)]
    pub warmup_secs: Option<u32>,
    /// Measured seconds.
    #[arg(long)]
    pub duration_secs: Option<u32>,
}

impl RunArgs {
    /// The workload file with the flags applied, or the flags alone on the
    /// defaults of the first standard workload.
    ///
    /// # Errors
    /// An unreadable or invalid workload, or a flag out of range.
    pub fn workload(&self) -> BenchResult<Workload> {
        let mut workload = match &self.workload {
            Some(path) => Workload::from_file(path)?,
            None => Workload {
                name: "custom".to_owned(),
                topics: 1,
                partitions_per_topic: 100,
                replication_factor: 1,
                message_size: 1024,
                payload_randomness: 1.0,
                producers_per_topic: 4,
                consumer_per_subscription: 4,
                use_consumer_group: false,
                producer_rate: 50_000,
                acks: 1,
                linger_ms: 1,
                batch_size: default_batch_size(),
                max_in_flight: default_in_flight(),
                compression: Codec::None,
                warmup_duration_seconds: 10,
                test_duration_seconds: 60,
            },
        };
        let set = |field: &mut u32, value: Option<u32>| {
            if let Some(value) = value {
                *field = value;
            }
        };
        if let Some(name) = &self.name {
            workload.name.clone_from(name);
        }
        set(&mut workload.topics, self.topics);
        set(&mut workload.partitions_per_topic, self.partitions);
        set(&mut workload.producers_per_topic, self.producers);
        set(&mut workload.consumer_per_subscription, self.consumers);
        set(&mut workload.linger_ms, self.linger_ms);
        set(&mut workload.max_in_flight, self.max_in_flight);
        set(&mut workload.warmup_duration_seconds, self.warmup_secs);
        set(&mut workload.test_duration_seconds, self.duration_secs);
        if let Some(bytes) = self.message_size {
            workload.message_size = u32::try_from(bytes)?;
        }
        if let Some(bytes) = self.batch_size {
            workload.batch_size = u32::try_from(bytes)?;
        }
        workload.replication_factor = self
            .replication_factor
            .unwrap_or(workload.replication_factor);
        workload.payload_randomness = self
            .payload_randomness
            .unwrap_or(workload.payload_randomness);
        workload.producer_rate = self.rate.unwrap_or(workload.producer_rate);
        workload.acks = self.acks.unwrap_or(workload.acks);
        workload.compression = self.compression.unwrap_or(workload.compression);
        workload.use_consumer_group |= self.consumer_group;
        workload.validate()?;
        Ok(workload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped workload parses and validates.
    #[test]
    fn the_standard_workloads_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let workload = Workload::from_file(&path).unwrap();
            assert_eq!(workload.partitions_per_topic, 100, "{}", path.display());
            names.push(workload.name);
        }
        assert!(names.len() >= 3, "{names:?}");
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let good = "name: t\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 100\n\
                    producersPerTopic: 1\nconsumerPerSubscription: 1\nproducerRate: 0\n\
                    warmupDurationSeconds: 0\ntestDurationSeconds: 1\ncompression: zstd\n";
        let workload: Workload = serde_saphyr::from_str(good).unwrap();
        workload.validate().unwrap();
        assert_eq!(workload.compression, Codec::Zstd);
        assert_eq!(workload.acks, 1);
        assert!(serde_saphyr::from_str::<Workload>(&format!("{good}typo: 1\n")).is_err());
        let tiny = Workload {
            message_size: 4,
            ..workload
        };
        assert!(tiny.validate().is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let args = RunArgs {
            bootstrap_server: String::new(),
            workload: None,
            output_dir: PathBuf::new(),
            keep_topics: false,
            name: Some("x".to_owned()),
            topics: None,
            partitions: Some(3),
            replication_factor: None,
            message_size: Some(64),
            payload_randomness: None,
            producers: None,
            consumers: None,
            consumer_group: false,
            rate: Some(0),
            acks: Some(-1),
            linger_ms: None,
            batch_size: None,
            max_in_flight: None,
            compression: Some(Codec::Lz4),
            warmup_secs: Some(0),
            duration_secs: Some(2),
        };
        let workload = args.workload().unwrap();
        assert_eq!(
            (
                workload.partitions_per_topic,
                workload.message_size,
                workload.producer_rate
            ),
            (3, 64, 0)
        );
        assert_eq!((workload.acks, workload.compression), (-1, Codec::Lz4));
    }
}
