//! The segmentation recipe: FCN on a dilated ResNet, with GluonCV's `fcn_resnet50_ade`
//! settings (the model Section 6.2 of the paper used). Its published training log
//! (<https://raw.githubusercontent.com/dmlc/web-data/master/gluoncv/logs/segmentation/fcn_resnet50_ade.log>)
//! records the command's arguments: `--dataset ade20k --model fcn --backbone resnet50 --aux
//! --aux-weight 0.5 --syncbn --lr 0.01 --momentum 0.9 --weight-decay 1e-4 --batch-size 16
//! --epochs 120` on 4 GPUs, base size 520 and crop 480 (the script's defaults), the poly
//! schedule per iteration.

use serde::{Deserialize, Serialize};

use super::optimisation::{check_real, out_of_domain, parse_validated, recipe_text};
use super::{LrSchedule, Optimisation};
use crate::TrainingError;

/// GluonCV's ADE20K learning rate: 0.01 for 16 images per update; another effective batch
/// scales it linearly (Section 3.1).
pub const SEGMENTATION_REFERENCE_LR: f64 = 0.01;
/// The batch of [`SEGMENTATION_REFERENCE_LR`].
pub const SEGMENTATION_REFERENCE_BATCH: usize = 16;

/// Everything of a segmentation run beyond the shared optimisation: the training
/// transform, the heads, the validation. Defaults are GluonCV's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentationConfig {
    /// The longer side is drawn in `scale_range` × this (520).
    pub base_size: usize,
    /// Square training crop (480); images are padded to it (image 0, mask ignored).
    pub crop_size: usize,
    /// Range of the random scale of the longer side ([0.5, 2.0]).
    pub scale_range: [f64; 2],
    /// Probability of a horizontal flip (0.5).
    pub flip_prob: f64,
    /// Probability of a Gaussian blur of random radius in [0, 1) (0.5, GluonCV's).
    pub blur_prob: f64,
    /// Backbone output stride: 8 dilates stages 3 and 4 (dilation 2 and 4), 16 stage 4
    /// only, 32 none.
    pub output_stride: usize,
    /// Batch norm of backbone and heads uses running statistics and does not train (for
    /// batches too small for batch statistics); GluonCV trains it (synchronised over 4
    /// GPUs at 4 images each).
    pub freeze_bn: bool,
    /// The auxiliary FCN head on stage 3.
    pub aux: bool,
    /// Weight of the auxiliary loss (GluonCV's script: 0.5; mmsegmentation: 0.4).
    pub aux_weight: f64,
    /// Learning-rate multiplier of the heads (GluonCV's `lr_mult` 10).
    pub head_lr_mult: f64,
    /// Dropout before each head's classifier (0.1).
    pub dropout: f64,
    /// Bilinear upsampling of the logits with aligned corners (GluonCV's
    /// `BilinearResize2D`); `false`: PyTorch's default half-pixel convention.
    pub align_corners: bool,
    /// Validation: images whose longer side is above this are resized down to it first
    /// (0: never), predictions resized back (nearest) to the original size.
    pub val_max_size: usize,
    /// Validation at several scales (the longer side at `scale × base_size`), softmax
    /// scores averaged at the original size; a scaled image larger than the crop is
    /// predicted in crop-sized windows with a stride of 2/3 crop. Empty: the whole image at
    /// its own size. GluonCV's evaluation: [`MULTI_SCALE_EVAL`] with flip.
    pub val_scales: Vec<f64>,
    /// Validation: add the scores of the horizontally flipped image.
    pub val_flip: bool,
}

/// GluonCV's multi-scale evaluation scales (with flip).
pub const MULTI_SCALE_EVAL: [f64; 6] = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75];

impl Default for SegmentationConfig {
    fn default() -> Self {
        Self {
            base_size: 520,
            crop_size: 480,
            scale_range: [0.5, 2.0],
            flip_prob: 0.5,
            blur_prob: 0.5,
            output_stride: 8,
            freeze_bn: false,
            aux: true,
            aux_weight: 0.5,
            head_lr_mult: 10.0,
            dropout: 0.1,
            align_corners: true,
            val_max_size: 0,
            val_scales: vec![],
            val_flip: false,
        }
    }
}

