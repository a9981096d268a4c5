//! The one place image files are decoded, for training, evaluation and prediction alike:
//! a decoder error, a truncated file or an image that would cost more memory than
//! [`DecodeLimits`] allows is an unreadable image, with the file's name and the reason.
//!
//! JPEG decoders fill a truncated file's missing rows with grey rather than fail, so a JPEG
//! must end with its end-of-image marker (`FF D9`, possibly followed by padding).

use std::path::Path;

use ::image::{ImageFormat, ImageReader, Limits, RgbImage};

/// What one image may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width × height) of a decoded image.
    pub max_pixels: u64,
    /// Most `long side / short side`: resizing the short side to 256 multiplies the long
    /// side by the same factor, so a 1 × 6000 strip would become 256 × 1.5 million pixels.
    pub max_aspect: u64,
    /// Most bytes of a file.
    pub max_file_bytes: u64,
}

impl Default for DecodeLimits {
    /// 64 megapixels (ImageNet's largest is about 12), an aspect ratio of 16 (ImageNet's
    /// widest panoramas are about 5:1), files of 256 MiB.
    fn default() -> Self {
        Self {
            max_pixels: 64 << 20,
            max_aspect: 16,
            max_file_bytes: 256 << 20,
        }
    }
}

impl DecodeLimits {
    /// The environment variables that override each default.
    pub const ENV: [&'static str; 3] = [
        "TRICKS_MAX_IMAGE_PIXELS",
        "TRICKS_MAX_IMAGE_ASPECT",
        "TRICKS_MAX_IMAGE_BYTES",
    ];

    /// The defaults, each overridden by its environment variable ([`Self::ENV`]) where set;
    /// a value that is not a positive integer is an error naming the variable.
    pub fn from_env() -> Result<Self, String> {
        let mut limits = Self::default();
        let fields = [
            &mut limits.max_pixels,
            &mut limits.max_aspect,
            &mut limits.max_file_bytes,
        ];
        for (name, field) in Self::ENV.iter().zip(fields) {
            if let Ok(text) = std::env::var(name) {
                *field = match text.trim().parse::<u64>() {
                    Ok(v) if v > 0 => v,
                    _ => return Err(format!("{name}={text}: must be a positive integer")),
                };
            }
        }
        Ok(limits)
    }
}

/// How far from a JPEG's end its end-of-image marker may sit (cameras and editors append
/// padding after it).
const JPEG_TAIL: usize = 4096;

/// Decodes the JPEG or PNG at `path` to 8-bit RGB within `limits`.
pub fn decode_rgb8(path: &Path, limits: &DecodeLimits) -> Result<RgbImage, String> {
    let name = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{name}: {e}"))?
        .len();
    if size > limits.max_file_bytes {
        return Err(format!(
            "{name}: {size} bytes, more than the {} an image may have",
            limits.max_file_bytes
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
    let reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("{name}: {e}"))?;
    let format = reader.format();
    if format == Some(ImageFormat::Jpeg) && !ends_with_eoi(&bytes) {
        return Err(format!(
            "{name}: truncated JPEG (no end-of-image marker): the file is incomplete"
        ));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("{name}: {e}"))?;
    let (w, h) = (u64::from(w), u64::from(h));
    if w == 0 || h == 0 {
        return Err(format!("{name}: empty image ({w}×{h})"));
    }
    if w * h > limits.max_pixels {
        return Err(format!(
            "{name}: {w}×{h} is {} pixels, more than the {} an image may have",
            w * h,
            limits.max_pixels
        ));
    }
    if w.max(h) > limits.max_aspect * w.min(h) {
        return Err(format!(
            "{name}: {w}×{h} is more elongated than {}:1, which resizing would blow up",
            limits.max_aspect
        ));
    }
    let mut reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| format!("{name}: {e}"))?;
    let mut decode_limits = Limits::default();
    decode_limits.max_alloc = Some(limits.max_pixels * 4 * 2);
    reader.limits(decode_limits);
    Ok(reader
        .decode()
        .map_err(|e| format!("{name}: {e}"))?
        .into_rgb8())
}

/// Whether a JPEG's end-of-image marker is within its last [`JPEG_TAIL`] bytes.
fn ends_with_eoi(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(JPEG_TAIL)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            ::image::Rgb([(x * 7) as u8, (y * 5) as u8, 90])
        });
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg)
            .unwrap();
        bytes
    }

    #[test]
    fn a_truncated_jpeg_is_unreadable_and_a_whole_one_decodes() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = jpeg(64, 48);
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &bytes).unwrap();
        let img = decode_rgb8(&whole, &DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (64, 48));
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
        let err = decode_rgb8(&cut, &DecodeLimits::default()).unwrap_err();
        assert!(
            err.contains("cut.jpg") && err.contains("truncated JPEG"),
            "{err}"
        );
        // Padding after the marker is fine.
        let padded = dir.path().join("padded.jpg");
        std::fs::write(&padded, [bytes.as_slice(), &[0u8; 100]].concat()).unwrap();
        decode_rgb8(&padded, &DecodeLimits::default()).unwrap();
    }

    #[test]
    fn images_that_cost_too_much_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        // A 1×6000 strip (a hundred bytes as PNG).
        let strip = dir.path().join("strip.png");
        RgbImage::new(1, 6000).save(&strip).unwrap();
        let err = decode_rgb8(&strip, &DecodeLimits::default()).unwrap_err();
        assert!(err.contains("more elongated than 16:1"), "{err}");
        let big = dir.path().join("big.png");
        RgbImage::new(300, 300).save(&big).unwrap();
        let small = DecodeLimits {
            max_pixels: 10_000,
            ..DecodeLimits::default()
        };
        let err = decode_rgb8(&big, &small).unwrap_err();
        assert!(err.contains("90000 pixels"), "{err}");
        let tiny_files = DecodeLimits {
            max_file_bytes: 10,
            ..DecodeLimits::default()
        };
        assert!(decode_rgb8(&big, &tiny_files)
            .unwrap_err()
            .contains("bytes"));
    }
}
