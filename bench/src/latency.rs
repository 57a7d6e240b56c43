//! Latency histograms and their summaries: percentiles, the percentile
//! curve the plots draw, and `HdrHistogram`'s standard `.hgrm` text (what
//! `HistogramLogProcessor` and `outputPercentileDistribution` write), so a
//! run can be compared with any tool that reads it (`HdrHistogram`'s plotter,
//! `OpenMessaging` Benchmark's scripts).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// 99.99th percentile.
    pub p9999_us: f64,
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
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            p9999_us: us(histogram.value_at_quantile(0.9999)),
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

/// Percentile-curve points per halving of the remaining distance: 5 is
/// `outputPercentileDistribution`'s default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// One point of a latency percentile curve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PercentilePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, in microseconds.
    pub value_us: f64,
}

/// The percentile curve of `histogram` (nanosecond samples), at
/// `HdrHistogram`'s standard steps; empty for an empty histogram.
#[must_use]
pub fn percentile_curve(histogram: &Histogram<u64>) -> Vec<PercentilePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    histogram
        .iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|step| PercentilePoint {
            percentile: step.quantile_iterated_to() * 100.0,
            value_us: histogram.highest_equivalent(step.value_iterated_to()) as f64 / 1_000.0,
        })
        .collect()
}

/// `histogram` (nanosecond samples) as `HdrHistogram`'s percentile
/// distribution text with values in milliseconds, exactly as Java's
/// `outputPercentileDistribution(out, 5, 1_000_000.0)` prints it.
///
/// # Panics
/// Never: writing to a `String` does not fail.
#[must_use]
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    use std::fmt::Write as _;
    const NANOS_PER_MS: f64 = 1_000_000.0;
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !histogram.is_empty() {
        for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += step.count_since_last_iteration();
            let value =
                histogram.highest_equivalent(step.value_iterated_to()) as f64 / NANOS_PER_MS;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                )
            } else {
                writeln!(out, "{value:12.3} {quantile:2.12} {total:10}")
            }
            .expect("writing to a String");
        }
    }
    let sub_buckets = (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two();
    write!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n\
         #[Max     = {:12.3}, Total count    = {:12}]\n\
         #[Buckets = {:12}, SubBuckets     = {:12}]\n",
        histogram.mean() / NANOS_PER_MS,
        histogram.stdev() / NANOS_PER_MS,
        histogram.max() as f64 / NANOS_PER_MS,
        histogram.len(),
        histogram.buckets(),
        sub_buckets,
    )
    .expect("writing to a String");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1..=10 ms, one sample each: the text has Java's header, one line per
    /// step with cumulative counts, no last column at 100%, and the footer.
    #[test]
    fn hgrm_has_hdrhistograms_layout() {
        let mut histogram = new_histogram();
        for ms in 1..=10u64 {
            histogram.record(ms * 1_000_000).unwrap();
        }
        let text = hgrm(&histogram);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        assert!(
            lines[2].starts_with("       1.000 0.000000000000          1           1.00"),
            "{}",
            lines[2]
        );
        let last = lines[lines.len() - 4];
        assert!(
            last.starts_with("      10.002 1.000000000000         10"),
            "{last}"
        );
        assert_eq!(last.split_whitespace().count(), 3);
        assert!(lines[lines.len() - 2]
            .starts_with("#[Max     =       10.002, Total count    =           10]"));
        assert!(lines[lines.len() - 1].ends_with("SubBuckets     =         2048]"));
        let curve = percentile_curve(&histogram);
        assert!(curve.first().unwrap().percentile.abs() < 1e-9);
        assert!((curve.last().unwrap().percentile - 100.0).abs() < 1e-9);
    }
}
