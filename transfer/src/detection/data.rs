//! Detection samples: a VOC image resized so that its shorter side is `min_size` (the
//! longer at most `max_size`), flipped at random in training, normalised with the ImageNet
//! mean and std, its boxes moved with it. No colour jitter (GluonCV has none here).

use candle_core::{Device, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use training::data::augment::{flip_horizontal, normalize, normalize_with};
use training::data::{Image, Source};
use training::recipe::DetectionConfig;
use training::TrainingError;

use crate::voc::VocImage;

/// The scale that makes the shorter side `min_size` unless the longer then passes
/// `max_size` (then the longer side is `max_size`): Faster R-CNN's resize.
pub fn resize_scale((h, w): (usize, usize), min_size: usize, max_size: usize) -> f64 {
    let (short, long) = (h.min(w) as f64, h.max(w) as f64);
    let scale = min_size as f64 / short;
    if long * scale > max_size as f64 {
        max_size as f64 / long
    } else {
        scale
    }
}

/// `img` resized as the detector takes it ([`resize_scale`] with the recipe's sizes), and
/// the scale (resized over original).
pub fn resize_for_detection(img: &Image, cfg: &DetectionConfig) -> (Image, f64) {
    let scale = resize_scale((img.height, img.width), cfg.min_size, cfg.max_size);
    let (h, w) = (
        ((img.height as f64 * scale).round() as usize).max(1),
        ((img.width as f64 * scale).round() as usize).max(1),
    );
    (img.resize(w, h), scale)
}

/// One image as a batch of one for the detector, without targets, normalised with `mean`
/// and `std` (of [0, 1] pixels): what `tricks predict` runs.
pub fn single_image_batch(
    img: &Image,
    cfg: &DetectionConfig,
    (mean, std): ([f64; 3], [f64; 3]),
) -> candle_core::Result<DetectionBatch> {
    let (resized, scale) = resize_for_detection(img, cfg);
    let (h, w) = (resized.height, resized.width);
    let pixels = normalize_with(
        &resized,
        mean.map(|m| (m * 255.0) as f32),
        std.map(|s| (s * 255.0) as f32),
    );
    let images = Tensor::from_vec(pixels, (1, 3, h, w), &Device::Cpu)?;
    Ok(DetectionBatch {
        images,
        samples: vec![Sample {
            index: 0,
            pixels: Vec::new(),
            size: (h, w),
            scale,
            boxes: Vec::new(),
            classes: Vec::new(),
        }],
    })
}

/// One transformed image and its targets.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Position of the image in its dataset.
    pub index: usize,
    /// `(3, H, W)` normalised.
    pub pixels: Vec<f32>,
    /// `(H, W)` after resizing.
    pub size: (usize, usize),
    /// Resized size over original size.
    pub scale: f64,
    /// Training targets in resized pixels (continuous, 0-based).
    pub boxes: Vec<[f32; 4]>,
    /// Class of each box (index into the VOC classes).
    pub classes: Vec<usize>,
}

/// A batch: images padded at the bottom and right to the largest (zeros: the mean colour
/// after normalisation), with each image's targets.
#[derive(Debug)]
pub struct DetectionBatch {
    /// `(N, 3, H, W)`.
    pub images: Tensor,
    /// Per image.
    pub samples: Vec<Sample>,
}

/// VOC images for the detector.
pub struct VocSource {
    images: Vec<VocImage>,
    cfg: DetectionConfig,
}

impl VocSource {
    /// `images` with the recipe's sizes, flip and difficult handling.
    pub fn new(images: Vec<VocImage>, cfg: DetectionConfig) -> Self {
        Self { images, cfg }
    }
}

impl Source for VocSource {
    type Item = Sample;
    type Batch = DetectionBatch;

    fn len(&self) -> usize {
        self.images.len()
    }

    fn load(&self, index: usize, rng: Option<&mut ChaCha8Rng>) -> Result<Sample, String> {
        let meta = &self.images[index];
        let img = Image::open(&meta.path)?;
        if (img.width, img.height) != meta.size {
            return Err(format!(
                "{}: decoded as {}x{}, its annotation says {}x{}",
                meta.path.display(),
                img.width,
                img.height,
                meta.size.0,
                meta.size.1
            ));
        }
        let (mut resized, scale) = resize_for_detection(&img, &self.cfg);
        let (h, w) = (resized.height, resized.width);
        let flip = match rng {
            Some(rng) => rng.random_bool(self.cfg.flip_prob),
            None => false,
        };
        if flip {
            resized = flip_horizontal(&resized);
        }
        let (sx, sy) = (w as f32 / img.width as f32, h as f32 / img.height as f32);
        let (mut boxes, mut classes) = (Vec::new(), Vec::new());
        for o in &meta.objects {
            if o.difficult && self.cfg.drop_difficult {
                continue;
            }
            let b = o.to_pixels();
            let mut b = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy];
            if flip {
                b = [w as f32 - b[2], b[1], w as f32 - b[0], b[3]];
            }
            boxes.push(b);
            classes.push(o.class);
        }
        Ok(Sample {
            index,
            pixels: normalize(&resized),
            size: (h, w),
            scale,
            boxes,
            classes,
        })
    }

    fn collate(&self, items: Vec<Sample>) -> Result<DetectionBatch, TrainingError> {
        let hmax = items.iter().map(|s| s.size.0).max().unwrap_or(1);
        let wmax = items.iter().map(|s| s.size.1).max().unwrap_or(1);
        let mut data = vec![0.0f32; items.len() * 3 * hmax * wmax];
        for (n, s) in items.iter().enumerate() {
            let (h, w) = s.size;
            for c in 0..3 {
                for y in 0..h {
                    let dst = ((n * 3 + c) * hmax + y) * wmax;
                    data[dst..dst + w].copy_from_slice(&s.pixels[(c * h + y) * w..][..w]);
                }
            }
        }
        let images = Tensor::from_vec(data, (items.len(), 3, hmax, wmax), &Device::Cpu)?;
        let samples = items
            .into_iter()
            .map(|mut s| {
                s.pixels = Vec::new();
                s
            })
            .collect();
        Ok(DetectionBatch { images, samples })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_follows_the_shorter_side_unless_the_longer_passes_its_bound() {
        assert_eq!(resize_scale((300, 400), 600, 1000), 2.0);
        assert_eq!(resize_scale((200, 500), 600, 1000), 2.0);
        assert_eq!(resize_scale((100, 500), 600, 1000), 2.0); // 600 would make it 3000
        assert!((resize_scale((375, 500), 600, 1000) - 1.6).abs() < 1e-12);
    }
}
