//! Semantic segmentation metrics (the paper's Table 9): pixel accuracy, per-class IoU and
//! mean IoU, all from one confusion matrix accumulated over the whole split (not averaged
//! per image), the ignore label excluded.
//!
//! Two means of the per-class IoU are in use and both are given, by name:
//! - [`SegMetrics::miou_all`]: over every class, a class absent from both truth and
//!   prediction counting 0 (GluonCV's `SegmentationMetric`, the numbers of Table 9);
//! - [`SegMetrics::miou_present`]: over the classes present in the truth or the
//!   prediction (mmsegmentation's NaN-mean).

use crate::EvalError;

/// Counts of (true class, predicted class) pixels over a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: usize,
    /// Row-major `(classes, classes + 1)`: the last column counts labelled pixels predicted
    /// as no class (the ignore label in a prediction).
    counts: Vec<u64>,
}

/// What a confusion matrix says.
#[derive(Debug, Clone, PartialEq)]
pub struct SegMetrics {
    /// Correct labelled pixels over labelled pixels.
    pub pixel_accuracy: f64,
    /// IoU per class; `None` for a class absent from both truth and prediction.
    pub class_iou: Vec<Option<f64>>,
    /// Mean IoU over all classes, absent ones counting 0 (GluonCV).
    pub miou_all: f64,
    /// Mean IoU over the classes present in truth or prediction (mmsegmentation).
    pub miou_present: f64,
    /// Pixels with a label (not the ignore label).
    pub labelled_pixels: u64,
}

impl Confusion {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * (classes + 1)],
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Adds one image: `truth` and `pred` hold a class (`0..classes`) or `ignore` per pixel.
    /// Pixels whose truth is `ignore` are left out; a labelled pixel predicted `ignore` is
    /// wrong (a miss of its class, no other class's false positive).
    pub fn add(&mut self, truth: &[u32], pred: &[u32], ignore: u32) -> Result<(), EvalError> {
        if truth.len() != pred.len() {
            return Err(EvalError::LabelCount {
                rows: pred.len(),
                labels: truth.len(),
            });
        }
        let c = self.classes;
        for (&t, &p) in truth.iter().zip(pred) {
            if t == ignore {
                continue;
            }
            for (what, v) in [("the truth", t), ("the prediction", p)] {
                if v != ignore && v as usize >= c {
                    return Err(EvalError::ClassRange {
                        what: what.into(),
                        class: v as usize,
                        classes: c,
                    });
                }
            }
            let col = if p == ignore { c } else { p as usize };
            self.counts[t as usize * (c + 1) + col] += 1;
        }
        Ok(())
    }

    /// Adds another matrix's counts (of the same classes).
    pub fn merge(&mut self, other: &Confusion) {
        assert_eq!(
            self.classes, other.classes,
            "merging matrices of different classes"
        );
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Pixels of true class `t` predicted as `p` (`p == classes`: as no class).
    pub fn count(&self, t: usize, p: usize) -> u64 {
        self.counts[t * (self.classes + 1) + p]
    }

    /// Pixel accuracy, per-class IoU and both means.
    pub fn metrics(&self) -> SegMetrics {
        let c = self.classes;
        let labelled: u64 = self.counts.iter().sum();
        let correct: u64 = (0..c).map(|k| self.count(k, k)).sum();
        let class_iou: Vec<Option<f64>> = (0..c)
            .map(|k| {
                let tp = self.count(k, k);
                let truth: u64 = (0..=c).map(|p| self.count(k, p)).sum();
                let predicted: u64 = (0..c).map(|t| self.count(t, k)).sum();
                let union = truth + predicted - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect();
        let present: Vec<f64> = class_iou.iter().flatten().copied().collect();
        let ratio = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
        SegMetrics {
            pixel_accuracy: ratio(correct as f64, labelled as usize),
            miou_all: ratio(present.iter().sum(), c),
            miou_present: ratio(present.iter().sum(), present.len()),
            class_iou,
            labelled_pixels: labelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IGNORE: u32 = 255;

    #[test]
    fn by_hand_with_the_ignore_label_an_absent_and_an_only_predicted_class() {
        // 4 classes. Truth: 0 0 1 1 | 255 255; prediction: 0 1 1 2 | 3 0.
        // The ignored pixels count nowhere (their predictions 3 and 0 neither).
        // Class 0: TP 1, truth 2, predicted 1 → IoU 1/2. Class 1: TP 1, truth 2,
        // predicted 2 → 1/3. Class 2: only predicted → 0/1 = 0. Class 3: absent from both.
        let mut m = Confusion::new(4);
        m.add(&[0, 0, 1, 1, IGNORE, IGNORE], &[0, 1, 1, 2, 3, 0], IGNORE)
            .unwrap();
        let r = m.metrics();
        assert_eq!(r.labelled_pixels, 4);
        assert_eq!(r.pixel_accuracy, 0.5);
        assert_eq!(
            r.class_iou,
            vec![Some(0.5), Some(1.0 / 3.0), Some(0.0), None]
        );
        // GluonCV: (1/2 + 1/3 + 0 + 0) / 4; mmsegmentation: (1/2 + 1/3 + 0) / 3.
        assert!((r.miou_all - (0.5 + 1.0 / 3.0) / 4.0).abs() < 1e-12);
        assert!((r.miou_present - (0.5 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn an_empty_prediction_scores_zero_and_images_accumulate_before_dividing() {
        // A prediction of no class anywhere: every labelled pixel is wrong, no IoU above 0.
        let mut m = Confusion::new(3);
        m.add(&[0, 1, 2, 2], &[IGNORE; 4], IGNORE).unwrap();
        let r = m.metrics();
        assert_eq!(r.pixel_accuracy, 0.0);
        assert_eq!(r.class_iou, vec![Some(0.0); 3]);
        assert_eq!((r.miou_all, r.miou_present), (0.0, 0.0));
        // Two images: one big and right, one small and wrong. The split's IoU of class 0
        // is 8/(8 + 1) — not the mean of the two images' (1 and 0).
        let mut a = Confusion::new(2);
        a.add(&[0; 8], &[0; 8], IGNORE).unwrap();
        let mut b = Confusion::new(2);
        b.add(&[0], &[1], IGNORE).unwrap();
        a.merge(&b);
        let r = a.metrics();
        assert_eq!(r.class_iou[0], Some(8.0 / 9.0));
        assert_eq!(r.class_iou[1], Some(0.0));
        assert_eq!(r.pixel_accuracy, 8.0 / 9.0);
        // Nothing labelled at all: zeros, not NaN.
        let r = Confusion::new(2).metrics();
        assert_eq!(
            (r.pixel_accuracy, r.miou_all, r.miou_present),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut m = Confusion::new(3);
        assert!(matches!(
            m.add(&[0, 1], &[0], IGNORE),
            Err(EvalError::LabelCount { .. })
        ));
        let e = m.add(&[0, 3], &[0, 0], IGNORE).unwrap_err();
        assert!(e.to_string().contains("truth has class 3"), "{e}");
        let e = m.add(&[0, 1], &[0, 7], IGNORE).unwrap_err();
        assert!(e.to_string().contains("prediction has class 7"), "{e}");
    }
}
