//! Line plots as PNG files, with no dependency beyond the image writer: axes, a light grid,
//! numeric tick labels in a built-in 3×5 pixel font, one coloured polyline per series.

use std::path::Path;

use training::data::Image;

/// One line; its colour is [`COLOURS`] at its index (the report's caption names them).
pub struct Series {
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// Line colours, in series order.
pub const COLOURS: [[f32; 3]; 4] = [
    [31., 119., 180.],
    [214., 39., 40.],
    [44., 160., 44.],
    [148., 103., 189.],
];
/// Their names, for captions.
pub const COLOUR_NAMES: [&str; 4] = ["blue", "red", "green", "purple"];

const WIDTH: usize = 640;
const HEIGHT: usize = 400;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 20;
const BOTTOM: usize = 40;

/// 3×5 glyphs for tick labels, one row per 3 bits.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => return None,
    })
}

struct Canvas(Image);

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [f32; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < WIDTH && (y as usize) < HEIGHT {
            let i = (y as usize * WIDTH + x as usize) * 3;
            self.0.data[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [f32; 3], thick: i64) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (
                (x0 + (x1 - x0) * t).round() as i64,
                (y0 + (y1 - y0) * t).round() as i64,
            );
            for dx in 0..thick {
                for dy in 0..thick {
                    self.set(x + dx, y + dy, rgb);
                }
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str) {
        const SCALE: i64 = 2;
        for (k, c) in s.chars().enumerate() {
            let Some(rows) = glyph(c) else { continue };
            for (r, bits) in rows.iter().enumerate() {
                for b in 0..3 {
                    if bits & (4 >> b) != 0 {
                        for dx in 0..SCALE {
                            for dy in 0..SCALE {
                                self.set(
                                    x + (k as i64 * 4 + b) * SCALE + dx,
                                    y + r as i64 * SCALE + dy,
                                    [0.; 3],
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() < 0.01 || v.abs() >= 1e4) {
        format!("{v:.0e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}").trim_end_matches('0').to_string()
    }
}

/// Draws `series` into a PNG at `path`; the axes span the data (y from 0 when all ≥ 0).
pub fn line_plot(path: &Path, series: &[Series]) -> Result<(), String> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x_lo, x_hi, y_lo, y_hi) = (x_lo.min(x), x_hi.max(x), y_lo.min(y), y_hi.max(y));
    }
    if x_lo > x_hi {
        return Err("nothing to plot".into());
    }
    if y_lo >= 0.0 {
        y_lo = 0.0;
    }
    if x_hi <= x_lo {
        x_hi = x_lo + 1.0;
    }
    if y_hi <= y_lo {
        y_hi = y_lo + 1.0;
    }
    let (pw, ph) = (
        (WIDTH - LEFT - RIGHT) as f64,
        (HEIGHT - TOP - BOTTOM) as f64,
    );
    let to_px = |(x, y): (f64, f64)| {
        (
            LEFT as f64 + (x - x_lo) / (x_hi - x_lo) * pw,
            TOP as f64 + (1.0 - (y - y_lo) / (y_hi - y_lo)) * ph,
        )
    };
    let mut c = Canvas(Image::filled(WIDTH, HEIGHT, [255.; 3]));
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (gx, gy) = (x_lo + f * (x_hi - x_lo), y_lo + f * (y_hi - y_lo));
        let (px, _) = to_px((gx, y_lo));
        let (_, py) = to_px((x_lo, gy));
        c.line((px, TOP as f64), (px, TOP as f64 + ph), [225.; 3], 1);
        c.line((LEFT as f64, py), (LEFT as f64 + pw, py), [225.; 3], 1);
        c.text(px as i64 - 8, (HEIGHT - BOTTOM + 8) as i64, &label(gx));
        c.text(6, py as i64 - 5, &label(gy));
    }
    c.line(
        (LEFT as f64, TOP as f64),
        (LEFT as f64, TOP as f64 + ph),
        [0.; 3],
        1,
    );
    c.line(
        (LEFT as f64, TOP as f64 + ph),
        (LEFT as f64 + pw, TOP as f64 + ph),
        [0.; 3],
        1,
    );
    for (s, colour) in series.iter().zip(COLOURS.iter().cycle()) {
        for w in s.points.windows(2) {
            c.line(to_px(w[0]), to_px(w[1]), *colour, 2);
        }
        if let [only] = s.points.as_slice() {
            c.line(to_px(*only), to_px(*only), *colour, 4);
        }
    }
    c.0.save_png(path)
}
