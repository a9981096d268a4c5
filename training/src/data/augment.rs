//! The paper's augmentation (Section 2.1), one function per step, sizes and probabilities as
//! parameters.
//!
//! Training: random-resized crop, horizontal flip, colour jitter (the paper's hue, saturation
//! and brightness, or GluonCV's brightness, contrast and saturation), PCA
//! lighting noise, normalisation. Validation: resize the shorter side, centre crop,
//! normalisation.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::image::Image;

/// ImageNet RGB mean (Section 2.1), on the 0–255 scale.
pub const MEAN: [f32; 3] = [123.68, 116.779, 103.939];
/// ImageNet RGB standard deviation (Section 2.1), on the 0–255 scale.
pub const STD: [f32; 3] = [58.393, 57.12, 57.375];
/// Eigenvalues of the ImageNet RGB covariance (AlexNet's PCA lighting), 0–255 scale.
pub const EIGVAL: [f32; 3] = [55.46, 4.794, 1.148];
/// The matching eigenvectors, as columns.
pub const EIGVEC: [[f32; 3]; 3] = [
    [-0.5675, 0.7192, 0.4009],
    [-0.5808, -0.0045, -0.8140],
    [-0.5836, -0.6948, 0.4203],
];

/// Which colour jitter the training transform applies. The paper's text and the code that
/// produced its numbers differ here; both are offered, under these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ColorJitter {
    /// The paper's text (Section 2.1): "scale hue, saturation, and brightness with
    /// coefficients uniformly drawn from [0.6, 1.4]", in that fixed order, hue read as
    /// MXNet's old `HueJitterAug` (a rotation of the chroma by up to ±0.4π).
    Paper,
    /// GluonCV's released `train_imagenet.py`, the code behind the paper's numbers:
    /// `RandomColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)`: brightness,
    /// contrast and saturation (no hue), each by a coefficient from [0.6, 1.4], in a random
    /// order, the image clamped to [0, 255] after each step as MXNet's 8-bit images are.
    Gluoncv,
}

impl ColorJitter {
    /// What a recipe's `[augment]` table that does not name one means: `paper`, the only
    /// jitter there was when every run recorded before this setting existed was made, so
    /// those runs resume with the augmentation they started with.
    fn recorded_before() -> Self {
        ColorJitter::Paper
    }
}

/// Settings of the training augmentation, with the paper's values as defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Output height and width.
    pub size: usize,
    /// Range of the crop's area as a fraction of the image (paper: 8 %–100 %).
    pub crop_area: (f64, f64),
    /// Range of the crop's aspect ratio, sampled log-uniformly (paper: 3/4–4/3).
    pub crop_ratio: (f64, f64),
    /// Tries before falling back to a centre crop.
    pub crop_attempts: usize,
    /// Probability of a horizontal flip (paper: 0.5).
    pub flip_prob: f64,
    /// Colour coefficients are drawn from 1 ± this (paper: [0.6, 1.4]).
    pub jitter: f64,
    /// Which colour jitter: `gluoncv` by default (brightness, contrast, saturation), since
    /// that code produced the paper's numbers, or `paper` (brightness, saturation, hue: the
    /// paper's text). On the demo's data the choice does not explain the `tricks` recipe's
    /// shortfall (docs/results.md). A recipe's `[augment]` table that does not say means
    /// `paper` (what runs recorded before the setting existed used).
    #[serde(default = "ColorJitter::recorded_before")]
    pub color_jitter: ColorJitter,
    /// Standard deviation of the PCA lighting coefficients α (paper: 0.1).
    pub lighting_std: f64,
    /// Validation: the centre crop is this fraction of the resized shorter side
    /// (224/256 = 0.875).
    pub crop_fraction: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            size: 224,
            crop_area: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            crop_attempts: 10,
            flip_prob: 0.5,
            jitter: 0.4,
            color_jitter: ColorJitter::Gluoncv,
            lighting_std: 0.1,
            crop_fraction: 0.875,
        }
    }
}

