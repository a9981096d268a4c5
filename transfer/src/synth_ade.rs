//! A generated segmentation dataset in the `ADEChallengeData2016` layout (`tricks data
//! synth --task segmentation`): JPEGs and 8-bit PNG masks that [`crate::ade20k`] reads like
//! the real benchmark.
//!
//! Each image has two textured "stuff" regions split by a wavy line (ADE classes 0 and 1,
//! `wall` and `building`: the frequent classes), objects drawn on them (the procedural
//! shapes of [`training::data::synth`], shape `k` being ADE class `k + 2`, each class half
//! as likely as the one before: classes of very different frequency), and a band of clutter
//! left as label 0 ("other", ignored). The same seed writes the same bytes.

use std::f32::consts::PI;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use training::data::synth::{contrasting_colour, luminance, paint, random_colour, OUTLINES};
use training::data::{mix, Image};

use crate::ade20k::{write_mask, IGNORE};
use crate::synth_voc::jpeg;
use crate::TransferError;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthAdeConfig {
    /// Classes: 2 stuff classes and `classes − 2` object shapes (4 to 12).
    pub classes: usize,
    /// Images in `training`.
    pub training: usize,
    /// Images in `validation`.
    pub validation: usize,
    /// Longer image side in pixels (the shorter is 3/4 of it).
    pub size: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for SynthAdeConfig {
    fn default() -> Self {
        Self {
            classes: 8,
            training: 200,
            validation: 50,
            size: 128,
            seed: 0,
        }
    }
}

/// The most images the generator writes per split (a typo guard).
pub const MAX_IMAGES: usize = 100_000;

/// A texture: two colours, stripes of some frequency and direction, noise.
fn texture(rng: &mut ChaCha8Rng) -> impl Fn(usize, usize) -> [f32; 3] {
    let (a, b) = (random_colour(rng), random_colour(rng));
    let (freq, dir) = (rng.random_range(0.1..0.6f32), rng.random_range(0.0..PI));
    move |x, y| {
        let t = 0.5 + 0.5 * ((x as f32 * dir.cos() + y as f32 * dir.sin()) * freq).sin();
        [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * t)
    }
}

/// One image and its labels (class per pixel, [`IGNORE`] for "other").
fn render(seed: u64, cfg: &SynthAdeConfig) -> (Image, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (w, h) = if rng.random_bool(0.5) {
        (cfg.size, cfg.size * 3 / 4)
    } else {
        (cfg.size * 3 / 4, cfg.size)
    };
    let mut img = Image::filled(w, h, [0.0; 3]);
    let mut labels = vec![0u32; w * h];
    // Stuff: class 0 above a wavy line, class 1 below it.
    let (upper, lower) = (texture(&mut rng), texture(&mut rng));
    let (level, amp, freq, phase) = (
        rng.random_range(0.3..0.7f32) * h as f32,
        rng.random_range(0.0..0.15f32) * h as f32,
        rng.random_range(0.01..0.06f32),
        rng.random_range(0.0..2.0 * PI),
    );
    for y in 0..h {
        for x in 0..w {
            let line = level + amp * (x as f32 * freq + phase).sin();
            let (class, colour) = if (y as f32) < line {
                (0, upper(x, y))
            } else {
                (1, lower(x, y))
            };
            labels[y * w + x] = class;
            img.data[(y * w + x) * 3..][..3].copy_from_slice(&colour);
        }
    }
    // Objects: shape k is class k + 2, each half as likely as the one before.
    let shapes = (cfg.classes - 2).min(OUTLINES);
    let weights: Vec<f64> = (0..shapes).map(|k| 0.5f64.powi(k as i32)).collect();
    let total: f64 = weights.iter().sum();
    let background = (luminance(img.data[..3].try_into().unwrap_or([0.0; 3]))
        + luminance(
            img.data[img.data.len() - 3..]
                .try_into()
                .unwrap_or([0.0; 3]),
        ))
        / 2.0;
    let side = w.min(h) as f32;
    for _ in 0..rng.random_range(1..=4) {
        let mut pick = rng.random_range(0.0..total);
        let mut shape = 0;
        while shape + 1 < shapes && pick >= weights[shape] {
            pick -= weights[shape];
            shape += 1;
        }
        let r = side * rng.random_range(0.1..0.28f32);
        let (cx, cy) = (
            rng.random_range(0.0..w as f32),
            rng.random_range(0.0..h as f32),
        );
        let angle = rng.random_range(-0.4..0.4);
        let colour = contrasting_colour(&mut rng, background, 60.0);
        // The same shape painted white on black marks its pixels.
        let mut mark = Image::filled(w, h, [0.0; 3]);
        paint(&mut mark, [255.0; 3], shape, cx, cy, r, angle);
        paint(&mut img, colour, shape, cx, cy, r, angle);
        for (i, l) in labels.iter_mut().enumerate() {
            if mark.data[i * 3] > 127.0 {
                *l = shape as u32 + 2;
            }
        }
    }
    // Clutter along one border, labelled "other".
    let band = rng.random_range(0..=h / 10);
    let clutter = texture(&mut rng);
    for y in h - band..h {
        for x in 0..w {
            labels[y * w + x] = IGNORE;
            img.data[(y * w + x) * 3..][..3].copy_from_slice(&clutter(x * 3, y * 7));
        }
    }
    let noise_std = rng.random_range(2.0..6.0f32);
    for v in &mut img.data {
        let e: f32 = rng.random_range(-1.0..1.0) + rng.random_range(-1.0..1.0);
        *v = (*v + e * noise_std).clamp(0.0, 255.0);
    }
    (img, labels)
}

/// Writes `images/{training,validation}` and `annotations/{training,validation}` under
/// `root` (the `ADEChallengeData2016` folder), ADE20K's file names (`ADE_train_%08d`,
/// `ADE_val_%08d`). Returns the number of images. A `root` that already holds `images` is
/// refused, never overwritten.
pub fn generate(root: &Path, cfg: &SynthAdeConfig) -> Result<usize, TransferError> {
    if !(4..=OUTLINES + 2).contains(&cfg.classes) {
        return Err(TransferError::Config(format!(
            "--classes {}: the generator draws 4 to {} classes",
            cfg.classes,
            OUTLINES + 2
        )));
    }
    if cfg.training < 1
        || cfg.validation < 1
        || cfg.training > MAX_IMAGES
        || cfg.validation > MAX_IMAGES
    {
        return Err(TransferError::Config(format!(
            "{} training and {} validation images: each split needs 1 to {MAX_IMAGES}",
            cfg.training, cfg.validation
        )));
    }
    if !(64..=training::data::synth::MAX_SYNTH_SIZE).contains(&cfg.size) {
        return Err(TransferError::Config(format!(
            "--size {}: must be in 64..={}",
            cfg.size,
            training::data::synth::MAX_SYNTH_SIZE
        )));
    }
    if root.join("images").exists() {
        return Err(TransferError::data(
            &root.join("images"),
            "already exists: choose another --out",
        ));
    }
    let mut jobs = Vec::new();
    for (split, prefix, n) in [
        ("training", "ADE_train", cfg.training),
        ("validation", "ADE_val", cfg.validation),
    ] {
        for dir in ["images", "annotations"] {
            let d = root.join(dir).join(split);
            std::fs::create_dir_all(&d).map_err(|e| TransferError::data(&d, e))?;
        }
        jobs.extend((1..=n).map(|i| (split, format!("{prefix}_{i:08}"))));
    }
    use rayon::prelude::*;
    jobs.par_iter()
        .enumerate()
        .try_for_each(|(i, (split, id))| {
            let (img, labels) = render(mix(cfg.seed ^ mix(i as u64 + 1) ^ 0xADE), cfg);
            let bytes = jpeg(&img).map_err(TransferError::Config)?;
            let jpg = root.join("images").join(split).join(format!("{id}.jpg"));
            zoo::atomic::write(&jpg, &bytes).map_err(|e| TransferError::data(&jpg, e))?;
            let png = root
                .join("annotations")
                .join(split)
                .join(format!("{id}.png"));
            write_mask(&png, &labels, img.width, img.height)
        })?;
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ade20k::{read_mask, AdeDataset};

    #[test]
    fn writes_the_layout_the_reader_reads_deterministically_with_skewed_classes() {
        let cfg = SynthAdeConfig {
            training: 16,
            validation: 4,
            size: 96,
            ..Default::default()
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(generate(a.path(), &cfg).unwrap(), 20);
        generate(b.path(), &cfg).unwrap();
        let f = "annotations/training/ADE_train_00000003.png";
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap()
        );
        let train = AdeDataset::open(a.path(), "training", true).unwrap();
        assert_eq!(train.samples.len(), 16);
        let val = AdeDataset::open(a.path(), "validation", true).unwrap();
        assert_eq!(val.samples[0].id, "ADE_val_00000001");
        let mut counts = vec![0usize; 256];
        for s in &train.samples {
            let img = training::data::Image::open(&s.image).unwrap();
            for l in read_mask(&s.mask, Some((img.width, img.height))).unwrap() {
                counts[l as usize] += 1;
            }
        }
        // Both stuff classes everywhere, the first shape far more often than the last ones,
        // some ignored clutter, nothing beyond the configured classes.
        assert!(counts[0] > 0 && counts[1] > 0, "{:?}", &counts[..8]);
        assert!(counts[2] > counts[6], "{:?}", &counts[..8]);
        assert!(counts[IGNORE as usize] > 0);
        assert!(counts[8..255].iter().all(|&c| c == 0));
        assert!(generate(a.path(), &cfg)
            .unwrap_err()
            .to_string()
            .contains("already exists"));
        // A missing mask: an error naming the image, or skipped and reported.
        std::fs::remove_file(a.path().join(f)).unwrap();
        let e = AdeDataset::open(a.path(), "training", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ADE_train_00000003.jpg") && e.contains("no mask"),
            "{e}"
        );
        let lenient = AdeDataset::open(a.path(), "training", false).unwrap();
        assert_eq!((lenient.samples.len(), lenient.skipped.len()), (15, 1));
    }
}
