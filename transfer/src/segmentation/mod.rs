//! Semantic segmentation on zoo backbones, Section 6.2 of the paper: the ADE20K metric over
//! predicted label files ([`score_predictions`], what `tricks eval segmentation` runs).
//!
//! [`model::Fcn`] is the network, [`data`] its samples, [`task::Segmentation`] its
//! training task, [`saved`] a trained segmenter as files and [`onnx`] as one ONNX graph.

pub mod data;
pub mod model;
pub mod onnx;
pub mod saved;
pub mod task;

pub use model::Fcn;
pub use saved::{SavedSegmenter, SegmenterConfig};
pub use task::{Segmentation, SegmentationSpec};

use std::path::Path;

use eval::segmentation::{Confusion, SegMetrics};

use crate::ade20k::{read_mask, AdeDataset, ADE_CLASSES, IGNORE};
use crate::TransferError;

/// Scores the predicted label PNGs under `predictions` (ADE20K's encoding, one per
/// annotation with the same file name) against the split `split` of the ADE20K folder
/// `data`: one confusion matrix over the whole split, the ignore label excluded. A missing
/// prediction, or one whose size differs from its annotation, is an error naming the file.
pub fn score_predictions(
    data: &Path,
    split: &str,
    predictions: &Path,
) -> Result<SegMetrics, TransferError> {
    let set = AdeDataset::open(data, split, true)?;
    let mut m = Confusion::new(ADE_CLASSES.len());
    for s in &set.samples {
        let truth_dims = mask_size(&s.mask)?;
        let truth = read_mask(&s.mask, None).map_err(TransferError::Data)?;
        let path = predictions.join(format!("{}.png", s.id));
        if !path.is_file() {
            return Err(TransferError::data(
                &path,
                format!("missing: every annotation of {split} needs its prediction"),
            ));
        }
        let pred = read_mask(&path, Some(truth_dims)).map_err(TransferError::Data)?;
        m.add(&truth, &pred, IGNORE)
            .map_err(|e| TransferError::data(&path, e))?;
    }
    Ok(m.metrics())
}

/// `(width, height)` of a mask file, without decoding it.
fn mask_size(path: &Path) -> Result<(usize, usize), TransferError> {
    let (w, h) = image::image_dimensions(path).map_err(|e| TransferError::data(path, e))?;
    Ok((w as usize, h as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ade20k::write_mask;
    use crate::synth_ade::{generate, SynthAdeConfig};

    #[test]
    fn the_truth_as_prediction_scores_one_and_bad_predictions_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("ADE");
        let cfg = SynthAdeConfig {
            training: 1,
            validation: 3,
            size: 64,
            ..Default::default()
        };
        generate(&data, &cfg).unwrap();
        let preds = dir.path().join("preds");
        std::fs::create_dir_all(&preds).unwrap();
        let set = AdeDataset::open(&data, "validation", true).unwrap();
        for s in &set.samples {
            std::fs::copy(&s.mask, preds.join(format!("{}.png", s.id))).unwrap();
        }
        let m = score_predictions(&data, "validation", &preds).unwrap();
        assert_eq!(m.pixel_accuracy, 1.0);
        assert_eq!(m.miou_present, 1.0);
        // Over all 150 classes, the absent ones count 0.
        let present = m.class_iou.iter().flatten().count();
        assert!((m.miou_all - present as f64 / 150.0).abs() < 1e-12);
        // A prediction of the wrong size, then a missing one.
        let first = preds.join(format!("{}.png", set.samples[0].id));
        write_mask(&first, &[0; 4], 2, 2).unwrap();
        let e = score_predictions(&data, "validation", &preds)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&set.samples[0].id) && e.contains("2×2"), "{e}");
        std::fs::remove_file(&first).unwrap();
        let e = score_predictions(&data, "validation", &preds)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&set.samples[0].id) && e.contains("missing"),
            "{e}"
        );
    }
}
