//! The detection recipe: Faster R-CNN in the C4 layout, with GluonCV's
//! `faster_rcnn_resnet50_v1b_voc` settings (the model Section 6.1 of the paper used).

use serde::{Deserialize, Serialize};

use super::optimisation::{check_real, out_of_domain, parse_validated, recipe_text};
use super::{LrSchedule, Optimisation, MAX_COUNT};
use crate::schedule::Schedule;
use crate::TrainingError;

/// GluonCV's VOC learning rate: 0.001 for 4 images per update (1 on each of 4 GPUs); an
/// other effective batch scales it linearly (Section 3.1).
pub const DETECTION_REFERENCE_LR: f64 = 0.001;
/// The batch of [`DETECTION_REFERENCE_LR`].
pub const DETECTION_REFERENCE_BATCH: usize = 4;

/// Everything of a detection run beyond the shared optimisation: data, anchors, sampling,
/// proposals and the test-time filter. Defaults are GluonCV's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectionConfig {
    /// Shorter image side after resizing (600).
    pub min_size: usize,
    /// Longer side at most (1000).
    pub max_size: usize,
    /// Probability of a horizontal flip in training (0.5).
    pub flip_prob: f64,
    /// Drop objects marked `difficult` from the training targets (mmdetection); kept by
    /// default (GluonCV). The metric always ignores them.
    pub drop_difficult: bool,
    /// First backbone stage that trains (2: the stem and stage 1 stay frozen, as GluonCV);
    /// 1 trains stage 1 too, 5 freezes the whole backbone. Batch norm is always frozen.
    pub train_from_stage: usize,
    /// Anchor scales, in multiples of the stride 16 ((2, 4, 8, 16, 32)).
    pub anchor_scales: Vec<f64>,
    /// Anchor aspect ratios h/w ((0.5, 1, 2)).
    pub anchor_ratios: Vec<f64>,
    /// Channels of the RPN's 3×3 convolution (1024).
    pub rpn_channels: usize,
    /// IoU at or above which an anchor is positive (0.7).
    pub rpn_pos_iou: f64,
    /// IoU below which an anchor is negative (0.3).
    pub rpn_neg_iou: f64,
    /// Anchors sampled per image for the RPN loss (256).
    pub rpn_batch: usize,
    /// Largest fraction of positives among them (0.5).
    pub rpn_pos_fraction: f64,
    /// Proposals kept before NMS in training (12000).
    pub rpn_pre_nms_train: usize,
    /// Proposals kept after NMS in training (2000).
    pub rpn_post_nms_train: usize,
    /// Proposals kept before NMS at test time (6000).
    pub rpn_pre_nms_test: usize,
    /// Proposals kept after NMS at test time (300).
    pub rpn_post_nms_test: usize,
    /// NMS IoU threshold of the proposals (0.7).
    pub rpn_nms: f64,
    /// Proposals with a side under this many input pixels are removed (16).
    pub rpn_min_size: f64,
    /// RoIAlign output size before stage 4 (14: stage 4 halves it to 7).
    pub roi_size: usize,
    /// RoIAlign bilinear samples per bin side (GluonCV: 2).
    pub roi_sampling_ratio: usize,
    /// RoIAlign with the half-pixel offset (`aligned=True`, Detectron2); GluonCV's legacy
    /// convention is `false`.
    pub roi_aligned: bool,
    /// Regions sampled per image for the R-CNN loss (128).
    pub rcnn_batch: usize,
    /// Largest fraction of positives among them (0.25: at most 32 of 128).
    pub rcnn_pos_fraction: f64,
    /// IoU at or above which a region is a positive (0.5).
    pub rcnn_pos_iou: f64,
    /// Standard deviations of the R-CNN box targets (0.1, 0.1, 0.2, 0.2).
    pub box_stds: [f64; 4],
    /// Test: detections with a lower class score are dropped (GluonCV: 0.001; torchvision:
    /// 0.05).
    pub score_threshold: f64,
    /// Test: per-class NMS IoU threshold (GluonCV: 0.3; torchvision: 0.5).
    pub nms_threshold: f64,
    /// Test: detections kept per image (100).
    pub detections_per_image: usize,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            min_size: 600,
            max_size: 1000,
            flip_prob: 0.5,
            drop_difficult: false,
            train_from_stage: 2,
            anchor_scales: vec![2.0, 4.0, 8.0, 16.0, 32.0],
            anchor_ratios: vec![0.5, 1.0, 2.0],
            rpn_channels: 1024,
            rpn_pos_iou: 0.7,
            rpn_neg_iou: 0.3,
            rpn_batch: 256,
            rpn_pos_fraction: 0.5,
            rpn_pre_nms_train: 12000,
            rpn_post_nms_train: 2000,
            rpn_pre_nms_test: 6000,
            rpn_post_nms_test: 300,
            rpn_nms: 0.7,
            rpn_min_size: 16.0,
            roi_size: 14,
            roi_sampling_ratio: 2,
            roi_aligned: false,
            rcnn_batch: 128,
            rcnn_pos_fraction: 0.25,
            rcnn_pos_iou: 0.5,
            box_stds: [0.1, 0.1, 0.2, 0.2],
            score_threshold: 0.001,
            nms_threshold: 0.3,
            detections_per_image: 100,
        }
    }
}

