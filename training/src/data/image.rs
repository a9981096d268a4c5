//! An RGB image as f32 samples in [0, 255], height × width × 3, and its bilinear resize.

use std::path::Path;

/// An RGB image, row-major, channels last, values in [0, 255].
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height · width · 3` samples.
    pub data: Vec<f32>,
}

/// The resampling filter of [`Image::resize`], as an exported `pretrained_cfg` names it.
pub const RESIZE_FILTER: zoo::registry::Interpolation = zoo::registry::Interpolation::Bilinear;

impl Image {
    /// A `width × height` image filled with `rgb`.
    pub fn filled(width: usize, height: usize, rgb: [f32; 3]) -> Self {
        let data = (0..width * height).flat_map(|_| rgb).collect();
        Self {
            width,
            height,
            data,
        }
    }

    /// Decodes a JPEG or PNG file ([`super::decode::decode_rgb8`] within
    /// [`super::decode::DecodeLimits::from_env`]); any failure (unreadable, truncated, not an
    /// image, too costly) is an error naming the file.
    pub fn open(path: &Path) -> Result<Self, String> {
        let limits = super::decode::DecodeLimits::from_env()?;
        let img = super::decode::decode_rgb8(path, &limits)?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        let data = img.into_raw().into_iter().map(f32::from).collect();
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Writes the image as an 8-bit PNG.
    pub fn save_png(&self, path: &Path) -> Result<(), String> {
        let bytes: Vec<u8> = self
            .data
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        ::image::RgbImage::from_raw(self.width as u32, self.height as u32, bytes)
            .ok_or_else(|| "image buffer has the wrong size".to_string())?
            .save_with_format(path, ::image::ImageFormat::Png)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [f32; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The `w × h` region whose top-left corner is (x, y); it must lie inside the image.
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Image {
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            let start = (row * self.width + x) * 3;
            data.extend_from_slice(&self.data[start..start + w * 3]);
        }
        Image {
            width: w,
            height: h,
            data,
        }
    }

    /// Bilinear resize to `w × h`, sampling at pixel centres (PyTorch's
    /// `align_corners=False`): the filter [`RESIZE_FILTER`] names.
    pub fn resize(&self, w: usize, h: usize) -> Image {
        if (w, h) == (self.width, self.height) {
            return self.clone();
        }
        let taps = |out: usize, input: usize| -> Vec<(usize, usize, f32)> {
            let scale = input as f32 / out as f32;
            (0..out)
                .map(|o| {
                    let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                    let i0 = (src.floor() as usize).min(input - 1);
                    let i1 = (i0 + 1).min(input - 1);
                    (i0, i1, src - i0 as f32)
                })
                .collect()
        };
        let (xs, ys) = (taps(w, self.width), taps(h, self.height));
        let mut data = Vec::with_capacity(w * h * 3);
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let (a, b, c, d) = (
                    self.pixel(x0, y0),
                    self.pixel(x1, y0),
                    self.pixel(x0, y1),
                    self.pixel(x1, y1),
                );
                for ch in 0..3 {
                    let top = a[ch] + (b[ch] - a[ch]) * fx;
                    let bottom = c[ch] + (d[ch] - c[ch]) * fx;
                    data.push(top + (bottom - top) * fy);
                }
            }
        }
        Image {
            width: w,
            height: h,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_interpolates_at_pixel_centres() {
        // A 2x1 ramp (0, 100) upscaled to 4x1: centres at −0.25, 0.25, 0.75, 1.25 of the input.
        let img = Image {
            width: 2,
            height: 1,
            data: vec![0., 0., 0., 100., 100., 100.],
        };
        let r = img.resize(4, 1);
        let red: Vec<f32> = r.data.chunks(3).map(|p| p[0]).collect();
        assert_eq!(red, [0., 25., 75., 100.]);
        // Downscaling by 2 averages neighbours.
        let r = r.resize(2, 1);
        assert_eq!(
            r.data.chunks(3).map(|p| p[0]).collect::<Vec<_>>(),
            [12.5, 87.5]
        );
    }

    #[test]
    fn crop_takes_the_region() {
        let data: Vec<f32> = (0..4 * 3 * 3).map(|v| v as f32).collect();
        let img = Image {
            width: 4,
            height: 3,
            data,
        };
        let c = img.crop(1, 1, 2, 2);
        assert_eq!(c.pixel(0, 0), img.pixel(1, 1));
        assert_eq!(c.pixel(1, 1), img.pixel(2, 2));
    }
}
