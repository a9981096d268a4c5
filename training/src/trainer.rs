//! The training loop: a model from the zoo, a recipe, a folder of images, a run directory.
//!
//! A run directory holds `run.json` (what was asked), `recipe.toml` (the effective recipe),
//! `classes.json`, `metrics.jsonl` (one line per epoch), `checkpoint.safetensors` (everything
//! needed to resume) and `model.safetensors` (the weights alone, in timm's names). Both
//! safetensors files are rewritten atomically after every epoch; resuming continues from the
//! last one, and because the data order, augmentation and mixup draws depend only on (seed,
//! epoch, batch), the final weights equal those of an uninterrupted run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};
use zoo::models::{create_model_with, Model, ModelSpec};

use crate::data::{ImageFolder, Loader, LoaderConfig};
use crate::loss::{distillation_loss, mixup, smoothed_targets, soft_cross_entropy};
use crate::optim::{Nag, NagConfig};
use crate::precision::{all_finite, LossScaler};
use crate::recipe::{Precision, Recipe};
use crate::schedule::Schedule;
use crate::TrainingError;

/// What a run was asked to do (saved as `run.json`, read back by `--resume`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Architecture name.
    pub model: String,
    /// Dataset root in the ImageNet layout.
    pub data: PathBuf,
    /// Pretrained weights to start from (the classifier is replaced if its size differs).
    pub init: Option<PathBuf>,
    /// The zoo entry (`name@version`) those weights came from, recorded as the parent of
    /// checkpoints published from this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Stop at the first unreadable image.
    pub strict: bool,
    /// The recipe.
    pub recipe: Recipe,
}

/// One epoch's numbers, as written to `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss (with the recipe's smoothing, mixup and distillation).
    pub train_loss: f64,
    /// Mean validation cross-entropy against the true labels.
    pub val_loss: f64,
    /// Validation top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Validation top-5 accuracy in [0, 1].
    pub top5: f64,
    /// Learning rate of the epoch's last update.
    pub lr: f64,
    /// Training throughput.
    pub img_per_s: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Updates skipped for overflow (f16) in the epoch.
    pub skipped_updates: usize,
    /// Unreadable images skipped so far.
    pub skipped_images: usize,
    /// Loss scale at the end of the epoch.
    pub loss_scale: f64,
}

/// Where a run is, reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 0-based epoch.
    pub epoch: usize,
    /// Epochs in the run.
    pub epochs: usize,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches in an epoch.
    pub batches: usize,
    /// Running mean of the epoch's training loss.
    pub loss: f64,
    /// Current learning rate.
    pub lr: f64,
    /// Training images per second in this epoch.
    pub img_per_s: f64,
}

/// Validation numbers of a model on a dataset split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy in [0, 1].
    pub top1: f64,
    /// Top-5 accuracy in [0, 1].
    pub top5: f64,
    /// Mean over images of the largest logit minus the mean of the others (Section 5.2).
    pub logit_gap_mean: f64,
    /// Standard deviation of that gap.
    pub logit_gap_std: f64,
    /// Images evaluated.
    pub images: usize,
}

/// A model in evaluation mode on `loader`'s batches: loss, top-1/top-5 and the logit-gap
/// statistic of Section 5.2. `device` is where `net` lives; batches are moved there.
pub fn evaluate(
    net: &dyn zoo::Classifier,
    loader: &Loader,
    dtype: DType,
    device: &Device,
) -> Result<Evaluation, TrainingError> {
    let mut acc = eval::TopK::default();
    let (mut loss_sum, mut gaps) = (0.0, Vec::new());
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let images = batch.images.to_device(device)?;
        let logits = net
            .forward_t(&images.to_dtype(dtype)?, false)?
            .to_dtype(DType::F32)?;
        let classes = logits.dim(1)?;
        let labels = Tensor::new(batch.labels.as_slice(), logits.device())?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?.to_scalar::<f32>()? as f64;
        loss_sum += loss * batch.labels.len() as f64;
        let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let labels_usize: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        acc.update(&flat, classes, &labels_usize)
            .map_err(|e| TrainingError::Config(e.to_string()))?;
        for row in flat.chunks(classes) {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let rest = (row.iter().sum::<f32>() - max) / (classes - 1).max(1) as f32;
            gaps.push((max - rest) as f64);
        }
    }
    let n = acc.total.max(1) as f64;
    let mean = gaps.iter().sum::<f64>() / n;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
    Ok(Evaluation {
        loss: loss_sum / n,
        top1: acc.top1_accuracy(),
        top5: acc.top5_accuracy(),
        logit_gap_mean: mean,
        logit_gap_std: var.sqrt(),
        images: acc.total,
    })
}

