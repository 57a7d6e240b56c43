//! `fjord-bench engine restart`: how long the engine takes to open a
//! filled partition set, after a clean shutdown and after `kill -9`.
//!
//! 1. Fill: `--partitions` partitions get `--total-bytes` in all (not flushed
//!    per batch; the clean shutdown flushes and checkpoints).
//! 2. Clean restart, `--repeats` times: the engine starts over the directory
//!    with a main that returns at once. *Open time* is from calling
//!    [`shard::run`] until every shard's main has started, i.e. executors up
//!    and every partition opened and recovered; the clean shutdown after is
//!    not counted.
//! 3. Unclean restart: a child process (this binary's hidden `engine
//!    restart-child`) opens the engine, appends `--unflushed-bytes` more
//!    without flushing, reports them written, and is killed with SIGKILL.
//!    The next open must recover them; its open time is reported.
//!
//! The design's target: open time does not grow with the log's size, only
//! with what was written since the last checkpoint.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use fjord_engine::shard::{self, EngineConfig, Shard};
use serde::Serialize;

use super::append::{append_volume, drive_shard, AppendPlan};
use super::{megabytes_per_second, parse_bytes, write_json, BenchResult, DataDir, EngineArgs};
use crate::workload;

/// Options of `fjord-bench engine restart`.
#[derive(clap::Args, Clone, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Partitions to fill.
    #[arg(long, default_value_t = 8)]
    pub partitions: usize,
    /// Bytes to fill them with, in total.
    #[arg(long, default_value = "10GiB", value_parser = parse_bytes)]
    pub total_bytes: u64,
    /// Batch size of the fill.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub batch_bytes: u64,
    /// Clean restarts to time.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Bytes the child appends without flushing before it is killed.
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes)]
    pub unflushed_bytes: u64,
    /// Skip the unclean (kill -9) restart.
    #[arg(long)]
    pub skip_unclean: bool,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of the hidden `engine restart-child`.
#[derive(clap::Args, Clone, Debug)]
pub struct RestartChildArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Partitions to append to (they exist already).
    #[arg(long)]
    pub partitions: usize,
    /// Bytes to append, in total, without flushing.
    #[arg(long, value_parser = parse_bytes)]
    pub total_bytes: u64,
    /// Batch size.
    #[arg(long, value_parser = parse_bytes)]
    pub batch_bytes: u64,
}

/// Timing of one engine start.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct OpenTiming {
    /// From `shard::run` until every shard's main started.
    pub open_ms: f64,
    /// The whole run, clean shutdown included.
    pub run_ms: f64,
}

/// The result `fjord-bench engine restart` prints and writes as JSON.
#[derive(Debug, Serialize)]
pub struct RestartReport {
    /// Always `engine restart`.
    pub benchmark: &'static str,
    /// Shards.
    pub shards: usize,
    /// Partitions.
    pub partitions: usize,
    /// Bytes appended by the fill.
    pub filled_bytes: u64,
    /// Fill throughput, 10^6 bytes per second.
    pub fill_megabytes_per_second: f64,
    /// Segment files after the fill.
    pub segments: usize,
    /// The same engine started over an empty directory: executor start-up
    /// (threads, rings, `io_memory` registration) without any partition.
    pub empty: OpenTiming,
    /// Every clean restart.
    pub clean: Vec<OpenTiming>,
    /// The fastest clean restart's open time.
    pub clean_open_ms_min: f64,
    /// The median clean restart's open time.
    pub clean_open_ms_median: f64,
    /// Bytes written but not flushed when the child was killed.
    pub unflushed_bytes: u64,
    /// The restart after `kill -9`, unless skipped.
    pub unclean: Option<OpenTiming>,
}

