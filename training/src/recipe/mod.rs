//! Recipes: the settings of a training run as plain TOML, with the paper's defaults.
//!
//! A recipe is the shared [`Optimisation`] (optimiser, schedule, batch, precision, seed)
//! plus the settings of its task: [`Recipe`] for classification, [`DetectionRecipe`] for
//! Faster R-CNN, [`SegmentationRecipe`] for FCN. Classification ships three
//! (`recipes/*.toml`): `baseline` (Section 2.1), `efficient` (Section 3) and `tricks`
//! (Section 5); detection ships `detection` (GluonCV's VOC numbers, Section 6.1),
//! segmentation `segmentation` (GluonCV's ADE20K numbers, Section 6.2). Any field may be
//! overridden from the command line.

use serde::{Deserialize, Serialize};

use crate::data::augment::AugmentConfig;
use crate::schedule::Schedule;

pub mod ablation;
mod detection;
mod optimisation;
mod segmentation;

pub use detection::{
    DetectionConfig, DetectionRecipe, DETECTION_REFERENCE_BATCH, DETECTION_REFERENCE_LR,
    SHIPPED_DETECTION, TORCHVISION_TEST_FILTER,
};
pub use optimisation::Optimisation;
use optimisation::{check_real, parse_validated, recipe_text};
pub use segmentation::{
    SegmentationConfig, SegmentationRecipe, MULTI_SCALE_EVAL, SEGMENTATION_REFERENCE_BATCH,
    SEGMENTATION_REFERENCE_LR, SHIPPED_SEGMENTATION,
};

/// The linear scaling rule's reference for classification (Section 3.1): η = 0.1 for a
/// batch of 256.
pub const LINEAR_SCALING_LR: f64 = 0.1;
/// The batch of [`LINEAR_SCALING_LR`].
pub const LINEAR_SCALING_BATCH: usize = 256;
use crate::TrainingError;

/// The learning-rate decay of a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum LrSchedule {
    /// Step decay at `lr_step_epochs` (Section 2.1).
    Step,
    /// Cosine decay (Section 5.1).
    Cosine,
    /// Polynomial decay per iteration with power [`POLY_POWER`] (GluonCV's segmentation
    /// recipes).
    Poly,
}

/// The exponent of [`LrSchedule::Poly`] (GluonCV's `--lr-scheduler poly`, power 0.9).
pub const POLY_POWER: f64 = 0.9;

/// Arithmetic precision of the forward and backward passes (Section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// f16 compute, f32 master weights, dynamic loss scaling.
    F16,
    /// bf16 compute, f32 master weights, no loss scaling.
    Bf16,
    /// Everything in f64: weights, compute, targets and optimiser. Slow; for checking
    /// whole training runs against a reference in f64 (`tests/train_parity.rs`), where f32
    /// rounding, amplified over a few dozen updates, would hide what is compared.
    F64,
}

/// Largest epoch count, batch and accumulation a recipe may ask for (a typo guard: a count
/// past it is an error, not a run that never ends).
pub const MAX_COUNT: usize = 1 << 20;
/// Most loader threads.
pub const MAX_WORKERS: usize = 256;
/// Most bytes one batch of input images may take (f32): what bounds the memory a setting
/// can make the loader allocate.
pub const MAX_BATCH_BYTES: u64 = 4 << 30;

/// Every setting of a classification run. Missing fields take the paper's baseline values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    /// Optimiser, schedule, batch, precision and seed: what every task shares.
    #[serde(flatten)]
    pub optim: Optimisation,
    /// Zero-γ (Section 3.1).
    pub zero_gamma: bool,
    /// Inception-V3's auxiliary classifier, its loss added with weight 0.4 (no effect on
    /// the other networks).
    pub aux_logits: bool,
    /// Initialisation of convolution weights: `xavier` (Section 2.1) or `kaiming`.
    pub weight_init: zoo::init::WeightInit,
    /// Label smoothing ε (Section 5.2: 0.1); 0 is off.
    pub label_smoothing: f64,
    /// Mixup α (Section 5.4: 0.2); 0 is off.
    pub mixup_alpha: f64,
    /// Teacher weights for knowledge distillation (Section 5.3); none is off.
    pub teacher: Option<String>,
    /// The teacher's architecture (default: the student's).
    pub teacher_model: Option<String>,
    /// Distillation temperature T (Section 5.3: 20).
    pub distill_temperature: f64,
    /// Data augmentation (Section 2.1).
    pub augment: AugmentConfig,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            optim: Optimisation::default(),
            zero_gamma: false,
            aux_logits: false,
            weight_init: zoo::init::WeightInit::Xavier,
            label_smoothing: 0.0,
            mixup_alpha: 0.0,
            teacher: None,
            teacher_model: None,
            distill_temperature: 20.0,
            augment: AugmentConfig::default(),
        }
    }
}

/// The recipes that ship with the binary.
pub const SHIPPED: [(&str, &str); 3] = [
    ("baseline", include_str!("../../../recipes/baseline.toml")),
    ("efficient", include_str!("../../../recipes/efficient.toml")),
    ("tricks", include_str!("../../../recipes/tricks.toml")),
];