/// A run being trained.
pub struct Trainer {
    dir: PathBuf,
    spec: RunSpec,
    model: Model,
    /// The distillation teacher, frozen (Section 5.4).
    teacher: Option<Box<dyn zoo::Classifier>>,
    nag: Nag,
    scaler: LossScaler,
    /// Where the model, the optimiser state and each batch live.
    device: Device,
    schedule: Schedule,
    train: Loader,
    val: Loader,
    classes: usize,
    epochs_done: usize,
}

fn io(path: &Path, e: std::io::Error) -> TrainingError {
    TrainingError::data(path, e)
}

fn write_atomic(path: &Path, text: &str) -> Result<(), TrainingError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

impl Trainer {
    /// Starts a new run in `dir` (which must not hold one already), training on `device`.
    pub fn create(dir: &Path, spec: RunSpec, device: &Device) -> Result<Self, TrainingError> {
        spec.recipe.validate().map_err(TrainingError::Config)?;
        if dir.join("run.json").exists() {
            return Err(TrainingError::data(
                dir,
                "already holds a run: use --resume to continue it",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let trainer = Self::build(dir, spec, device)?;
        write_atomic(
            &dir.join("run.json"),
            &serde_json::to_string_pretty(&trainer.spec).expect("serialisable"),
        )?;
        write_atomic(&dir.join("recipe.toml"), &trainer.spec.recipe.to_toml())?;
        std::fs::write(dir.join("metrics.jsonl"), "").map_err(|e| io(dir, e))?;
        Ok(trainer)
    }

    /// Reopens the run in `dir` at its last checkpoint, on `device` (not necessarily the
    /// one it started on: checkpoints are device-independent).
    pub fn resume(dir: &Path, device: &Device) -> Result<Self, TrainingError> {
        let run = dir.join("run.json");
        let text = std::fs::read_to_string(&run).map_err(|e| io(&run, e))?;
        let spec: RunSpec =
            serde_json::from_str(&text).map_err(|e| TrainingError::data(&run, e))?;
        let mut trainer = Self::build(dir, spec, device)?;
        let ckpt = dir.join("checkpoint.safetensors");
        if ckpt.exists() {
            trainer.epochs_done = crate::checkpoint::load(
                &ckpt,
                &trainer.model.vars,
                &mut trainer.nag,
                &mut trainer.scaler,
            )?;
        } else if let Some(init) = &trainer.spec.init {
            // Killed before the first checkpoint: start over, as `create` did.
            zoo::weights::load_for_finetuning(
                &trainer.model.vars,
                init,
                &trainer.spec.model,
                trainer.model.spec.classifier_name(),
            )?;
        }
        // Drop metrics of epochs that will be run again.
        let metrics = dir.join("metrics.jsonl");
        let kept: String = std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<EpochMetrics>(l)
                    .is_ok_and(|m| m.epoch <= trainer.epochs_done)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&metrics, &kept)?;
        Ok(trainer)
    }

    fn build(dir: &Path, spec: RunSpec, device: &Device) -> Result<Self, TrainingError> {
        let r = &spec.recipe;
        let classes = ImageFolder::class_names(&spec.data)?;
        let train_set = ImageFolder::open(&spec.data, "train", &classes)?;
        let val_set = ImageFolder::open(&spec.data, "val", &classes)?;
        if train_set.samples.len() < r.batch_size {
            return Err(TrainingError::Config(format!(
                "{} training images are fewer than one batch of {}",
                train_set.samples.len(),
                r.batch_size
            )));
        }
        let loader_cfg = LoaderConfig {
            batch_size: r.batch_size,
            train: true,
            augment: r.augment.clone(),
            seed: r.seed,
            workers: r.workers,
            prefetch: 2,
            strict: spec.strict,
        };
        let train = Loader::new(train_set.samples, loader_cfg.clone())?;
        let val = Loader::new(
            val_set.samples,
            LoaderConfig {
                train: false,
                ..loader_cfg
            },
        )?;

        let model_spec = ModelSpec::find(&spec.model)?
            .with_num_classes(classes.len())
            .with_zero_gamma(r.zero_gamma)
            .with_aux_logits(r.aux_logits);
        let model = create_model_with(&model_spec, device, r.seed, r.weight_init)?;
        if let Some(init) = &spec.init {
            zoo::weights::load_for_finetuning(
                &model.vars,
                init,
                &spec.model,
                model_spec.classifier_name(),
            )?;
        }
        let teacher = match &r.teacher {
            Some(path) => {
                let arch = r
                    .teacher_model
                    .clone()
                    .unwrap_or_else(|| spec.model.clone());
                Some(zoo::models::load_pretrained_on(&arch, Path::new(path), device)?.frozen()?)
            }
            None => None,
        };
        let nag = Nag::new(
            &model.vars,
            NagConfig {
                momentum: r.momentum,
                weight_decay: r.weight_decay,
                no_bias_decay: r.no_bias_decay,
            },
        );
        let updates_per_epoch = (train.batches_per_epoch() / r.accumulate).max(1);
        std::fs::write(
            dir.join("classes.json"),
            serde_json::to_string(&classes).expect("serialisable"),
        )
        .map_err(|e| io(dir, e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            scaler: LossScaler::new(r.precision),
            schedule: r.schedule(updates_per_epoch),
            classes: classes.len(),
            spec,
            model,
            teacher,
            nag,
            train,
            val,
            epochs_done: 0,
            device: device.clone(),
        })
    }

    /// Epochs already completed (non-zero after a resume).
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The learning-rate schedule, by optimiser update.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Trains the remaining epochs, calling `progress` after every batch and `on_epoch` after
    /// every epoch (whose checkpoint is then on disk).
    pub fn run(
        &mut self,
        progress: &mut dyn FnMut(Progress),
        on_epoch: &mut dyn FnMut(&EpochMetrics),
    ) -> Result<Vec<EpochMetrics>, TrainingError> {
        let mut all = Vec::new();
        for epoch in self.epochs_done..self.spec.recipe.epochs {
            let m = self.train_epoch(epoch, progress)?;
            let line = serde_json::to_string(&m).expect("serialisable");
            let metrics = self.dir.join("metrics.jsonl");
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&metrics)
                .map_err(|e| io(&metrics, e))?;
            writeln!(f, "{line}").map_err(|e| io(&metrics, e))?;
            crate::checkpoint::save(
                &self.dir.join("checkpoint.safetensors"),
                &self.model.vars,
                &self.nag,
                &self.scaler,
                epoch + 1,
            )?;
            zoo::weights::save_weights(&self.model.vars, &self.dir.join("model.safetensors"))?;
            self.epochs_done = epoch + 1;
            on_epoch(&m);
            all.push(m);
        }
        Ok(all)
    }

    fn train_epoch(
        &mut self,
        epoch: usize,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<EpochMetrics, TrainingError> {
        let r = self.spec.recipe.clone();
        let dtype = r.precision.compute_dtype();
        let start = Instant::now();
        let batches = self.train.batches_per_epoch();
        let updates_per_epoch = self.schedule.iters_per_epoch;
        let (mut loss_sum, mut images, mut skipped, mut lr) = (0.0, 0usize, 0usize, 0.0);
        let mut pending: Vec<Option<Tensor>> = Vec::new();
        for (b, batch) in self.train.epoch(epoch, 0).into_iter().enumerate() {
            let batch = batch?;
            let micro = b % r.accumulate;
            let update =
                (epoch * updates_per_epoch + b / r.accumulate).min(self.schedule.total_iters);
            lr = self.schedule.lr(update);
            let mut targets =
                smoothed_targets(&batch.labels, self.classes, r.label_smoothing, &self.device)?;
            let mut x = batch.images.to_device(&self.device)?;
            if r.mixup_alpha > 0.0 {
                let seed =
                    r.seed ^ ((epoch as u64) << 40 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let beta = Beta::new(r.mixup_alpha, r.mixup_alpha)
                    .map_err(|e| TrainingError::Config(e.to_string()))?;
                let lambda = beta.sample(&mut ChaCha8Rng::seed_from_u64(seed));
                (x, targets) = mixup(&x, &targets, lambda)?;
            }
            let (logits, aux) = self.model.net.forward_with_aux(&x.to_dtype(dtype)?, true)?;
            let logits = logits.to_dtype(DType::F32)?;
            let loss = match &self.teacher {
                // The teacher sees the same (mixed) images (Section 5.4).
                Some(t) => distillation_loss(
                    &logits,
                    &targets,
                    &t.forward_t(&x, false)?,
                    r.distill_temperature,
                )?,
                None => soft_cross_entropy(&logits, &targets)?,
            };
            // Inception-V3's auxiliary classifier learns the same targets, weighted 0.4.
            let loss = match aux {
                Some(aux) => {
                    let aux_loss = soft_cross_entropy(&aux.to_dtype(DType::F32)?, &targets)?;
                    (loss + (aux_loss * zoo::inception::AUX_LOSS_WEIGHT)?)?
                }
                None => loss,
            };
            let value = loss.to_scalar::<f32>()? as f64;
            if !value.is_finite() && r.precision != Precision::F16 {
                return Err(TrainingError::Config(format!(
                    "the loss became {value} in epoch {} batch {b}; the checkpoint of epoch {} is left as it was",
                    epoch + 1,
                    epoch
                )));
            }
            let grads = (loss * (self.scaler.scale / r.accumulate as f64))?.backward()?;
            let grads = self.nag.gradients(&grads);
            pending = if pending.is_empty() {
                grads
            } else {
                pending
                    .iter()
                    .zip(grads)
                    .map(|(a, g)| match (a, g) {
                        (Some(a), Some(g)) => Ok(Some((a + g)?)),
                        (a, g) => Ok(a.clone().or(g)),
                    })
                    .collect::<Result<Vec<_>, candle_core::Error>>()?
            };
            if micro + 1 == r.accumulate {
                let unscaled = pending
                    .drain(..)
                    .map(|g| g.map(|g| g * (1.0 / self.scaler.scale)).transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                let finite = value.is_finite() && all_finite(&unscaled)?;
                if self.scaler.update(finite) {
                    self.nag.apply(&unscaled, lr)?;
                } else if r.precision == Precision::F16 {
                    skipped += 1;
                } else {
                    return Err(TrainingError::Config(format!(
                        "gradients became non-finite in epoch {} batch {b}",
                        epoch + 1
                    )));
                }
            }
            if value.is_finite() {
                loss_sum += value;
            }
            images += batch.labels.len();
            progress(Progress {
                epoch,
                epochs: r.epochs,
                batch: b + 1,
                batches,
                loss: loss_sum / (b + 1) as f64,
                lr,
                img_per_s: images as f64 / start.elapsed().as_secs_f64(),
            });
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let eval = evaluate(
            self.model.frozen()?.as_ref(),
            &self.val,
            dtype,
            &self.device,
        )?;
        Ok(EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / batches.max(1) as f64,
            val_loss: eval.loss,
            top1: eval.top1,
            top5: eval.top5,
            lr,
            img_per_s: images as f64 / train_seconds,
            seconds: start.elapsed().as_secs_f64(),
            skipped_updates: skipped,
            skipped_images: self.train.skips().skipped.len() + self.val.skips().skipped.len(),
            loss_scale: self.scaler.scale,
        })
    }

    /// Messages for the images skipped so far.
    pub fn skipped_images(&self) -> Vec<String> {
        let mut all = self.train.skips().skipped;
        all.extend(self.val.skips().skipped);
        all
    }
}