/// The crop rectangle (x, y, w, h) of a random-resized crop of a `width × height` image:
/// area uniform in `area`, aspect ratio log-uniform in `ratio`, up to `attempts` tries, then
/// the largest centred crop whose ratio lies in `ratio` (torchvision's rule).
pub fn random_resized_crop_box<R: Rng>(
    rng: &mut R,
    width: usize,
    height: usize,
    area: (f64, f64),
    ratio: (f64, f64),
    attempts: usize,
) -> (usize, usize, usize, usize) {
    let total = (width * height) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..attempts {
        let target = total * rng.random_range(area.0..=area.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round() as usize;
        let h = (target / aspect).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let x = rng.random_range(0..=width - w);
            let y = rng.random_range(0..=height - h);
            return (x, y, w, h);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((width as f64 / ratio.0).round() as usize).clamp(1, height),
        )
    } else if in_ratio > ratio.1 {
        (
            ((height as f64 * ratio.1).round() as usize).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Random-resized crop to `size × size`.
pub fn random_resized_crop<R: Rng>(rng: &mut R, img: &Image, cfg: &AugmentConfig) -> Image {
    let (x, y, w, h) = random_resized_crop_box(
        rng,
        img.width,
        img.height,
        cfg.crop_area,
        cfg.crop_ratio,
        cfg.crop_attempts,
    );
    img.crop(x, y, w, h).resize(cfg.size, cfg.size)
}

/// The image mirrored left to right.
pub fn flip_horizontal(img: &Image) -> Image {
    let mut data = Vec::with_capacity(img.data.len());
    for y in 0..img.height {
        for x in (0..img.width).rev() {
            data.extend_from_slice(&img.pixel(x, y));
        }
    }
    Image { data, ..*img }
}

fn luma(p: &[f32]) -> f32 {
    0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
}

/// Brightness scaled by `alpha`: every sample multiplied.
pub fn scale_brightness(img: &mut Image, alpha: f32) {
    img.data.iter_mut().for_each(|v| *v *= alpha);
}

/// Saturation scaled by `alpha`: each pixel moved away from (or towards) its grey value.
pub fn scale_saturation(img: &mut Image, alpha: f32) {
    for p in img.data.chunks_mut(3) {
        let grey = luma(p);
        p.iter_mut().for_each(|v| *v = grey + alpha * (*v - grey));
    }
}

/// Contrast scaled by `alpha`: each sample moved away from (or towards) the image's mean
/// grey value (MXNet's `AdjustContrast`: `alpha · v + (1 − alpha) · mean luma`).
pub fn scale_contrast(img: &mut Image, alpha: f32) {
    let pixels = (img.data.len() / 3).max(1);
    let mean = img.data.chunks(3).map(luma).sum::<f32>() / pixels as f32;
    let beta = (1.0 - alpha) * mean;
    img.data.iter_mut().for_each(|v| *v = alpha * *v + beta);
}

/// Samples clamped to [0, 255], as an 8-bit image saturates after each adjustment.
fn clamp_8bit(img: &mut Image) {
    img.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 255.0));
}

/// Hue scaled by `alpha`: the chroma rotated in YIQ space by (alpha − 1)·π, so that the
/// paper's coefficient range [0.6, 1.4] is a rotation of up to ±0.4π (MXNet's hue jitter).
pub fn scale_hue(img: &mut Image, alpha: f32) {
    let theta = (alpha - 1.0) * std::f32::consts::PI;
    let (s, c) = theta.sin_cos();
    // RGB -> YIQ, rotate I/Q, YIQ -> RGB.
    for p in img.data.chunks_mut(3) {
        let y = luma(p);
        let i = 0.596 * p[0] - 0.274 * p[1] - 0.322 * p[2];
        let q = 0.211 * p[0] - 0.523 * p[1] + 0.312 * p[2];
        let (i, q) = (c * i - s * q, s * i + c * q);
        p[0] = y + 0.956 * i + 0.621 * q;
        p[1] = y - 0.272 * i - 0.647 * q;
        p[2] = y - 1.106 * i + 1.703 * q;
    }
}

/// The RGB offset of PCA lighting noise for coefficients α: Σⱼ eigvecⱼ·(αⱼ·eigvalⱼ).
pub fn lighting_offset(alpha: [f32; 3]) -> [f32; 3] {
    let mut rgb = [0.0; 3];
    for (row, out) in EIGVEC.iter().zip(&mut rgb) {
        *out = (0..3).map(|j| row[j] * alpha[j] * EIGVAL[j]).sum();
    }
    rgb
}

/// Adds PCA lighting noise with α ~ N(0, std) (AlexNet, Section 2.1).
pub fn pca_lighting<R: Rng>(rng: &mut R, img: &mut Image, std: f64) {
    if std <= 0.0 {
        return;
    }
    let normal = Normal::new(0.0, std).expect("positive std");
    let alpha = [0; 3].map(|_| normal.sample(rng) as f32);
    let offset = lighting_offset(alpha);
    for p in img.data.chunks_mut(3) {
        p.iter_mut().zip(offset).for_each(|(v, o)| *v += o);
    }
}

/// Channels-first `(3, H, W)` samples normalised by the ImageNet mean and std.
pub fn normalize(img: &Image) -> Vec<f32> {
    normalize_with(img, MEAN, STD)
}

/// Channels-first `(3, H, W)` samples normalised by `mean` and `std` (per channel, on the
/// [0, 255] scale of [`Image`]).
pub fn normalize_with(img: &Image, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let plane = img.width * img.height;
    let mut out = vec![0.0; 3 * plane];
    for (i, p) in img.data.chunks(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] - mean[c]) / std[c];
        }
    }
    out
}

