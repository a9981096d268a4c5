//! ADE20K (the SceneParsing benchmark, `ADEChallengeData2016`) on disk: the 150 classes,
//! the `images/{training,validation}/*.jpg` + `annotations/{…}/*.png` layout, and the label
//! encoding of its masks (8-bit PNG, 0 = "other", k = class k − 1), which predictions use
//! too.
//!
//! In memory a mask holds the class index (0..150) per pixel and [`IGNORE`] where the file
//! says 0: the loss and the metric skip those pixels (GluonCV and mmsegmentation alike).

use std::path::{Path, PathBuf};

use image::{ImageFormat, ImageReader};
use training::data::decode::DecodeLimits;

use crate::TransferError;

/// The 150 classes in label order (label k + 1 in the files).
pub const ADE_CLASSES: [&str; 150] = [
    "wall",
    "building",
    "sky",
    "floor",
    "tree",
    "ceiling",
    "road",
    "bed",
    "windowpane",
    "grass",
    "cabinet",
    "sidewalk",
    "person",
    "earth",
    "door",
    "table",
    "mountain",
    "plant",
    "curtain",
    "chair",
    "car",
    "water",
    "painting",
    "sofa",
    "shelf",
    "house",
    "sea",
    "mirror",
    "rug",
    "field",
    "armchair",
    "seat",
    "fence",
    "desk",
    "rock",
    "wardrobe",
    "lamp",
    "bathtub",
    "railing",
    "cushion",
    "base",
    "box",
    "column",
    "signboard",
    "chest of drawers",
    "counter",
    "sand",
    "sink",
    "skyscraper",
    "fireplace",
    "refrigerator",
    "grandstand",
    "path",
    "stairs",
    "runway",
    "case",
    "pool table",
    "pillow",
    "screen door",
    "stairway",
    "river",
    "bridge",
    "bookcase",
    "blind",
    "coffee table",
    "toilet",
    "flower",
    "book",
    "hill",
    "bench",
    "countertop",
    "stove",
    "palm",
    "kitchen island",
    "computer",
    "swivel chair",
    "boat",
    "bar",
    "arcade machine",
    "hovel",
    "bus",
    "towel",
    "light",
    "truck",
    "tower",
    "chandelier",
    "awning",
    "streetlight",
    "booth",
    "television receiver",
    "airplane",
    "dirt track",
    "apparel",
    "pole",
    "land",
    "bannister",
    "escalator",
    "ottoman",
    "bottle",
    "buffet",
    "poster",
    "stage",
    "van",
    "ship",
    "fountain",
    "conveyer belt",
    "canopy",
    "washer",
    "plaything",
    "swimming pool",
    "stool",
    "barrel",
    "basket",
    "waterfall",
    "tent",
    "bag",
    "minibike",
    "cradle",
    "oven",
    "ball",
    "food",
    "step",
    "tank",
    "trade name",
    "microwave",
    "pot",
    "animal",
    "bicycle",
    "lake",
    "dishwasher",
    "screen",
    "blanket",
    "sculpture",
    "hood",
    "sconce",
    "vase",
    "traffic light",
    "tray",
    "ashcan",
    "fan",
    "pier",
    "crt screen",
    "plate",
    "monitor",
    "bulletin board",
    "shower",
    "radiator",
    "glass",
    "clock",
    "flag",
];

/// The label of pixels the loss and the metric skip (the files' 0, "other").
pub const IGNORE: u32 = 255;

/// The two splits.
pub const SPLITS: [&str; 2] = ["training", "validation"];

/// One image and its mask.
#[derive(Debug, Clone, PartialEq)]
pub struct AdeSample {
    /// File stem (`ADE_train_00000001`).
    pub id: String,
    /// The JPEG.
    pub image: PathBuf,
    /// The PNG mask.
    pub mask: PathBuf,
}

/// A split of ADE20K.
#[derive(Debug, Clone)]
pub struct AdeDataset {
    /// Samples in file-name order.
    pub samples: Vec<AdeSample>,
    /// What `strict = false` skipped, each naming the file and the reason.
    pub skipped: Vec<String>,
}

impl AdeDataset {
    /// The split `split` (`training` or `validation`) of the `ADEChallengeData2016` folder
    /// `root`: every `images/SPLIT/*.jpg` with its `annotations/SPLIT/*.png`. An image
    /// without a mask is an error naming it (skipped and reported when not `strict`).
    pub fn open(root: &Path, split: &str, strict: bool) -> Result<Self, TransferError> {
        if !SPLITS.contains(&split) {
            return Err(TransferError::Config(format!(
                "split `{split}`: ADE20K has `training` and `validation`"
            )));
        }
        let images = root.join("images").join(split);
        let masks = root.join("annotations").join(split);
        let entries = std::fs::read_dir(&images).map_err(|e| {
            TransferError::data(
                &images,
                format!("{e} (is {} ADEChallengeData2016?)", root.display()),
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| {
                    x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg")
                })
            })
            .collect();
        paths.sort();
        let (mut samples, mut skipped) = (Vec::new(), Vec::new());
        for image in paths {
            let id = image
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mask = masks.join(format!("{id}.png"));
            if !mask.is_file() {
                let why = format!("{}: no mask {}", image.display(), mask.display());
                if strict {
                    return Err(TransferError::Data(why));
                }
                skipped.push(why);
                continue;
            }
            samples.push(AdeSample { id, image, mask });
        }
        if samples.is_empty() {
            return Err(TransferError::data(&images, "holds no image with a mask"));
        }
        Ok(Self { samples, skipped })
    }
}

