//! What every crate's tests share: a seeded random source, the way a
//! seeded model test runs and replays its seeds, and record batch builders.
//! Compiled for the engine's own unit tests and, with the `testkit`
//! feature, for the other crates' tests (their dev-dependency turns it on);
//! nothing in a release binary uses it.

use crate::batch::{build_batch, KeyValue};
use crate::types::{Offset, ProducerEpoch, ProducerId, TimestampMs};

/// `SplitMix64`: tiny, deterministic per seed, good enough for workloads
/// and fuzzing.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator seeded from the environment variable `variable`
    /// (decimal or `0x` hex) or `default`. The seed goes to stderr at once,
    /// not to the test's captured output, so it survives even an abort.
    ///
    /// # Panics
    /// If the variable is set but not a number.
    #[must_use]
    pub fn from_env(variable: &str, test: &str, default: u64) -> Self {
        let seed = std::env::var(variable).ok().map_or(default, |text| {
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            }
            .unwrap_or_else(|| panic!("{variable}={text} is not a number"))
        });
        eprintln!("{test}: {variable}={seed:#x}");
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..bound`.
    ///
    /// # Panics
    /// If `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "an empty range");
        self.next_u64() % bound
    }

    /// An index into a collection of `len` items.
    ///
    /// # Panics
    /// If `len` is 0.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// A value in `low..=high`.
    ///
    /// # Panics
    /// If `low > high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.next_u64() % (high - low + 1)
    }

    /// An offset in `low..=high`.
    pub fn offset_between(&mut self, low: Offset, high: Offset) -> Offset {
        Offset(low.0 + self.between(0, (high.0 - low.0) as u64) as i64)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// One of `items`.
    ///
    /// # Panics
    /// If `items` is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// How many seeds a model test runs by default, and how many steps each.
#[derive(Clone, Copy, Debug)]
pub struct SeedRuns {
    /// Seeds `0..cases` run.
    pub cases: u64,
    /// Steps of each seed's workload.
    pub steps: u64,
}

/// Runs `run_seed(seed, steps)` for the seeds the environment asks for, so
/// every model test is replayed the same way: `FJORD_MODEL_SEED=<n>` runs
/// that seed alone, otherwise `FJORD_MODEL_CASES=<n>` seeds run from 0;
/// `FJORD_MODEL_STEPS=<n>` sets the steps. A failing seed prints how to
/// replay it before the test fails with its panic.
///
/// # Panics
/// If one of those variables is not a number, or a seed fails.
pub fn run_model_seeds(defaults: SeedRuns, run_seed: fn(u64, u64)) {
    let steps = env_u64("FJORD_MODEL_STEPS").unwrap_or(defaults.steps);
    let seeds = match env_u64("FJORD_MODEL_SEED") {
        Some(seed) => seed..seed + 1,
        None => 0..env_u64("FJORD_MODEL_CASES").unwrap_or(defaults.cases),
    };
    for seed in seeds {
        if let Err(panic) = std::panic::catch_unwind(|| run_seed(seed, steps)) {
            eprintln!(
                "model test failed: replay with FJORD_MODEL_SEED={seed} FJORD_MODEL_STEPS={steps}"
            );
            std::panic::resume_unwind(panic);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|value| value.parse().unwrap_or_else(|_| panic!("{name}={value}")))
}

/// A batch of keyless records holding `values`, in order: workloads
/// generate owned values, which [`build_batch`] takes borrowed.
#[must_use]
pub fn values_batch(
    values: &[Vec<u8>],
    timestamp: TimestampMs,
    producer: Option<(ProducerId, ProducerEpoch, i32)>,
) -> Vec<u8> {
    let records: Vec<KeyValue<'_>> = values
        .iter()
        .map(|value| (None, Some(&value[..])))
        .collect();
    build_batch(&records, timestamp, producer)
}

/// A batch of the keyed `records`, in order, a `None` value being a
/// tombstone: [`values_batch`] for compacted logs.
#[must_use]
pub fn keyed_batch(records: &[(Vec<u8>, Option<Vec<u8>>)], timestamp: TimestampMs) -> Vec<u8> {
    let records: Vec<KeyValue<'_>> = records
        .iter()
        .map(|(key, value)| (Some(&key[..]), value.as_deref()))
        .collect();
    build_batch(&records, timestamp, None)
}
