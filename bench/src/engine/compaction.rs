//! `fjord-bench engine compaction`: the log cleaner's throughput, and what it
//! costs produce latency on the same shard.
//!
//! One shard holds two partitions. The *compacted* one is filled with
//! `--fill-bytes` of keyed records, `--keys` distinct keys written round
//! robin (so each key has many versions), under `cleanup.policy=delete` so
//! nothing cleans it yet. The *probe* partition takes one append + flush of
//! a `--probe-record-bytes` record at a time, closed loop.
//!
//! 1. Baseline: the probe runs for `--baseline-seconds` with no cleaning.
//! 2. Cleaning: the compacted partition's policy becomes `compact`; the
//!    shard's cleaner (background task queue, as in production) picks it up
//!    within `log.cleaner.backoff.ms` and cleans it. The probe runs until the
//!    partition has nothing left to clean.
//! 3. Baseline again for `--baseline-seconds`, the log now clean: the
//!    baseline reported covers both, so a machine whose load drifts during
//!    the run (other jobs on shared hosts) biases the ratio less.
//!
//! Cleaner throughput is the bytes of the partition before cleaning over the
//! time from the policy change until it has nothing left to clean. The
//! design's target: probe p99 during cleaning < 1.5x the baseline's.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_engine::batch::{build_batch, KeyValue};
use fjord_engine::config::{CleanupPolicy, LogConfig};
use fjord_engine::shard::{self, AppendRequest, CleanerConfig, Shard};
use fjord_engine::{LeaderEpoch, TimestampMs, TopicPartition};
use futures_util::FutureExt;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{megabytes_per_second, parse_bytes, write_json, BenchResult, DataDir, EngineArgs};
use crate::latency::{self, LatencySummary};
use crate::workload;

/// How often the driver checks whether the cleaner is done.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Records per fill batch.
const FILL_RECORDS_PER_BATCH: usize = 32;

/// Options of `fjord-bench engine compaction`.
#[derive(clap::Args, Clone, Debug)]
pub struct CompactionArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Bytes of keyed records the compacted partition is filled with.
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub fill_bytes: u64,
    /// Distinct keys of the fill.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Bytes of each fill record's value.
    #[arg(long, default_value = "1KiB", value_parser = parse_bytes)]
    pub record_bytes: u64,
    /// `segment.bytes` of the compacted partition.
    #[arg(long, default_value = "16MiB", value_parser = parse_bytes)]
    pub segment_bytes: u64,
    /// Bytes of the probe's record.
    #[arg(long, default_value = "1KiB", value_parser = parse_bytes)]
    pub probe_record_bytes: u64,
    /// How long the baseline probe runs.
    #[arg(long, default_value_t = 10)]
    pub baseline_seconds: u64,
    /// The shard's offset map (`log.cleaner.dedupe.buffer.size` share).
    #[arg(long, default_value = "128MiB", value_parser = parse_bytes)]
    pub dedupe_buffer_bytes: u64,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The result of a run.
#[derive(Debug, Serialize)]
pub struct CompactionReport {
    pub benchmark: &'static str,
    /// Bytes of the compacted partition before and after cleaning.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// From the policy change until nothing was left to clean.
    pub cleaning_seconds: f64,
    /// `bytes_before` over `cleaning_seconds`.
    pub cleaner_megabytes_per_second: f64,
    /// Probe append + flush latency without cleaning, before and after.
    pub baseline: LatencySummary,
    /// Probe append + flush latency while the cleaner ran.
    pub during_cleaning: LatencySummary,
    /// `during_cleaning.p99_us / baseline.p99_us`.
    pub p99_ratio: f64,
}

struct Outcome {
    bytes_before: u64,
    bytes_after: u64,
    cleaning: Duration,
    baseline: Histogram<u64>,
    during: Histogram<u64>,
}