impl SegmentationConfig {
    /// Checks every setting against its domain.
    pub fn validate(&self) -> Result<(), String> {
        for (field, v, lo, hi) in [
            ("base_size", self.base_size, 32, 4096),
            ("crop_size", self.crop_size, 32, 4096),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(out_of_domain(
                    &format!("segmentation.{field}"),
                    &v,
                    &format!("an integer in {lo}..={hi}"),
                ));
            }
        }
        if self.val_max_size != 0 && !(32..=8192).contains(&self.val_max_size) {
            return Err(out_of_domain(
                "segmentation.val_max_size",
                &self.val_max_size,
                "0 or an integer in 32..=8192",
            ));
        }
        if ![8, 16, 32].contains(&self.output_stride) {
            return Err(out_of_domain(
                "segmentation.output_stride",
                &self.output_stride,
                "8, 16 or 32",
            ));
        }
        if self.val_scales.len() > 16 {
            return Err(out_of_domain(
                "segmentation.val_scales",
                &self.val_scales.len(),
                "at most 16 scales",
            ));
        }
        for (i, &v) in self.val_scales.iter().enumerate() {
            check_real(
                &format!("segmentation.val_scales[{i}]"),
                v,
                v > 0.0 && v <= 4.0,
                "in (0, 4]",
            )?;
        }
        let [lo, hi] = self.scale_range;
        for (i, v) in [lo, hi].into_iter().enumerate() {
            check_real(
                &format!("segmentation.scale_range[{i}]"),
                v,
                v > 0.0 && v <= 8.0,
                "in (0, 8]",
            )?;
        }
        if lo > hi {
            return Err(format!(
                "recipe: `segmentation.scale_range` = [{lo}, {hi}] is not increasing"
            ));
        }
        for (field, v) in [
            ("flip_prob", self.flip_prob),
            ("blur_prob", self.blur_prob),
            ("aux_weight", self.aux_weight),
        ] {
            check_real(
                &format!("segmentation.{field}"),
                v,
                (0.0..=1.0).contains(&v),
                "in [0, 1]",
            )?;
        }
        check_real(
            "segmentation.dropout",
            self.dropout,
            (0.0..1.0).contains(&self.dropout),
            "in [0, 1)",
        )?;
        check_real(
            "segmentation.head_lr_mult",
            self.head_lr_mult,
            self.head_lr_mult > 0.0 && self.head_lr_mult <= 1000.0,
            "in (0, 1000]",
        )
    }
}

/// Every setting of a segmentation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SegmentationRecipe {
    /// Optimiser, schedule, batch, precision and seed.
    #[serde(flatten)]
    pub optim: Optimisation,
    /// The segmenter's settings (the `[segmentation]` table).
    pub segmentation: SegmentationConfig,
}

impl Default for SegmentationRecipe {
    /// GluonCV's ADE20K schedule: 120 epochs of SGD (momentum 0.9, not Nesterov, weight
    /// decay 1e-4) at batch 16, lr 0.01 by the linear scaling rule at that batch, poly
    /// decay per iteration, no warmup.
    fn default() -> Self {
        Self {
            optim: Optimisation {
                epochs: 120,
                batch_size: 16,
                accumulate: 1,
                lr: None,
                lr_schedule: LrSchedule::Poly,
                lr_step_epochs: vec![],
                warmup_epochs: 0.0,
                momentum: 0.9,
                nesterov: false,
                weight_decay: 1e-4,
                ..Optimisation::default()
            },
            segmentation: SegmentationConfig::default(),
        }
    }
}

/// The segmentation recipes that ship with the binary.
pub const SHIPPED_SEGMENTATION: [(&str, &str); 1] = [(
    "segmentation",
    include_str!("../../../recipes/segmentation.toml"),
)];

impl SegmentationRecipe {
    /// Parses and validates a recipe from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TrainingError> {
        parse_validated(text, origin, Self::validate)
    }

    /// A shipped recipe by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, TrainingError> {
        Self::parse(
            &recipe_text(name_or_path, &SHIPPED_SEGMENTATION)?,
            name_or_path,
        )
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), String> {
        self.optim.validate()?;
        self.segmentation.validate()
    }

    /// The recipe as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// The base learning rate: the recipe's, or 0.01 per 16 images scaled linearly.
    pub fn base_lr(&self) -> f64 {
        self.optim
            .base_lr(SEGMENTATION_REFERENCE_LR, SEGMENTATION_REFERENCE_BATCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_recipe_is_gluoncvs_ade20k_command() {
        let r = SegmentationRecipe::load("segmentation").unwrap();
        assert_eq!(r, SegmentationRecipe::default());
        assert!((r.base_lr() - 0.01).abs() < 1e-15);
        let s = r.optim.schedule(r.base_lr(), 100);
        assert!((s.lr(0) - 0.01).abs() < 1e-15);
        assert!((s.lr(6000) - 0.01 * 0.5f64.powf(0.9)).abs() < 1e-12);
        let back = SegmentationRecipe::parse(&r.to_toml(), "round trip").unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        type Edit = fn(&mut SegmentationConfig);
        let cases: Vec<(&str, Edit)> = vec![
            ("crop_size", |c| c.crop_size = 8),
            ("output_stride", |c| c.output_stride = 4),
            ("scale_range", |c| c.scale_range = [2.0, 0.5]),
            ("scale_range[0]", |c| c.scale_range = [f64::NAN, 1.0]),
            ("flip_prob", |c| c.flip_prob = 2.0),
            ("aux_weight", |c| c.aux_weight = -1.0),
            ("dropout", |c| c.dropout = 1.0),
            ("head_lr_mult", |c| c.head_lr_mult = 0.0),
            ("val_max_size", |c| c.val_max_size = 7),
            ("val_scales[1]", |c| c.val_scales = vec![1.0, 9.0]),
        ];
        for (field, edit) in cases {
            let mut r = SegmentationRecipe::default();
            edit(&mut r.segmentation);
            let e = r.validate().unwrap_err();
            assert!(e.contains(field), "{field}: {e}");
        }
        let e = SegmentationRecipe::parse("[segmentation]\ncolour = 1\n", "x.toml").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }
}
