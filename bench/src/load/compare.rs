//! `fjord-bench compare A.json B.json ...`: the summary table of several
//! runs side by side with each one's ratio to the first, and their publish
//! and end-to-end latency curves on one plot each.

use std::path::PathBuf;

use super::report::{latency_plot, summary_table, throughput_plot, write_file, RunReport};
use crate::engine::BenchResult;

/// Options of `fjord-bench compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    /// JSON results of `fjord-bench run`; the first is the baseline of the
    /// ratios.
    #[arg(required = true, num_args = 2..)]
    pub results: Vec<PathBuf>,
    /// Write `compare-publish-latency.svg`, `compare-end-to-end-latency.svg`
    /// and `compare-throughput.svg` here.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

/// Runs `fjord-bench compare`, printing the table.
///
/// # Errors
/// A result that cannot be read or parsed, or a plot that cannot be
/// written.
pub fn run(args: &CompareArgs) -> BenchResult<String> {
    let reports = read_results(&args.results)?;
    let table = summary_table(&reports);
    print!("{table}");
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).map_err(|source| crate::Error::File {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let publish: Vec<_> = reports
            .iter()
            .map(|report| (report.workload.name.clone(), &report.publish))
            .collect();
        let end_to_end: Vec<_> = reports
            .iter()
            .map(|report| (report.workload.name.clone(), &report.end_to_end))
            .collect();
        for (file, svg) in [
            (
                "compare-publish-latency.svg",
                latency_plot("publish latency by percentile", &publish),
            ),
            (
                "compare-end-to-end-latency.svg",
                latency_plot("end-to-end latency by percentile", &end_to_end),
            ),
            (
                "compare-throughput.svg",
                throughput_plot("publish throughput", &reports),
            ),
        ] {
            write_file(dir, file, &svg)?;
        }
        println!("plots in {}", dir.display());
    }
    Ok(table)
}

/// Reads `fjord-bench run` JSON results.
///
/// # Errors
/// A file that cannot be read or is not a run result.
pub fn read_results(paths: &[PathBuf]) -> BenchResult<Vec<RunReport>> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|source| crate::Error::File {
                action: "read",
                path: path.clone(),
                source,
            })?;
            serde_json::from_str::<RunReport>(&text).map_err(|source| crate::Error::RunResult {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

/// Options of `fjord-bench plot`.
#[derive(clap::Args, Clone, Debug)]
pub struct PlotArgs {
    /// JSON results of `fjord-bench run`.
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// Where the SVG files go.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
}

/// Runs `fjord-bench plot`: draws each result's latency and throughput
/// plots again from its JSON.
///
/// # Errors
/// A result that cannot be read, or a plot that cannot be written.
pub fn plot(args: &PlotArgs) -> BenchResult<()> {
    for report in read_results(&args.results)? {
        report.write_plots(&args.output_dir)?;
    }
    Ok(())
}
