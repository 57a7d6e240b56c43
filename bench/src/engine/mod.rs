//! `fjord-bench engine ...`: the storage engine driven in process.
//!
//! Every benchmark here runs [`fjord_engine::shard::run`] over a data
//! directory and issues partition operations only on the owning shard
//! (partitions it owns, whose operations run in place), so the mesh between
//! shards is never on the measured path.

pub mod append;
pub mod compaction;
pub mod idle_memory;
pub mod restart;

use std::path::{Path, PathBuf};

use fjord_engine::shard::EngineConfig;

use crate::error::ByteCountError;
use crate::system;

/// A benchmark's result.
pub type BenchResult<T> = Result<T, crate::Error>;

/// Options every engine benchmark takes.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineArgs {
    /// Data directory. Default: a fresh temporary directory under the
    /// current one (so on the same file system as a fio file there),
    /// removed afterwards.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Shards (pinned executors). Default: every online CPU.
    #[arg(long)]
    pub shards: Option<usize>,
    /// `io_uring` registered buffer memory per shard (glommio `io_memory`),
    /// e.g. 32MiB. `RLIMIT_MEMLOCK` is raised to cover it.
    #[arg(long, default_value = "32MiB", value_parser = parse_bytes)]
    pub io_memory_bytes: u64,
}

/// The data directory of one benchmark run; a temporary one is removed
/// when this is dropped.
pub struct DataDir {
    path: PathBuf,
    _temporary: Option<tempfile::TempDir>,
}

impl DataDir {
    /// The `--dir` given, or a fresh temporary directory under the current
    /// directory.
    ///
    /// # Errors
    /// If the temporary directory cannot be created.
    pub fn new(dir: Option<&Path>) -> BenchResult<Self> {
        if let Some(dir) = dir {
            return Ok(Self {
                path: dir.to_owned(),
                _temporary: None,
            });
        }
        let temporary = tempfile::Builder::new()
            .prefix("fjord-bench-")
            .tempdir_in(std::env::current_dir()?)?;
        Ok(Self {
            path: temporary.path().to_owned(),
            _temporary: Some(temporary),
        })
    }

    /// Where the engine's partitions live.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl EngineArgs {
    /// The engine configuration these options describe, after raising
    /// `RLIMIT_MEMLOCK` (glommio registers `io_memory` with `io_uring`, which
    /// locks it) and `RLIMIT_NOFILE` (one descriptor per open segment).
    #[must_use]
    pub fn engine_config(&self, data_dir: &Path, open_files: u64) -> EngineConfig {
        if let Err(error) = fjord_engine::limits::raise_memlock_limit() {
            // Root has CAP_IPC_LOCK, which io_uring honours instead of the
            // limit; without it glommio falls back to unregistered buffers.
            eprintln!(
                "note: RLIMIT_MEMLOCK stays as it is ({error}); registering {} bytes of \
                 io_memory per shard needs CAP_IPC_LOCK or a higher limit",
                self.io_memory_bytes
            );
        }
        match fjord_engine::limits::raise_open_files_limit(open_files) {
            Ok(limit) if limit < open_files => {
                eprintln!("warning: RLIMIT_NOFILE is {limit}, below the {open_files} wanted");
            }
            Ok(_) => {}
            Err(error) => eprintln!("warning: cannot read RLIMIT_NOFILE: {error}"),
        }
        let mut config = EngineConfig::new(data_dir);
        config.shards = self.shards.unwrap_or_else(system::cpu_count);
        config.io_memory_bytes = usize::try_from(self.io_memory_bytes).unwrap_or(usize::MAX);
        config
    }
}

/// Parses a byte count: a plain number or one with a `KiB`, `MiB`, `GiB`,
/// `KB`, `MB`, `GB` (or `K`, `M`, `G`, binary) suffix.
///
/// # Errors
/// The [`ByteCountError`] naming the problem.
pub fn parse_bytes(text: &str) -> Result<u64, ByteCountError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| ByteCountError::NoNumber {
        text: text.to_owned(),
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(ByteCountError::UnknownUnit {
                unit: other.to_owned(),
                text: text.to_owned(),
            })
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| ByteCountError::TooLarge {
            text: text.to_owned(),
        })
}

/// `bytes` in MB (10^6 bytes) per second over `seconds`.
#[must_use]
pub fn megabytes_per_second(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / 1e6 / seconds
}

/// Writes `report` as pretty JSON to `path`.
///
/// # Errors
/// If it cannot be serialised or written.
pub fn write_json(path: &Path, report: &impl serde::Serialize) -> BenchResult<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("10 MiB"), Ok(10 << 20));
        assert_eq!(parse_bytes("2m"), Ok(2 << 20));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert!(parse_bytes("KiB").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
