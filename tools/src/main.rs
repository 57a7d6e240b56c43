//! `fjordctl`: the fjord operator's tool. One subcommand per task; each lives
//! in its own library module with its own `Args` and `run`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fjord_tools::kafka::cluster::{self, ClusterCommand};
use fjord_tools::kafka::consume::{self, ConsumeArgs};
use fjord_tools::kafka::groups::{self, GroupsCommand};
use fjord_tools::kafka::produce::{self, ProduceArgs};
use fjord_tools::kafka::topics::{self, TopicsCommand};
use fjord_tools::log::dump::{self, DumpLogArgs};
use fjord_tools::log::verify::{self, VerifyLogArgs};
use fjord_tools::tune::command::{self as tune, TuneArgs};

/// Operate a fjord cluster and the hosts it runs on.
#[derive(Debug, Parser)]
#[command(name = "fjordctl", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics (like kafka-topics).
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Write stdin lines as records (like kafka-console-producer).
    Produce(ProduceArgs),
    /// Print records (like kafka-console-consumer; --group to consume as a group member).
    Consume(ConsumeArgs),
    /// List, describe (lag per partition), reset offsets of and delete
    /// consumer groups (like kafka-consumer-groups).
    Groups {
        #[command(subcommand)]
        command: GroupsCommand,
    },
    /// Describe the cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Check or apply host tuning (sysctls, NVMe queues, THP, CPU governor, limits).
    Tune(TuneArgs),
    /// Print a segment, index, producer snapshot or checkpoint file (offline).
    ///
    /// Like Kafka's kafka-dump-log: one line per batch of a `.log` file, one
    /// per entry of an index, the producers of a `.snapshot`, the fields of
    /// `partition.checkpoint`. Exits 0 when the file is whole and valid, 1
    /// when it holds an invalid batch, a torn or corrupt tail, or does not
    /// decode, 2 when it cannot be read or its name is no engine file's.
    DumpLog(DumpLogArgs),
    /// Check a stopped broker's data directory for corruption (offline).
    ///
    /// For every `<topic>-<partition>` directory: segment names, batch CRCs,
    /// offsets increasing across segments (gaps are warnings: compaction
    /// makes them), index entries at batch starts, checkpoint and producer
    /// snapshots decoding. The broker must not be running. Exits 0 when clean
    /// (warnings allowed), 1 on any corruption, 2 when DIR cannot be read.
    VerifyLog(VerifyLogArgs),
}

/// Exit codes: 0 success (every applicable setting matches, the file or data
/// directory is valid), 1 a setting differs or corruption was found, 2 an
/// error (one line on stderr) or a usage error (from clap).
fn main() -> ExitCode {
    fjord_tools::end_quietly_when_output_closes();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Topics { command } => topics::run(command),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Groups { command } => groups::run(command),
        Command::Cluster { command } => cluster::run(command),
        Command::Tune(args) => tune::run(args),
        Command::DumpLog(args) => dump::run(args),
        Command::VerifyLog(args) => verify::run(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("fjordctl: error: {error}");
            ExitCode::from(2)
        }
    }
}