/// The test-time filter of torchvision's Faster R-CNN (score 0.05, NMS 0.5, 100 per image).
pub const TORCHVISION_TEST_FILTER: (f64, f64, usize) = (0.05, 0.5, 100);

impl DetectionConfig {
    /// Checks every setting against its domain.
    pub fn validate(&self) -> Result<(), String> {
        let unit = |field: &str, v: f64| {
            check_real(
                &format!("detection.{field}"),
                v,
                (0.0..=1.0).contains(&v),
                "in [0, 1]",
            )
        };
        for (field, v) in [
            ("flip_prob", self.flip_prob),
            ("rpn_pos_iou", self.rpn_pos_iou),
            ("rpn_neg_iou", self.rpn_neg_iou),
            ("rpn_pos_fraction", self.rpn_pos_fraction),
            ("rpn_nms", self.rpn_nms),
            ("rcnn_pos_fraction", self.rcnn_pos_fraction),
            ("rcnn_pos_iou", self.rcnn_pos_iou),
            ("score_threshold", self.score_threshold),
            ("nms_threshold", self.nms_threshold),
        ] {
            unit(field, v)?;
        }
        if self.rpn_neg_iou > self.rpn_pos_iou {
            return Err(format!(
                "recipe: `detection.rpn_neg_iou` = {} is above `detection.rpn_pos_iou` = {}",
                self.rpn_neg_iou, self.rpn_pos_iou
            ));
        }
        for (field, v, lo, hi) in [
            ("min_size", self.min_size, 32, 4096),
            ("max_size", self.max_size, 32, 4096),
            ("rpn_channels", self.rpn_channels, 1, 8192),
            ("rpn_batch", self.rpn_batch, 1, MAX_COUNT),
            ("rpn_pre_nms_train", self.rpn_pre_nms_train, 1, MAX_COUNT),
            ("rpn_post_nms_train", self.rpn_post_nms_train, 1, MAX_COUNT),
            ("rpn_pre_nms_test", self.rpn_pre_nms_test, 1, MAX_COUNT),
            ("rpn_post_nms_test", self.rpn_post_nms_test, 1, MAX_COUNT),
            ("roi_size", self.roi_size, 2, 64),
            ("roi_sampling_ratio", self.roi_sampling_ratio, 1, 16),
            ("rcnn_batch", self.rcnn_batch, 1, MAX_COUNT),
            (
                "detections_per_image",
                self.detections_per_image,
                1,
                MAX_COUNT,
            ),
            ("train_from_stage", self.train_from_stage, 1, 5),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(out_of_domain(
                    &format!("detection.{field}"),
                    &v,
                    &format!("an integer in {lo}..={hi}"),
                ));
            }
        }
        if self.max_size < self.min_size {
            return Err(format!(
                "recipe: `detection.max_size` = {} is below `detection.min_size` = {}",
                self.max_size, self.min_size
            ));
        }
        if !self.roi_size.is_multiple_of(2) {
            return Err(out_of_domain(
                "detection.roi_size",
                &self.roi_size,
                "even (stage 4 halves it)",
            ));
        }
        for (field, list) in [
            ("anchor_scales", &self.anchor_scales),
            ("anchor_ratios", &self.anchor_ratios),
        ] {
            if list.is_empty()
                || list.len() > 16
                || list.iter().any(|v| !(v.is_finite() && *v > 0.0))
            {
                return Err(out_of_domain(
                    &format!("detection.{field}"),
                    &format!("{list:?}"),
                    "1 to 16 finite numbers > 0",
                ));
            }
        }
        let s = self.rpn_min_size;
        check_real("detection.rpn_min_size", s, s >= 0.0, "a finite number ≥ 0")?;
        for (i, &std) in self.box_stds.iter().enumerate() {
            check_real(
                &format!("detection.box_stds[{i}]"),
                std,
                std > 0.0,
                "a finite number > 0",
            )?;
        }
        Ok(())
    }

    /// Anchors per feature-map position.
    pub fn anchors_per_position(&self) -> usize {
        self.anchor_scales.len() * self.anchor_ratios.len()
    }
}

