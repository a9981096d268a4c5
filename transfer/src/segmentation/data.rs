//! Segmentation samples with their masks kept aligned, GluonCV's training transform: the
//! longer side drawn in `scale_range` × `base_size`, the image resized bilinearly and the
//! mask by nearest neighbour (never interpolated), a horizontal flip, padding up to the crop
//! (image 0, mask ignored), a random `crop_size` square, a Gaussian blur of random radius;
//! ImageNet mean and std. Validation: the whole image.

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use training::data::augment::{flip_horizontal, normalize};
use training::data::{Image, Source};
use training::recipe::SegmentationConfig;
use training::TrainingError;

use crate::ade20k::{read_mask, AdeSample, IGNORE};

/// A mask of `w × h` labels resized to `nw × nh` by nearest neighbour, sampling at pixel
/// centres (PIL's `NEAREST`, which GluonCV uses).
pub fn resize_nearest(
    labels: &[u32],
    (w, h): (usize, usize),
    (nw, nh): (usize, usize),
) -> Vec<u32> {
    let src = |o: usize, n: usize, len: usize| {
        (((o as f64 + 0.5) * len as f64 / n as f64) as usize).min(len - 1)
    };
    let xs: Vec<usize> = (0..nw).map(|x| src(x, nw, w)).collect();
    let mut out = Vec::with_capacity(nw * nh);
    for y in 0..nh {
        let row = &labels[src(y, nh, h) * w..][..w];
        out.extend(xs.iter().map(|&x| row[x]));
    }
    out
}

/// `img` blurred by a Gaussian of standard deviation `sigma` pixels (separable, borders
/// clamped); `sigma` under 0.1 leaves it as it is.
pub fn gaussian_blur(img: &Image, sigma: f64) -> Image {
    if sigma < 0.1 {
        return img.clone();
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let weights: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f64 / (2.0 * sigma * sigma)).exp() as f32)
        .collect();
    let total: f32 = weights.iter().sum();
    let weights: Vec<f32> = weights.iter().map(|w| w / total).collect();
    let (w, h) = (img.width as isize, img.height as isize);
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                for (k, wt) in weights.iter().enumerate() {
                    let d = k as isize - radius;
                    let (sx, sy) = if horizontal {
                        ((x + d).clamp(0, w - 1), y)
                    } else {
                        (x, (y + d).clamp(0, h - 1))
                    };
                    let i = ((sy * w + sx) * 3) as usize;
                    for c in 0..3 {
                        acc[c] += wt * src[i + c];
                    }
                }
                let o = ((y * w + x) * 3) as usize;
                out[o..o + 3].copy_from_slice(&acc);
            }
        }
        out
    };
    let data = pass(&pass(&img.data, true), false);
    Image {
        width: img.width,
        height: img.height,
        data,
    }
}

/// One transformed image and its labels.
#[derive(Debug, Clone)]
pub struct SegSample {
    /// Position of the image in its dataset.
    pub index: usize,
    /// `(3, H, W)` normalised.
    pub pixels: Vec<f32>,
    /// `(H, W)` labels: class indices, [`IGNORE`] for none.
    pub labels: Vec<u32>,
    /// `(H, W)`.
    pub size: (usize, usize),
}

/// A batch: images (and masks) padded at the bottom and right to the largest (image 0,
/// mask ignored).
#[derive(Debug)]
pub struct SegBatch {
    /// `(N, 3, H, W)`.
    pub images: Tensor,
    /// `(N, H, W)`, `u32`.
    pub labels: Tensor,
    /// Each image's dataset index and unpadded size.
    pub samples: Vec<(usize, (usize, usize))>,
}

/// ADE20K samples for the segmenter.
pub struct AdeSource {
    samples: Vec<AdeSample>,
    cfg: SegmentationConfig,
}

impl AdeSource {
    /// `samples` with the recipe's transform.
    pub fn new(samples: Vec<AdeSample>, cfg: SegmentationConfig) -> Self {
        Self { samples, cfg }
    }
}

/// GluonCV's training transform of one image and its labels.
fn train_transform(
    rng: &mut ChaCha8Rng,
    img: Image,
    labels: Vec<u32>,
    cfg: &SegmentationConfig,
) -> (Image, Vec<u32>) {
    let (w, h) = (img.width, img.height);
    let [lo, hi] = cfg.scale_range;
    let long = (rng.random_range(lo..=hi) * cfg.base_size as f64)
        .round()
        .max(1.0);
    let s = long / w.max(h) as f64;
    let (nw, nh) = (
        ((w as f64 * s).round() as usize).max(1),
        ((h as f64 * s).round() as usize).max(1),
    );
    let mut img = img.resize(nw, nh);
    let mut labels = resize_nearest(&labels, (w, h), (nw, nh));
    if rng.random_bool(cfg.flip_prob) {
        img = flip_horizontal(&img);
        for row in labels.chunks_exact_mut(nw) {
            row.reverse();
        }
    }
    let c = cfg.crop_size;
    let (pw, ph) = (nw.max(c), nh.max(c));
    let (x0, y0) = (rng.random_range(0..=pw - c), rng.random_range(0..=ph - c));
    let mut crop = Image::filled(c, c, [0.0; 3]);
    let mut crop_labels = vec![IGNORE; c * c];
    for y in 0..c {
        let sy = y0 + y;
        if sy >= nh {
            break;
        }
        for x in 0..c {
            let sx = x0 + x;
            if sx >= nw {
                break;
            }
            let (d, s) = (y * c + x, sy * nw + sx);
            crop.data[d * 3..d * 3 + 3].copy_from_slice(&img.data[s * 3..s * 3 + 3]);
            crop_labels[d] = labels[s];
        }
    }
    if rng.random_bool(cfg.blur_prob) {
        let radius: f64 = rng.random();
        crop = gaussian_blur(&crop, radius);
    }
    (crop, crop_labels)
}

