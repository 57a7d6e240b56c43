//! `fjord-bench engine append`: sustained appends of a fixed volume.
//!
//! Each shard creates its own share of the partitions and drives them with
//! `--concurrency` appends in flight per partition, all issued on the
//! owning shard. A sample is one append until it is *written* (its `O_DIRECT`
//! write completed), or with `--flush-every-batch` one append followed by
//! a flush until it is *flushed* (fdatasync completed). Throughput is the
//! appended bytes over the time from the first shard starting to the last
//! one finishing; creating the partitions and the clean shutdown are
//! outside it.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_engine::config::LogConfig;
use fjord_engine::shard::{self, AppendRequest, EngineConfig, Shard};
use fjord_engine::{Error, LeaderEpoch, TopicPartition};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{megabytes_per_second, parse_bytes, write_json, BenchResult, DataDir, EngineArgs};
use crate::latency::{self, LatencySummary};
use crate::workload;

/// Options of `fjord-bench engine append`.
#[derive(clap::Args, Clone, Debug)]
pub struct AppendArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Partitions, spread over the shards. Default: 4 per shard.
    #[arg(long)]
    pub partitions: Option<usize>,
    /// Bytes of each record's value.
    #[arg(long, default_value = "1024", value_parser = parse_bytes)]
    pub record_bytes: u64,
    /// Largest batch size: each batch holds as many records as fit.
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    pub batch_bytes: u64,
    /// Bytes to append in total, over every partition.
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    pub total_bytes: u64,
    /// Flush after every append; a sample is then append + flush.
    #[arg(long)]
    pub flush_every_batch: bool,
    /// Appends in flight per partition.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What to append, per shard.
#[derive(Clone, Debug)]
pub struct AppendPlan {
    /// Every partition of the run; each shard takes the ones it owns.
    pub partitions: Vec<TopicPartition>,
    /// The batch every append sends.
    pub batch: Bytes,
    /// Appends per partition.
    pub batches_per_partition: u64,
    /// Appends in flight per partition.
    pub concurrency: usize,
    /// Flush after every append.
    pub flush_every_batch: bool,
}

/// One shard's share of an append run.
pub struct ShardOutcome {
    /// When the shard's first append started.
    pub started: Instant,
    /// When its last append finished.
    pub finished: Instant,
    /// Bytes it appended.
    pub appended_bytes: u64,
    /// Latency samples, in nanoseconds.
    pub histogram: Histogram<u64>,
}

/// An append run over every shard.
pub struct AppendOutcome {
    /// Bytes appended.
    pub appended_bytes: u64,
    /// From the first shard's start to the last shard's finish.
    pub elapsed: Duration,
    /// Every shard's samples merged.
    pub histogram: Histogram<u64>,
}

/// The result `fjord-bench engine append` prints and writes as JSON.
#[derive(Debug, Serialize)]
pub struct AppendReport {
    /// Always `engine append`.
    pub benchmark: &'static str,
    /// Shards.
    pub shards: usize,
    /// Partitions.
    pub partitions: usize,
    /// Bytes of each record's value.
    pub record_bytes: u64,
    /// Records per batch.
    pub records_per_batch: u64,
    /// Size of the batch as appended.
    pub batch_bytes: u64,
    /// Appends in flight per partition.
    pub concurrency: usize,
    /// Whether each append was followed by a flush.
    pub flush_every_batch: bool,
    /// Bytes appended.
    pub appended_bytes: u64,
    /// Seconds from the first append to the last completion.
    pub elapsed_seconds: f64,
    /// 10^6 bytes per second.
    pub megabytes_per_second: f64,
    /// Per-append (or append + flush) latency.
    pub latency: LatencySummary,
}

