//! The picture of a run: latency over time (p50 and p99 per interval), the latency CDF, the
//! batch-size histogram, and throughput and shed requests per interval, drawn with `plotters`'
//! SVG backend into one SVG, or one self-contained HTML page. Nothing in either refers to a
//! resource outside the file.
//!
//! Each chart is a `<g class="chart" id="…">` holding its own `<svg>`, with a `data-points`
//! attribute giving how many data points it drew, so a reader (or a test) can tell an empty
//! chart from a full one.

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Size of one chart, in pixels.
const W: u32 = 640;
/// See [`W`].
const H: u32 = 360;

/// Chart ids, in drawing order.
pub const CHART_IDS: [&str; 4] = [
    "latency-over-time",
    "latency-cdf",
    "batch-sizes",
    "throughput",
];

/// Everything the charts show.
#[derive(Debug, Clone, Default)]
pub struct Charts {
    /// A title, e.g. the command and its load.
    pub title: String,
    /// One line under it: the run's headline figures.
    pub summary: String,
    /// Seconds since the start of the measured window, p50 and p99 latency (ms), per interval
    /// that had answers.
    pub latency: Vec<(f64, f64, f64)>,
    /// Latency (ms) against the fraction of `ok` requests at or under it.
    pub cdf: Vec<(f64, f64)>,
    /// Batch sizes: lowest and highest size of a bar, and the batches in it.
    pub batch_sizes: Vec<(u32, u32, u64)>,
    /// Seconds since the start of the window, `ok` answers and shed requests per second.
    pub throughput: Vec<(f64, f64, f64)>,
}

/// The CDF points of a latency histogram in microseconds.
pub fn cdf_of(histogram_us: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram_us.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = (0..=200)
        .map(|i| f64::from(i) / 200.0)
        .chain([0.999, 0.9999])
        .map(|q| (histogram_us.value_at_quantile(q) as f64 / 1000.0, q))
        .collect();
    points.sort_by(|a, b| a.1.total_cmp(&b.1));
    points
}

/// Plotters could not draw a chart (its backend's error, as it describes itself).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct DrawError(String);

/// What drawing gives.
pub type DrawResult<T> = Result<T, DrawError>;

/// One line of a chart: its legend, its points, its colour.
type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn err<E: std::fmt::Debug>(e: E) -> DrawError {
    DrawError(format!("{e:?}"))
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0_f64, f64::max)
}

/// One line chart with its series, as an SVG document.
fn lines(caption: &str, x_desc: &str, y_desc: &str, series: &[Series<'_>]) -> DrawResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = max_of(series.iter().flat_map(|s| s.1.iter().map(|p| p.0))).max(1.0);
        let y_max = max_of(series.iter().flat_map(|s| s.1.iter().map(|p| p.1))).max(1e-9) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(err)?;
        for (name, points, color) in series {
            let color = *color;
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The batch-size histogram, as an SVG document.
fn bars(caption: &str, bars: &[(u32, u32, u64)]) -> DrawResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = bars.iter().map(|b| b.1).max().unwrap_or(1) as f64 + 1.0;
        let y_max = bars.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64 * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("inputs per batch")
            .y_desc("batches")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(bars.iter().filter(|b| b.2 > 0).map(|(lo, hi, n)| {
                Rectangle::new(
                    [
                        (f64::from(*lo) - 0.4, 0.0),
                        (f64::from(*hi) + 0.4, *n as f64),
                    ],
                    BLUE.mix(0.7).filled(),
                )
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// The four charts, each with its id and its number of data points.
fn draw(charts: &Charts) -> DrawResult<Vec<(&'static str, usize, String)>> {
    let latency = lines(
        "Latency over time",
        "seconds",
        "ms",
        &[
            (
                "p50",
                charts.latency.iter().map(|p| (p.0, p.1)).collect(),
                BLUE,
            ),
            (
                "p99",
                charts.latency.iter().map(|p| (p.0, p.2)).collect(),
                RED,
            ),
        ],
    )?;
    let cdf = lines(
        "Latency CDF",
        "ms",
        "fraction of ok requests",
        &[("ok requests", charts.cdf.clone(), BLUE)],
    )?;
    let sizes = bars("Batch sizes", &charts.batch_sizes)?;
    let throughput = lines(
        "Throughput and shed",
        "seconds",
        "requests/s",
        &[
            (
                "ok/s",
                charts.throughput.iter().map(|p| (p.0, p.1)).collect(),
                BLUE,
            ),
            (
                "shed/s",
                charts.throughput.iter().map(|p| (p.0, p.2)).collect(),
                RED,
            ),
        ],
    )?;
    let bars_with_data = charts.batch_sizes.iter().filter(|b| b.2 > 0).count();
    Ok(vec![
        (CHART_IDS[0], charts.latency.len(), latency),
        (CHART_IDS[1], charts.cdf.len(), cdf),
        (CHART_IDS[2], bars_with_data, sizes),
        (CHART_IDS[3], charts.throughput.len(), throughput),
    ])
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The charts in a 2 × 2 grid as one SVG document, title on top.
pub fn svg(charts: &Charts) -> DrawResult<String> {
    let drawn = draw(charts)?;
    let top = 56;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">"#,
        w = 2 * W,
        h = 2 * H + top
    );
    let _ = write!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="12" y="24" font-family="sans-serif" font-size="20">{}</text><text x="12" y="46" font-family="sans-serif" font-size="14">{}</text>"#,
        escape(&charts.title),
        escape(&charts.summary)
    );
    for (i, (id, points, chart)) in drawn.into_iter().enumerate() {
        let (x, y) = ((i as u32 % 2) * W, (i as u32 / 2) * H + top);
        let inner = chart.replacen("<svg ", &format!(r#"<svg x="{x}" y="{y}" "#), 1);
        let _ = write!(
            out,
            r#"<g class="chart" id="{id}" data-points="{points}">{inner}</g>"#
        );
    }
    out.push_str("</svg>\n");
    Ok(out)
}

/// The same as one self-contained HTML page (well-formed XML, the SVG inline).
pub fn html(charts: &Charts) -> DrawResult<String> {
    Ok(format!(
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><meta charset=\"utf-8\"/><title>{}</title></head><body>{}</body></html>\n",
        escape(&charts.title),
        svg(charts)?
    ))
}

/// Writes the report to `path`: HTML if its name ends in `.html`, else SVG.
pub fn write(path: &Path, charts: &Charts) -> std::io::Result<()> {
    let is_html = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let text = if is_html { html(charts) } else { svg(charts) };
    let text = text.map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}
