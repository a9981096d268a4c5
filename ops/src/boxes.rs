//! Boxes for detection: RoIAlign on a feature map ([`roi_align`], with its gradient), IoU
//! and greedy non-maximum suppression ([`nms`]) on plain slices.
//!
//! Boxes are `[x1, y1, x2, y2]` in continuous coordinates (torchvision's convention: width
//! `x2 − x1`, no +1), f32.

use candle_core::{Result, Tensor};

pub use crate::kernels::roi_align::RoiAlignParams;

/// RoIAlign of `features: (N, C, H, W)` over `rois: (K, 5)` rows `[batch index, x1, y1, x2,
/// y2]` in input-image coordinates: `(K, C, ph, pw)`, with the gradient with respect to
/// the features (the regions get none, as in torchvision). See
/// [`crate::kernels::roi_align`] for the conventions. CPU only.
pub fn roi_align(features: &Tensor, rois: &Tensor, p: RoiAlignParams) -> Result<Tensor> {
    let (_, five) = rois.dims2()?;
    if five != 5 {
        candle_core::bail!(
            "roi_align: regions must be (K, 5) rows [batch, x1, y1, x2, y2], got {:?}",
            rois.dims()
        );
    }
    if p.pooled.0 == 0 || p.pooled.1 == 0 || !(p.spatial_scale.is_finite() && p.spatial_scale > 0.0)
    {
        candle_core::bail!("roi_align: bad settings {p:?}");
    }
    let rois = rois.to_dtype(features.dtype())?.contiguous()?;
    features
        .contiguous()?
        .apply_op2(&rois, crate::kernels::roi_align::RoiAlign(p))
}

/// Area of a box (0 when degenerate).
#[inline]
pub fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Intersection over union of two boxes (0 when both are empty).
#[inline]
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The IoU of every box of `a` with every box of `b`, row-major `(a.len(), b.len())`.
pub fn iou_matrix(a: &[[f32; 4]], b: &[[f32; 4]]) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        out.extend(b.iter().map(|y| iou(x, y)));
    }
    out
}

/// Greedy non-maximum suppression (torchvision's `nms`): the indices of the boxes kept, by
/// decreasing score; a box is dropped when its IoU with a kept, higher-scored box is above
/// `threshold`. Ties keep the lower index first; NaN scores are dropped. At most `limit`
/// boxes are returned (the search stops there).
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], threshold: f32, limit: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).filter(|&i| !scores[i].is_nan()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    // Coordinates in score order, one array each, so that the inner loop runs without
    // branches over contiguous memory (the compiler vectorises it).
    let column = |k: usize| -> Vec<f32> { order.iter().map(|&i| boxes[i][k]).collect() };
    let (x1, y1, x2, y2) = (column(0), column(1), column(2), column(3));
    let areas: Vec<f32> = order.iter().map(|&i| area(&boxes[i])).collect();
    let mut alive = vec![true; order.len()];
    let mut keep = Vec::new();
    for i in 0..order.len() {
        if !alive[i] {
            continue;
        }
        keep.push(order[i]);
        if keep.len() == limit {
            break;
        }
        let (ax1, ay1, ax2, ay2, aa) = (x1[i], y1[i], x2[i], y2[i], areas[i]);
        let rest = i + 1..order.len();
        for (((((alive, &bx1), &by1), &bx2), &by2), &ba) in alive[rest.clone()]
            .iter_mut()
            .zip(&x1[rest.clone()])
            .zip(&y1[rest.clone()])
            .zip(&x2[rest.clone()])
            .zip(&y2[rest.clone()])
            .zip(&areas[rest])
        {
            let iw = (ax2.min(bx2) - ax1.max(bx1)).max(0.0);
            let ih = (ay2.min(by2) - ay1.max(by1)).max(0.0);
            let inter = iw * ih;
            let union = aa + ba - inter;
            let suppress = (union > 0.0) & (inter / union > threshold);
            *alive &= !suppress;
        }
    }
    keep
}

