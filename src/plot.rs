//! Line plots as PNG files, drawn by `plotters` on its bitmap backend with a bundled font
//! (DejaVu Sans, `assets/fonts/`), so that no system font or library is needed: a title,
//! axis labels with units, round ticks, a grid and a legend.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// One line of a figure.
pub struct Series {
    /// The legend's entry.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// A figure: what it shows and how its axes are labelled (with units).
pub struct Figure<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// The x axis' label.
    pub x_label: &'a str,
    /// The y axis' label.
    pub y_label: &'a str,
    /// The lines, in legend order.
    pub series: &'a [Series],
    /// Where the legend sits (where the lines are not: lower right for rising curves).
    pub legend: Corner,
}

/// A corner of the plot area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corner {
    /// Top right.
    UpperRight,
    /// Bottom right.
    LowerRight,
}

const WIDTH: u32 = 800;
const HEIGHT: u32 = 500;
/// The font family every text of a figure is drawn in.
pub(crate) const FONT: &str = "sans-serif";

/// Line colours, in series order: matplotlib's `tab10`, red before orange.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Makes the bundled font the one [`FONT`] names (once per process).
pub(crate) fn register_bundled_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");
        // The font is ours and known to parse; a failure would show as missing text.
        let _ = register_font(FONT, FontStyle::Normal, bytes);
    });
}

/// `v` as a tick label: no more digits than the tick step needs, no trailing zeros.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step < 1.0 {
        (-step.log10()).ceil().clamp(0.0, 8.0) as usize
    } else {
        0
    };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// The axis range of `values` with a little room, never empty.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.04 * (hi - lo);
    (lo - pad, hi + pad)
}

/// Draws `fig` into an RGB buffer of `WIDTH × HEIGHT`.
fn render(fig: &Figure) -> Result<Vec<u8>, String> {
    register_bundled_font();
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", fig.title);
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let points = || fig.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = range(points().map(|p| p.0));
        let (y0, y1) = range(points().map(|p| p.1));
        let mut chart = ChartBuilder::on(&root)
            .caption(fig.title, (FONT, 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(&e))?;
        let (x_step, y_step) = ((x1 - x0) / 10.0, (y1 - y0) / 10.0);
        // Whole-number x values (epochs) get whole-number ticks, one per value up to 20.
        let integral_x = points().all(|p| p.0.fract() == 0.0);
        let span = (x1 - x0).round() as usize;
        let x_labels = if integral_x && span <= 20 {
            span + 1
        } else {
            10
        };
        let x_format = |v: &f64| {
            if integral_x && v.fract().abs() > 1e-9 {
                String::new()
            } else {
                tick_label(*v, if integral_x { 1.0 } else { x_step })
            }
        };
        chart
            .configure_mesh()
            .x_labels(x_labels)
            .x_desc(fig.x_label)
            .y_desc(fig.y_label)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .x_label_formatter(&x_format)
            .y_label_formatter(&|v| tick_label(*v, y_step))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in fig.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    colour.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(match fig.legend {
                Corner::UpperRight => SeriesLabelPosition::UpperRight,
                Corner::LowerRight => SeriesLabelPosition::LowerRight,
            })
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(buf)
}

/// Writes `fig` as a PNG at `path` (atomically).
pub fn line_plot(path: &Path, fig: &Figure) -> Result<(), String> {
    let buf = render(fig)?;
    let image = image::RgbImage::from_raw(WIDTH, HEIGHT, buf).expect("the buffer's size");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("encoding {}: {e}", path.display()))?;
    zoo::atomic::write(path, &png).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_label(1.9999999, 0.2), "2");
        assert_eq!(tick_label(0.025, 0.005), "0.025");
        assert_eq!(tick_label(80.0, 2.0), "80");
        assert_eq!(tick_label(-0.0, 0.1), "0");
        assert_eq!(tick_label(-0.5, 0.1), "-0.5");
    }

    #[test]
    fn draws_a_figure_with_text() {
        let series = [
            Series {
                label: "baseline".into(),
                points: (0..20).map(|i| (i as f64, (i as f64).sqrt())).collect(),
            },
            Series {
                label: "tricks".into(),
                points: (0..20).map(|i| (i as f64, 0.5 * i as f64 / 4.0)).collect(),
            },
        ];
        let fig = Figure {
            title: "test",
            x_label: "epoch",
            y_label: "top-1 (%)",
            series: &series,
            legend: Corner::LowerRight,
        };
        let buf = render(&fig).unwrap();
        // Some pixels are dark (text, axes) and some coloured (the two lines).
        let px = |i: usize| [buf[3 * i], buf[3 * i + 1], buf[3 * i + 2]];
        let n = (WIDTH * HEIGHT) as usize;
        assert!((0..n).any(|i| px(i) == [31, 119, 180]));
        assert!((0..n).any(|i| px(i) == [214, 39, 40]));
        assert!((0..n).filter(|&i| px(i).iter().all(|&c| c < 60)).count() > 500);
    }
}
