//! Training targets of the two stages: which anchors the RPN learns from (and towards what
//! boxes), which regions the R-CNN head learns from. GluonCV's rules (the numbers):
//! each sampled with a seeded generator, so a batch's targets depend only on the run's seed
//! and the batch's place in it.

use ops::boxes::iou_matrix;
use rand::seq::SliceRandom;
use rand::Rng;
use training::recipe::DetectionConfig;

use super::coder::encode;

/// The RPN's sampled anchors: `labels[i]` is 1 (object), 0 (background) or −1 (not
/// sampled); `deltas[i]` the regression target of a positive.
#[derive(Debug, Clone, PartialEq)]
pub struct RpnTargets {
    /// Per anchor.
    pub labels: Vec<i8>,
    /// Per anchor, zero unless positive.
    pub deltas: Vec<[f32; 4]>,
    /// Anchors sampled (positives + negatives): the losses' normaliser.
    pub sampled: usize,
}

/// Picks at most `keep` of `items` at random, in place.
fn subsample<R: Rng>(rng: &mut R, items: &mut Vec<usize>, keep: usize) {
    if items.len() > keep {
        items.shuffle(rng);
        items.truncate(keep);
        items.sort_unstable();
    }
}

/// RPN targets for `anchors` of an image of `size` (height, width) with ground truth
/// `gt`: IoU ≥ `rpn_pos_iou` positive, < `rpn_neg_iou` negative, each ground truth's
/// best anchors positive; anchors crossing the border ignored; `rpn_batch` sampled, at
/// most `rpn_pos_fraction` of them positive.
pub fn rpn_targets<R: Rng>(
    rng: &mut R,
    anchors: &[[f32; 4]],
    gt: &[[f32; 4]],
    size: (usize, usize),
    cfg: &DetectionConfig,
) -> RpnTargets {
    let (h, w) = (size.0 as f32, size.1 as f32);
    let inside: Vec<usize> = (0..anchors.len())
        .filter(|&i| {
            let a = &anchors[i];
            a[0] >= 0.0 && a[1] >= 0.0 && a[2] <= w && a[3] <= h
        })
        .collect();
    let mut labels = vec![-1i8; anchors.len()];
    let mut deltas = vec![[0.0f32; 4]; anchors.len()];
    let mut assigned = vec![usize::MAX; anchors.len()];
    if gt.is_empty() {
        for &i in &inside {
            labels[i] = 0;
        }
    } else {
        let inner: Vec<[f32; 4]> = inside.iter().map(|&i| anchors[i]).collect();
        let iou = iou_matrix(&inner, gt);
        let g = gt.len();
        let mut best_of_gt = vec![0.0f32; g];
        for (k, row) in iou.chunks(g).enumerate() {
            let (j, &best) = row
                .iter()
                .enumerate()
                .fold((0, &f32::NEG_INFINITY), |acc, (j, v)| {
                    if *v > *acc.1 {
                        (j, v)
                    } else {
                        acc
                    }
                });
            let i = inside[k];
            assigned[i] = j;
            if best < cfg.rpn_neg_iou as f32 {
                labels[i] = 0;
            } else if best >= cfg.rpn_pos_iou as f32 {
                labels[i] = 1;
            }
            for (b, &v) in best_of_gt.iter_mut().zip(row) {
                *b = b.max(v);
            }
        }
        // Each ground truth's best anchors (ties included) are positive.
        for (k, row) in iou.chunks(g).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if v > 0.0 && v == best_of_gt[j] {
                    labels[inside[k]] = 1;
                    assigned[inside[k]] = j;
                }
            }
        }
    }
    let mut pos: Vec<usize> = (0..anchors.len()).filter(|&i| labels[i] == 1).collect();
    let mut neg: Vec<usize> = (0..anchors.len()).filter(|&i| labels[i] == 0).collect();
    subsample(
        rng,
        &mut pos,
        (cfg.rpn_batch as f64 * cfg.rpn_pos_fraction) as usize,
    );
    subsample(rng, &mut neg, cfg.rpn_batch - pos.len());
    labels.iter_mut().for_each(|l| *l = -1);
    for &i in &pos {
        labels[i] = 1;
        deltas[i] = encode(&anchors[i], &gt[assigned[i]], [1.0; 4]);
    }
    for &i in &neg {
        labels[i] = 0;
    }
    RpnTargets {
        labels,
        deltas,
        sampled: pos.len() + neg.len(),
    }
}

/// The R-CNN head's sampled regions of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct RcnnSample {
    /// Region boxes.
    pub boxes: Vec<[f32; 4]>,
    /// Class of each: 0 background, `c + 1` for object class `c`.
    pub labels: Vec<usize>,
    /// Regression target of each foreground region (zero for background), with the
    /// recipe's `box_stds`.
    pub deltas: Vec<[f32; 4]>,
}

