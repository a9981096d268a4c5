//! A procedurally generated image-classification dataset, written in the ImageNet folder
//! layout: one shape per class, drawn at a random size, angle, place and colour over a
//! textured, noisy background, among smaller shapes of other classes, sometimes partly
//! hidden. Deterministic for a seed, any size and count.
//!
//! The first ten shapes differ in outline; the next ten are each a near twin of one of
//! them, told apart by a detail (a rounded corner, a gap, a sixth point, a cut apex), so
//! that 20 classes make a fine-grained problem with headroom for a few epochs' training.
//! A dataset of the first `k` classes is the same whatever the number of shapes known.

use std::f32::consts::{FRAC_PI_2, PI};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

use super::image::Image;
use crate::TrainingError;

/// The shapes, one per class, in class order: ten distinct outlines, then each one's
/// fine-grained twin in the same order (`SHAPES[k + 10]` is the twin of `SHAPES[k]`).
pub const SHAPES: [&str; 20] = [
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "diamond",
    "star",
    "crescent",
    "hexagon",
    "bars",
    "ellipse",
    "rounded_square",
    "trapezoid",
    "latin_cross",
    "open_ring",
    "kite",
    "blunt_star",
    "half_disc",
    "pentagon",
    "broken_bars",
];

/// How many of [`SHAPES`] are distinct outlines rather than fine-grained twins: what the
/// detection and segmentation generators draw from.
pub const OUTLINES: usize = 10;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of classes (at most [`SHAPES`]`.len()`).
    pub classes: usize,
    /// Training images per class.
    pub train_per_class: usize,
    /// Validation images per class.
    pub val_per_class: usize,
    /// Height and width of the images.
    pub size: usize,
    /// Seed of everything random.
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            classes: 10,
            train_per_class: 200,
            val_per_class: 50,
            size: 72,
            seed: 0,
        }
    }
}

/// Whether the point (u, v) of a shape's own frame (radius about 1) is inside `shape`.
fn inside(shape: usize, u: f32, v: f32) -> bool {
    let r = (u * u + v * v).sqrt();
    match shape {
        0 => r < 0.95,
        1 => u.abs().max(v.abs()) < 0.8,
        2 => v > -0.6 && v < 0.9 && u.abs() < (0.9 - v) * 0.62,
        3 => (u.abs() < 0.28 && v.abs() < 0.95) || (v.abs() < 0.28 && u.abs() < 0.95),
        4 => r > 0.55 && r < 0.95,
        5 => u.abs() + v.abs() < 0.98,
        6 => r < 0.55 + 0.4 * (5.0 * v.atan2(u)).cos(),
        7 => r < 0.95 && ((u - 0.45).powi(2) + v * v).sqrt() > 0.7,
        8 => hexagon(u, v),
        9 => u.abs() < 0.9 && (0.22..0.62).contains(&v.abs()),
        // The twins.
        10 => (u / 0.95).powi(2) + (v / 0.62).powi(2) < 1.0,
        11 => {
            let (a, b) = ((u.abs() - 0.15).max(0.0), (v.abs() - 0.15).max(0.0));
            u.abs().max(v.abs()) < 0.8 && (a * a + b * b).sqrt() < 0.65
        }
        12 => v > -0.6 && v < 0.3 && u.abs() < (0.9 - v) * 0.62,
        13 => (u.abs() < 0.28 && v.abs() < 0.95) || ((v + 0.3).abs() < 0.28 && u.abs() < 0.7),
        14 => inside(4, u, v) && (v.atan2(u) + FRAC_PI_2).abs() > 0.5,
        15 => {
            let half_width = if v < -0.3 {
                v + 0.95
            } else {
                0.52 * (0.95 - v)
            };
            v > -0.95 && v < 0.95 && u.abs() < half_width
        }
        16 => r < 0.5 + 0.3 * (5.0 * v.atan2(u)).cos(),
        17 => r < 0.95 && u < 0.05,
        18 => pentagon(u, v),
        _ => inside(9, u, v) && u.abs() > 0.2,
    }
}

/// Whether (u, v) is inside the regular hexagon of apothem 0.85 (three pairs of sides).
fn hexagon(u: f32, v: f32) -> bool {
    (0..3).all(|k| {
        let a = k as f32 * PI / 3.0;
        (u * a.cos() + v * a.sin()).abs() < 0.85
    })
}

/// Whether (u, v) is inside the regular pentagon of apothem 0.75 with a vertex at -v.
fn pentagon(u: f32, v: f32) -> bool {
    (0..5).all(|k| {
        let a = k as f32 * 2.0 * PI / 5.0 - FRAC_PI_2;
        u * a.cos() + v * a.sin() < 0.75
    })
}

/// A uniformly random RGB colour.
pub fn random_colour<R: Rng>(rng: &mut R) -> [f32; 3] {
    [0; 3].map(|_| rng.random_range(0.0..255.0))
}

