//! Inline SVG plots drawn with plotters' SVG backend: time series with fault windows shaded, and
//! the per-tenant heatmap of failing buckets.

use std::io;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Width of every plot, pixels.
const WIDTH: u32 = 960;

/// Fault window shading.
fn shade() -> RGBAColor {
    RGBColor(220, 40, 40).mix(0.14)
}

fn err<E: std::fmt::Debug>(e: E) -> io::Error {
    io::Error::other(format!("cannot draw plot: {e:?}"))
}

/// One line of a time series plot. Points with `None` break the line.
pub(crate) struct Line {
    /// Legend label.
    pub label: &'static str,
    /// Colour.
    pub color: RGBColor,
    /// (seconds, value) points.
    pub points: Vec<(f64, Option<f64>)>,
}

fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for &(x, y) in points {
        match y {
            Some(y) if y.is_finite() => cur.push((x, y)),
            _ => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A time series chart as an SVG string. `faults` are (start, end) seconds; `log_y` draws a
/// logarithmic y axis (values must be positive; others are dropped).
// The linear and the logarithmic axis are different types in plotters, hence two branches.
#[allow(clippy::too_many_lines)]
pub(crate) fn time_chart(
    title: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Line],
    faults: &[(f64, f64)],
    log_y: bool,
) -> io::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 260)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = if x_max > 0.0 { x_max } else { 1.0 };
        let values = lines
            .iter()
            .flat_map(|l| l.points.iter().filter_map(|p| p.1))
            .filter(|v| v.is_finite() && (!log_y || *v > 0.0));
        if log_y {
            let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
            let (lo, hi) = if lo > hi {
                (0.1, 10.0)
            } else {
                ((lo / 2.0).max(1e-3), hi * 2.0)
            };
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("time since run start (s)")
                .y_desc(y_desc)
                .light_line_style(RGBColor(240, 240, 240))
                .label_style(("sans-serif", 12))
                .axis_desc_style(("sans-serif", 12))
                .draw()
                .map_err(err)?;
            chart
                .draw_series(
                    faults
                        .iter()
                        .map(|&(a, b)| Rectangle::new([(a, lo), (b, hi)], shade().filled())),
                )
                .map_err(err)?;
            for l in lines {
                let color = l.color;
                let pts: Vec<(f64, Option<f64>)> = l
                    .points
                    .iter()
                    .map(|&(x, y)| (x, y.filter(|v| *v > 0.0)))
                    .collect();
                let mut first = true;
                for seg in segments(&pts) {
                    let s = chart
                        .draw_series(LineSeries::new(seg, color.stroke_width(2)))
                        .map_err(err)?;
                    if std::mem::take(&mut first) {
                        s.label(l.label).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                    }
                }
            }
            legend(&mut chart)?;
        } else {
            let hi = values.fold(0.0f64, f64::max);
            let hi = if hi > 0.0 { hi * 1.1 } else { 1.0 };
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(32)
                .y_label_area_size(64)
                .build_cartesian_2d(0f64..x_max, 0f64..hi)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("time since run start (s)")
                .y_desc(y_desc)
                .light_line_style(RGBColor(240, 240, 240))
                .label_style(("sans-serif", 12))
                .axis_desc_style(("sans-serif", 12))
                .draw()
                .map_err(err)?;
            chart
                .draw_series(
                    faults
                        .iter()
                        .map(|&(a, b)| Rectangle::new([(a, 0.0), (b, hi)], shade().filled())),
                )
                .map_err(err)?;
            for l in lines {
                let color = l.color;
                let mut first = true;
                for seg in segments(&l.points) {
                    let s = chart
                        .draw_series(LineSeries::new(seg, color.stroke_width(2)))
                        .map_err(err)?;
                    if std::mem::take(&mut first) {
                        s.label(l.label).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                    }
                }
            }
            legend(&mut chart)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> io::Result<()>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .draw()
        .map_err(err)
}

/// One row of the tenant heatmap: a tenant and its failing (start, end) seconds.
pub(crate) struct TenantRow {
    /// Tenant id.
    pub tenant: String,
    /// Failing ranges, seconds.
    pub failing: Vec<(f64, f64)>,
}

/// The per-tenant heatmap: one row per tenant, failing buckets in red, fault windows shaded.
pub(crate) fn tenant_heatmap(
    x_max: f64,
    rows: &[TenantRow],
    faults: &[(f64, f64)],
) -> io::Result<String> {
    let mut svg = String::new();
    let n = rows.len().max(1);
    let height = (70 + 18 * n) as u32;
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let x_max = if x_max > 0.0 { x_max } else { 1.0 };
        let (label_area, plot_area) = root.split_horizontally(110);
        let mut chart = ChartBuilder::on(&plot_area)
            .margin_top(8)
            .margin_right(10)
            .x_label_area_size(40)
            .build_cartesian_2d(0f64..x_max, 0f64..n as f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("time since run start (s)")
            .light_line_style(RGBColor(240, 240, 240))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                faults
                    .iter()
                    .map(|&(a, b)| Rectangle::new([(a, 0.0), (b, n as f64)], shade().filled())),
            )
            .map_err(err)?;
        let red = RGBColor(200, 30, 30);
        for (i, row) in rows.iter().enumerate() {
            let y0 = (n - 1 - i) as f64 + 0.15;
            let y1 = y0 + 0.7;
            chart
                .draw_series(
                    row.failing
                        .iter()
                        .map(|&(a, b)| Rectangle::new([(a, y0), (b, y1)], red.filled())),
                )
                .map_err(err)?;
            let (_, py) = chart.backend_coord(&(0.0, (n - 1 - i) as f64 + 0.5));
            draw_label(&label_area, &row.tenant, py)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn draw_label<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    y: i32,
) -> io::Result<()> {
    let style = TextStyle::from(("sans-serif", 12).into_font())
        .color(&BLACK)
        .pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Right,
            plotters::style::text_anchor::VPos::Center,
        ));
    area.draw(&Text::new(text.to_string(), (104, y), style))
        .map_err(err)
}
