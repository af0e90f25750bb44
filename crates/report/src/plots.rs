//! SVG charts of the reproduce report, drawn with plotters' SVG backend (no font files: the
//! SVG carries its text and the viewer renders it). Every chart is written to a temporary file
//! and renamed into place, like every other output.

use std::path::Path;

use plotters::prelude::*;

use crate::{ReportError, Result};
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Twenty distinguishable colours (the tab20 palette order), reused cyclically.
const PALETTE: [(u8, u8, u8); 20] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
];

fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Draws into an SVG string with `draw`, then writes it atomically to `path`.
fn write_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), DrawError>,
) -> Result<()> {
    let mut text = String::new();
    let failed = |message: String| ReportError::Draw {
        path: path.to_path_buf(),
        message,
    };
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
        draw(&root).map_err(|e| failed(e.0))?;
        root.present().map_err(|e| failed(e.to_string()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ReportError::File {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    cellident_io::write_atomic(path, |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

/// A drawing error inside one chart (the chart's path is added by [`write_svg`]).
struct DrawError(String);

fn err(e: impl std::fmt::Display) -> DrawError {
    DrawError(e.to_string())
}

/// Grouped bars: one group per entry of `groups` (x axis), one bar per series (colour, in the
/// legend); `None` leaves a gap. Values on `[0, 1]` metrics.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<()> {
    let width = (160 + 90 * groups.len() as u32).max(480);
    // Rotated group names below the axis: about 6.5 px per character at 11 px.
    let bottom = 20 + 13 * groups.iter().map(|g| g.len()).max().unwrap_or(4) as u32 / 2;
    write_svg(path, (width, 340 + bottom), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(bottom)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..groups.len() as f64, 0f64..1.3f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc(y_label)
            .draw()
            .map_err(err)?;
        let width = 0.8 / series.len().max(1) as f64;
        for (m, (name, values)) in series.iter().enumerate() {
            let c = colour(m);
            let bars = values.iter().enumerate().filter_map(|(g, v)| {
                v.map(|v| {
                    let x0 = g as f64 + 0.1 + m as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], c.filled())
                })
            });
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        let style = TextStyle::from(("sans-serif", 11).into_font())
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (g, name) in groups.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
            root.draw(&Text::new(name.clone(), (x, y + 6), style.clone()))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Lines, one per series, x = 1, 2, … (epochs).
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let finite = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let n = series.iter().map(|s| s.1.len()).max().unwrap_or(1).max(2);
    write_svg(path, (560, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(1f64..n as f64, (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(err)?;
        for (i, (name, values)) in series.iter().enumerate() {
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(e, &v)| ((e + 1) as f64, v)),
                    c.stroke_width(2),
                ))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// A heatmap of `values` (`[rows, cols]` row-major, shown on `[0, max]` from white to dark
/// blue), with the row names on the left and the column names below, rotated.
pub fn heatmap(
    path: &Path,
    title: &str,
    rows: &[String],
    cols: &[String],
    values: &[f64],
) -> Result<()> {
    let max = values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let cell = 20u32;
    let left = 12 + 7 * rows.iter().map(|r| r.len()).max().unwrap_or(4) as u32;
    let bottom = 12 + 7 * cols.iter().map(|c| c.len()).max().unwrap_or(4) as u32;
    // Wide enough for the title too (about 8 px per character at 15 px).
    let size = (
        (left + cell * cols.len() as u32 + 40).max(8 * title.len() as u32 + 20),
        bottom + cell * rows.len() as u32 + 50,
    );
    write_svg(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(bottom)
            .y_label_area_size(left)
            .build_cartesian_2d(0f64..cols.len() as f64, 0f64..rows.len() as f64)
            .map_err(err)?;
        let cells = values.iter().enumerate().map(|(k, &v)| {
            let (r, c) = (k / cols.len(), k % cols.len());
            let t = if max > 0.0 && v.is_finite() {
                (v / max).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let shade = |full: f64| (255.0 - t * (255.0 - full)) as u8;
            let fill = RGBColor(shade(8.0), shade(48.0), shade(107.0));
            // Row 0 at the top.
            let y0 = (rows.len() - 1 - r) as f64;
            Rectangle::new([(c as f64, y0), (c as f64 + 1.0, y0 + 1.0)], fill.filled())
        });
        chart.draw_series(cells).map_err(err)?;
        let row_style = TextStyle::from(("sans-serif", 11).into_font())
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (r, name) in rows.iter().enumerate() {
            let y = (rows.len() - 1 - r) as f64 + 0.5;
            let (px, py) = chart.backend_coord(&(0.0, y));
            root.draw(&Text::new(name.clone(), (px - 4, py), row_style.clone()))
                .map_err(err)?;
        }
        let col_style = TextStyle::from(("sans-serif", 11).into_font())
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (c, name) in cols.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(c as f64 + 0.5, 0.0));
            root.draw(&Text::new(name.clone(), (px, py + 4), col_style.clone()))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// A 2-D scatter of `points` coloured by `labels` (indices into `classes`, in the legend).
pub fn scatter(
    path: &Path,
    title: &str,
    axes: (&str, &str),
    points: &[(f64, f64)],
    labels: &[u32],
    classes: &[String],
) -> Result<()> {
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .filter(|v| v.is_finite())
            .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
        if lo > hi {
            (0.0, 1.0)
        } else {
            let pad = ((hi - lo) * 0.05).max(1e-9);
            (lo - pad, hi + pad)
        }
    };
    let (x0, x1) = range(|p| p.0);
    let (y0, y1) = range(|p| p.1);
    write_svg(path, (640, 480), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(axes.0)
            .y_desc(axes.1)
            .draw()
            .map_err(err)?;
        for (k, class) in classes.iter().enumerate() {
            let c = colour(k);
            chart
                .draw_series(
                    points
                        .iter()
                        .zip(labels)
                        .filter(|(_, l)| **l as usize == k)
                        .map(|(&p, _)| Circle::new(p, 2, c.filled())),
                )
                .map_err(err)?
                .label(class.as_str())
                .legend(move |(x, y)| Circle::new((x + 5, y), 4, c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 10))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_write_svg_with_their_labels() {
        let dir = std::env::temp_dir().join(format!("cellident-plots-{}", std::process::id()));
        let bars = dir.join("bars.svg");
        grouped_bars(
            &bars,
            "ARI",
            "ari",
            &["pollen".into(), "baron".into()],
            &[
                ("cicl".into(), vec![Some(0.9), Some(0.5)]),
                ("kmeans".into(), vec![Some(0.8), None]),
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&bars).unwrap();
        for word in ["pollen", "baron", "cicl", "kmeans"] {
            assert!(text.contains(word), "{word} missing");
        }
        // 3 bars (one value is missing) plus the 2 legend swatches.
        let rects = text.matches("<rect").count();
        assert!(rects >= 5, "{rects} rectangles");
        let heat = dir.join("heat.svg");
        heatmap(
            &heat,
            "confusion",
            &["B".into(), "T".into()],
            &["B".into(), "T".into()],
            &[9.0, 1.0, 0.0, 10.0],
        )
        .unwrap();
        let text = std::fs::read_to_string(&heat).unwrap();
        // The largest value is the darkest blue, zero is white.
        assert!(text.contains("#08306B"), "darkest cell missing");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
