//! A run's result: the summary table, the JSON document `compare` reads,
//! the `.hgrm` files and the plots.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::svg::{self, Axis, Series};
use super::Workload;
use crate::engine::BenchResult;
use crate::latency::{self, LatencySummary, PercentilePoint};

/// Throughput and latency of one side (publish or end-to-end) over the
/// measured window.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figures {
    /// Messages in the window.
    pub messages: u64,
    /// Value bytes in the window.
    pub bytes: u64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Value megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// Latency percentiles.
    pub latency: LatencySummary,
    /// The percentile curve, for plots and `compare`.
    pub percentiles: Vec<PercentilePoint>,
    /// The `.hgrm` text, written beside the JSON.
    #[serde(skip)]
    pub hgrm: String,
}

impl Figures {
    /// Figures from window counts `(messages, bytes)` over `seconds` and
    /// the latency histogram (nanoseconds).
    #[must_use]
    pub fn new(counts: (u64, u64), seconds: f64, histogram: &Histogram<u64>) -> Self {
        Self {
            messages: counts.0,
            bytes: counts.1,
            msgs_per_sec: counts.0 as f64 / seconds,
            mb_per_sec: counts.1 as f64 / seconds / 1e6,
            latency: LatencySummary::of(histogram),
            percentiles: latency::percentile_curve(histogram),
            hgrm: latency::hgrm(histogram),
        }
    }
}

/// One second of the run.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Seconds since the first message.
    pub seconds: f64,
    /// Whether this second was warm-up.
    pub warmup: bool,
    /// Acknowledged messages per second.
    pub publish_msgs_per_sec: f64,
    /// Acknowledged value MB per second.
    pub publish_mb_per_sec: f64,
    /// Consumed messages per second.
    pub consume_msgs_per_sec: f64,
}

/// The result of `fjord-bench run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    /// The workload as run.
    pub workload: Workload,
    /// When the run finished, ms since the Unix epoch.
    pub finished_unix_ms: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Send to acknowledgement.
    pub publish: Figures,
    /// When the producer planned to take each message to when it did
    /// ([`super::run::PublishParts`]); zero in reports written before it.
    #[serde(default)]
    pub publish_delay: LatencySummary,
    /// Request written to acknowledged, per message
    /// ([`super::run::PublishParts`]); zero in reports written before it.
    #[serde(default)]
    pub publish_request: LatencySummary,
    /// Send to consumed.
    pub end_to_end: Figures,
    /// Throughput every second, warm-up included.
    pub series: Vec<SeriesPoint>,
}

impl RunReport {
    /// A report finished now.
    #[must_use]
    pub fn new(
        workload: &Workload,
        publish: Figures,
        end_to_end: Figures,
        series: Vec<SeriesPoint>,
    ) -> Self {
        Self {
            workload: workload.clone(),
            finished_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as u64),
            seconds: f64::from(workload.test_duration_seconds),
            publish,
            publish_delay: LatencySummary::default(),
            publish_request: LatencySummary::default(),
            end_to_end,
            series,
        }
    }

    /// Prints the summary table.
    pub fn print(&self) {
        print!("{}", summary_table(std::slice::from_ref(self)));
    }

    /// Writes `NAME.json`, `NAME-publish.hgrm`, `NAME-end-to-end.hgrm`
    /// and the plots ([`RunReport::write_plots`]) into `dir`.
    ///
    /// # Errors
    /// If `dir` cannot be created or a file written.
    pub fn write(&self, dir: &Path) -> BenchResult<()> {
        std::fs::create_dir_all(dir).map_err(|source| crate::Error::File {
            action: "create",
            path: dir.to_owned(),
            source,
        })?;
        let name = &self.workload.name;
        let write = |file: String, text: &str| write_file(dir, &file, text);
        write(format!("{name}.json"), &serde_json::to_string_pretty(self)?)?;
        write(format!("{name}-publish.hgrm"), &self.publish.hgrm)?;
        write(format!("{name}-end-to-end.hgrm"), &self.end_to_end.hgrm)?;
        self.write_plots(dir)?;
        println!("results in {}", dir.display());
        Ok(())
    }

    /// Writes `NAME-latency.svg` and `NAME-throughput.svg` into `dir`
    /// (also from a result read back, by `fjord-bench plot`).
    ///
    /// # Errors
    /// If a file cannot be written.
    pub fn write_plots(&self, dir: &Path) -> BenchResult<()> {
        let name = &self.workload.name;
        let write = |file: String, text: &str| write_file(dir, &file, text);
        write(
            format!("{name}-latency.svg"),
            &latency_plot(
                &format!("{name}: latency by percentile"),
                &[
                    ("publish".to_owned(), &self.publish),
                    ("end-to-end".to_owned(), &self.end_to_end),
                ],
            ),
        )?;
        write(
            format!("{name}-throughput.svg"),
            &throughput_plot(&format!("{name}: throughput"), std::slice::from_ref(self)),
        )
    }
}