/// Runs `fjord-bench engine restart`.
///
/// # Errors
/// If the engine cannot start, an append fails, or the child misbehaves.
pub fn run(args: &RestartArgs) -> BenchResult<RestartReport> {
    let data_dir = DataDir::new(args.engine.dir.as_deref())?;
    let config = args.engine.engine_config(data_dir.path(), 8192);
    let plan = fill_plan(args.partitions, args.total_bytes, args.batch_bytes)?;
    eprintln!(
        "engine restart: filling {} partitions with {} bytes in {}",
        args.partitions,
        args.total_bytes,
        data_dir.path().display()
    );
    let fill = append_volume(&config, &plan)?;
    let fill_megabytes_per_second =
        megabytes_per_second(fill.appended_bytes, fill.elapsed.as_secs_f64());
    let segments = count_segments(data_dir.path())?;
    let empty_dir = DataDir::new(None)?;
    let mut empty_config = config.clone();
    empty_dir.path().clone_into(&mut empty_config.data_dir);
    let empty = time_open(&empty_config)?;
    eprintln!("empty engine: open {:.1} ms", empty.open_ms);
    let mut clean = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats.max(1) {
        let timing = time_open(&config)?;
        eprintln!(
            "clean restart: open {:.1} ms (run {:.1} ms)",
            timing.open_ms, timing.run_ms
        );
        clean.push(timing);
    }
    let mut open_ms: Vec<f64> = clean.iter().map(|timing| timing.open_ms).collect();
    open_ms.sort_by(f64::total_cmp);
    let unclean = if args.skip_unclean {
        None
    } else {
        kill_child_mid_write(args, data_dir.path())?;
        let timing = time_open(&config)?;
        eprintln!(
            "unclean restart: open {:.1} ms (run {:.1} ms)",
            timing.open_ms, timing.run_ms
        );
        Some(timing)
    };
    let report = RestartReport {
        benchmark: "engine restart",
        shards: config.shards,
        partitions: args.partitions,
        filled_bytes: fill.appended_bytes,
        fill_megabytes_per_second,
        segments,
        empty,
        clean,
        clean_open_ms_min: open_ms[0],
        clean_open_ms_median: open_ms[open_ms.len() / 2],
        unflushed_bytes: if args.skip_unclean {
            0
        } else {
            args.unflushed_bytes
        },
        unclean,
    };
    println!(
        "filled {} bytes ({} segments, {:.0} MB/s); empty engine open {:.1} ms; clean open: \
         min {:.1} ms, median {:.1} ms; after kill -9 with {} unflushed bytes: {}",
        report.filled_bytes,
        report.segments,
        report.fill_megabytes_per_second,
        report.empty.open_ms,
        report.clean_open_ms_min,
        report.clean_open_ms_median,
        report.unflushed_bytes,
        report
            .unclean
            .map_or("skipped".to_owned(), |timing| format!(
                "{:.1} ms",
                timing.open_ms
            ))
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

/// The hidden `engine restart-child`: appends without flushing, prints one
/// `written` line per shard once its appends are written, then blocks until
/// killed.
///
/// # Errors
/// [`crate::Error::Usage`] without `--dir`, the engine's error if it cannot
/// start, or [`crate::Error::RestartChild`] if a shard's appends fail: then
/// the other shards stop waiting to be killed, so that the child exits and
/// `main` reports the failure (the parent sees it end early).
pub fn run_child(args: &RestartChildArgs) -> BenchResult<()> {
    let dir = args
        .engine
        .dir
        .as_deref()
        .ok_or(crate::Error::Usage("restart-child needs --dir"))?;
    let config = args.engine.engine_config(dir, 8192);
    let plan = fill_plan(args.partitions, args.total_bytes, args.batch_bytes)?;
    let failure = Arc::new(ShardFailure::default());
    let outcomes = shard::run(&config, move |shard: Rc<Shard>| {
        let plan = plan.clone();
        let failure = failure.clone();
        async move {
            if let Err(error) = drive_shard(&shard, &plan).await {
                failure.raise();
                return Err(crate::Error::RestartChild {
                    source: Box::new(error),
                });
            }
            println!("written {}", shard.id());
            // Blocks this shard until the parent kills the process: nothing
            // may be flushed or checkpointed after the appends.
            failure.wait();
            Ok(())
        }
    })?;
    outcomes.into_iter().collect()
}

/// Whether a shard of `restart-child` failed. Shards that have written
/// block on it (their executors have nothing else to run) until the parent
/// kills the process, or until another shard fails.
#[derive(Default)]
struct ShardFailure {
    failed: Mutex<bool>,
    raised: Condvar,
}

impl ShardFailure {
    fn raise(&self) {
        *self.failed.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.raised.notify_all();
    }

    fn wait(&self) {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        drop(
            self.raised
                .wait_while(failed, |failed| !*failed)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }
}

/// Appends of at most `batch_bytes`, sized so that a whole number of them
/// makes up each partition's share of `total_bytes` (within a batch's
/// record overhead), so small fills are not rounded up to whole large
/// batches.
fn fill_plan(partitions: usize, total_bytes: u64, batch_bytes: u64) -> BenchResult<AppendPlan> {
    let per_partition = (total_bytes / partitions.max(1) as u64).max(1);
    let batches_per_partition = per_partition.div_ceil(batch_bytes.max(1));
    let batch_bytes = per_partition.div_ceil(batches_per_partition).max(4096);
    Ok(AppendPlan {
        partitions: workload::partitions(partitions),
        batch: workload::batch(1024, usize::try_from(batch_bytes)?),
        batches_per_partition,
        concurrency: 4,
        flush_every_batch: false,
    })
}

/// Starts the engine over `config` with a main that only notes when it
/// started, and times it.
///
/// # Errors
/// If the engine cannot start.
pub fn time_open(config: &EngineConfig) -> BenchResult<OpenTiming> {
    let called = Instant::now();
    let mains_started = shard::run(config, |shard: Rc<Shard>| async move {
        // Proves the partitions are open, and costs nothing measurable.
        shard
            .list_partitions(shard.id())
            .await
            .ok()
            .map(|_| Instant::now())
    })?;
    let run_ms = called.elapsed().as_secs_f64() * 1e3;
    let last_started = mains_started
        .into_iter()
        .collect::<Option<Vec<Instant>>>()
        .ok_or(crate::Error::Measurement("listing partitions failed"))?
        .into_iter()
        .max()
        .ok_or(crate::Error::Measurement("the engine ran no shard"))?;
    Ok(OpenTiming {
        open_ms: (last_started - called).as_secs_f64() * 1e3,
        run_ms,
    })
}

/// Runs `engine restart-child` over `dir` and kills it with SIGKILL once
/// every shard has written its appends.
fn kill_child_mid_write(args: &RestartArgs, dir: &Path) -> BenchResult<()> {
    let shards = args.engine.shards.unwrap_or_else(crate::system::cpu_count);
    let mut child = Command::new(std::env::current_exe()?)
        .args(["engine", "restart-child", "--dir"])
        .arg(dir)
        .args(["--shards", &shards.to_string()])
        .args([
            "--io-memory-bytes",
            &args.engine.io_memory_bytes.to_string(),
        ])
        .args(["--partitions", &args.partitions.to_string()])
        .args(["--total-bytes", &args.unflushed_bytes.to_string()])
        .args(["--batch-bytes", &args.batch_bytes.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or(crate::Error::Measurement("child has no stdout"))?;
    let mut written = 0;
    for line in BufReader::new(stdout).lines() {
        if line?.starts_with("written ") {
            written += 1;
            if written == shards {
                break;
            }
        }
    }
    // `Child::kill` sends SIGKILL.
    child.kill()?;
    let status = child.wait()?;
    if written < shards {
        return Err(crate::Error::ChildEndedEarly { status });
    }
    eprintln!("killed the child with SIGKILL after {written} shards wrote their appends");
    Ok(())
}

fn count_segments(dir: &Path) -> BenchResult<usize> {
    let mut segments = 0;
    for partition in std::fs::read_dir(dir)? {
        let partition = partition?.path();
        if partition.is_dir() {
            for file in std::fs::read_dir(&partition)? {
                if file?.file_name().to_string_lossy().ends_with(".log") {
                    segments += 1;
                }
            }
        }
    }
    Ok(segments)
}
