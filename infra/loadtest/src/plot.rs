//! `--plot PATH.svg`: latency (p50/p99 per second) and throughput per second, drawn with plotters' SVG
//! backend (no font files needed: the SVG viewer renders the text).

use std::path::Path;

use plotters::prelude::*;

use crate::error::Error;
use crate::report::TimelinePoint;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 800;

/// A line of a chart: legend label, colour, value per second.
type Series = (&'static str, RGBColor, fn(&TimelinePoint) -> f64);

/// Draws the timeline; seconds from `duration_secs` on (requests still in flight at the deadline) are left
/// out so a near-empty tail does not read as a collapse.
pub(crate) fn write_svg(path: &Path, points: &[TimelinePoint], duration_secs: u64) -> Result<(), Error> {
    let end = usize::try_from(duration_secs).unwrap_or(usize::MAX);
    let points = points.get(..end.min(points.len())).unwrap_or(points);
    draw(path, points).map_err(|e| Error::Plot { path: path.to_owned(), message: e.to_string() })
}

fn whole(v: &f64) -> String {
    format!("{v:.0}")
}

fn decimal(v: &f64) -> String {
    format!("{v:.1}")
}

fn upper(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max).max(1.0) * 1.1
}

fn draw(path: &Path, points: &[TimelinePoint]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2);
    let seconds = points.len().max(1) as f64;
    let x = |p: &TimelinePoint| p.second as f64;

    let latency_max = upper(points.iter().map(|p| p.p99_ms.max(p.write_p99_ms)));
    let mut latency = ChartBuilder::on(&top)
        .caption("Latency per second", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..latency_max)?;
    latency
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("ms")
        .x_label_formatter(&whole)
        .y_label_formatter(&decimal)
        .draw()?;
    let series: [Series; 3] = [
        ("p50, all requests", BLUE, |p| p.p50_ms),
        ("p99, all requests", RED, |p| p.p99_ms),
        ("p99, writes", MAGENTA, |p| p.write_p99_ms),
    ];
    for (label, color, value) in series {
        latency
            .draw_series(LineSeries::new(points.iter().map(|p| (x(p), value(p))), color.stroke_width(2)))?
            .label(label)
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2)));
    }
    latency.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;

    let rate_max = upper(points.iter().map(|p| p.requests as f64));
    let mut throughput = ChartBuilder::on(&bottom)
        .caption("Throughput per second", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..rate_max)?;
    throughput
        .configure_mesh()
        .x_desc("seconds since the load started")
        .y_desc("requests/s")
        .x_label_formatter(&whole)
        .y_label_formatter(&whole)
        .draw()?;
    let series: [Series; 2] =
        [("requests", GREEN, |p| p.requests as f64), ("failures", RED, |p| p.failures as f64)];
    for (label, color, value) in series {
        throughput
            .draw_series(LineSeries::new(points.iter().map(|p| (x(p), value(p))), color.stroke_width(2)))?
            .label(label)
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color.stroke_width(2)));
    }
    throughput.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg() {
        let points: Vec<TimelinePoint> = (0..30)
            .map(|s| TimelinePoint {
                second: s,
                requests: 1000 + 10 * s as u64,
                failures: s as u64 % 3,
                p50_ms: 1.0 + s as f64 / 10.0,
                p99_ms: 5.0 + s as f64 / 5.0,
                write_p50_ms: 1.5,
                write_p99_ms: 6.0,
            })
            .collect();
        let path = std::env::temp_dir().join(format!("corebank-loadtest-plot-{}.svg", std::process::id()));
        write_svg(&path, &points, 29).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains("Throughput per second") && svg.contains("polyline"));
        // An empty timeline still gives a valid (empty) chart.
        let path =
            std::env::temp_dir().join(format!("corebank-loadtest-plot-empty-{}.svg", std::process::id()));
        write_svg(&path, &[], 10).unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}