/// Rec. 601 luma of an RGB colour.
pub fn luminance(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// A random colour whose luminance differs from `background`'s by at least `contrast`
/// (for the class object: visible, though never the same colour twice).
pub fn contrasting_colour<R: Rng>(rng: &mut R, background: f32, contrast: f32) -> [f32; 3] {
    let mut colour = random_colour(rng);
    for _ in 0..32 {
        if (luminance(colour) - background).abs() >= contrast {
            break;
        }
        colour = random_colour(rng);
    }
    colour
}

/// Paints shape `shape` (an index into [`SHAPES`]) in `colour`, centred at (cx, cy) with
/// radius `radius` (pixels), rotated by `angle`; returns the painted pixels' bounding box
/// `[x0, y0, x1, y1]` (inclusive), none if the shape fell outside the image.
pub fn paint(
    img: &mut Image,
    colour: [f32; 3],
    shape: usize,
    cx: f32,
    cy: f32,
    radius: f32,
    angle: f32,
) -> Option<[usize; 4]> {
    let mut bbox: Option<[usize; 4]> = None;
    let (s, c) = angle.sin_cos();
    for y in 0..img.height {
        for x in 0..img.width {
            let (dx, dy) = (
                (x as f32 + 0.5 - cx) / radius,
                (y as f32 + 0.5 - cy) / radius,
            );
            let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
            if inside(shape, u, v) {
                let i = (y * img.width + x) * 3;
                img.data[i..i + 3].copy_from_slice(&colour);
                bbox = Some(match bbox {
                    None => [x, y, x, y],
                    Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x), y1.max(y)],
                });
            }
        }
    }
    bbox
}

/// One image of class `class`, drawn from `rng`.
pub fn render<R: Rng>(rng: &mut R, class: usize, classes: usize, size: usize) -> Image {
    let n = size as f32;
    // Background: a colour gradient with stripes of random direction and frequency.
    let (a, b) = (random_colour(rng), random_colour(rng));
    let (freq, dir, amp) = (
        rng.random_range(0.05..0.4),
        rng.random_range(0.0..PI),
        rng.random_range(0.0..40.0),
    );
    let mut img = Image::filled(size, size, [0.0; 3]);
    for y in 0..size {
        for x in 0..size {
            let t = (x + y) as f32 / (2.0 * n);
            let stripe = amp * ((x as f32 * dir.cos() + y as f32 * dir.sin()) * freq).sin();
            let i = (y * size + x) * 3;
            for ch in 0..3 {
                img.data[i + ch] = a[ch] + (b[ch] - a[ch]) * t + stripe;
            }
        }
    }
    // Clutter: small shapes of other classes.
    for _ in 0..rng.random_range(0..=2) {
        let other = (class + rng.random_range(1..classes.max(2))) % classes;
        let r = n * rng.random_range(0.06..0.12);
        let (cx, cy) = (rng.random_range(0.0..n), rng.random_range(0.0..n));
        let angle = rng.random_range(-0.35..0.35);
        let _ = paint(&mut img, random_colour(rng), other, cx, cy, r, angle);
    }
    // The object.
    let r = n * rng.random_range(0.28..0.42);
    let (cx, cy) = (
        rng.random_range(r * 0.8..n - r * 0.8),
        rng.random_range(r * 0.8..n - r * 0.8),
    );
    let angle = rng.random_range(-0.35..0.35);
    let background = (luminance(a) + luminance(b)) / 2.0;
    let _ = paint(
        &mut img,
        contrasting_colour(rng, background, 60.0),
        class,
        cx,
        cy,
        r,
        angle,
    );
    // Occlusion: a bar across part of the object, half the time.
    if rng.random_bool(0.5) {
        let colour = random_colour(rng);
        let (w, h) = (
            rng.random_range(0.1..0.3) * n,
            rng.random_range(0.1..0.3) * n,
        );
        let (x0, y0) = (
            cx + rng.random_range(-r..r) - w / 2.0,
            cy + rng.random_range(-r..r) - h / 2.0,
        );
        for y in (y0.max(0.0) as usize)..((y0 + h).min(n) as usize) {
            for x in (x0.max(0.0) as usize)..((x0 + w).min(n) as usize) {
                let i = (y * size + x) * 3;
                img.data[i..i + 3].copy_from_slice(&colour);
            }
        }
    }
    // Sensor noise.
    let noise = Normal::new(0.0, rng.random_range(2.0..12.0)).expect("positive std");
    for v in &mut img.data {
        *v = (*v + noise.sample(rng) as f32).clamp(0.0, 255.0);
    }
    img
}

/// The largest image side the generator writes.
pub const MAX_SYNTH_SIZE: usize = 1024;
/// The most images per class and split it writes (a typo guard: 100 million would fill the
/// disk before anyone noticed).
pub const MAX_SYNTH_PER_CLASS: usize = 100_000;

