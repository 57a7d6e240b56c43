//! `fjord-bench`: fjord's load generator and benchmarks.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fjord_bench::engine::append::{self, AppendArgs};
use fjord_bench::engine::compaction::{self, CompactionArgs};
use fjord_bench::engine::idle_memory::{self, IdleMemoryArgs};
use fjord_bench::engine::restart::{self, RestartArgs, RestartChildArgs};
use fjord_bench::engine::BenchResult;
use fjord_bench::load::compare::{self, CompareArgs, PlotArgs};
use fjord_bench::load::{run as load, RunArgs};
use fjord_bench::wire::consume::{self, ConsumeArgs};
use fjord_bench::wire::produce::{self, ProduceArgs};

#[derive(Parser, Debug)]
#[command(
    name = "fjord-bench",
    version,
    about = "fjord's load generator and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Benchmarks of the storage engine, run in process (no network).
    Engine {
        #[command(subcommand)]
        command: EngineCommand,
    },
    /// Runs a workload (as `OpenMessaging` Benchmark does): producers and
    /// consumers on fresh topics, publish and end-to-end latency without
    /// coordinated omission; writes JSON, .hgrm files and SVG plots.
    Run(RunArgs),
    /// Compares `run` results: a side-by-side table with ratios to the
    /// first, and latency curves on one plot.
    Compare(CompareArgs),
    /// Draws a `run` result's latency and throughput plots again from its
    /// JSON.
    Plot(PlotArgs),
    /// Produce requests over TCP to any Kafka-compatible broker: MB/s, msg/s
    /// and publish latency percentiles.
    Produce(ProduceArgs),
    /// Fetch requests over TCP from any Kafka-compatible broker: catch-up
    /// (from the beginning) or tail (from the end) MB/s.
    Consume(ConsumeArgs),
}

#[derive(Subcommand, Debug)]
enum EngineCommand {
    /// Appends a fixed volume and reports MB/s and per-append latency.
    Append(AppendArgs),
    /// Fills partitions, then times engine start after a clean and an
    /// unclean (kill -9) stop.
    Restart(RestartArgs),
    /// Measures the log cleaner's MB/s and produce p99 on the same shard
    /// with and without it running.
    Compaction(CompactionArgs),
    /// Opens many empty partitions and reports resident memory per partition.
    IdleMemory(IdleMemoryArgs),
    /// Used by `restart`: appends without flushing, then waits to be killed.
    #[command(hide = true)]
    RestartChild(RestartChildArgs),
}

fn run(cli: &Cli) -> BenchResult<()> {
    match &cli.command {
        Command::Engine { command } => match command {
            EngineCommand::Append(args) => append::run(args).map(drop),
            EngineCommand::Restart(args) => restart::run(args).map(drop),
            EngineCommand::Compaction(args) => compaction::run(args).map(drop),
            EngineCommand::IdleMemory(args) => idle_memory::run(args).map(drop),
            EngineCommand::RestartChild(args) => restart::run_child(args),
        },
        Command::Run(args) => load::run(args).map(drop),
        Command::Compare(args) => compare::run(args).map(drop),
        Command::Plot(args) => compare::plot(args),
        Command::Produce(args) => produce::run(args).map(drop),
        Command::Consume(args) => consume::run(args).map(drop),
    }
}

fn main() -> ExitCode {
    fjord_tools::end_quietly_when_output_closes();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fjord-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