/// The full training augmentation: crop, flip, colour jitter ([`ColorJitter`]), PCA
/// lighting; returns channels-first normalised samples.
pub fn train_transform<R: Rng>(rng: &mut R, img: &Image, cfg: &AugmentConfig) -> Vec<f32> {
    let mut img = random_resized_crop(rng, img, cfg);
    if rng.random_bool(cfg.flip_prob) {
        img = flip_horizontal(&img);
    }
    if cfg.jitter > 0.0 {
        let j = cfg.jitter as f32;
        match cfg.color_jitter {
            ColorJitter::Paper => {
                let mut coefficient = || rng.random_range(1.0 - j..=1.0 + j);
                let (b, s, h) = (coefficient(), coefficient(), coefficient());
                scale_brightness(&mut img, b);
                scale_saturation(&mut img, s);
                scale_hue(&mut img, h);
            }
            ColorJitter::Gluoncv => {
                let mut steps: [fn(&mut Image, f32); 3] =
                    [scale_brightness, scale_contrast, scale_saturation];
                steps.shuffle(rng);
                for step in steps {
                    step(&mut img, rng.random_range(1.0 - j..=1.0 + j));
                    clamp_8bit(&mut img);
                }
            }
        }
    }
    pca_lighting(rng, &mut img, cfg.lighting_std);
    normalize(&img)
}

/// The largest training and validation crop side.
pub const MAX_SIZE: usize = 4096;

impl AugmentConfig {
    /// Checks every field against its domain (the error names the field, its value and
    /// the domain); [`crate::recipe::Recipe::validate`] calls it.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, value: String, domain: &str| {
            Err(format!(
                "recipe: `augment.{field}` = {value}: must be {domain}"
            ))
        };
        if !(1..=MAX_SIZE).contains(&self.size) {
            return bad("size", self.size.to_string(), &format!("in 1..={MAX_SIZE}"));
        }
        let (lo, hi) = self.crop_area;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 1.0) {
            return bad("crop_area", format!("({lo}, {hi})"), "0 < min ≤ max ≤ 1");
        }
        let (lo, hi) = self.crop_ratio;
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
            return bad("crop_ratio", format!("({lo}, {hi})"), "0 < min ≤ max");
        }
        let p = self.flip_prob;
        if !(0.0..=1.0).contains(&p) {
            return bad("flip_prob", p.to_string(), "a probability in [0, 1]");
        }
        let j = self.jitter;
        if !(0.0..=1.0).contains(&j) {
            return bad(
                "jitter",
                j.to_string(),
                "in [0, 1] (coefficients 1 ± jitter)",
            );
        }
        let l = self.lighting_std;
        if !(l.is_finite() && l >= 0.0) {
            return bad(
                "lighting_std",
                l.to_string(),
                "a finite number ≥ 0 (0: off)",
            );
        }
        let c = self.crop_fraction;
        if !(c.is_finite() && c > 0.0 && c <= 1.0) {
            return bad("crop_fraction", c.to_string(), "in (0, 1]");
        }
        Ok(())
    }

    /// The preprocessing of [`val_transform`] as a `pretrained_cfg` states it (what an
    /// exported model's `config.json` and registry entry say), so the two cannot drift.
    pub fn input_config(&self) -> zoo::registry::InputConfig {
        zoo::registry::InputConfig {
            size: [3, self.size, self.size],
            mean: MEAN.map(|m| m as f64 / 255.0),
            std: STD.map(|s| s as f64 / 255.0),
            crop_pct: self.crop_fraction,
            interpolation: super::image::RESIZE_FILTER,
        }
    }
}

