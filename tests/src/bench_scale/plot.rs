//! The scale benchmark's plot, an SVG with two panels: the steady run's rows/s per
//! tenth of the rows (with the 90 % line of the first slice, and plain COPY's slices of
//! the same rows when measured), and backlog drain time
//! against backlog size (with the straight line through the smallest backlog that a
//! linear drain would follow).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::ScaleReport;

const SIZE: (u32, u32) = (960, 420);
const LINE: RGBColor = RGBColor(31, 119, 180);
const REFERENCE: RGBColor = RGBColor(200, 80, 60);
const BASELINE: RGBColor = RGBColor(90, 90, 90);

/// Writes the plot of `report` to `path`; a run left out leaves its panel with a note.
pub fn write_svg(path: &Path, report: &ScaleReport) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    steady_panel(&left, report)?;
    backlog_panel(&right, report)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn plot_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

fn note(area: &Area<'_>, text: &str) -> Result<()> {
    area.draw(&Text::new(text, (40, 200), ("sans-serif", 16)))
        .map_err(plot_error)
}

fn steady_panel(area: &Area<'_>, report: &ScaleReport) -> Result<()> {
    let Some(steady) = report.steady.as_ref().filter(|s| !s.slices.is_empty()) else {
        return note(area, "steady run not measured");
    };
    let thousands: Vec<f64> = steady.slices.iter().map(|r| r / 1000.0).collect();
    let copy: Vec<f64> = steady
        .copy
        .as_ref()
        .map(|c| c.slices.iter().map(|r| r / 1000.0).collect())
        .unwrap_or_default();
    let first = thousands[0];
    let top = thousands
        .iter()
        .chain(&copy)
        .copied()
        .filter(|r| r.is_finite())
        .fold(first, f64::max)
        * 1.15;
    let n = thousands.len() as f64;
    let caption = format!(
        "{:.0}M rows, ledger seeded with {:.1}M files",
        steady.valid_rows as f64 / 1e6,
        steady.seed_files as f64 / 1e6
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.5f64..n + 0.5, 0f64..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("tenth of the rows")
        .y_desc("thousand rows/s")
        .x_labels(thousands.len())
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(
            LineSeries::new(
                thousands
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (i as f64 + 1.0, *r)),
                LINE.stroke_width(2),
            )
            .point_size(3),
        )
        .map_err(plot_error)?
        .label("Sluice, rows/s in the slice")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], LINE.stroke_width(2)));
    if !copy.is_empty() {
        chart
            .draw_series(
                LineSeries::new(
                    copy.iter().enumerate().map(|(i, r)| (i as f64 + 1.0, *r)),
                    BASELINE.stroke_width(2),
                )
                .point_size(3),
            )
            .map_err(plot_error)?
            .label("plain COPY of the same rows, same run")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BASELINE.stroke_width(2)));
    }
    chart
        .draw_series(LineSeries::new(
            [(0.5, first * 0.9), (n + 0.5, first * 0.9)],
            REFERENCE.stroke_width(1),
        ))
        .map_err(plot_error)?
        .label("90% of slice 1 (goal)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], REFERENCE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn backlog_panel(area: &Area<'_>, report: &ScaleReport) -> Result<()> {
    let Some(base) = report.backlogs.first() else {
        return note(area, "backlog runs not measured");
    };
    let points: Vec<(f64, f64)> = report
        .backlogs
        .iter()
        .map(|b| (b.files as f64 / 1000.0, b.seconds))
        .collect();
    let right = points.iter().map(|p| p.0).fold(0.0, f64::max) * 1.1;
    let per_thousand = base.seconds / (base.files as f64 / 1000.0);
    let top = points
        .iter()
        .map(|p| p.1)
        .fold(per_thousand * right, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("backlog present at start: drain time", ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..right, 0f64..top)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("thousand files in the backlog")
        .y_desc("seconds to drain")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), LINE.stroke_width(2)).point_size(3))
        .map_err(plot_error)?
        .label("measured")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], LINE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            [(0.0, 0.0), (right, per_thousand * right)],
            REFERENCE.stroke_width(1),
        ))
        .map_err(plot_error)?
        .label("linear from the smallest")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], REFERENCE));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}