/// Every setting of a detection run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectionRecipe {
    /// Optimiser, schedule, batch, precision and seed.
    #[serde(flatten)]
    pub optim: Optimisation,
    /// The detector's settings (the `[detection]` table).
    pub detection: DetectionConfig,
}

impl Default for DetectionRecipe {
    /// GluonCV's VOC schedule: 20 epochs, ×0.1 at epoch 14, SGD with momentum 0.9 (not
    /// Nesterov), weight decay 5e-4, 1 image × 4 accumulated per update, lr 0.001 by the
    /// linear scaling rule at that batch.
    fn default() -> Self {
        Self {
            optim: Optimisation {
                epochs: 20,
                batch_size: 1,
                accumulate: 4,
                lr: None,
                lr_schedule: LrSchedule::Step,
                lr_step_epochs: vec![14],
                lr_step_factor: 0.1,
                warmup_epochs: 0.0,
                momentum: 0.9,
                nesterov: false,
                weight_decay: 5e-4,
                ..Optimisation::default()
            },
            detection: DetectionConfig::default(),
        }
    }
}

/// The detection recipes that ship with the binary.
pub const SHIPPED_DETECTION: [(&str, &str); 1] =
    [("detection", include_str!("../../../recipes/detection.toml"))];

impl DetectionRecipe {
    /// Parses and validates a recipe from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TrainingError> {
        parse_validated(text, origin, Self::validate)
    }

    /// A shipped recipe by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, TrainingError> {
        Self::parse(
            &recipe_text(name_or_path, &SHIPPED_DETECTION)?,
            name_or_path,
        )
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), String> {
        self.optim.validate()?;
        self.detection.validate()
    }

    /// The recipe as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// The base learning rate: the recipe's, or 0.001 per 4 images scaled linearly.
    pub fn base_lr(&self) -> f64 {
        self.optim
            .base_lr(DETECTION_REFERENCE_LR, DETECTION_REFERENCE_BATCH)
    }

    /// The schedule for `updates_per_epoch` optimiser updates per epoch.
    pub fn schedule(&self, updates_per_epoch: usize) -> Schedule {
        self.optim.schedule(self.base_lr(), updates_per_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_recipe_is_gluoncvs() {
        let r = DetectionRecipe::load("detection").unwrap();
        assert_eq!(r, DetectionRecipe::default());
        assert!((r.base_lr() - 0.001).abs() < 1e-15);
        let mut doubled = r.clone();
        doubled.optim.accumulate = 8;
        assert!((doubled.base_lr() - 0.002).abs() < 1e-15);
        assert_eq!(r.detection.anchors_per_position(), 15);
        let s = r.schedule(100);
        assert!((s.lr(1399) - 0.001).abs() < 1e-15);
        assert!((s.lr(1400) - 0.0001).abs() < 1e-15);
        let back = DetectionRecipe::parse(&r.to_toml(), "round trip").unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        type Edit = fn(&mut DetectionConfig);
        let cases: Vec<(&str, Edit)> = vec![
            ("flip_prob", |d| d.flip_prob = 1.5),
            ("rpn_pos_iou", |d| d.rpn_pos_iou = f64::NAN),
            ("rpn_neg_iou", |d| d.rpn_neg_iou = 0.9),
            ("min_size", |d| d.min_size = 0),
            ("max_size", |d| d.max_size = 40),
            ("roi_size", |d| d.roi_size = 7),
            ("anchor_scales", |d| d.anchor_scales = vec![]),
            ("anchor_ratios", |d| d.anchor_ratios = vec![-1.0]),
            ("rpn_min_size", |d| d.rpn_min_size = -1.0),
            ("box_stds[2]", |d| d.box_stds[2] = 0.0),
            ("train_from_stage", |d| d.train_from_stage = 0),
            ("detections_per_image", |d| d.detections_per_image = 0),
        ];
        for (field, edit) in cases {
            let mut d = DetectionConfig::default();
            edit(&mut d);
            let err = d.validate().expect_err(field);
            assert!(
                err.contains(&format!("detection.{field}")),
                "{field}: {err}"
            );
        }
        let err = DetectionRecipe::parse("[detection]\nmin_sise = 3\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("min_sise"), "{err}");
        let err = DetectionRecipe::parse("epoch = 3\n", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `epoch`"), "{err}");
    }
}
