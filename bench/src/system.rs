//! Memory and CPU figures the benchmarks depend on (process limits are
//! the engine's [`fjord_engine::limits`]).

use std::io;

/// The process's resident set size in bytes, from `VmRSS` in
/// `/proc/self/status`.
///
/// # Errors
/// If the file cannot be read or has no parsable `VmRSS` line.
pub fn resident_bytes() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/self/status"))
}

/// Online CPUs, the default shard count.
#[must_use]
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
