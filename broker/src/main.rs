//! `fjord`: runs a Kafka-compatible broker. With no arguments it is a single
//! node (broker and controller, node id 1) on 0.0.0.0:9092 with data in
//! `./data`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use fjord_broker::config::{parse_properties, BrokerConfig};

/// A Kafka-compatible event streaming broker.
#[derive(Debug, Parser)]
#[command(name = "fjord", version, about)]
struct Arguments {
    /// A Kafka `server.properties` file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides one key, e.g. `--set log.dirs=/var/lib/fjord` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn load(arguments: &Arguments) -> Result<BrokerConfig, String> {
    let file_pairs = match &arguments.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            parse_properties(&text).map_err(|error| format!("{}: {error}", path.display()))?
        }
        None => Vec::new(),
    };
    let overrides = arguments
        .overrides
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .ok_or_else(|| format!("--set {pair:?}: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    BrokerConfig::load(&file_pairs, &overrides).map_err(|error| error.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let arguments = Arguments::parse();
    let config = match load(&arguments) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("fjord: {error}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(error) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("fjord: cannot handle signal {signal}: {error}");
            return ExitCode::FAILURE;
        }
    }
    // As the JVM does for Kafka: the soft limit up to the hard one, so that
    // partitions (a descriptor each) are bounded by what the system allows
    // rather than by a login default.
    match fjord_engine::limits::raise_open_files_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open files limit (RLIMIT_NOFILE)"),
        Err(error) => tracing::warn!(%error, "cannot read RLIMIT_NOFILE"),
    }
    tracing::info!(node_id = config.node_id, roles = %config.cluster.process_roles,
        listener = %config.listener, data = %config.data_dir.display(),
        shards = config.cores, "starting fjord");
    match fjord_broker::run(config, stop) {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fjord: {error}");
            ExitCode::FAILURE
        }
    }
}