/// Validation: resize the shorter side to `size / crop_fraction`, centre crop `size`.
pub fn val_transform(img: &Image, cfg: &AugmentConfig) -> Vec<f32> {
    let short = (cfg.size as f64 / cfg.crop_fraction).round() as usize;
    let (w, h) = if img.width <= img.height {
        (
            short,
            ((img.height * short) as f64 / img.width as f64).round() as usize,
        )
    } else {
        (
            ((img.width * short) as f64 / img.height as f64).round() as usize,
            short,
        )
    };
    let resized = img.resize(w.max(cfg.size), h.max(cfg.size));
    let x = (resized.width - cfg.size) / 2;
    let y = (resized.height - cfg.size) / 2;
    normalize(&resized.crop(x, y, cfg.size, cfg.size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn crop_box_respects_area_and_ratio() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let (x, y, w, h) =
                random_resized_crop_box(&mut rng, 200, 120, (0.08, 1.0), (0.75, 4.0 / 3.0), 10);
            assert!(x + w <= 200 && y + h <= 120);
            let area = (w * h) as f64 / (200.0 * 120.0);
            let ratio = w as f64 / h as f64;
            // Rounding to whole pixels moves area and ratio a little.
            assert!((0.07..=1.0).contains(&area), "{area}");
            assert!((0.7..=1.4).contains(&ratio), "{ratio}");
        }
    }

    #[test]
    fn crop_box_falls_back_to_a_centred_crop() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // No attempts: straight to the fallback. A 400x100 image is wider than 4/3.
        assert_eq!(
            random_resized_crop_box(&mut rng, 400, 100, (0.08, 1.0), (0.75, 4.0 / 3.0), 0),
            (133, 0, 133, 100)
        );
        // A tall 100x400 one is narrower than 3/4.
        assert_eq!(
            random_resized_crop_box(&mut rng, 100, 400, (0.08, 1.0), (0.75, 4.0 / 3.0), 0),
            (0, 133, 100, 133)
        );
        assert_eq!(
            random_resized_crop_box(&mut rng, 100, 90, (0.08, 1.0), (0.75, 4.0 / 3.0), 0),
            (0, 0, 100, 90)
        );
    }

    #[test]
    fn flip_mirrors_rows() {
        let img = Image {
            width: 3,
            height: 1,
            data: vec![1., 1., 1., 2., 2., 2., 3., 3., 3.],
        };
        assert_eq!(
            flip_horizontal(&img).data,
            [3., 3., 3., 2., 2., 2., 1., 1., 1.]
        );
    }

    #[test]
    fn contrast_moves_every_sample_about_the_mean_grey() {
        // Two pixels: luma 100 and 200, mean grey 150.
        let mut img = Image {
            width: 2,
            height: 1,
            data: vec![100., 100., 100., 200., 200., 200.],
        };
        scale_contrast(&mut img, 0.5);
        assert_eq!(img.data, [125., 125., 125., 175., 175., 175.]);
        scale_contrast(&mut img, 0.0);
        assert!(img.data.iter().all(|v| (v - 150.0).abs() < 1e-4));
    }

    #[test]
    fn the_two_colour_jitters_differ_and_gluoncv_stays_in_range() {
        let img = Image {
            width: 4,
            height: 4,
            data: (0..48).map(|i| (i * 37 % 256) as f32).collect(),
        };
        let cfg = |color_jitter| AugmentConfig {
            size: 4,
            crop_area: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            flip_prob: 0.0,
            lighting_std: 0.0,
            color_jitter,
            ..AugmentConfig::default()
        };
        let run = |c: &AugmentConfig| train_transform(&mut ChaCha8Rng::seed_from_u64(3), &img, c);
        let (paper, gluon) = (
            run(&cfg(ColorJitter::Paper)),
            run(&cfg(ColorJitter::Gluoncv)),
        );
        assert_ne!(paper, gluon);
        // Normalised samples of an image inside [0, 255]: within the normalisation of 0 and 255.
        let lo = (0.0 - MEAN[0].max(MEAN[1]).max(MEAN[2])) / STD[0].min(STD[1]).min(STD[2]);
        let hi = (255.0 - MEAN[0].min(MEAN[1]).min(MEAN[2])) / STD[0].min(STD[1]).min(STD[2]);
        assert!(gluon.iter().all(|v| (lo..=hi).contains(v)), "{gluon:?}");
        // The default is GluonCV's; an [augment] table that does not say is the paper's.
        assert_eq!(AugmentConfig::default().color_jitter, ColorJitter::Gluoncv);
        let old: AugmentConfig = toml::from_str("size = 32").unwrap();
        assert_eq!(old.color_jitter, ColorJitter::Paper);
    }

    #[test]
    fn jitter_steps_are_exact() {
        let mut img = Image {
            width: 1,
            height: 1,
            data: vec![100., 50., 0.],
        };
        scale_brightness(&mut img, 1.5);
        assert_eq!(img.data, [150., 75., 0.]);
        let grey = 0.299 * 150. + 0.587 * 75.;
        scale_saturation(&mut img, 0.0);
        for v in &img.data {
            assert!((v - grey).abs() < 1e-4);
        }
        // Hue: α = 1 is no change; a full turn (α = 3) is none either; grey has no hue.
        let mut colour = Image {
            width: 1,
            height: 1,
            data: vec![200., 40., 90.],
        };
        let before = colour.data.clone();
        scale_hue(&mut colour, 1.0);
        assert!(colour
            .data
            .iter()
            .zip(&before)
            .all(|(a, b)| (a - b).abs() < 0.5));
        scale_hue(&mut colour, 1.4);
        assert!(colour
            .data
            .iter()
            .zip(&before)
            .any(|(a, b)| (a - b).abs() > 10.0));
        let mut grey_img = Image::filled(1, 1, [80., 80., 80.]);
        scale_hue(&mut grey_img, 1.3);
        assert!(grey_img.data.iter().all(|v| (v - 80.).abs() < 0.5));
    }

    #[test]
    fn lighting_offset_is_eigvec_times_scaled_eigval() {
        let o = lighting_offset([0.1, 0.0, 0.0]);
        for (c, v) in o.iter().enumerate() {
            assert!((v - EIGVEC[c][0] * 5.546).abs() < 1e-5);
        }
        let o = lighting_offset([0.0, -0.2, 0.1]);
        let expect0 = 0.7192 * -0.2 * 4.794 + 0.4009 * 0.1 * 1.148;
        assert!((o[0] - expect0).abs() < 1e-5);
    }

    #[test]
    fn normalize_uses_the_paper_constants() {
        let img = Image::filled(2, 1, [123.68, 116.779 + 57.12, 103.939 - 2.0 * 57.375]);
        let v = normalize(&img);
        assert_eq!(v.len(), 6);
        assert!(v[..2].iter().all(|x| x.abs() < 1e-5));
        assert!(v[2..4].iter().all(|x| (x - 1.0).abs() < 1e-5));
        assert!(v[4..].iter().all(|x| (x + 2.0).abs() < 1e-5));
    }

    #[test]
    fn val_transform_resizes_shorter_side_and_centre_crops() {
        // A 128x64 image whose left and right quarters differ from its middle: the centre
        // crop of 64/0.875 = 73 pixels tall, 146 wide keeps only the middle.
        let mut img = Image::filled(128, 64, [0., 0., 0.]);
        for y in 0..64 {
            for x in 32..96 {
                let i = (y * 128 + x) * 3;
                img.data[i..i + 3].copy_from_slice(&[255., 255., 255.]);
            }
        }
        let cfg = AugmentConfig {
            size: 32,
            crop_fraction: 0.5,
            ..Default::default()
        };
        let out = val_transform(&img, &cfg);
        assert_eq!(out.len(), 3 * 32 * 32);
        let white = (255.0 - MEAN[0]) / STD[0];
        assert!(out[..32 * 32].iter().all(|v| (v - white).abs() < 1e-3));
    }

    #[test]
    fn train_transform_is_deterministic_per_seed() {
        let img = Image {
            width: 40,
            height: 30,
            data: (0..40 * 30 * 3).map(|v| (v % 255) as f32).collect(),
        };
        let cfg = AugmentConfig {
            size: 16,
            ..Default::default()
        };
        let a = train_transform(&mut ChaCha8Rng::seed_from_u64(5), &img, &cfg);
        let b = train_transform(&mut ChaCha8Rng::seed_from_u64(5), &img, &cfg);
        let c = train_transform(&mut ChaCha8Rng::seed_from_u64(6), &img, &cfg);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 3 * 16 * 16);
    }
}
