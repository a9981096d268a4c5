//! The training loop: a model from the zoo, a recipe, a folder of images, a run directory
//! ([`RunDir`], which owns the directory's files and its lock).
//!
//! After every epoch the metrics line is appended, then the checkpoint and the weights are
//! replaced atomically. Resuming continues from the checkpoint (rewriting
//! `model.safetensors` from it, so that the two agree whatever point a kill interrupted),
//! and because the data order, augmentation and mixup draws depend only on (seed, epoch,
//! batch), the final weights equal those of an uninterrupted run bit for bit.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use zoo::models::{create_model_with, Model, ModelSpec};

use crate::data::{ImageFolder, Loader, LoaderConfig};
use crate::loss::{distillation_loss, mixup, smoothed_targets, soft_cross_entropy};
use crate::optim::{Nag, NagConfig};
use crate::precision::{all_finite, LossScaler};
use crate::recipe::Precision;
use crate::run_dir::RunDir;
pub use crate::run_dir::{EpochMetrics, RunSpec};
use crate::schedule::Schedule;
use crate::TrainingError;

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
    run: RunDir,
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
    /// Resumed without a checkpoint: started again from epoch 0.
    restarted: bool,
}

impl Trainer {
    /// Starts a new run in `dir` (which must not hold one already), training on `device`.
    pub fn create(dir: &Path, spec: RunSpec, device: &Device) -> Result<Self, TrainingError> {
        spec.recipe.validate().map_err(TrainingError::Config)?;
        let run = RunDir::create(dir)?;
        let trainer = Self::build(run, spec, device)?;
        trainer.run.start(&trainer.spec)?;
        Ok(trainer)
    }

    /// Reopens the run in `dir` at its last checkpoint, on `device` (not necessarily the
    /// one it started on: checkpoints are device-independent). A run killed before its
    /// first checkpoint starts again from epoch 0 ([`Self::restarted`] says so).
    pub fn resume(dir: &Path, device: &Device) -> Result<Self, TrainingError> {
        let run = RunDir::resume(dir)?;
        let spec = run.spec()?;
        spec.recipe.validate().map_err(|e| {
            TrainingError::data(&run.path(RunDir::SPEC), format!("cannot be resumed: {e}"))
        })?;
        let mut trainer = Self::build(run, spec, device)?;
        let ckpt = trainer.run.path(RunDir::CHECKPOINT);
        if ckpt.exists() {
            trainer.epochs_done = crate::checkpoint::load(
                &ckpt,
                &trainer.model.vars,
                &mut trainer.nag,
                &mut trainer.scaler,
            )?;
            // A kill between the checkpoint and the weights can leave the weights an epoch
            // behind (or missing): they are rewritten from the checkpoint.
            zoo::weights::save_weights(&trainer.model.vars, &trainer.run.path(RunDir::MODEL))?;
        } else {
            trainer.restarted = true;
        }
        // Drop metrics of epochs that will be run again.
        trainer.run.truncate_metrics(trainer.epochs_done)?;
        Ok(trainer)
    }

    fn build(run: RunDir, spec: RunSpec, device: &Device) -> Result<Self, TrainingError> {
        let r = &spec.recipe;
        let classes = ImageFolder::class_names(&spec.data)?;
        if classes.len() < 2 {
            return Err(TrainingError::data(
                &spec.data.join("train"),
                format!(
                    "holds {} class folder ({}): a classifier needs at least two",
                    classes.len(),
                    classes.join(", ")
                ),
            ));
        }
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
                let teacher = zoo::models::load_pretrained_on(&arch, Path::new(path), device)?;
                let teacher_classes = teacher.spec.num_classes();
                if teacher_classes != classes.len() {
                    return Err(TrainingError::Config(format!(
                        "the distillation teacher {path} has {teacher_classes} classes, the data {} ({}): distillation needs the same classes",
                        classes.len(),
                        spec.data.display()
                    )));
                }
                Some(teacher.frozen()?)
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
        run.write_classes(&classes)?;
        Ok(Self {
            run,
            restarted: false,
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

    /// Whether [`Self::resume`] found no checkpoint (the run was killed in its first epoch)
    /// and so starts again from epoch 0.
    pub fn restarted(&self) -> bool {
        self.restarted
    }

    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Epochs the recipe asks for.
    pub fn total_epochs(&self) -> usize {
        self.spec.recipe.epochs
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
            self.run.append_metrics(&m)?;
            crate::checkpoint::save(
                &self.run.path(RunDir::CHECKPOINT),
                &self.model.vars,
                &self.nag,
                &self.scaler,
                epoch + 1,
            )?;
            zoo::weights::save_weights(&self.model.vars, &self.run.path(RunDir::MODEL))?;
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
        for (b, batch) in self.train.epoch(epoch, 0).enumerate() {
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
