//! The part of a recipe every task shares: the optimiser, the learning-rate schedule, the
//! precision, the batch and the seed. Classification ([`super::Recipe`]) and detection
//! ([`super::DetectionRecipe`]) embed it (flattened: its fields sit at the top level of the
//! TOML) and add their own.

use serde::{Deserialize, Serialize};

use super::{LrSchedule, Precision, MAX_COUNT, MAX_WORKERS};
use crate::schedule::{Decay, Schedule};

/// Optimiser, schedule and batch settings (Sections 2.1, 3 and 5.1). Missing fields take the
/// paper's classification baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Optimisation {
    /// Passes over the training set (paper: 120).
    pub epochs: usize,
    /// Images per forward pass (paper: 256).
    pub batch_size: usize,
    /// Forward passes whose gradients are summed per update; the effective batch is
    /// `batch_size × accumulate`.
    pub accumulate: usize,
    /// Learning rate after warmup; absent: the linear scaling rule on the effective batch
    /// (Section 3.1), from the task's reference rate.
    pub lr: Option<f64>,
    /// Step or cosine decay.
    pub lr_schedule: LrSchedule,
    /// Epochs at which step decay divides the rate (paper: 30, 60, 90).
    pub lr_step_epochs: Vec<usize>,
    /// The step decay's factor (paper: 0.1).
    pub lr_step_factor: f64,
    /// Epochs of linear warmup from 0 (Section 3.1: 5).
    pub warmup_epochs: f64,
    /// Momentum μ (paper: 0.9).
    pub momentum: f64,
    /// Nesterov's momentum (the paper's NAG, Section 2.1); `false`: plain momentum SGD
    /// (GluonCV's detection and segmentation scripts).
    pub nesterov: bool,
    /// Weight decay (paper: 1e-4).
    pub weight_decay: f64,
    /// No bias decay (Section 3.1).
    pub no_bias_decay: bool,
    /// f32, f16 or bf16 (Section 3.2).
    pub precision: Precision,
    /// Initial loss scale (Section 3.2: the loss is multiplied by it before the backward
    /// pass and the gradients divided by it; halved on an overflow, doubled after 2000 good
    /// updates); absent: 2¹⁶ in f16, no scaling otherwise. A power of two scales exactly.
    pub loss_scale: Option<f64>,
    /// Seed of initialisation, data order, augmentation and mixup.
    pub seed: u64,
    /// Decoding threads of the data loader.
    pub workers: usize,
}

impl Default for Optimisation {
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
            nesterov: true,
            weight_decay: 1e-4,
            no_bias_decay: false,
            precision: Precision::F32,
            loss_scale: None,
            seed: 0,
            workers: 2,
        }
    }
}

/// The error of a field outside its domain, naming both.
pub(crate) fn out_of_domain(field: &str, value: &dyn std::fmt::Display, domain: &str) -> String {
    format!("recipe: `{field}` = {value}: must be {domain}")
}

/// `Ok` when `v` is finite and `ok`, else the error naming `field`.
pub(crate) fn check_real(field: &str, v: f64, ok: bool, domain: &str) -> Result<(), String> {
    if v.is_finite() && ok {
        Ok(())
    } else {
        Err(out_of_domain(field, &v, domain))
    }
}

