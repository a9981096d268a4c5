//! Predictions drawn on their image as a PNG: boxes with the class name and score on a
//! label in the box's colour (the bundled font of [`crate::plot`], so no system font is
//! needed).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use training::data::Image;

use crate::plot::{register_bundled_font, FONT};

/// Twenty distinct colours (Tableau's 20, dark shades first), one per class index.
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(199, 199, 199),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// One box to draw: corners in image pixels, its caption and its class (the colour).
pub struct Labelled {
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// What the label says (`dog 0.91`).
    pub caption: String,
    /// Class index, which picks the colour.
    pub class: usize,
}

/// Writes `img` with `boxes` drawn on it as a PNG at `path` (atomically).
pub fn draw_boxes(img: &Image, boxes: &[Labelled], path: &Path) -> Result<(), String> {
    register_bundled_font();
    let (w, h) = (img.width as u32, img.height as u32);
    let mut buf: Vec<u8> = img
        .data
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    {
        let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let size = (12.0 + h.min(w) as f64 / 60.0).min(24.0);
        let font = (FONT, size)
            .into_font()
            .color(&WHITE)
            .pos(Pos::new(HPos::Left, VPos::Top));
        let thick = ((h.min(w) / 200) + 1).min(4);
        for b in boxes {
            let colour = PALETTE[b.class % PALETTE.len()];
            let [x1, y1, x2, y2] = b.bbox.map(|v| v.round() as i32);
            root.draw(&Rectangle::new(
                [(x1, y1), (x2, y2)],
                colour.stroke_width(thick),
            ))
            .map_err(|e| err(&e))?;
            let (tw, th) = root
                .estimate_text_size(&b.caption, &font)
                .map_err(|e| err(&e))?;
            let (tw, th) = (tw as i32 + 6, th as i32 + 4);
            // Above the box when there is room, else inside its top edge.
            let ty = if y1 - th >= 0 { y1 - th } else { y1 };
            let tx = x1.min(w as i32 - tw).max(0);
            root.draw(&Rectangle::new(
                [(tx, ty), (tx + tw, ty + th)],
                colour.filled(),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Text::new(
                b.caption.clone(),
                (tx + 3, ty + 2),
                font.clone(),
            ))
            .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    let image = image::RgbImage::from_raw(w, h, buf).expect("the buffer's size");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("encoding {}: {e}", path.display()))?;
    zoo::atomic::write(path, &png).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// A distinct colour for class `k` of many (hues spaced by the golden ratio).
pub fn class_colour(k: usize) -> RGBColor {
    let h = (k as f64 * 0.618_033_988_749_895).fract() * 6.0;
    let (s, v) = (0.65, 0.95);
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as usize {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let to = |u: f64| ((u + m) * 255.0).round() as u8;
    RGBColor(to(r), to(g), to(b))
}

/// Writes `img` with its predicted `labels` (one class per pixel; `ignore` left as it is)
/// blended in at half opacity, and a legend of the classes present (by area, at most 16)
/// on a panel at the right, as a PNG at `path` (atomically).
pub fn draw_overlay(
    img: &Image,
    labels: &[u32],
    ignore: u32,
    names: &[String],
    path: &Path,
) -> Result<(), String> {
    register_bundled_font();
    let (w, h) = (img.width, img.height);
    let mut counts = vec![0usize; names.len()];
    for &l in labels {
        if l != ignore && (l as usize) < names.len() {
            counts[l as usize] += 1;
        }
    }
    let mut present: Vec<usize> = (0..names.len()).filter(|&k| counts[k] > 0).collect();
    present.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    present.truncate(16);
    let row = 18usize;
    let panel = 200usize;
    let (cw, ch) = (w + panel, h.max(row * (present.len() + 1) + 8));
    let mut buf = vec![255u8; cw * ch * 3];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut px = [0.0f32; 3];
            px.copy_from_slice(&img.data[i * 3..i * 3 + 3]);
            let l = labels[i];
            if l != ignore && (l as usize) < names.len() {
                let RGBColor(r, g, b) = class_colour(l as usize);
                for (p, c) in px.iter_mut().zip([r, g, b]) {
                    *p = 0.5 * *p + 0.5 * c as f32;
                }
            }
            let o = (y * cw + x) * 3;
            for c in 0..3 {
                buf[o + c] = px[c].round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    {
        let err = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
        let root = BitMapBackend::with_buffer(&mut buf, (cw as u32, ch as u32)).into_drawing_area();
        let font = (FONT, 13).into_font().color(&BLACK);
        let x0 = w as i32 + 8;
        root.draw(&Text::new("classes (by area)", (x0, 4), font.clone()))
            .map_err(|e| err(&e))?;
        for (i, &k) in present.iter().enumerate() {
            let y = (4 + row * (i + 1)) as i32;
            root.draw(&Rectangle::new(
                [(x0, y + 1), (x0 + 12, y + 13)],
                class_colour(k).filled(),
            ))
            .map_err(|e| err(&e))?;
            let share = 100.0 * counts[k] as f64 / labels.len() as f64;
            root.draw(&Text::new(
                format!("{} {share:.0}%", names[k]),
                (x0 + 18, y),
                font.clone(),
            ))
            .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    let image = image::RgbImage::from_raw(cw as u32, ch as u32, buf).expect("the buffer's size");
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("encoding {}: {e}", path.display()))?;
    zoo::atomic::write(path, &png).map_err(|e| format!("writing {}: {e}", path.display()))
}
