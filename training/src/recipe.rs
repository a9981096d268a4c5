//! Recipes: the settings of a training run as plain TOML, with the paper's defaults.
//!
//! Three ship with the binary (`recipes/*.toml`): `baseline` (Section 2.1), `efficient`
//! (Section 3) and `tricks` (Section 5). Any field may be overridden from the command line.

use serde::{Deserialize, Serialize};

use crate::data::augment::AugmentConfig;
use crate::schedule::{linear_scaling, Decay, Schedule};
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
}

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
}

/// Largest epoch count, batch and accumulation a recipe may ask for (a typo guard: a count
/// past it is an error, not a run that never ends).
pub const MAX_COUNT: usize = 1 << 20;
/// Most loader threads.
pub const MAX_WORKERS: usize = 256;
/// Most bytes one batch of input images may take (f32): what bounds the memory a setting
/// can make the loader allocate.
pub const MAX_BATCH_BYTES: u64 = 4 << 30;

/// Every setting of a training run. Missing fields take the paper's baseline values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Recipe {
    /// Passes over the training set (paper: 120).
    pub epochs: usize,
    /// Images per forward pass (paper: 256).
    pub batch_size: usize,
    /// Forward passes whose gradients are summed per update; the effective batch is
    /// `batch_size × accumulate`.
    pub accumulate: usize,
    /// Learning rate after warmup; absent: the linear scaling rule on the effective batch.
    pub lr: Option<f64>,
    /// Step or cosine decay.
    pub lr_schedule: LrSchedule,
    /// Epochs at which step decay divides the rate (paper: 30, 60, 90).
    pub lr_step_epochs: Vec<usize>,
    /// The step decay's factor (paper: 0.1).
    pub lr_step_factor: f64,
    /// Epochs of linear warmup from 0 (Section 3.1: 5).
    pub warmup_epochs: f64,
    /// Nesterov momentum (paper: 0.9).
    pub momentum: f64,
    /// Weight decay (paper: 1e-4).
    pub weight_decay: f64,
    /// No bias decay (Section 3.1).
    pub no_bias_decay: bool,
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
    /// f32, f16 or bf16 (Section 3.2).
    pub precision: Precision,
    /// Data augmentation (Section 2.1).
    pub augment: AugmentConfig,
    /// Seed of initialisation, data order, augmentation and mixup.
    pub seed: u64,
    /// Decoding threads of the data loader.
    pub workers: usize,
}

impl Default for Recipe {
    fn default() -> Self {
        Self {
            epochs: 120,
            batch_size: 256,
            accumulate: 1,
            lr: None,
            lr_schedule: LrSchedule::Step,
            lr_step_epochs: vec![30, 60, 90],
            lr_step_factor: 0.1,
            warmup_epochs: 0.0,
            momentum: 0.9,
            weight_decay: 1e-4,
            no_bias_decay: false,
            zero_gamma: false,
            aux_logits: false,
            weight_init: zoo::init::WeightInit::Xavier,
            label_smoothing: 0.0,
            mixup_alpha: 0.0,
            teacher: None,
            teacher_model: None,
            distill_temperature: 20.0,
            precision: Precision::F32,
            augment: AugmentConfig::default(),
            seed: 0,
            workers: 2,
        }
    }
}

/// The recipes that ship with the binary.
pub const SHIPPED: [(&str, &str); 3] = [
    ("baseline", include_str!("../../recipes/baseline.toml")),
    ("efficient", include_str!("../../recipes/efficient.toml")),
    ("tricks", include_str!("../../recipes/tricks.toml")),
];