/// Reads the mask at `path`, which must be an 8-bit single-channel PNG of `size`
/// (width, height) with labels 0..=150: class indices, [`IGNORE`] for 0.
pub fn read_mask(path: &Path, size: Option<(usize, usize)>) -> Result<Vec<u32>, String> {
    let name = path.display();
    let limits = DecodeLimits::from_env()?;
    let bytes_on_disk = std::fs::metadata(path)
        .map_err(|e| format!("{name}: {e}"))?
        .len();
    if bytes_on_disk > limits.max_file_bytes {
        return Err(format!(
            "{name}: {bytes_on_disk} bytes, more than a mask may have"
        ));
    }
    let reader = ImageReader::open(path)
        .map_err(|e| format!("{name}: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("{name}: {e}"))?;
    if reader.format() != Some(ImageFormat::Png) {
        return Err(format!("{name}: not a PNG file (masks are 8-bit PNGs)"));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| format!("{name}: {e}"))?;
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(format!(
            "{name}: {w}×{h} is more pixels than an image may have"
        ));
    }
    if let Some((ew, eh)) = size {
        if (w as usize, h as usize) != (ew, eh) {
            return Err(format!("{name}: the mask is {w}×{h}, its image {ew}×{eh}"));
        }
    }
    let img = ImageReader::open(path)
        .map_err(|e| format!("{name}: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("{name}: {e}"))?
        .decode()
        .map_err(|e| format!("{name}: {e}"))?;
    let image::DynamicImage::ImageLuma8(gray) = img else {
        return Err(format!(
            "{name}: a {:?} PNG; masks are 8-bit single-channel (grayscale) PNGs",
            img.color()
        ));
    };
    let classes = ADE_CLASSES.len() as u8;
    let mut out = Vec::with_capacity(gray.len());
    for (i, &v) in gray.as_raw().iter().enumerate() {
        if v > classes {
            return Err(format!(
                "{name}: label {v} at pixel ({}, {}); ADE20K labels are 0 (other) to {classes}",
                i % w as usize,
                i / w as usize
            ));
        }
        out.push(if v == 0 { IGNORE } else { u32::from(v) - 1 });
    }
    Ok(out)
}

/// `labels` (class indices, [`IGNORE`] for none) as an ADE20K-encoded 8-bit PNG.
pub fn encode_mask(labels: &[u32], width: usize, height: usize) -> Result<Vec<u8>, String> {
    let bytes: Vec<u8> = labels
        .iter()
        .map(|&l| {
            if l == IGNORE {
                0
            } else {
                (l + 1).min(255) as u8
            }
        })
        .collect();
    let img = image::GrayImage::from_raw(width as u32, height as u32, bytes)
        .ok_or_else(|| format!("{} labels for a {width}×{height} mask", labels.len()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(png)
}

/// Writes `labels` as an ADE20K-encoded PNG at `path` (atomically).
pub fn write_mask(
    path: &Path,
    labels: &[u32],
    width: usize,
    height: usize,
) -> Result<(), TransferError> {
    let png = encode_mask(labels, width, height).map_err(|e| TransferError::data(path, e))?;
    zoo::atomic::write(path, &png).map_err(|e| TransferError::data(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_150_distinct_classes() {
        let set: std::collections::HashSet<_> = ADE_CLASSES.iter().collect();
        assert_eq!(set.len(), 150);
        assert_eq!((ADE_CLASSES[0], ADE_CLASSES[149]), ("wall", "flag"));
    }

    #[test]
    fn masks_round_trip_and_bad_masks_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        let labels = vec![0, IGNORE, 149, 5, 5, IGNORE];
        write_mask(&path, &labels, 3, 2).unwrap();
        assert_eq!(read_mask(&path, Some((3, 2))).unwrap(), labels);
        // Raw file values: 0 is other, class k is k + 1.
        let raw = image::open(&path).unwrap().into_luma8().into_raw();
        assert_eq!(raw, vec![1, 0, 150, 6, 6, 0]);
        let e = read_mask(&path, Some((2, 3))).unwrap_err();
        assert!(
            e.contains("m.png") && e.contains("3×2") && e.contains("2×3"),
            "{e}"
        );
        // A label above 150.
        image::GrayImage::from_raw(2, 1, vec![3, 151])
            .unwrap()
            .save(&path)
            .unwrap();
        let e = read_mask(&path, None).unwrap_err();
        assert!(e.contains("label 151 at pixel (1, 0)"), "{e}");
        // Not 8-bit grayscale.
        image::RgbImage::new(2, 2).save(&path).unwrap();
        assert!(read_mask(&path, None)
            .unwrap_err()
            .contains("single-channel"));
        let wide = dir.path().join("w.png");
        image::ImageBuffer::<image::Luma<u16>, _>::new(2, 2)
            .save(&wide)
            .unwrap();
        assert!(read_mask(&wide, None).unwrap_err().contains("w.png"));
        // Not a PNG at all.
        std::fs::write(&path, b"not an image").unwrap();
        assert!(read_mask(&path, None).unwrap_err().contains("m.png"));
    }
}