/// Runs `fjord-bench engine append`.
///
/// # Errors
/// If the engine cannot start or an append or flush fails.
pub fn run(args: &AppendArgs) -> BenchResult<AppendReport> {
    let data_dir = DataDir::new(args.engine.dir.as_deref())?;
    let config = args.engine.engine_config(data_dir.path(), 8192);
    let shards = config.shards;
    let partition_count = args.partitions.unwrap_or(4 * shards);
    let record_bytes = usize::try_from(args.record_bytes)?;
    let batch = workload::batch(record_bytes, usize::try_from(args.batch_bytes)?);
    let records_per_batch = fjord_engine::batch::BatchHeader::parse(&batch)
        .map_err(crate::Error::InvalidBatch)?
        .record_count;
    let batch_bytes = batch.len() as u64;
    let plan = AppendPlan {
        partitions: workload::partitions(partition_count),
        batches_per_partition: args
            .total_bytes
            .div_ceil(batch_bytes * partition_count as u64)
            .max(1),
        batch,
        concurrency: args.concurrency.max(1),
        flush_every_batch: args.flush_every_batch,
    };
    eprintln!(
        "engine append: {shards} shards, {partition_count} partitions, {} appends of {batch_bytes} \
         bytes per partition, concurrency {}, flush every batch: {}, data in {}",
        plan.batches_per_partition,
        plan.concurrency,
        plan.flush_every_batch,
        data_dir.path().display()
    );
    let outcome = append_volume(&config, &plan)?;
    let elapsed_seconds = outcome.elapsed.as_secs_f64();
    let report = AppendReport {
        benchmark: "engine append",
        shards,
        partitions: partition_count,
        record_bytes: args.record_bytes,
        records_per_batch: u64::try_from(records_per_batch)?,
        batch_bytes,
        concurrency: plan.concurrency,
        flush_every_batch: plan.flush_every_batch,
        appended_bytes: outcome.appended_bytes,
        elapsed_seconds,
        megabytes_per_second: megabytes_per_second(outcome.appended_bytes, elapsed_seconds),
        latency: LatencySummary::of(&outcome.histogram),
    };
    println!(
        "appended {} bytes in {elapsed_seconds:.2}s: {:.1} MB/s; {} latency {}",
        report.appended_bytes,
        report.megabytes_per_second,
        if plan.flush_every_batch {
            "append+flush"
        } else {
            "append"
        },
        report.latency
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

/// Runs the engine over `config`, appends `plan` on every shard, and shuts
/// down cleanly.
///
/// # Errors
/// If the engine cannot start or an append or flush fails.
pub fn append_volume(config: &EngineConfig, plan: &AppendPlan) -> BenchResult<AppendOutcome> {
    let plan = plan.clone();
    let outcomes = shard::run(config, move |shard: Rc<Shard>| {
        let plan = plan.clone();
        async move { drive_shard(&shard, &plan).await }
    })?;
    let mut histogram = latency::new_histogram();
    let mut appended_bytes = 0;
    let mut started: Option<Instant> = None;
    let mut finished: Option<Instant> = None;
    for outcome in outcomes {
        let outcome = outcome?;
        histogram.add(&outcome.histogram)?;
        appended_bytes += outcome.appended_bytes;
        started = Some(started.map_or(outcome.started, |first| first.min(outcome.started)));
        finished = Some(finished.map_or(outcome.finished, |last| last.max(outcome.finished)));
    }
    let elapsed = match (started, finished) {
        (Some(started), Some(finished)) => finished - started,
        _ => Duration::ZERO,
    };
    Ok(AppendOutcome {
        appended_bytes,
        elapsed,
        histogram,
    })
}

/// Creates the shard's own partitions (an existing one is reused), then
/// appends the plan's volume to each with `concurrency` appends in flight.
///
/// # Errors
/// The first failed create, append or flush, naming the partition.
pub async fn drive_shard(shard: &Rc<Shard>, plan: &AppendPlan) -> BenchResult<ShardOutcome> {
    let own = create_own_partitions(shard, &plan.partitions).await?;
    let histogram = RefCell::new(latency::new_histogram());
    let started = Instant::now();
    let workers = own.iter().flat_map(|partition| {
        let remaining = Rc::new(Cell::new(plan.batches_per_partition));
        let histogram = &histogram;
        (0..plan.concurrency).map(move |_| {
            let remaining = remaining.clone();
            async move { append_loop(shard, partition, &remaining, plan, histogram).await }
        })
    });
    let results = futures_util::future::join_all(workers).await;
    let finished = Instant::now();
    let mut appended_bytes = 0;
    for result in results {
        appended_bytes += result?;
    }
    Ok(ShardOutcome {
        started,
        finished,
        appended_bytes,
        histogram: histogram.into_inner(),
    })
}

/// Creates, on `shard`, the partitions of `partitions` it owns; one that
/// exists already (opened at start) is kept. Returns them.
///
/// # Errors
/// A failed create, naming the partition.
pub async fn create_own_partitions(
    shard: &Rc<Shard>,
    partitions: &[TopicPartition],
) -> BenchResult<Vec<TopicPartition>> {
    let own: Vec<TopicPartition> = partitions
        .iter()
        .filter(|partition| shard.owner_of(partition) == shard.id())
        .cloned()
        .collect();
    for partition in &own {
        match shard
            .create_partition(partition.clone(), LogConfig::default())
            .await
        {
            Ok(()) | Err(Error::PartitionExists(_)) => {}
            Err(source) => {
                return Err(crate::Error::Partition {
                    operation: "creating",
                    partition: partition.clone(),
                    source,
                })
            }
        }
    }
    Ok(own)
}

/// One in-flight slot of a partition: appends (and flushes) until the
/// partition's share is used up. Returns the bytes it appended.
async fn append_loop(
    shard: &Rc<Shard>,
    partition: &TopicPartition,
    remaining: &Cell<u64>,
    plan: &AppendPlan,
    histogram: &RefCell<Histogram<u64>>,
) -> BenchResult<u64> {
    let mut appended_bytes = 0;
    while remaining.get() > 0 {
        remaining.set(remaining.get() - 1);
        let begin = Instant::now();
        let append = AppendRequest {
            partition: partition.clone(),
            batches: vec![plan.batch.clone()],
            leader_epoch: LeaderEpoch(0),
            flush: false,
            advance_high_watermark: false,
        };
        shard
            .append(append)
            .await
            .map_err(|source| crate::Error::Partition {
                operation: "appending to",
                partition: partition.clone(),
                source,
            })?;
        if plan.flush_every_batch {
            shard
                .flush(partition.clone())
                .await
                .map_err(|source| crate::Error::Partition {
                    operation: "flushing",
                    partition: partition.clone(),
                    source,
                })?;
        }
        latency::record(&mut histogram.borrow_mut(), begin.elapsed());
        appended_bytes += plan.batch.len() as u64;
    }
    Ok(appended_bytes)
}
