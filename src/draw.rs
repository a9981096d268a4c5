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
