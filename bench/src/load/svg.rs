//! Line charts as hand-written SVG: no font files or drawing backend
//! needed, the text stays text (searchable, diffable), and the one special
//! axis, latency by percentile on `HdrHistogram`'s "1 - 1/x" log scale, is a
//! coordinate transform.

use std::fmt::Write as _;

/// What the x values are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Percentiles 0-100, drawn at `log10(1 / (1 - p/100))` so 90, 99,
    /// 99.9, ... are evenly spaced.
    Percentile,
    /// Seconds, linear.
    Seconds,
}

/// One labelled line.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points in order.
    pub points: Vec<(f64, f64)>,
}

/// The plot area's width; the legend beside it grows with its labels.
const PLOT_WIDTH: f64 = 630.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
/// Legend width per label character at the 12px font, generously.
const LEGEND_CHAR_WIDTH: f64 = 7.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The most nines the percentile axis shows (99.9999%).
const NINES_MAX: f64 = 6.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Where a percentile sits on the percentile axis, in "nines".
#[must_use]
pub fn nines(percentile: f64) -> f64 {
    let remaining = (1.0 - percentile / 100.0).max(10f64.powf(-NINES_MAX));
    (1.0 / remaining).log10()
}

/// An SVG document: `series` against `x_axis` and a linear y axis from 0.
#[must_use]
pub fn line_chart(title: &str, x_axis: Axis, y_label: &str, series: &[Series]) -> String {
    let to_x = |x: f64| match x_axis {
        Axis::Percentile => nines(x),
        Axis::Seconds => x,
    };
    let points = || series.iter().flat_map(|line| line.points.iter());
    let x_max = match x_axis {
        Axis::Percentile => points()
            .filter(|(x, _)| *x < 100.0)
            .map(|(x, _)| nines(*x))
            .fold(2.0f64, f64::max)
            .ceil()
            .min(NINES_MAX),
        Axis::Seconds => points().map(|(x, _)| *x).fold(1.0f64, f64::max),
    };
    let y_max = nice_ceiling(points().map(|(_, y)| *y).fold(0.0f64, f64::max));
    let plot_width = PLOT_WIDTH;
    let legend = series
        .iter()
        .map(|line| line.label.chars().count() as f64 * LEGEND_CHAR_WIDTH + 70.0)
        .fold(250.0f64, f64::max);
    let width = (LEFT + plot_width + legend).ceil();
    let plot_height = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + to_x(x).min(x_max) / x_max * plot_width;
    let py = |y: f64| TOP + plot_height - y / y_max * plot_height;

    let mut out = String::new();
    let mut put = |text: String| out.push_str(&text);
    put(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {width} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" font-size=\"16\" text-anchor=\"middle\">{}</text>\n",
        LEFT + plot_width / 2.0,
        escape(title)
    ));
    for tick in 0..=5 {
        let y = y_max * f64::from(tick) / 5.0;
        put(format!(
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y_px:.1}\" y2=\"{y_px:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT + plot_width,
            LEFT - 6.0,
            py(y) + 4.0,
            tick_label(y),
            y_px = py(y)
        ));
    }
    let x_ticks = x_ticks(x_axis, x_max, &px);
    for (x, label) in x_ticks {
        put(format!(
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>\n",
            TOP + plot_height,
            TOP + plot_height + 18.0
        ));
    }
    put(format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        LEFT + plot_width / 2.0,
        HEIGHT - 10.0,
        match x_axis {
            Axis::Percentile => "percentile",
            Axis::Seconds => "time",
        },
        TOP + plot_height / 2.0,
        escape(y_label)
    ));
    for (index, line) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let mut path = String::new();
        for (x, y) in &line.points {
            write!(path, "{:.1},{:.1} ", px(*x), py(*y)).expect("String");
        }
        put(format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <line x1=\"{lx}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            path.trim_end(),
            LEFT + plot_width + 44.0,
            LEFT + plot_width + 50.0,
            TOP + 14.0 + 20.0 * index as f64 + 4.0,
            escape(&line.label),
            lx = LEFT + plot_width + 20.0,
            ly = TOP + 14.0 + 20.0 * index as f64,
        ));
    }
    out.push_str("</svg>\n");
    out
}

/// Positions and labels of the x axis ticks.
fn x_ticks(x_axis: Axis, x_max: f64, px: &impl Fn(f64) -> f64) -> Vec<(f64, String)> {
    let plot_width = PLOT_WIDTH;
    match x_axis {
        Axis::Percentile => (0..=x_max as u32)
            .map(|nine| {
                let percentile = 100.0 * (1.0 - 10f64.powi(-(nine as i32)));
                (
                    LEFT + f64::from(nine) / x_max * plot_width,
                    format!("{}%", trim(percentile)),
                )
            })
            .collect(),
        Axis::Seconds => (0..=5)
            .map(|tick| {
                let seconds = x_max * f64::from(tick) / 5.0;
                (px(seconds), format!("{seconds:.0}s"))
            })
            .collect(),
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * power)
}

fn tick_label(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1_000.0)
    } else {
        trim(value)
    }
}

/// A number without trailing zeros (99.900 -> 99.9).
fn trim(value: f64) -> String {
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_space_the_percentiles_evenly() {
        assert!(nines(0.0).abs() < 1e-9);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert!((nines(100.0) - NINES_MAX).abs() < 1e-9);
    }

    #[test]
    fn a_chart_has_every_series_and_the_percentile_ticks() {
        let series = [
            Series {
                label: "a <publish>".to_owned(),
                points: vec![(0.0, 1.0), (90.0, 2.0), (99.9, 7.5), (100.0, 9.0)],
            },
            Series {
                label: "b".to_owned(),
                points: vec![(0.0, 0.5), (99.0, 1.0)],
            },
        ];
        let chart = line_chart("t", Axis::Percentile, "ms", &series);
        assert_eq!(chart.matches("<polyline").count(), 2);
        for tick in ["0%", "90%", "99%", "99.9%"] {
            assert!(chart.contains(&format!(">{tick}<")), "{tick}");
        }
        assert!(chart.contains("a &lt;publish&gt;"));
        assert!((nice_ceiling(7.5) - 10.0).abs() < 1e-9);
        assert!((nice_ceiling(0.13) - 0.2).abs() < 1e-9);
    }
}