/// Runs `fjord-bench engine compaction`.
///
/// # Errors
/// If the engine cannot start or an operation fails.
pub fn run(args: &CompactionArgs) -> BenchResult<CompactionReport> {
    let data_dir = DataDir::new(args.engine.dir.as_deref())?;
    let mut config = args.engine.engine_config(data_dir.path(), 8192);
    config.shards = 1;
    config.cleaner = CleanerConfig {
        enabled: true,
        dedupe_buffer_bytes_per_shard: usize::try_from(args.dedupe_buffer_bytes)?,
        backoff: Duration::from_millis(50),
    };
    eprintln!(
        "engine compaction: fill {} bytes over {} keys, segments of {} bytes, data in {}",
        args.fill_bytes,
        args.keys,
        args.segment_bytes,
        data_dir.path().display()
    );
    let shared = args.clone();
    let outcomes = shard::run(&config, move |shard: Rc<Shard>| {
        let args = shared.clone();
        async move { drive(&shard, &args).await }
    })?;
    let outcome = outcomes
        .into_iter()
        .next()
        .ok_or(crate::Error::Measurement("the engine ran no shard"))??;
    let cleaning_seconds = outcome.cleaning.as_secs_f64();
    let baseline = LatencySummary::of(&outcome.baseline);
    let during_cleaning = LatencySummary::of(&outcome.during);
    let report = CompactionReport {
        benchmark: "engine compaction",
        bytes_before: outcome.bytes_before,
        bytes_after: outcome.bytes_after,
        cleaning_seconds,
        cleaner_megabytes_per_second: megabytes_per_second(outcome.bytes_before, cleaning_seconds),
        p99_ratio: during_cleaning.p99_us / baseline.p99_us,
        baseline,
        during_cleaning,
    };
    println!(
        "cleaned {} -> {} bytes in {cleaning_seconds:.2}s: {:.1} MB/s\n\
         probe append+flush without cleaning: {}\n\
         probe append+flush while cleaning:   {}\n\
         p99 ratio {:.2} (target < 1.5)",
        report.bytes_before,
        report.bytes_after,
        report.cleaner_megabytes_per_second,
        report.baseline,
        report.during_cleaning,
        report.p99_ratio
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

fn compacted_config(args: &CompactionArgs, policy: CleanupPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: args.segment_bytes,
        retention_ms: -1,
        cleanup_policy: policy,
        ..LogConfig::default()
    }
}

async fn drive(shard: &Rc<Shard>, args: &CompactionArgs) -> BenchResult<Outcome> {
    let compacted = TopicPartition::new("compacted", 0);
    let probe = TopicPartition::new("probe", 0);
    shard
        .create_partition(
            compacted.clone(),
            compacted_config(args, CleanupPolicy::DELETE),
        )
        .await?;
    shard
        .create_partition(probe.clone(), LogConfig::default())
        .await?;
    fill(shard, &compacted, args).await?;
    let log = shard.local_log(&compacted)?;
    let bytes_before = log.size_bytes();
    let probe_batch = workload::batch(
        usize::try_from(args.probe_record_bytes)?,
        usize::try_from(args.probe_record_bytes)?,
    );
    let baseline_until = Instant::now() + Duration::from_secs(args.baseline_seconds);
    let baseline = probe_until(shard, &probe, &probe_batch, || {
        Instant::now() >= baseline_until
    })
    .await?;
    shard
        .set_config(
            compacted.clone(),
            compacted_config(args, CleanupPolicy::COMPACT),
        )
        .await?;
    let started = Instant::now();
    // Checked between probe appends, at most every POLL_INTERVAL.
    let last_check = Cell::new(started);
    let done = Cell::new(None);
    let during = probe_until(shard, &probe, &probe_batch, || {
        if last_check.get().elapsed() >= POLL_INTERVAL {
            last_check.set(Instant::now());
            // The candidate never waits for the disk here (every segment
            // was written by this run, its indexes are in memory); one
            // that would counts as not done yet.
            let nothing_to_clean = log
                .cleaning_candidate(TimestampMs::now())
                .now_or_never()
                .is_some_and(|candidate| candidate.is_none());
            if log.size_bytes() < bytes_before && nothing_to_clean {
                done.set(Some(started.elapsed()));
            }
        }
        done.get().is_some()
    })
    .await;
    let cleaning = done
        .get()
        .ok_or(crate::Error::Measurement("cleaning never finished"))?;
    let mut baseline = baseline;
    let after_until = Instant::now() + Duration::from_secs(args.baseline_seconds);
    let after = probe_until(shard, &probe, &probe_batch, || {
        Instant::now() >= after_until
    })
    .await?;
    baseline.add(&after)?;
    Ok(Outcome {
        bytes_before,
        bytes_after: log.size_bytes(),
        cleaning,
        baseline,
        during: during?,
    })
}

/// Fills `partition` with keyed records, flushed, readable by consumers.
async fn fill(
    shard: &Rc<Shard>,
    partition: &TopicPartition,
    args: &CompactionArgs,
) -> BenchResult<()> {
    let value_bytes = usize::try_from(args.record_bytes)?;
    let value = workload::pseudo_random_bytes(value_bytes, 7);
    let mut written = 0;
    let mut next_key = 0u64;
    while written < args.fill_bytes {
        let keys: Vec<Vec<u8>> = (0..FILL_RECORDS_PER_BATCH)
            .map(|index| format!("key-{}", (next_key + index as u64) % args.keys).into_bytes())
            .collect();
        next_key += FILL_RECORDS_PER_BATCH as u64;
        let records: Vec<KeyValue<'_>> = keys
            .iter()
            .map(|key| (Some(&key[..]), Some(&value[..])))
            .collect();
        let batch = Bytes::from(build_batch(&records, TimestampMs::now(), None));
        written += batch.len() as u64;
        shard
            .append(AppendRequest {
                partition: partition.clone(),
                batches: vec![batch],
                leader_epoch: LeaderEpoch(0),
                flush: false,
                advance_high_watermark: true,
            })
            .await?;
    }
    shard.flush(partition.clone()).await?;
    Ok(())
}

/// Appends + flushes `batch` to `partition`, one at a time, until `stop`.
async fn probe_until(
    shard: &Rc<Shard>,
    partition: &TopicPartition,
    batch: &Bytes,
    stop: impl Fn() -> bool,
) -> BenchResult<Histogram<u64>> {
    let mut histogram = latency::new_histogram();
    while !stop() {
        let begin = Instant::now();
        shard
            .append(AppendRequest {
                partition: partition.clone(),
                batches: vec![batch.clone()],
                leader_epoch: LeaderEpoch(0),
                flush: true,
                advance_high_watermark: true,
            })
            .await?;
        latency::record(&mut histogram, begin.elapsed());
    }
    Ok(histogram)
}
