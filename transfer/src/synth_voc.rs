//! A generated detection dataset in the VOCdevkit layout (`tricks data synth --task
//! detection`): JPEGs, XML annotations and split files that [`crate::voc::VocDataset`]
//! reads like the real devkit.
//!
//! Each image is a textured background with 1–4 objects, each one of the procedural
//! shapes of [`training::data::synth`] standing for one VOC class (shape `k` is
//! `VOC_CLASSES[k]`), of several sizes, overlapping each other, some cut by the border, and
//! the smallest marked `difficult`. The same seed writes the same bytes.

use std::f32::consts::PI;
use std::fmt::Write as _;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use training::data::synth::{contrasting_colour, luminance, paint, random_colour, OUTLINES};
use training::data::{mix, Image};

use crate::voc::VOC_CLASSES;
use crate::TransferError;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthVocConfig {
    /// Object classes: the first `classes` VOC classes (2 to 10, one per shape).
    pub classes: usize,
    /// Images in `trainval` (split evenly into `train` and `val`).
    pub trainval: usize,
    /// Images in `test`.
    pub test: usize,
    /// Longer image side in pixels (the shorter is 3/4 of it, or the same, at random).
    pub size: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for SynthVocConfig {
    fn default() -> Self {
        Self {
            classes: 6,
            trainval: 200,
            test: 100,
            size: 192,
            seed: 0,
        }
    }
}

/// Objects narrower or shorter than this many pixels are marked `difficult`.
pub const DIFFICULT_BELOW: usize = 14;

/// The most images the generator writes per split (a typo guard).
pub const MAX_IMAGES: usize = 100_000;

/// One object drawn into an image: class and 1-based inclusive box.
struct Drawn {
    class: usize,
    bbox: [usize; 4],
    difficult: bool,
}

/// One image and its objects, from its own seed.
fn render(seed: u64, cfg: &SynthVocConfig) -> (Image, Vec<Drawn>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let long = cfg.size;
    let short = if rng.random_bool(0.5) {
        long * 3 / 4
    } else {
        long
    };
    let (w, h) = if rng.random_bool(0.5) {
        (long, short)
    } else {
        (short, long)
    };
    let (a, b) = (random_colour(&mut rng), random_colour(&mut rng));
    let (freq, dir, amp) = (
        rng.random_range(0.05..0.4f32),
        rng.random_range(0.0..PI),
        rng.random_range(0.0..30.0f32),
    );
    let mut img = Image::filled(w, h, [0.0; 3]);
    for y in 0..h {
        for x in 0..w {
            let t = (x + y) as f32 / (w + h) as f32;
            let stripe = amp * ((x as f32 * dir.cos() + y as f32 * dir.sin()) * freq).sin();
            let i = (y * w + x) * 3;
            for c in 0..3 {
                img.data[i + c] = a[c] + (b[c] - a[c]) * t + stripe;
            }
        }
    }
    let background = (luminance(a) + luminance(b)) / 2.0;
    let n = rng.random_range(1..=4);
    let mut drawn = Vec::new();
    let side = w.min(h) as f32;
    for k in 0..n {
        let class = rng.random_range(0..cfg.classes);
        // Mostly medium objects, some small (difficult) ones, some large.
        let r =
            side * [0.07, 0.15, 0.22, 0.3][rng.random_range(0..4)] * rng.random_range(0.85..1.15);
        // A quarter of the objects centred near the border, so that it cuts them.
        let (cx, cy) = if k > 0 && rng.random_bool(0.25) {
            (
                [0.0, w as f32][rng.random_range(0..2)] + rng.random_range(-0.3..0.3) * r,
                rng.random_range(0.0..h as f32),
            )
        } else {
            (
                rng.random_range(r..w as f32 - r),
                rng.random_range(r..h as f32 - r),
            )
        };
        let angle = rng.random_range(-0.3..0.3);
        let colour = contrasting_colour(&mut rng, background, 70.0);
        if let Some([x0, y0, x1, y1]) = paint(&mut img, colour, class, cx, cy, r, angle) {
            let small = x1 - x0 + 1 < DIFFICULT_BELOW || y1 - y0 + 1 < DIFFICULT_BELOW;
            drawn.push(Drawn {
                class,
                bbox: [x0 + 1, y0 + 1, x1 + 1, y1 + 1],
                difficult: small,
            });
        }
    }
    // Objects drawn later may hide earlier ones; a box whose object is now mostly hidden is
    // still the truth (VOC annotates occluded objects too).
    let noise_std = rng.random_range(2.0..8.0f32);
    for v in &mut img.data {
        // A cheap symmetric noise: the difference of two uniforms.
        let e: f32 = rng.random_range(-1.0..1.0) + rng.random_range(-1.0..1.0);
        *v = (*v + e * noise_std).clamp(0.0, 255.0);
    }
    (img, drawn)
}

fn annotation(id: &str, w: usize, h: usize, objects: &[Drawn]) -> String {
    let mut s = format!(
        "<annotation>\n  <folder>VOC2007</folder>\n  <filename>{id}.jpg</filename>\n  <source><database>tricks synthetic VOC</database></source>\n  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n  <segmented>0</segmented>\n"
    );
    for o in objects {
        let [x0, y0, x1, y1] = o.bbox;
        let truncated = x0 == 1 || y0 == 1 || x1 == w || y1 == h;
        let _ = write!(
            s,
            "  <object>\n    <name>{}</name>\n    <pose>Unspecified</pose>\n    <truncated>{}</truncated>\n    <difficult>{}</difficult>\n    <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox>\n  </object>\n",
            VOC_CLASSES[o.class],
            u8::from(truncated),
            u8::from(o.difficult)
        );
    }
    s.push_str("</annotation>\n");
    s
}

/// `img` as a JPEG of quality 92 (both generators' images).
pub(crate) fn jpeg(img: &Image) -> Result<Vec<u8>, String> {
    let bytes: Vec<u8> = img
        .data
        .iter()
        .map(|&v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode(
            &bytes,
            img.width as u32,
            img.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Writes `VOC2007/` under `root` (the VOCdevkit folder): `trainval`, `train`, `val` and
/// `test` split files, one JPEG and one XML per image. Returns the number of images. A
/// `root` that already holds a `VOC2007` is refused, never overwritten.
pub fn generate(root: &Path, cfg: &SynthVocConfig) -> Result<usize, TransferError> {
    if !(2..=OUTLINES).contains(&cfg.classes) {
        return Err(TransferError::Config(format!(
            "--classes {}: the generator draws 2 to {} classes",
            cfg.classes, OUTLINES
        )));
    }
    if cfg.trainval < 2 || cfg.test < 1 || cfg.trainval > MAX_IMAGES || cfg.test > MAX_IMAGES {
        return Err(TransferError::Config(format!(
            "{} trainval and {} test images: each split needs 2 (trainval) or 1 (test) to {MAX_IMAGES}",
            cfg.trainval, cfg.test
        )));
    }
    if !(64..=training::data::synth::MAX_SYNTH_SIZE).contains(&cfg.size) {
        return Err(TransferError::Config(format!(
            "--size {}: must be in 64..={}",
            cfg.size,
            training::data::synth::MAX_SYNTH_SIZE
        )));
    }
    let base = root.join("VOC2007");
    if base.exists() {
        return Err(TransferError::data(
            &base,
            "already exists: choose another --out",
        ));
    }
    for dir in ["Annotations", "JPEGImages", "ImageSets/Main"] {
        std::fs::create_dir_all(base.join(dir))
            .map_err(|e| TransferError::data(&base.join(dir), e))?;
    }
    let total = cfg.trainval + cfg.test;
    let ids: Vec<String> = (1..=total).map(|i| format!("{i:06}")).collect();
    use rayon::prelude::*;
    ids.par_iter().enumerate().try_for_each(|(i, id)| {
        let (img, objects) = render(mix(cfg.seed ^ mix(i as u64 + 1)), cfg);
        let bytes = jpeg(&img).map_err(TransferError::Config)?;
        let jpg = base.join("JPEGImages").join(format!("{id}.jpg"));
        zoo::atomic::write(&jpg, &bytes).map_err(|e| TransferError::data(&jpg, e))?;
        let xml = base.join("Annotations").join(format!("{id}.xml"));
        zoo::atomic::write(
            &xml,
            annotation(id, img.width, img.height, &objects).as_bytes(),
        )
        .map_err(|e| TransferError::data(&xml, e))
    })?;
    let list = |range: std::ops::Range<usize>| {
        ids[range]
            .iter()
            .map(|i| format!("{i}\n"))
            .collect::<String>()
    };
    let half = cfg.trainval / 2;
    for (split, text) in [
        ("trainval", list(0..cfg.trainval)),
        ("train", list(0..half)),
        ("val", list(half..cfg.trainval)),
        ("test", list(cfg.trainval..total)),
    ] {
        let path = base.join("ImageSets/Main").join(format!("{split}.txt"));
        zoo::atomic::write(&path, text.as_bytes()).map_err(|e| TransferError::data(&path, e))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::voc::{parse_splits, VocDataset};

    #[test]
    fn writes_a_devkit_the_reader_reads_deterministically() {
        let cfg = SynthVocConfig {
            trainval: 12,
            test: 6,
            size: 96,
            ..Default::default()
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(generate(a.path(), &cfg).unwrap(), 18);
        generate(b.path(), &cfg).unwrap();
        let f = "VOC2007/JPEGImages/000007.jpg";
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap()
        );
        let train =
            VocDataset::open(a.path(), &parse_splits("voc2007:trainval").unwrap(), true).unwrap();
        let test =
            VocDataset::open(a.path(), &parse_splits("voc2007:test").unwrap(), true).unwrap();
        assert_eq!((train.images.len(), test.images.len()), (12, 6));
        let objects: Vec<_> = train.images.iter().flat_map(|i| &i.objects).collect();
        assert!(objects.len() >= 12);
        let classes: std::collections::BTreeSet<_> = objects.iter().map(|o| o.class).collect();
        assert!(classes.len() >= 3, "{classes:?}");
        assert!(objects.iter().all(|o| o.class < cfg.classes));
        let err = generate(a.path(), &cfg).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        let bad = SynthVocConfig { classes: 11, ..cfg };
        assert!(generate(tempfile::tempdir().unwrap().path(), &bad).is_err());
    }

    #[test]
    fn some_objects_are_truncated_some_difficult_some_overlapping() {
        let cfg = SynthVocConfig::default();
        let (mut truncated, mut difficult, mut overlapping) = (0, 0, 0);
        for i in 0..200u64 {
            let (img, objects) = render(i, &cfg);
            for (k, o) in objects.iter().enumerate() {
                let [x0, y0, x1, y1] = o.bbox;
                truncated += usize::from(x0 == 1 || y0 == 1 || x1 == img.width || y1 == img.height);
                difficult += usize::from(o.difficult);
                overlapping += objects[..k]
                    .iter()
                    .filter(|p| {
                        p.bbox[0] <= x1 && x0 <= p.bbox[2] && p.bbox[1] <= y1 && y0 <= p.bbox[3]
                    })
                    .count();
            }
        }
        assert!(
            truncated > 10 && difficult > 10 && overlapping > 10,
            "{truncated} {difficult} {overlapping}"
        );
    }
}