impl Recipe {
    /// Parses and validates a recipe from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TrainingError> {
        parse_validated(text, origin, Self::validate)
    }

    /// A shipped recipe by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, TrainingError> {
        Self::parse(&recipe_text(name_or_path, &SHIPPED)?, name_or_path)
    }

    /// The recipe as TOML (what a run directory records).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// Checks every setting against its domain, and the settings against each other: the
    /// one place a recipe is validated, whether it came from a file, a shipped name or
    /// command-line flags. The error names the field, its value and its domain.
    pub fn validate(&self) -> Result<(), String> {
        self.optim.validate()?;
        let real = check_real;
        let ls = self.label_smoothing;
        real("label_smoothing", ls, (0.0..1.0).contains(&ls), "in [0, 1)")?;
        let a = self.mixup_alpha;
        real("mixup_alpha", a, a >= 0.0, "a finite number ≥ 0 (0: off)")?;
        let t = self.distill_temperature;
        real("distill_temperature", t, t > 0.0, "a finite number > 0")?;
        if self.mixup_alpha > 0.0 && self.optim.batch_size < 2 {
            return Err(
                "recipe: mixup pairs images within a batch: `batch_size` must be at least 2".into(),
            );
        }
        if let Some(t) = &self.teacher_model {
            zoo::models::ModelSpec::find(t)
                .map_err(|e| format!("recipe: `teacher_model` = {t}: {e}"))?;
        }
        self.augment.validate()?;
        let bytes = self.optim.batch_size as u128 * 3 * (self.augment.size as u128).pow(2) * 4;
        if bytes > MAX_BATCH_BYTES as u128 {
            return Err(format!(
                "recipe: a batch of {} images of {}x{} is {:.1} GiB of input alone (at most {} GiB): lower `batch_size` or `augment.size`",
                self.optim.batch_size,
                self.augment.size,
                self.augment.size,
                bytes as f64 / (1u64 << 30) as f64,
                MAX_BATCH_BYTES >> 30
            ));
        }
        Ok(())
    }

    /// The paper's tricks this recipe switches on, by the names model cards use: `linear_scaling`
    /// (no explicit `lr`), `warmup`, `zero_gamma`, `no_bias_decay`, `fp16`/`bf16` (Section 3),
    /// `cosine`, `label_smoothing`, `distillation`, `mixup` (Section 5).
    pub fn tricks(&self) -> Vec<&'static str> {
        let mut tricks = self.optim.tricks(true);
        let switches = [
            (self.zero_gamma, "zero_gamma"),
            (self.label_smoothing > 0.0, "label_smoothing"),
            (self.teacher.is_some(), "distillation"),
            (self.mixup_alpha > 0.0, "mixup"),
        ];
        tricks.extend(
            switches
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name)),
        );
        tricks
    }

    /// Images per optimiser update.
    pub fn effective_batch(&self) -> usize {
        self.optim.effective_batch()
    }

    /// The base learning rate: the recipe's, or the linear scaling rule's (0.1 per 256
    /// images, Section 3.1).
    pub fn base_lr(&self) -> f64 {
        self.optim.base_lr(LINEAR_SCALING_LR, LINEAR_SCALING_BATCH)
    }

    /// The learning-rate schedule for `updates_per_epoch` optimiser updates per epoch.
    pub fn schedule(&self, updates_per_epoch: usize) -> Schedule {
        self.optim.schedule(self.base_lr(), updates_per_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field out of its domain is refused, the error naming the field and the value
    /// (the flags of `tricks train` and a recipe file both end up here).
    #[test]
    fn every_field_out_of_its_domain_is_refused_by_name() {
        type Edit = fn(&mut Recipe);
        let cases: Vec<(&str, Edit)> = vec![
            ("epochs", |r| r.optim.epochs = 0),
            ("batch_size", |r| r.optim.batch_size = 0),
            ("batch_size", |r| r.optim.batch_size = usize::MAX),
            ("accumulate", |r| r.optim.accumulate = 0),
            ("lr", |r| r.optim.lr = Some(-1.0)),
            ("lr", |r| r.optim.lr = Some(f64::NAN)),
            ("lr", |r| r.optim.lr = Some(f64::INFINITY)),
            ("lr_step_epochs", |r| r.optim.lr_step_epochs = vec![5, 2]),
            ("lr_step_epochs", |r| r.optim.lr_step_epochs = vec![0, 2]),
            ("lr_step_factor", |r| r.optim.lr_step_factor = -5.0),
            ("lr_step_factor", |r| r.optim.lr_step_factor = f64::NAN),
            ("warmup_epochs", |r| r.optim.warmup_epochs = f64::NAN),
            ("warmup_epochs", |r| r.optim.warmup_epochs = -1.0),
            ("warmup_epochs", |r| r.optim.warmup_epochs = 1e9),
            ("momentum", |r| r.optim.momentum = 2.0),
            ("momentum", |r| r.optim.momentum = f64::NAN),
            ("weight_decay", |r| r.optim.weight_decay = -1.0),
            ("weight_decay", |r| r.optim.weight_decay = f64::NAN),
            ("label_smoothing", |r| r.label_smoothing = 1.0),
            ("label_smoothing", |r| r.label_smoothing = -0.1),
            ("label_smoothing", |r| r.label_smoothing = f64::NAN),
            ("mixup_alpha", |r| r.mixup_alpha = f64::NAN),
            ("mixup_alpha", |r| r.mixup_alpha = -1.0),
            ("distill_temperature", |r| r.distill_temperature = 0.0),
            ("workers", |r| r.optim.workers = 0),
            ("teacher_model", |r| {
                r.teacher_model = Some("resnet51".into())
            }),
            ("augment.size", |r| r.augment.size = 0),
            ("augment.size", |r| r.augment.size = 100_000),
            ("augment.crop_area", |r| r.augment.crop_area.0 = 2.0),
            ("augment.crop_area", |r| r.augment.crop_area.0 = f64::NAN),
            ("augment.crop_area", |r| r.augment.crop_area.0 = 0.0),
            ("augment.crop_ratio", |r| r.augment.crop_ratio = (2.0, 1.0)),
            ("augment.flip_prob", |r| r.augment.flip_prob = 2.0),
            ("augment.flip_prob", |r| r.augment.flip_prob = f64::NAN),
            ("augment.jitter", |r| r.augment.jitter = -1.0),
            ("augment.jitter", |r| r.augment.jitter = f64::NAN),
            ("augment.lighting_std", |r| r.augment.lighting_std = -1.0),
            ("augment.lighting_std", |r| {
                r.augment.lighting_std = f64::NAN
            }),
            ("augment.crop_fraction", |r| r.augment.crop_fraction = 0.0),
        ];
        for (field, edit) in cases {
            let mut r = Recipe::default();
            r.optim.epochs = 10;
            edit(&mut r);
            let err = r.validate().expect_err(field);
            assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
        }
        // A batch whose input alone would take more than MAX_BATCH_BYTES.
        let mut r = Recipe::default();
        r.augment.size = 4096;
        let err = r.validate().unwrap_err();
        assert!(err.contains("GiB of input alone"), "{err}");
        // The shipped recipes pass.
        for name in ["baseline", "efficient", "tricks"] {
            Recipe::load(name).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn a_recipe_file_with_nan_is_refused_before_anything_is_written() {
        let err = Recipe::parse("weight_decay = nan\n", "bad.toml").unwrap_err();
        assert!(err.to_string().contains("`weight_decay` = NaN"), "{err}");
    }

    #[test]
    fn shipped_recipes_name_their_tricks() {
        assert!(Recipe::load("baseline").unwrap().tricks().is_empty());
        let tricks = Recipe::load("tricks").unwrap().tricks();
        for t in [
            "cosine",
            "label_smoothing",
            "mixup",
            "zero_gamma",
            "no_bias_decay",
            "warmup",
        ] {
            assert!(tricks.contains(&t), "{t} missing from {tricks:?}");
        }
    }

    #[test]
    fn shipped_recipes_carry_the_papers_settings() {
        let baseline = Recipe::load("baseline").unwrap();
        assert_eq!(
            baseline,
            Recipe {
                optim: Optimisation {
                    lr: Some(0.1),
                    ..Optimisation::default()
                },
                ..Recipe::default()
            }
        );
        let efficient = Recipe::load("efficient").unwrap();
        assert_eq!(efficient.effective_batch(), 1024);
        assert!((efficient.base_lr() - 0.4).abs() < 1e-12);
        assert!(efficient.zero_gamma && efficient.optim.no_bias_decay);
        assert_eq!(efficient.optim.precision, Precision::F16);
        let tricks = Recipe::load("tricks").unwrap();
        assert_eq!(tricks.optim.lr_schedule, LrSchedule::Cosine);
        assert_eq!(
            (
                tricks.label_smoothing,
                tricks.mixup_alpha,
                tricks.distill_temperature
            ),
            (0.1, 0.2, 20.0)
        );
        // A schedule from the recipe: 5 warmup epochs of 10 updates.
        let s = efficient.schedule(10);
        assert_eq!(s.warmup_iters, 50);
        assert!((s.lr(25) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn bad_recipes_are_rejected_with_the_reason() {
        let err = Recipe::parse("epochs = 0", "x").unwrap_err().to_string();
        assert!(err.contains("`epochs` = 0"), "{err}");
        let err = Recipe::parse("label_smoothing = 1.5", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("label_smoothing"), "{err}");
        let err = Recipe::parse("lr_shedule = \"cosine\"", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
        let err = Recipe::load("nonexistent-recipe").unwrap_err().to_string();
        assert!(err.contains("baseline, efficient, tricks"), "{err}");
        let round_trip = Recipe::parse(&Recipe::load("tricks").unwrap().to_toml(), "y").unwrap();
        assert_eq!(round_trip, Recipe::load("tricks").unwrap());
    }
}