/// Samples the head's regions from `proposals` plus the ground truth itself: IoU ≥
/// `rcnn_pos_iou` foreground (at most `rcnn_batch · rcnn_pos_fraction`), the rest
/// background, `rcnn_batch` in all (fewer when there are not enough proposals).
pub fn rcnn_sample<R: Rng>(
    rng: &mut R,
    proposals: &[[f32; 4]],
    gt: &[[f32; 4]],
    gt_classes: &[usize],
    cfg: &DetectionConfig,
) -> RcnnSample {
    let mut all: Vec<[f32; 4]> = proposals.to_vec();
    all.extend_from_slice(gt);
    let g = gt.len();
    let (mut fg, mut bg, mut assigned) = (Vec::new(), Vec::new(), vec![0usize; all.len()]);
    if g == 0 {
        bg = (0..all.len()).collect();
    } else {
        let iou = iou_matrix(&all, gt);
        for (i, row) in iou.chunks(g).enumerate() {
            let (j, best) = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc },
                );
            assigned[i] = j;
            if best >= cfg.rcnn_pos_iou as f32 {
                fg.push(i);
            } else {
                bg.push(i);
            }
        }
    }
    subsample(
        rng,
        &mut fg,
        (cfg.rcnn_batch as f64 * cfg.rcnn_pos_fraction).round() as usize,
    );
    subsample(rng, &mut bg, cfg.rcnn_batch - fg.len());
    let stds = cfg.box_stds.map(|s| s as f32);
    let mut out = RcnnSample {
        boxes: Vec::new(),
        labels: Vec::new(),
        deltas: Vec::new(),
    };
    for &i in &fg {
        out.boxes.push(all[i]);
        out.labels.push(gt_classes[assigned[i]] + 1);
        out.deltas.push(encode(&all[i], &gt[assigned[i]], stds));
    }
    for &i in &bg {
        out.boxes.push(all[i]);
        out.labels.push(0);
        out.deltas.push([0.0; 4]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rpn_labels_follow_the_thresholds_and_the_border() {
        let cfg = DetectionConfig {
            rpn_batch: 8,
            ..Default::default()
        };
        let gt = [[10.0, 10.0, 30.0, 30.0]];
        let anchors = [
            [10.0, 10.0, 30.0, 30.0],  // IoU 1: positive
            [12.0, 10.0, 32.0, 30.0],  // IoU 0.82: positive
            [20.0, 10.0, 40.0, 30.0],  // IoU 1/3: neither
            [60.0, 60.0, 80.0, 80.0],  // IoU 0: negative
            [-5.0, 10.0, 15.0, 30.0],  // crosses the border: ignored
            [90.0, 90.0, 101.0, 99.0], // crosses the right border of a 100-wide image
        ];
        let t = rpn_targets(
            &mut ChaCha8Rng::seed_from_u64(0),
            &anchors,
            &gt,
            (100, 100),
            &cfg,
        );
        assert_eq!(t.labels, vec![1, 1, -1, 0, -1, -1]);
        assert_eq!(t.sampled, 3);
        assert_eq!(t.deltas[0], [0.0; 4]);
        assert!(t.deltas[1][0] < 0.0); // the anchor sits right of the box
    }

    #[test]
    fn each_ground_truth_gets_its_best_anchor_even_below_the_threshold() {
        let cfg = DetectionConfig::default();
        let gt = [[0.0, 0.0, 10.0, 10.0]];
        let anchors = [[0.0, 0.0, 20.0, 20.0], [50.0, 50.0, 70.0, 70.0]]; // IoU 0.25, 0
        let t = rpn_targets(
            &mut ChaCha8Rng::seed_from_u64(0),
            &anchors,
            &gt,
            (100, 100),
            &cfg,
        );
        assert_eq!(t.labels, vec![1, 0]);
    }

    #[test]
    fn sampling_caps_the_positives_and_fills_with_negatives() {
        let cfg = DetectionConfig {
            rpn_batch: 10,
            rpn_pos_fraction: 0.5,
            ..Default::default()
        };
        let gt = [[0.0, 0.0, 40.0, 40.0]];
        let mut anchors = vec![[0.0, 0.0, 40.0, 40.0]; 8]; // 8 positives
        anchors.extend(std::iter::repeat_n([60.0, 60.0, 90.0, 90.0], 20)); // 20 negatives
        let t = rpn_targets(
            &mut ChaCha8Rng::seed_from_u64(3),
            &anchors,
            &gt,
            (100, 100),
            &cfg,
        );
        assert_eq!(t.labels.iter().filter(|&&l| l == 1).count(), 5);
        assert_eq!(t.labels.iter().filter(|&&l| l == 0).count(), 5);
        assert_eq!(t.sampled, 10);
        let again = rpn_targets(
            &mut ChaCha8Rng::seed_from_u64(3),
            &anchors,
            &gt,
            (100, 100),
            &cfg,
        );
        assert_eq!(t, again, "seeded");
    }

    #[test]
    fn the_head_sees_the_ground_truth_and_at_most_a_quarter_foreground() {
        let cfg = DetectionConfig {
            rcnn_batch: 8,
            ..Default::default()
        };
        let gt = [[0.0, 0.0, 40.0, 40.0]];
        let mut proposals = vec![[1.0, 1.0, 40.0, 40.0]; 5];
        proposals.extend(std::iter::repeat_n([50.0, 50.0, 90.0, 90.0], 10));
        let s = rcnn_sample(
            &mut ChaCha8Rng::seed_from_u64(1),
            &proposals,
            &gt,
            &[6],
            &cfg,
        );
        assert_eq!(s.boxes.len(), 8);
        assert_eq!(s.labels.iter().filter(|&&l| l == 7).count(), 2); // 8 × 0.25
        assert!(s.labels[2..].iter().all(|&l| l == 0));
        // No proposals at all: the ground truth alone, as foreground.
        let s = rcnn_sample(&mut ChaCha8Rng::seed_from_u64(1), &[], &gt, &[6], &cfg);
        assert_eq!((s.labels.clone(), s.deltas[0]), (vec![7], [0.0; 4]));
    }
}