/// Non-maximum suppression within each class (torchvision's `batched_nms`): boxes of
/// different `classes` never suppress each other. Indices by decreasing score.
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[usize],
    threshold: f32,
    limit: usize,
) -> Vec<usize> {
    let mut by_class: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &c) in classes.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut keep = Vec::new();
    for members in by_class.values() {
        let b: Vec<[f32; 4]> = members.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
        keep.extend(
            nms(&b, &s, threshold, limit)
                .into_iter()
                .map(|k| members[k]),
        );
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    keep.truncate(limit);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, uniform};
    use candle_core::{DType, Device};

    #[test]
    fn iou_by_hand() {
        let a = [0.0, 0.0, 2.0, 2.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&a, &[2.0, 2.0, 3.0, 3.0]), 0.0); // touching corners
        assert_eq!(iou(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0], // IoU 81/119 = 0.68 with box 0
            [20.0, 20.0, 30.0, 30.0],
            [0.0, 0.0, 10.0, 10.0], // a duplicate of box 0 with the same score
        ];
        let scores = [0.9, 0.95, 0.5, 0.9];
        assert_eq!(nms(&boxes, &scores, 0.5, 100), vec![1, 2]);
        assert_eq!(nms(&boxes, &scores, 0.7, 100), vec![1, 0, 2]);
        assert_eq!(nms(&boxes, &scores, 0.7, 2), vec![1, 0]);
        assert_eq!(nms(&boxes, &[f32::NAN, 0.1, 0.2, 0.3], 0.5, 9), vec![3, 2]);
        // Per class: boxes 0 and 1 no longer compete.
        assert_eq!(
            batched_nms(&boxes, &scores, &[0, 1, 1, 0], 0.5, 100),
            vec![1, 0, 2]
        );
    }

    fn features(dtype: DType) -> Tensor {
        uniform(&[2, 3, 6, 7], 11, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn rois() -> Tensor {
        Tensor::new(
            &[
                [0.0f64, 1.0, 1.5, 9.0, 8.0],
                [1.0, 0.0, 0.0, 13.0, 11.0],
                [1.0, -3.0, 2.0, 4.0, 20.0], // reaches past the border
                [0.0, 5.0, 5.0, 5.2, 5.1],   // thinner than a pixel
            ],
            &Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn a_one_bin_region_on_a_constant_map_is_the_constant() {
        let x = Tensor::full(3.0f32, (1, 2, 8, 8), &Device::Cpu).unwrap();
        let r = Tensor::new(&[[0.0f32, 2.0, 2.0, 10.0, 10.0]], &Device::Cpu).unwrap();
        for aligned in [false, true] {
            let p = RoiAlignParams {
                pooled: (2, 3),
                spatial_scale: 0.5,
                sampling_ratio: 0,
                aligned,
            };
            let y = roi_align(&x, &r, p).unwrap();
            assert_eq!(y.dims(), [1, 2, 2, 3]);
            for v in y.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
                assert!((v - 3.0).abs() < 1e-6, "{v}");
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        for (sampling_ratio, aligned) in [(2, false), (0, true), (1, true)] {
            let p = RoiAlignParams {
                pooled: (3, 2),
                spatial_scale: 0.5,
                sampling_ratio,
                aligned,
            };
            let r = rois();
            check_gradients(
                &[features(DType::F64)],
                |t| roi_align(&t[0], &r, p),
                1e-6,
                1e-6,
            )
            .unwrap();
        }
    }

    #[test]
    fn bad_regions_are_errors() {
        let p = RoiAlignParams {
            pooled: (2, 2),
            spatial_scale: 1.0,
            sampling_ratio: 2,
            aligned: false,
        };
        let x = features(DType::F32);
        let bad = Tensor::new(&[[2.0f32, 0.0, 0.0, 1.0, 1.0]], &Device::Cpu).unwrap();
        let err = roi_align(&x, &bad, p).unwrap_err().to_string();
        assert!(err.contains("batch index 2"), "{err}");
        let nan = Tensor::new(&[[0.0f32, f32::NAN, 0.0, 1.0, 1.0]], &Device::Cpu).unwrap();
        assert!(roi_align(&x, &nan, p).is_err());
        let four = Tensor::new(&[[0.0f32, 0.0, 1.0, 1.0]], &Device::Cpu).unwrap();
        assert!(roi_align(&x, &four, p).is_err());
    }
}
