//! Top-k accuracy.

use crate::EvalError;

/// Rank of the true class among `scores` (0 = best): the number of classes scored strictly
/// higher, plus the tied classes with a lower index (a tie never counts in the model's favour
/// beyond what `argmax` would give it).
pub fn rank_of_label(scores: &[f32], label: usize) -> usize {
    let s = scores[label];
    scores
        .iter()
        .enumerate()
        .filter(|&(i, &v)| v > s || (v == s && i < label) || v.is_nan())
        .count()
}

/// Running top-1 and top-5 accuracy over batches of scores (logits or probabilities).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TopK {
    /// Samples whose true class scored highest.
    pub top1: usize,
    /// Samples whose true class was among the five highest.
    pub top5: usize,
    /// Samples seen.
    pub total: usize,
}

impl TopK {
    /// Adds a batch: `scores` holds `labels.len()` rows of `classes` values, row-major.
    pub fn update(
        &mut self,
        scores: &[f32],
        classes: usize,
        labels: &[usize],
    ) -> Result<(), EvalError> {
        if classes == 0 || !scores.len().is_multiple_of(classes) {
            return Err(EvalError::Shape {
                scores: scores.len(),
                classes,
            });
        }
        let rows = scores.len() / classes;
        if rows != labels.len() {
            return Err(EvalError::LabelCount {
                rows,
                labels: labels.len(),
            });
        }
        for (row, &label) in scores.chunks(classes).zip(labels) {
            if label >= classes {
                return Err(EvalError::LabelRange { label, classes });
            }
            let rank = rank_of_label(row, label);
            self.top1 += usize::from(rank < 1);
            self.top5 += usize::from(rank < 5);
            self.total += 1;
        }
        Ok(())
    }

    /// Top-1 accuracy in [0, 1] (0 when empty).
    pub fn top1_accuracy(&self) -> f64 {
        self.top1 as f64 / self.total.max(1) as f64
    }

    /// Top-5 accuracy in [0, 1] (0 when empty).
    pub fn top5_accuracy(&self) -> f64 {
        self.top5 as f64 / self.total.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_batch() {
        // Seven classes, three samples.
        let scores = [
            0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, // label 1: rank 0
            0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, // label 4: rank 4 (top-5, not top-1)
            0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, // label 6: rank 6 (neither)
        ];
        let mut acc = TopK::default();
        acc.update(&scores, 7, &[1, 4, 6]).unwrap();
        assert_eq!(
            acc,
            TopK {
                top1: 1,
                top5: 2,
                total: 3
            }
        );
        assert!((acc.top1_accuracy() - 1.0 / 3.0).abs() < 1e-12);
        assert!((acc.top5_accuracy() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn ties_and_nans_do_not_flatter_the_model() {
        assert_eq!(rank_of_label(&[0.5, 0.5, 0.1], 0), 0);
        assert_eq!(rank_of_label(&[0.5, 0.5, 0.1], 1), 1);
        assert_eq!(rank_of_label(&[f32::NAN, 0.2, 0.1], 1), 1);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let mut acc = TopK::default();
        assert_eq!(
            acc.update(&[0.0; 5], 2, &[0]),
            Err(EvalError::Shape {
                scores: 5,
                classes: 2
            })
        );
        assert_eq!(
            acc.update(&[0.0; 4], 2, &[0]),
            Err(EvalError::LabelCount { rows: 2, labels: 1 })
        );
        assert_eq!(
            acc.update(&[0.0; 2], 2, &[2]),
            Err(EvalError::LabelRange {
                label: 2,
                classes: 2
            })
        );
        assert_eq!(acc.total, 0);
    }
}
