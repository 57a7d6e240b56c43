//! `fjord-bench engine idle-memory`: resident memory per idle partition.
//!
//! Every shard starts with no partitions; the process's RSS (`VmRSS`) is
//! read, then every shard creates its share of `--partitions` empty
//! partitions, and RSS is read again once all have. The difference over the
//! partition count is what an idle partition costs: its log state, its
//! active segment (open file, in-memory indexes, tail block) and the
//! shard's maps. The shards wait for each other on a barrier around each
//! reading, so nothing else runs while RSS is read.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use fjord_engine::shard::{self, Shard};
use serde::Serialize;

use super::append::create_own_partitions;
use super::{write_json, BenchResult, DataDir, EngineArgs};
use crate::{system, workload};

/// Options of `fjord-bench engine idle-memory`.
#[derive(clap::Args, Clone, Debug)]
pub struct IdleMemoryArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Empty partitions to open, spread over the shards.
    #[arg(long, default_value_t = 1000)]
    pub partitions: usize,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The result `fjord-bench engine idle-memory` prints and writes as JSON.
#[derive(Debug, Serialize)]
pub struct IdleMemoryReport {
    /// Always `engine idle-memory`.
    pub benchmark: &'static str,
    /// Shards.
    pub shards: usize,
    /// Partitions opened.
    pub partitions: usize,
    /// RSS with the engine running and no partition.
    pub rss_before_bytes: u64,
    /// RSS with every partition open.
    pub rss_after_bytes: u64,
    /// The difference over the partition count.
    pub bytes_per_partition: f64,
    /// Seconds to create them all.
    pub create_seconds: f64,
    /// `RLIMIT_NOFILE` in force.
    pub open_files_limit: u64,
}

/// What shard 0 measured.
struct Measured {
    rss_before_bytes: u64,
    rss_after_bytes: u64,
    create_seconds: f64,
}

/// Runs `fjord-bench engine idle-memory`.
///
/// # Errors
/// If the engine cannot start, a partition cannot be created, or RSS cannot
/// be read.
pub fn run(args: &IdleMemoryArgs) -> BenchResult<IdleMemoryReport> {
    let data_dir = DataDir::new(args.engine.dir.as_deref())?;
    let wanted_files = args.partitions as u64 + 4096;
    let config = args.engine.engine_config(data_dir.path(), wanted_files);
    let open_files_limit = fjord_engine::limits::raise_open_files_limit(wanted_files)?;
    let shards = config.shards;
    let partitions = workload::partitions(args.partitions);
    let barrier = Arc::new(Barrier::new(shards));
    eprintln!(
        "engine idle-memory: {shards} shards, {} partitions, data in {}",
        args.partitions,
        data_dir.path().display()
    );
    let outputs = shard::run(&config, move |shard: Rc<Shard>| {
        let barrier = barrier.clone();
        let partitions = partitions.clone();
        async move {
            // Blocking the executor on the barrier is fine: no shard sends
            // another any work in this benchmark.
            barrier.wait();
            let before = (shard.id() == 0).then(system::resident_bytes);
            barrier.wait();
            let started = Instant::now();
            let created = create_own_partitions(&shard, &partitions).await;
            barrier.wait();
            let create_seconds = started.elapsed().as_secs_f64();
            let after = (shard.id() == 0).then(system::resident_bytes);
            barrier.wait();
            created?;
            match (before, after) {
                (Some(before), Some(after)) => Ok(Some(Measured {
                    rss_before_bytes: before?,
                    rss_after_bytes: after?,
                    create_seconds,
                })),
                _ => Ok::<_, crate::Error>(None),
            }
        }
    })?;
    let mut measured = None;
    for output in outputs {
        if let Some(found) = output? {
            measured = Some(found);
        }
    }
    let measured = measured.ok_or(crate::Error::Measurement("shard 0 measured nothing"))?;
    let report = IdleMemoryReport {
        benchmark: "engine idle-memory",
        shards,
        partitions: args.partitions,
        rss_before_bytes: measured.rss_before_bytes,
        rss_after_bytes: measured.rss_after_bytes,
        bytes_per_partition: measured
            .rss_after_bytes
            .saturating_sub(measured.rss_before_bytes) as f64
            / args.partitions.max(1) as f64,
        create_seconds: measured.create_seconds,
        open_files_limit,
    };
    println!(
        "{} idle partitions: RSS {} -> {} bytes, {:.0} bytes ({:.1} KiB) per partition; \
         created in {:.2}s",
        report.partitions,
        report.rss_before_bytes,
        report.rss_after_bytes,
        report.bytes_per_partition,
        report.bytes_per_partition / 1024.0,
        report.create_seconds
    );
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(report)
}
