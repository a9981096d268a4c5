//! Inference preprocessing as timm's `pretrained_cfg` describes it (timm's
//! `transforms_imagenet_eval`): resize the short side to `floor(size / crop_pct)` with the
//! configured filter (antialiased when shrinking, as PIL does), centre-crop to `size`,
//! scale to [0, 1], subtract `mean`, divide by `std`.

use std::path::Path;

use ::image::imageops::{self, FilterType};
use zoo::registry::{InputConfig, Interpolation};

/// The network input `(3, H, W)`, channels first, for the image file at `path`.
pub fn preprocess(path: &Path, cfg: &InputConfig) -> Result<Vec<f32>, String> {
    let img = super::decode::decode_rgb8(path, &super::decode::DecodeLimits::from_env()?)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let [_, crop_h, crop_w] = cfg.size;
    // torchvision's Resize(int): the short side becomes `scale`, the long side
    // int(scale · long / short).
    let scale = (crop_h.max(crop_w) as f64 / cfg.crop_pct).floor() as usize;
    let (new_w, new_h) = if w <= h {
        (scale, scale * h / w)
    } else {
        (scale * w / h, scale)
    };
    let filter = match cfg.interpolation {
        Interpolation::Nearest => FilterType::Nearest,
        Interpolation::Bilinear => FilterType::Triangle,
        Interpolation::Bicubic => FilterType::CatmullRom,
    };
    let resized = imageops::resize(&img, new_w as u32, new_h as u32, filter);
    if new_w < crop_w || new_h < crop_h {
        return Err(format!(
            "{}: resized to {new_w}×{new_h}, smaller than the {crop_w}×{crop_h} crop",
            path.display()
        ));
    }
    // torchvision's CenterCrop rounds the offset half to even (Python's round).
    let top = ((new_h - crop_h) as f64 / 2.0).round_ties_even() as usize;
    let left = ((new_w - crop_w) as f64 / 2.0).round_ties_even() as usize;
    let plane = crop_h * crop_w;
    let mut out = vec![0f32; 3 * plane];
    for y in 0..crop_h {
        for x in 0..crop_w {
            let p = resized.get_pixel((left + x) as u32, (top + y) as u32).0;
            for c in 0..3 {
                let v = f64::from(p[c]) / 255.0;
                out[c * plane + y * crop_w + x] = ((v - cfg.mean[c]) / cfg.std[c]) as f32;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_short_side_crops_centre_and_normalises() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        // 100×50, left half black, right half white.
        let img = ::image::RgbImage::from_fn(100, 50, |x, _| {
            if x < 50 {
                ::image::Rgb([0, 0, 0])
            } else {
                ::image::Rgb([255, 255, 255])
            }
        });
        img.save(&path).unwrap();
        let mut cfg = InputConfig::imagenet(32);
        cfg.crop_pct = 0.5; // short side to 64, long side 128; centre 32×32 crop
        cfg.interpolation = Interpolation::Nearest;
        let out = preprocess(&path, &cfg).unwrap();
        assert_eq!(out.len(), 3 * 32 * 32);
        let black = ((0.0 - 0.485) / 0.229) as f32;
        let white = ((1.0 - 0.485) / 0.229) as f32;
        assert!((out[0] - black).abs() < 1e-6); // top-left of the crop: x = 48 of 128
        assert!((out[31] - white).abs() < 1e-6); // top-right: x = 79
        assert!(preprocess(&dir.path().join("missing.png"), &cfg).is_err());
        std::fs::write(dir.path().join("bad.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = preprocess(&dir.path().join("bad.png"), &cfg).unwrap_err();
        assert!(err.contains("bad.png"), "{err}");
    }
}