impl Source for AdeSource {
    type Item = SegSample;
    type Batch = SegBatch;

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn load(&self, index: usize, rng: Option<&mut ChaCha8Rng>) -> Result<SegSample, String> {
        let s = &self.samples[index];
        let img = Image::open(&s.image)?;
        let labels = read_mask(&s.mask, Some((img.width, img.height)))?;
        let (img, labels) = match rng {
            Some(rng) => train_transform(rng, img, labels, &self.cfg),
            None => (img, labels),
        };
        Ok(SegSample {
            index,
            pixels: normalize(&img),
            labels,
            size: (img.height, img.width),
        })
    }

    fn collate(&self, items: Vec<SegSample>) -> Result<SegBatch, TrainingError> {
        let hmax = items.iter().map(|s| s.size.0).max().unwrap_or(1);
        let wmax = items.iter().map(|s| s.size.1).max().unwrap_or(1);
        let n = items.len();
        let mut data = vec![0.0f32; n * 3 * hmax * wmax];
        let mut labels = vec![IGNORE; n * hmax * wmax];
        for (b, s) in items.iter().enumerate() {
            let (h, w) = s.size;
            for y in 0..h {
                for c in 0..3 {
                    let dst = ((b * 3 + c) * hmax + y) * wmax;
                    data[dst..dst + w].copy_from_slice(&s.pixels[(c * h + y) * w..][..w]);
                }
                let dst = (b * hmax + y) * wmax;
                labels[dst..dst + w].copy_from_slice(&s.labels[y * w..][..w]);
            }
        }
        Ok(SegBatch {
            images: Tensor::from_vec(data, (n, 3, hmax, wmax), &Device::Cpu)?,
            labels: Tensor::from_vec(labels, (n, hmax, wmax), &Device::Cpu)?,
            samples: items.iter().map(|s| (s.index, s.size)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn nearest_resize_copies_labels_and_never_mixes_them() {
        let labels = vec![1, 2, 3, 4];
        assert_eq!(
            resize_nearest(&labels, (2, 2), (4, 4)),
            vec![1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]
        );
        assert_eq!(resize_nearest(&labels, (2, 2), (1, 1)), vec![4]);
        assert_eq!(resize_nearest(&labels, (2, 2), (2, 2)), labels);
    }

    #[test]
    fn the_training_transform_keeps_image_and_mask_aligned() {
        // An image whose red channel encodes the label: after scaling, flipping, padding
        // and cropping, every labelled pixel still has its label's colour (no blur here;
        // nearest-neighbour labels against bilinear pixels agree away from edges).
        let (w, h) = (40, 30);
        let labels: Vec<u32> = (0..w * h)
            .map(|i| if (i % w) < 20 { 3 } else { 7 })
            .collect();
        let mut img = Image::filled(w, h, [0.0; 3]);
        for (i, &l) in labels.iter().enumerate() {
            img.data[i * 3] = l as f32 * 30.0;
        }
        let cfg = SegmentationConfig {
            base_size: 40,
            crop_size: 48,
            blur_prob: 0.0,
            ..Default::default()
        };
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (crop, out) = train_transform(&mut rng, img.clone(), labels.clone(), &cfg);
            assert_eq!((crop.width, crop.height, out.len()), (48, 48, 48 * 48));
            let mut agree = 0;
            let mut labelled = 0;
            for (i, &l) in out.iter().enumerate() {
                if l == IGNORE {
                    // Padding: black.
                    assert_eq!(crop.data[i * 3], 0.0, "seed {seed}");
                    continue;
                }
                assert!(l == 3 || l == 7);
                labelled += 1;
                if (crop.data[i * 3] - l as f32 * 30.0).abs() < 1e-3 {
                    agree += 1;
                }
            }
            // Only the pixels at the 3|7 boundary may blend.
            assert!(
                labelled > 0 && agree * 10 >= labelled * 9,
                "seed {seed}: {agree}/{labelled}"
            );
        }
    }

    #[test]
    fn blur_keeps_a_flat_image_and_smooths_an_edge() {
        let flat = Image::filled(9, 5, [100.0, 50.0, 25.0]);
        let b = gaussian_blur(&flat, 0.8);
        assert!(b
            .data
            .iter()
            .zip(&flat.data)
            .all(|(a, b)| (a - b).abs() < 1e-3));
        let mut edge = Image::filled(8, 1, [0.0; 3]);
        for x in 4..8 {
            edge.data[x * 3] = 255.0;
        }
        let b = gaussian_blur(&edge, 0.8);
        assert!(b.data[3 * 3] > 0.0 && b.data[4 * 3] < 255.0);
    }
}
