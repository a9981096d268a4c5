//! Pascal VOC detection metric, as the devkit computes it (Table 8 of the paper): per-class
//! average precision and their mean, with the VOC2007 11-point interpolation and with the
//! VOC2010+ area under the monotone precision/recall curve.
//!
//! The devkit's rules, each with a hand-worked test below:
//! - detections of a class are taken by decreasing score; each is matched to the ground
//!   truth of its image and class with the highest IoU, and counts when that IoU is at
//!   least 0.5 (the MATLAB devkit's `ovmax >= minoverlap`);
//! - boxes are pixel-inclusive: a box from x1 to x2 is `x2 − x1 + 1` wide;
//! - a match to a `difficult` object counts neither way; difficult objects are not in the
//!   number of positives;
//! - a second detection matched to an already-found object is a false positive;
//! - a class without (non-difficult) ground truth is left out of the mean; a class with
//!   ground truth and no detection has AP 0.

use crate::EvalError;

/// One ground-truth object of an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    /// Class index in `0..classes`.
    pub class: usize,
    /// `[xmin, ymin, xmax, ymax]`, pixel-inclusive (the devkit's 1-based coordinates).
    pub bbox: [f64; 4],
    /// Marked `difficult` in the annotation: ignored by the metric.
    pub difficult: bool,
}

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Index of the image in the ground-truth list.
    pub image: usize,
    /// Class index.
    pub class: usize,
    /// Confidence.
    pub score: f64,
    /// `[xmin, ymin, xmax, ymax]`, same convention as [`Object::bbox`].
    pub bbox: [f64; 4],
}

/// How a precision/recall curve becomes one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApMethod {
    /// VOC2007: the mean over recall 0, 0.1, …, 1 of the best precision at that recall or
    /// above.
    ElevenPoint,
    /// VOC2010 and later: the area under the precision envelope (precision made
    /// non-increasing from the right), summed where recall changes.
    Area,
}

/// The AP of one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassAp {
    /// Non-difficult ground-truth objects.
    pub positives: usize,
    /// Detections of the class.
    pub detections: usize,
    /// VOC2007 11-point AP in [0, 1]; `None` without positives.
    pub ap07: Option<f64>,
    /// Area AP in [0, 1]; `None` without positives.
    pub ap: Option<f64>,
}

/// Per-class APs and both means.
#[derive(Debug, Clone, PartialEq)]
pub struct VocMap {
    /// One entry per class, in class order.
    pub classes: Vec<ClassAp>,
    /// Mean 11-point AP over the classes with positives.
    pub map07: f64,
    /// Mean area AP over the classes with positives.
    pub map: f64,
}

/// IoU with the devkit's pixel-inclusive widths.
pub fn iou_inclusive(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = a[2].min(b[2]) - a[0].max(b[0]) + 1.0;
    let ih = a[3].min(b[3]) - a[1].max(b[1]) + 1.0;
    if iw <= 0.0 || ih <= 0.0 {
        return 0.0;
    }
    let area = |r: &[f64; 4]| (r[2] - r[0] + 1.0) * (r[3] - r[1] + 1.0);
    let inter = iw * ih;
    inter / (area(a) + area(b) - inter)
}

/// AP of a precision/recall curve (recall non-decreasing).
pub fn average_precision(recall: &[f64], precision: &[f64], method: ApMethod) -> f64 {
    match method {
        ApMethod::ElevenPoint => {
            (0..=10)
                .map(|t| {
                    let t = t as f64 / 10.0;
                    recall
                        .iter()
                        .zip(precision)
                        .filter(|(r, _)| **r >= t)
                        .map(|(_, p)| *p)
                        .fold(0.0, f64::max)
                })
                .sum::<f64>()
                / 11.0
        }
        ApMethod::Area => {
            let mut mrec = vec![0.0];
            mrec.extend_from_slice(recall);
            mrec.push(1.0);
            let mut mpre = vec![0.0];
            mpre.extend_from_slice(precision);
            mpre.push(0.0);
            for i in (0..mpre.len() - 1).rev() {
                mpre[i] = mpre[i].max(mpre[i + 1]);
            }
            (1..mrec.len())
                .filter(|&i| mrec[i] != mrec[i - 1])
                .map(|i| (mrec[i] - mrec[i - 1]) * mpre[i])
                .sum()
        }
    }
}

