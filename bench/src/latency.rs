//! Latency histograms and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A histogram of durations in nanoseconds, from 1 µs to 10 minutes at 3
/// significant digits.
///
/// # Panics
/// Never: the bounds are constant and valid.
#[must_use]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `duration`, saturating at the histogram's upper bound.
pub fn record(histogram: &mut Histogram<u64>, duration: Duration) {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(nanos.max(1_000));
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl LatencySummary {
    /// Summarises `histogram` (nanosecond samples).
    #[must_use]
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let us = |nanos: u64| nanos as f64 / 1_000.0;
        Self {
            count: histogram.len(),
            mean_us: histogram.mean() / 1_000.0,
            p50_us: us(histogram.value_at_quantile(0.50)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
        }
    }
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} mean={:.0}us p50={:.0}us p99={:.0}us p99.9={:.0}us max={:.0}us",
            self.count, self.mean_us, self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}