/// Writes `text` to `dir/file`.
///
/// # Errors
/// The write error, naming the path.
pub fn write_file(dir: &Path, file: &str, text: &str) -> BenchResult<()> {
    let path = dir.join(file);
    std::fs::write(&path, text).map_err(|source| crate::Error::File {
        action: "write",
        path,
        source,
    })
}

/// The latency curves of `figures` on the percentile axis.
#[must_use]
pub fn latency_plot(title: &str, figures: &[(String, &Figures)]) -> String {
    let series: Vec<Series> = figures
        .iter()
        .map(|(label, figures)| Series {
            label: label.clone(),
            points: figures
                .percentiles
                .iter()
                .map(|point| (point.percentile, point.value_us / 1_000.0))
                .collect(),
        })
        .collect();
    svg::line_chart(title, Axis::Percentile, "latency (ms)", &series)
}

/// Publish throughput over time of every report.
#[must_use]
pub fn throughput_plot(title: &str, reports: &[RunReport]) -> String {
    let series: Vec<Series> = reports
        .iter()
        .map(|report| Series {
            label: format!("{} publish", report.workload.name),
            points: report
                .series
                .iter()
                .map(|point| (point.seconds, point.publish_msgs_per_sec))
                .collect(),
        })
        .collect();
    svg::line_chart(title, Axis::Seconds, "messages per second", &series)
}

/// The rows of the summary: label and how to get the figure.
type Row = (&'static str, fn(&RunReport) -> f64);

const ROWS: [Row; 20] = [
    ("publish msg/s", |r| r.publish.msgs_per_sec),
    ("publish MB/s", |r| r.publish.mb_per_sec),
    ("publish p50 ms", |r| r.publish.latency.p50_us / 1e3),
    ("publish p90 ms", |r| r.publish.latency.p90_us / 1e3),
    ("publish p99 ms", |r| r.publish.latency.p99_us / 1e3),
    ("publish p99.9 ms", |r| r.publish.latency.p999_us / 1e3),
    ("publish p99.99 ms", |r| r.publish.latency.p9999_us / 1e3),
    ("publish max ms", |r| r.publish.latency.max_us / 1e3),
    ("  delay p50 ms", |r| r.publish_delay.p50_us / 1e3),
    ("  delay p99 ms", |r| r.publish_delay.p99_us / 1e3),
    ("  request p50 ms", |r| r.publish_request.p50_us / 1e3),
    ("  request p99 ms", |r| r.publish_request.p99_us / 1e3),
    ("consume msg/s", |r| r.end_to_end.msgs_per_sec),
    ("consume MB/s", |r| r.end_to_end.mb_per_sec),
    ("e2e p50 ms", |r| r.end_to_end.latency.p50_us / 1e3),
    ("e2e p90 ms", |r| r.end_to_end.latency.p90_us / 1e3),
    ("e2e p99 ms", |r| r.end_to_end.latency.p99_us / 1e3),
    ("e2e p99.9 ms", |r| r.end_to_end.latency.p999_us / 1e3),
    ("e2e p99.99 ms", |r| r.end_to_end.latency.p9999_us / 1e3),
    ("e2e max ms", |r| r.end_to_end.latency.max_us / 1e3),
];

/// A table with one column per report and, from the second report on, its
/// ratio to the first.
#[must_use]
pub fn summary_table(reports: &[RunReport]) -> String {
    let width = reports
        .iter()
        .map(|report| report.workload.name.len())
        .max()
        .unwrap_or(0)
        .max(12);
    let mut out = format!("{:<20}", "");
    for (index, report) in reports.iter().enumerate() {
        write!(out, " {:>width$}", report.workload.name).expect("String");
        if index > 0 {
            write!(out, " {:>8}", "ratio").expect("String");
        }
    }
    out.push('\n');
    for (label, figure) in ROWS {
        write!(out, "{label:<20}").expect("String");
        let first = reports.first().map_or(0.0, figure);
        for (index, report) in reports.iter().enumerate() {
            let value = figure(report);
            write!(out, " {:>width$}", format_figure(value)).expect("String");
            if index > 0 {
                let ratio = if first == 0.0 {
                    f64::NAN
                } else {
                    value / first
                };
                write!(out, " {ratio:>7.2}x").expect("String");
            }
        }
        out.push('\n');
    }
    out
}

fn format_figure(value: f64) -> String {
    if value >= 1_000.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}