/// Writes the dataset under `root` (`train/<shape>/NNNNN.png`, `val/<shape>/…`) and returns
/// the number of images written. A `root` that already holds a dataset is refused, never
/// overwritten.
pub fn generate(root: &Path, cfg: &SynthConfig) -> Result<usize, TrainingError> {
    if cfg.classes < 2 || cfg.classes > SHAPES.len() {
        return Err(TrainingError::Config(format!(
            "classes must be 2..={}, not {}",
            SHAPES.len(),
            cfg.classes
        )));
    }
    if !(16..=MAX_SYNTH_SIZE).contains(&cfg.size) {
        return Err(TrainingError::Config(format!(
            "image size must be in 16..={MAX_SYNTH_SIZE}, not {}",
            cfg.size
        )));
    }
    for (what, n) in [("train", cfg.train_per_class), ("val", cfg.val_per_class)] {
        if n > MAX_SYNTH_PER_CLASS {
            return Err(TrainingError::Config(format!(
                "{what} images per class must be at most {MAX_SYNTH_PER_CLASS}, not {n}"
            )));
        }
    }
    for split in ["train", "val"] {
        let dir = root.join(split);
        let occupied = std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            return Err(TrainingError::data(
                root,
                format!("already holds a dataset ({split}/ is not empty): choose another --out or remove it first"),
            ));
        }
    }
    let mut jobs = Vec::new();
    for (split_id, (split, count)) in [("train", cfg.train_per_class), ("val", cfg.val_per_class)]
        .into_iter()
        .enumerate()
    {
        for (class, name) in SHAPES.iter().take(cfg.classes).enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).map_err(|e| TrainingError::data(&dir, e))?;
            jobs.extend((0..count).map(|i| (split_id, class, i, dir.join(format!("{i:05}.png")))));
        }
    }
    jobs.par_iter().try_for_each(|(split_id, class, i, path)| {
        let seed = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ ((*split_id as u64) << 56 | (*class as u64) << 40 | *i as u64);
        let img = render(
            &mut ChaCha8Rng::seed_from_u64(seed),
            *class,
            cfg.classes,
            cfg.size,
        );
        img.save_png(path).map_err(|e| TrainingError::data(path, e))
    })?;
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape `shape` sampled on a 40 × 40 grid over [−1, 1)².
    fn mask(shape: usize) -> Vec<bool> {
        (0..40 * 40)
            .map(|k| {
                inside(
                    shape,
                    (k % 40) as f32 / 20.0 - 1.0,
                    (k / 40) as f32 / 20.0 - 1.0,
                )
            })
            .collect()
    }

    #[test]
    fn absurd_settings_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for cfg in [
            SynthConfig {
                train_per_class: 100_000_000,
                ..SynthConfig::default()
            },
            SynthConfig {
                size: 100_000,
                ..SynthConfig::default()
            },
            SynthConfig {
                classes: 1,
                ..SynthConfig::default()
            },
        ] {
            assert!(generate(dir.path(), &cfg).is_err(), "{cfg:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn shapes_are_distinct_masks() {
        let masks: Vec<Vec<bool>> = (0..SHAPES.len()).map(mask).collect();
        for i in 0..masks.len() {
            assert!(
                masks[i].iter().filter(|&&b| b).count() > 100,
                "{} is too small",
                SHAPES[i]
            );
            for j in 0..i {
                let differ = masks[i]
                    .iter()
                    .zip(&masks[j])
                    .filter(|(a, b)| a != b)
                    .count();
                assert!(differ > 80, "{} and {} look alike", SHAPES[i], SHAPES[j]);
            }
        }
    }

    #[test]
    fn each_twin_shares_most_of_its_shape() {
        for k in 0..OUTLINES {
            let (a, b) = (mask(k), mask(k + OUTLINES));
            let both = a.iter().zip(&b).filter(|(x, y)| **x && **y).count();
            let either = a.iter().zip(&b).filter(|(x, y)| **x || **y).count();
            let iou = both as f64 / either as f64;
            eprintln!("{} / {}: IoU {iou:.2}", SHAPES[k], SHAPES[k + 10]);
            assert!(
                (0.5..0.95).contains(&iou),
                "{} / {}: IoU {iou}",
                SHAPES[k],
                SHAPES[k + 10]
            );
        }
    }

    #[test]
    fn generates_the_layout_deterministically() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            classes: 3,
            train_per_class: 2,
            val_per_class: 1,
            size: 24,
            seed: 9,
        };
        assert_eq!(generate(a.path(), &cfg).unwrap(), 9);
        generate(b.path(), &cfg).unwrap();
        let file = "train/triangle/00001.png";
        assert_eq!(
            std::fs::read(a.path().join(file)).unwrap(),
            std::fs::read(b.path().join(file)).unwrap()
        );
        let img = Image::open(&a.path().join("val/circle/00000.png")).unwrap();
        assert_eq!((img.width, img.height), (24, 24));
        assert!(generate(a.path(), &SynthConfig { classes: 21, ..cfg }).is_err());
    }
}