impl Recipe {
    /// Parses a recipe from TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TrainingError> {
        let recipe: Recipe = toml::from_str(text)
            .map_err(|e| TrainingError::Config(format!("recipe {origin}: {e}")))?;
        recipe
            .validate()
            .map_err(|e| TrainingError::Config(format!("recipe {origin}: {e}")))?;
        Ok(recipe)
    }

    /// A shipped recipe by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self, TrainingError> {
        if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text, name_or_path);
        }
        let path = std::path::Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
            TrainingError::Config(format!(
                "recipe `{name_or_path}` is neither shipped ({}) nor a readable file: {e}",
                names.join(", ")
            ))
        })?;
        Self::parse(&text, name_or_path)
    }

    /// The recipe as TOML (what a run directory records).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a recipe always serialises")
    }

    /// Checks every setting against its domain, and the settings against each other: the
    /// one place a recipe is validated, whether it came from a file, a shipped name or
    /// command-line flags. The error names the field, its value and its domain.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |field: &str, value: &dyn std::fmt::Display, domain: &str| {
            Err(format!("recipe: `{field}` = {value}: must be {domain}"))
        };
        let real = |field: &str, v: f64, ok: bool, domain: &str| -> Result<(), String> {
            if v.is_finite() && ok {
                Ok(())
            } else {
                bad(field, &v, domain)
            }
        };
        for (field, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("accumulate", self.accumulate),
        ] {
            if !(1..=MAX_COUNT).contains(&v) {
                return bad(field, &v, &format!("an integer in 1..={MAX_COUNT}"));
            }
        }
        if let Some(lr) = self.lr {
            real("lr", lr, lr > 0.0, "a finite number > 0")?;
        }
        if self.lr_step_epochs.windows(2).any(|w| w[0] >= w[1])
            || self.lr_step_epochs.first() == Some(&0)
        {
            return bad(
                "lr_step_epochs",
                &format!("{:?}", self.lr_step_epochs),
                "strictly increasing epochs ≥ 1",
            );
        }
        let f = self.lr_step_factor;
        real("lr_step_factor", f, f > 0.0 && f <= 1.0, "in (0, 1]")?;
        let w = self.warmup_epochs;
        real(
            "warmup_epochs",
            w,
            (0.0..=self.epochs as f64).contains(&w),
            &format!("in [0, epochs = {}]", self.epochs),
        )?;
        let m = self.momentum;
        real("momentum", m, (0.0..1.0).contains(&m), "in [0, 1)")?;
        let wd = self.weight_decay;
        real("weight_decay", wd, wd >= 0.0, "a finite number ≥ 0")?;
        let ls = self.label_smoothing;
        real("label_smoothing", ls, (0.0..1.0).contains(&ls), "in [0, 1)")?;
        let a = self.mixup_alpha;
        real("mixup_alpha", a, a >= 0.0, "a finite number ≥ 0 (0: off)")?;
        let t = self.distill_temperature;
        real("distill_temperature", t, t > 0.0, "a finite number > 0")?;
        if self.mixup_alpha > 0.0 && self.batch_size < 2 {
            return Err(
                "recipe: mixup pairs images within a batch: `batch_size` must be at least 2".into(),
            );
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return bad("workers", &self.workers, &format!("in 1..={MAX_WORKERS}"));
        }
        if let Some(t) = &self.teacher_model {
            zoo::models::ModelSpec::find(t)
                .map_err(|e| format!("recipe: `teacher_model` = {t}: {e}"))?;
        }
        self.augment.validate()?;
        let bytes = self.batch_size as u128 * 3 * (self.augment.size as u128).pow(2) * 4;
        if bytes > MAX_BATCH_BYTES as u128 {
            return Err(format!(
                "recipe: a batch of {} images of {}x{} is {:.1} GiB of input alone (at most {} GiB): lower `batch_size` or `augment.size`",
                self.batch_size,
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
        let switches = [
            (self.lr.is_none(), "linear_scaling"),
            (self.warmup_epochs > 0.0, "warmup"),
            (self.zero_gamma, "zero_gamma"),
            (self.no_bias_decay, "no_bias_decay"),
            (self.precision == Precision::F16, "fp16"),
            (self.precision == Precision::Bf16, "bf16"),
            (self.lr_schedule == LrSchedule::Cosine, "cosine"),
            (self.label_smoothing > 0.0, "label_smoothing"),
            (self.teacher.is_some(), "distillation"),
            (self.mixup_alpha > 0.0, "mixup"),
        ];
        switches
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect()
    }

    /// Images per optimiser update.
    pub fn effective_batch(&self) -> usize {
        self.batch_size * self.accumulate
    }

    /// The base learning rate: the recipe's, or the linear scaling rule's.
    pub fn base_lr(&self) -> f64 {
        self.lr
            .unwrap_or_else(|| linear_scaling(self.effective_batch()))
    }

    /// The learning-rate schedule for `updates_per_epoch` optimiser updates per epoch.
    pub fn schedule(&self, updates_per_epoch: usize) -> Schedule {
        let decay = match self.lr_schedule {
            LrSchedule::Step => Decay::Step {
                epochs: self.lr_step_epochs.clone(),
                factor: self.lr_step_factor,
            },
            LrSchedule::Cosine => Decay::Cosine,
        };
        Schedule {
            base_lr: self.base_lr(),
            warmup_iters: (self.warmup_epochs * updates_per_epoch as f64).round() as usize,
            iters_per_epoch: updates_per_epoch,
            total_iters: self.epochs * updates_per_epoch,
            decay,
        }
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
            ("epochs", |r| r.epochs = 0),
            ("batch_size", |r| r.batch_size = 0),
            ("batch_size", |r| r.batch_size = usize::MAX),
            ("accumulate", |r| r.accumulate = 0),
            ("lr", |r| r.lr = Some(-1.0)),
            ("lr", |r| r.lr = Some(f64::NAN)),
            ("lr", |r| r.lr = Some(f64::INFINITY)),
            ("lr_step_epochs", |r| r.lr_step_epochs = vec![5, 2]),
            ("lr_step_epochs", |r| r.lr_step_epochs = vec![0, 2]),
            ("lr_step_factor", |r| r.lr_step_factor = -5.0),
            ("lr_step_factor", |r| r.lr_step_factor = f64::NAN),
            ("warmup_epochs", |r| r.warmup_epochs = f64::NAN),
            ("warmup_epochs", |r| r.warmup_epochs = -1.0),
            ("warmup_epochs", |r| r.warmup_epochs = 1e9),
            ("momentum", |r| r.momentum = 2.0),
            ("momentum", |r| r.momentum = f64::NAN),
            ("weight_decay", |r| r.weight_decay = -1.0),
            ("weight_decay", |r| r.weight_decay = f64::NAN),
            ("label_smoothing", |r| r.label_smoothing = 1.0),
            ("label_smoothing", |r| r.label_smoothing = -0.1),
            ("label_smoothing", |r| r.label_smoothing = f64::NAN),
            ("mixup_alpha", |r| r.mixup_alpha = f64::NAN),
            ("mixup_alpha", |r| r.mixup_alpha = -1.0),
            ("distill_temperature", |r| r.distill_temperature = 0.0),
            ("workers", |r| r.workers = 0),
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
            let mut r = Recipe {
                epochs: 10,
                ..Recipe::default()
            };
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
                lr: Some(0.1),
                ..Recipe::default()
            }
        );
        let efficient = Recipe::load("efficient").unwrap();
        assert_eq!(efficient.effective_batch(), 1024);
        assert!((efficient.base_lr() - 0.4).abs() < 1e-12);
        assert!(efficient.zero_gamma && efficient.no_bias_decay);
        assert_eq!(efficient.precision, Precision::F16);
        let tricks = Recipe::load("tricks").unwrap();
        assert_eq!(tricks.lr_schedule, LrSchedule::Cosine);
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
