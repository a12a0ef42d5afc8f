//! SVG plots of latency distributions ("latency by percentile", as HdrHistogram plots
//! them): x is the percentile on a log scale of 1 / (1 - q) — 90 %, 99 %, 99.9 % ... equally
//! spaced — and y the latency in microseconds on a log scale, one line per system.

use crate::report::{display_name, plot_file_name, Report, SYSTEMS};
use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Plot size in pixels.
const WIDTH_PX: u32 = 900;
const HEIGHT_PX: u32 = 540;
/// The x axis ends at 1 - 10^-6 (99.9999 %).
const DECADES_MAX: f64 = 6.0;

/// x coordinate of percentile `p` (0..100): -log10(1 - p/100), capped at [`DECADES_MAX`].
pub fn x_of_percentile(p: f64) -> f64 {
    let tail = (1.0 - p / 100.0).max(10f64.powf(-DECADES_MAX));
    -tail.log10()
}

/// Axis label of x coordinate `x`: "50%", "90%", "99.9%" ...
pub fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let text = format!("{p:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// One SVG per latency table (durability x rate); returns the files written.
pub fn latency_plots(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for rate in report.rates() {
        for durability in report.durabilities("produce", rate) {
            let series: Vec<(String, Vec<(f64, f64)>)> = SYSTEMS
                .iter()
                .filter_map(|&system| {
                    let r = report.find(system, "produce", &durability, rate)?;
                    let points: Vec<(f64, f64)> = r
                        .curve
                        .iter()
                        .filter(|[p, us]| *p <= 100.0 && *us > 0.0)
                        .map(|[p, us]| (x_of_percentile(*p), *us))
                        .collect();
                    (!points.is_empty()).then(|| (display_name(system).to_string(), points))
                })
                .collect();
            if series.is_empty() {
                continue;
            }
            let path = dir.join(plot_file_name(&durability, rate));
            let title = format!(
                "produce -> ack latency at {rate} msgs/s, acks={durability} (CO-corrected)"
            );
            draw(&path, &title, &series)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn draw(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<()> {
    let plot_error = |e: &dyn std::fmt::Display| anyhow!("plot {}: {e}", path.display());
    let (mut low, mut high) = (f64::MAX, f64::MIN);
    for (_, points) in series {
        for &(_, us) in points {
            low = low.min(us);
            high = high.max(us);
        }
    }
    // Whole decades around the data.
    let low = 10f64.powf(low.log10().floor());
    let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
    let root = SVGBackend::new(path, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .margin_right(45)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..DECADES_MAX, (low..high).log_scale())
        .map_err(|e| plot_error(&e))?;
    chart
        .configure_mesh()
        .x_labels(DECADES_MAX as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| crate::report::number(Some(*y)))
        .x_desc("percentile")
        .y_desc("latency (us)")
        .draw()
        .map_err(|e| plot_error(&e))?;
    let colors = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| plot_error(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(&e))?;
    root.present().map_err(|e| plot_error(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::RunResult;

    #[test]
    fn percentile_axis() {
        assert!((x_of_percentile(90.0) - 1.0).abs() < 1e-9);
        assert!((x_of_percentile(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(x_of_percentile(100.0), DECADES_MAX);
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(4.0), "99.99%");
    }

    #[test]
    fn writes_one_svg_per_latency_table_with_every_system() {
        let mut results = Vec::new();
        for (system, scale) in [
            ("precursor", 1.0),
            ("nats-jetstream", 20.0),
            ("redis-streams", 5.0),
        ] {
            let mut r = RunResult::new(system, "tcp", "produce", 1000, 100, 0.1);
            r.durability = Some("leader".into());
            r.rate = Some(10_000.0);
            r.p99_us = Some(100.0 * scale);
            r.curve = vec![
                [0.0, 10.0 * scale],
                [90.0, 50.0 * scale],
                [99.0, 100.0 * scale],
                [100.0, 400.0 * scale],
            ];
            results.push(r);
        }
        let report = Report::new(&results);
        let dir = tempfile::tempdir().unwrap();
        let files = latency_plots(&report, dir.path()).unwrap();
        assert_eq!(files, vec![dir.path().join("latency-leader-10000.svg")]);
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.starts_with("<svg"));
        for name in [
            "Precursor",
            "NATS JetStream",
            "Redis Streams",
            "99.9%",
            "latency (us)",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
    }
}