/// The VOC metric of `detections` against `ground_truth` (one list of objects per image)
/// for `classes` classes, at IoU 0.5.
pub fn voc_map(
    ground_truth: &[Vec<Object>],
    detections: &[Detection],
    classes: usize,
) -> Result<VocMap, EvalError> {
    const MIN_OVERLAP: f64 = 0.5;
    for (image, objects) in ground_truth.iter().enumerate() {
        if let Some(o) = objects.iter().find(|o| o.class >= classes) {
            return Err(EvalError::ClassRange {
                what: format!("a ground-truth object of image {image}"),
                class: o.class,
                classes,
            });
        }
    }
    if let Some(d) = detections
        .iter()
        .find(|d| d.class >= classes || d.image >= ground_truth.len() || !d.score.is_finite())
    {
        return Err(EvalError::BadDetection(format!(
            "{d:?}: the class must be in 0..{classes}, the image in 0..{}, the score finite",
            ground_truth.len()
        )));
    }
    let mut per_class = Vec::with_capacity(classes);
    for class in 0..classes {
        let positives = ground_truth
            .iter()
            .flatten()
            .filter(|o| o.class == class && !o.difficult)
            .count();
        let mut dets: Vec<&Detection> = detections.iter().filter(|d| d.class == class).collect();
        // Stable: equal scores keep the input order.
        dets.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut found: Vec<Vec<bool>> = ground_truth.iter().map(|g| vec![false; g.len()]).collect();
        let (mut tp, mut fp) = (0usize, 0usize);
        let (mut recall, mut precision) = (Vec::new(), Vec::new());
        for d in &dets {
            let best = ground_truth[d.image]
                .iter()
                .enumerate()
                .filter(|(_, o)| o.class == class)
                .map(|(j, o)| (j, iou_inclusive(&d.bbox, &o.bbox)))
                .fold(None, |best: Option<(usize, f64)>, (j, v)| match best {
                    Some((_, b)) if b >= v => best,
                    _ => Some((j, v)),
                });
            match best {
                Some((j, overlap)) if overlap >= MIN_OVERLAP => {
                    if ground_truth[d.image][j].difficult {
                        continue; // Neither true nor false positive.
                    }
                    if found[d.image][j] {
                        fp += 1;
                    } else {
                        found[d.image][j] = true;
                        tp += 1;
                    }
                }
                _ => fp += 1,
            }
            if positives > 0 {
                recall.push(tp as f64 / positives as f64);
                precision.push(tp as f64 / (tp + fp) as f64);
            }
        }
        let ap = |m| (positives > 0).then(|| average_precision(&recall, &precision, m));
        per_class.push(ClassAp {
            positives,
            detections: dets.len(),
            ap07: ap(ApMethod::ElevenPoint),
            ap: ap(ApMethod::Area),
        });
    }
    let mean = |f: fn(&ClassAp) -> Option<f64>| {
        let v: Vec<f64> = per_class.iter().filter_map(f).collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    Ok(VocMap {
        map07: mean(|c| c.ap07),
        map: mean(|c| c.ap),
        classes: per_class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(class: usize, bbox: [f64; 4], difficult: bool) -> Object {
        Object {
            class,
            bbox,
            difficult,
        }
    }

    fn det(image: usize, class: usize, score: f64, bbox: [f64; 4]) -> Detection {
        Detection {
            image,
            class,
            score,
            bbox,
        }
    }

    const A: [f64; 4] = [1.0, 1.0, 10.0, 10.0];
    const B: [f64; 4] = [21.0, 21.0, 30.0, 30.0];

    #[test]
    fn boxes_are_pixel_inclusive() {
        // 10×10 boxes offset by 5 pixels: intersection 5×10, union 150.
        let moved = [6.0, 1.0, 15.0, 10.0];
        assert!((iou_inclusive(&A, &moved) - 50.0 / 150.0).abs() < 1e-12);
        // A one-pixel box is 1×1, not empty.
        assert_eq!(
            iou_inclusive(&[3.0, 3.0, 3.0, 3.0], &[3.0, 3.0, 3.0, 3.0]),
            1.0
        );
        // Touching at a shared pixel column overlaps by one column.
        assert!((iou_inclusive(&A, &[10.0, 1.0, 19.0, 10.0]) - 10.0 / 190.0).abs() < 1e-12);
    }

    #[test]
    fn the_overlap_threshold_is_inclusive() {
        // 10×10 ground truth; a 10×20 detection covering it has IoU exactly 100/200 = 0.5.
        let gt = vec![vec![obj(0, A, false)]];
        let half = det(0, 0, 0.9, [1.0, 1.0, 10.0, 20.0]);
        let m = voc_map(&gt, &[half], 1).unwrap();
        assert_eq!(m.classes[0].ap, Some(1.0));
        let below = det(0, 0, 0.9, [1.0, 1.0, 10.0, 21.0]);
        assert_eq!(voc_map(&gt, &[below], 1).unwrap().classes[0].ap, Some(0.0));
    }

    #[test]
    fn a_second_match_of_one_object_is_a_false_positive() {
        // Detections: hit (tp), duplicate (fp), the second object (tp).
        // Recall 0.5, 0.5, 1; precision 1, 0.5, 2/3.
        let gt = vec![vec![obj(0, A, false), obj(0, B, false)]];
        let dets = [det(0, 0, 0.9, A), det(0, 0, 0.8, A), det(0, 0, 0.7, B)];
        let m = voc_map(&gt, &dets, 1).unwrap();
        // Area: envelope 1 up to recall 0.5, 2/3 from 0.5 to 1 → 0.5 + 1/3.
        assert!((m.classes[0].ap.unwrap() - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        // 11-point: recall ≤ 0.5 → 1 (6 points), 0.6..1 → 2/3 (5 points).
        let ap07 = (6.0 + 5.0 * 2.0 / 3.0) / 11.0;
        assert!((m.classes[0].ap07.unwrap() - ap07).abs() < 1e-12);
    }

    #[test]
    fn difficult_objects_count_neither_way() {
        // One normal and one difficult object; a detection on each. The difficult match is
        // skipped, so precision stays 1 and the only positive is found.
        let gt = vec![vec![obj(0, A, false), obj(0, B, true)]];
        let dets = [det(0, 0, 0.9, B), det(0, 0, 0.8, A)];
        let m = voc_map(&gt, &dets, 1).unwrap();
        assert_eq!(m.classes[0].positives, 1);
        assert_eq!(m.classes[0].ap, Some(1.0));
        assert_eq!(m.classes[0].ap07, Some(1.0));
        // A detection matched only to the difficult object does not hurt either.
        let m = voc_map(&gt, &[det(0, 0, 0.99, B)], 1).unwrap();
        assert_eq!(m.classes[0].ap, Some(0.0)); // the positive was never found
    }

    #[test]
    fn a_detection_takes_its_highest_iou_object() {
        // The detection overlaps A (IoU 1) and a shifted copy (IoU < 1): it takes A; a second
        // identical detection then matches A again (fp) rather than the copy.
        let copy = [3.0, 1.0, 12.0, 10.0];
        let gt = vec![vec![obj(0, copy, false), obj(0, A, false)]];
        let m = voc_map(&gt, &[det(0, 0, 0.9, A), det(0, 0, 0.8, A)], 1).unwrap();
        // recall 0.5, 0.5; precision 1, 0.5 → area 0.5.
        assert!((m.classes[0].ap.unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn classes_without_truth_leave_the_mean_and_classes_without_detections_score_zero() {
        let gt = vec![vec![obj(0, A, false), obj(1, B, false)], vec![]];
        // Class 0 perfect, class 1 never detected, class 2 has no ground truth (its
        // detection, a false positive, changes nothing).
        let dets = [det(0, 0, 0.9, A), det(1, 2, 0.5, A)];
        let m = voc_map(&gt, &dets, 3).unwrap();
        assert_eq!(m.classes[1].ap, Some(0.0));
        assert_eq!(m.classes[2].ap, None);
        assert_eq!(m.map, 0.5);
        assert_eq!(m.map07, 0.5);
        // A detection of class 0 in another image is a false positive after the hit.
        let m = voc_map(&gt, &[det(1, 0, 0.95, A), det(0, 0, 0.9, A)], 3).unwrap();
        assert!((m.classes[0].ap.unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn eleven_point_and_area_differ_as_defined() {
        // Recall 0.25 at precision 1, then recall 1 at precision 0.5.
        let (r, p) = ([0.25, 1.0], [1.0, 0.5]);
        assert!((average_precision(&r, &p, ApMethod::Area) - (0.25 + 0.75 * 0.5)).abs() < 1e-12);
        // 11-point: t = 0, 0.1, 0.2 → 1; t = 0.3 … 1 → 0.5 (8 points).
        let want = (3.0 + 8.0 * 0.5) / 11.0;
        assert!((average_precision(&r, &p, ApMethod::ElevenPoint) - want).abs() < 1e-12);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let gt = vec![vec![obj(3, A, false)]];
        assert!(voc_map(&gt, &[], 2).is_err());
        let gt = vec![vec![obj(0, A, false)]];
        assert!(voc_map(&gt, &[det(1, 0, 0.5, A)], 1).is_err());
        assert!(voc_map(&gt, &[det(0, 0, f64::NAN, A)], 1).is_err());
    }
}