impl Optimisation {
    /// Checks every shared setting against its domain (the task's recipe checks the rest).
    pub fn validate(&self) -> Result<(), String> {
        for (field, v) in [
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("accumulate", self.accumulate),
        ] {
            if !(1..=MAX_COUNT).contains(&v) {
                return Err(out_of_domain(
                    field,
                    &v,
                    &format!("an integer in 1..={MAX_COUNT}"),
                ));
            }
        }
        if let Some(lr) = self.lr {
            check_real("lr", lr, lr > 0.0, "a finite number > 0")?;
        }
        if self.lr_step_epochs.windows(2).any(|w| w[0] >= w[1])
            || self.lr_step_epochs.first() == Some(&0)
        {
            return Err(out_of_domain(
                "lr_step_epochs",
                &format!("{:?}", self.lr_step_epochs),
                "strictly increasing epochs ≥ 1",
            ));
        }
        let f = self.lr_step_factor;
        check_real("lr_step_factor", f, f > 0.0 && f <= 1.0, "in (0, 1]")?;
        let w = self.warmup_epochs;
        check_real(
            "warmup_epochs",
            w,
            (0.0..=self.epochs as f64).contains(&w),
            &format!("in [0, epochs = {}]", self.epochs),
        )?;
        if let Some(s) = self.loss_scale {
            check_real("loss_scale", s, s >= 1.0, "a finite number ≥ 1")?;
        }
        let m = self.momentum;
        check_real("momentum", m, (0.0..1.0).contains(&m), "in [0, 1)")?;
        let wd = self.weight_decay;
        check_real("weight_decay", wd, wd >= 0.0, "a finite number ≥ 0")?;
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(out_of_domain(
                "workers",
                &self.workers,
                &format!("in 1..={MAX_WORKERS}"),
            ));
        }
        Ok(())
    }

    /// The optimiser's settings.
    pub fn nag(&self) -> crate::optim::NagConfig {
        crate::optim::NagConfig {
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            no_bias_decay: self.no_bias_decay,
        }
    }

    /// Images per optimiser update.
    pub fn effective_batch(&self) -> usize {
        self.batch_size * self.accumulate
    }

    /// The base learning rate: the recipe's, or the linear scaling rule (Section 3.1) from
    /// `reference_lr` per `reference_batch` images of effective batch.
    pub fn base_lr(&self, reference_lr: f64, reference_batch: usize) -> f64 {
        self.lr.unwrap_or_else(|| {
            reference_lr * self.effective_batch() as f64 / reference_batch as f64
        })
    }

    /// The learning-rate schedule from `base_lr`, for `updates_per_epoch` optimiser updates
    /// per epoch.
    pub fn schedule(&self, base_lr: f64, updates_per_epoch: usize) -> Schedule {
        let decay = match self.lr_schedule {
            LrSchedule::Step => Decay::Step {
                epochs: self.lr_step_epochs.clone(),
                factor: self.lr_step_factor,
            },
            LrSchedule::Cosine => Decay::Cosine,
            LrSchedule::Poly => Decay::Poly {
                power: super::POLY_POWER,
            },
        };
        Schedule {
            base_lr,
            warmup_iters: (self.warmup_epochs * updates_per_epoch as f64).round() as usize,
            iters_per_epoch: updates_per_epoch,
            total_iters: self.epochs * updates_per_epoch,
            decay,
        }
    }

    /// The shared tricks switched on, by the names model cards use.
    pub fn tricks(&self, linear_scaling: bool) -> Vec<&'static str> {
        [
            (linear_scaling && self.lr.is_none(), "linear_scaling"),
            (self.warmup_epochs > 0.0, "warmup"),
            (self.no_bias_decay, "no_bias_decay"),
            (self.precision == Precision::F16, "fp16"),
            (self.precision == Precision::Bf16, "bf16"),
            (self.lr_schedule == LrSchedule::Cosine, "cosine"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Parses a recipe of type `T` from TOML, refusing keys `T` does not have. (`serde`'s
/// `deny_unknown_fields` does not work with flattened fields, so the check compares the
/// keys given with those of the parsed recipe written back.)
pub(crate) fn parse_toml<T>(text: &str, origin: &str) -> Result<T, String>
where
    T: serde::de::DeserializeOwned + Serialize,
{
    let given: toml::Table = toml::from_str(text).map_err(|e| format!("recipe {origin}: {e}"))?;
    let parsed: T = given
        .clone()
        .try_into()
        .map_err(|e| format!("recipe {origin}: {e}"))?;
    let known = toml::Table::try_from(&parsed).map_err(|e| format!("recipe {origin}: {e}"))?;
    if let Some(key) = unknown_key(&given, &known, "") {
        return Err(format!("recipe {origin}: unknown field `{key}`"));
    }
    Ok(parsed)
}

/// The first key of `given` (recursively, dotted) that `known` lacks.
fn unknown_key(given: &toml::Table, known: &toml::Table, prefix: &str) -> Option<String> {
    for (key, value) in given {
        let path = format!("{prefix}{key}");
        match (value, known.get(key)) {
            (_, None) => return Some(path),
            (toml::Value::Table(g), Some(toml::Value::Table(k))) => {
                if let Some(found) = unknown_key(g, k, &format!("{path}.")) {
                    return Some(found);
                }
            }
            _ => {}
        }
    }
    None
}

/// Parses a recipe with [`parse_toml`] and checks it with `validate`; errors name `origin`.
pub(crate) fn parse_validated<T>(
    text: &str,
    origin: &str,
    validate: impl Fn(&T) -> Result<(), String>,
) -> Result<T, crate::TrainingError>
where
    T: serde::de::DeserializeOwned + Serialize,
{
    let recipe: T = parse_toml(text, origin).map_err(crate::TrainingError::Config)?;
    validate(&recipe).map_err(|e| crate::TrainingError::Config(format!("recipe {origin}: {e}")))?;
    Ok(recipe)
}

/// The text of a shipped recipe by name, or of a TOML file by path, with its origin.
pub(crate) fn recipe_text(
    name_or_path: &str,
    shipped: &[(&str, &str)],
) -> Result<String, crate::TrainingError> {
    if let Some((_, text)) = shipped.iter().find(|(n, _)| *n == name_or_path) {
        return Ok(text.to_string());
    }
    std::fs::read_to_string(name_or_path).map_err(|e| {
        let names: Vec<&str> = shipped.iter().map(|(n, _)| *n).collect();
        crate::TrainingError::Config(format!(
            "recipe `{name_or_path}` is neither shipped ({}) nor a readable file: {e}",
            names.join(", ")
        ))
    })
}
