//! The training loop, once for every task: accumulation, loss scaling, the schedule, the
//! NaN guard, progress, per-epoch `metrics.jsonl`, atomic checkpoints and bit-identical
//! `--resume` live here; what a batch is, how its loss is computed and how a model is
//! evaluated is the [`Task`]'s ([`Classification`]; detection in the `transfer` crate).
//!
//! After every epoch the metrics line is appended, then the checkpoint and the weights are
//! replaced atomically. Resuming continues from the checkpoint (rewriting
//! `model.safetensors` from it, so that the two agree whatever point a kill interrupted),
//! and because the data order, augmentation and mixup draws depend only on (seed, epoch,
//! batch), the final weights equal those of an uninterrupted run bit for bit.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::optim::Nag;
use crate::precision::{all_finite, LossScaler};
use crate::recipe::{Optimisation, Precision};
use crate::run_dir::RunDir;
pub use crate::run_dir::{EpochMetrics, RunSpec};
use crate::schedule::Schedule;
use crate::TrainingError;

mod classification;

pub use classification::{evaluate, evaluate_with_gaps, mixup_lambda, Classification, Evaluation};

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

/// Where in the run a batch is.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based batch in the epoch.
    pub batch: usize,
    /// The compute dtype of the recipe's precision.
    pub dtype: DType,
}

/// A batch's loss: the scalar to minimise (f32) and its named parts, averaged over the
/// epoch into `metrics.jsonl` as `train_<name>`.
#[derive(Debug)]
pub struct Loss {
    /// The total loss.
    pub total: Tensor,
    /// Its parts (`rpn_cls`, `rcnn_box`, …); empty for a single loss.
    pub parts: Vec<(&'static str, f64)>,
}

/// What one kind of training (classification, detection, segmentation) brings to the loop.
pub trait Task {
    /// What the loader gives for one forward pass.
    type Batch;

    /// Every variable a checkpoint holds.
    fn vars(&self) -> &VarMap;

    /// The variables the optimiser updates, named, in a fixed order.
    fn trainable(&self) -> Vec<(String, Var)> {
        crate::optim::trainable_vars(self.vars())
    }

    /// The learning-rate multiplier of the trainable variable `name` (1: the schedule's
    /// rate; FCN's heads take 10, GluonCV's `lr_mult`).
    fn lr_multiplier(&self, _name: &str) -> f64 {
        1.0
    }

    /// Training batches in one epoch.
    fn batches_per_epoch(&self) -> usize;

    /// The training batches of `epoch`, in the order that depends only on the seed and
    /// the epoch (produced ahead by the loader, independent of the task's borrow).
    fn batches(&self, epoch: usize)
        -> Box<dyn Iterator<Item = Result<Self::Batch, TrainingError>>>;

    /// Images in `batch`.
    fn images(batch: &Self::Batch) -> usize;

    /// The training loss of `batch` (forward pass in training mode).
    fn loss(&mut self, batch: Self::Batch, at: Step) -> Result<Loss, TrainingError>;

    /// The validation metrics after `epoch` (0-based), by name (`top1`, `map`, …).
    fn evaluate(
        &mut self,
        epoch: usize,
        dtype: DType,
    ) -> Result<BTreeMap<String, f64>, TrainingError>;

    /// Messages for the images skipped so far.
    fn skipped_images(&self) -> Vec<String>;
}

/// A run being trained on task `T`.
pub struct Trainer<T: Task> {
    run: RunDir,
    optim: Optimisation,
    task: T,
    nag: Nag,
    scaler: LossScaler,
    schedule: Schedule,
    epochs_done: usize,
    /// Resumed without a checkpoint: started again from epoch 0.
    restarted: bool,
}

impl<T: Task> Trainer<T> {
    /// The loop for `task` in `run` with the shared settings `optim`, the schedule from
    /// `base_lr`. Starts at epoch 0; [`Self::restore`] moves it to the last checkpoint.
    pub fn new(run: RunDir, optim: &Optimisation, base_lr: f64, task: T) -> Self {
        let updates_per_epoch = (task.batches_per_epoch() / optim.accumulate).max(1);
        let mut nag = Nag::from_vars(task.trainable(), optim.nag());
        nag.set_lr_multipliers(|name| task.lr_multiplier(name));
        Self {
            nag,
            scaler: LossScaler::with_initial_scale(optim.precision, optim.loss_scale),
            schedule: optim.schedule(base_lr, updates_per_epoch),
            optim: optim.clone(),
            run,
            task,
            epochs_done: 0,
            restarted: false,
        }
    }

    /// Continues from the run's checkpoint, or from epoch 0 if it has none (killed in its
    /// first epoch; [`Self::restarted`] says so).
    pub fn restore(mut self) -> Result<Self, TrainingError> {
        let ckpt = self.run.path(RunDir::CHECKPOINT);
        if ckpt.exists() {
            self.epochs_done =
                crate::checkpoint::load(&ckpt, self.task.vars(), &mut self.nag, &mut self.scaler)?;
            // A kill between the checkpoint and the weights can leave the weights an epoch
            // behind (or missing): they are rewritten from the checkpoint.
            zoo::weights::save_weights(self.task.vars(), &self.run.path(RunDir::MODEL))?;
        } else {
            self.restarted = true;
        }
        // Drop metrics of epochs that will be run again.
        self.run.truncate_metrics(self.epochs_done)?;
        Ok(self)
    }

    /// Whether [`Self::restore`] found no checkpoint and so starts again from epoch 0.
    pub fn restarted(&self) -> bool {
        self.restarted
    }

    /// The run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// The task.
    pub fn task(&self) -> &T {
        &self.task
    }

    /// Epochs the recipe asks for.
    pub fn total_epochs(&self) -> usize {
        self.optim.epochs
    }

    /// Epochs already completed (non-zero after a resume).
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// The learning-rate schedule, by optimiser update.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Messages for the images skipped so far.
    pub fn skipped_images(&self) -> Vec<String> {
        self.task.skipped_images()
    }

    /// Trains the remaining epochs, calling `progress` after every batch and `on_epoch` after
    /// every epoch (whose checkpoint is then on disk).
    pub fn run(
        &mut self,
        progress: &mut dyn FnMut(Progress),
        on_epoch: &mut dyn FnMut(&EpochMetrics),
    ) -> Result<Vec<EpochMetrics>, TrainingError> {
        let mut all = Vec::new();
        for epoch in self.epochs_done..self.optim.epochs {
            let m = self.train_epoch(epoch, progress)?;
            self.run.append_metrics(&m)?;
            crate::checkpoint::save(
                &self.run.path(RunDir::CHECKPOINT),
                self.task.vars(),
                &self.nag,
                &self.scaler,
                epoch + 1,
            )?;
            zoo::weights::save_weights(self.task.vars(), &self.run.path(RunDir::MODEL))?;
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
        let o = self.optim.clone();
        let dtype = o.precision.compute_dtype();
        let start = Instant::now();
        let batches = self.task.batches_per_epoch();
        let updates_per_epoch = self.schedule.iters_per_epoch;
        let (mut loss_sum, mut images, mut skipped, mut lr) = (0.0, 0usize, 0usize, 0.0);
        let mut parts: BTreeMap<String, f64> = BTreeMap::new();
        let mut pending: Vec<Option<Tensor>> = Vec::new();
        for (b, batch) in self.task.batches(epoch).enumerate() {
            let batch = batch?;
            let micro = b % o.accumulate;
            let update =
                (epoch * updates_per_epoch + b / o.accumulate).min(self.schedule.total_iters);
            lr = self.schedule.lr(update);
            let n = T::images(&batch);
            let loss = self.task.loss(
                batch,
                Step {
                    epoch,
                    batch: b,
                    dtype,
                },
            )?;
            let value = loss.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() && o.precision != Precision::F16 {
                return Err(TrainingError::Config(format!(
                    "the loss became {value} in epoch {} batch {b}; the checkpoint of epoch {} is left as it was",
                    epoch + 1,
                    epoch
                )));
            }
            let grads = (loss.total * (self.scaler.scale / o.accumulate as f64))?.backward()?;
            let grads = self.nag.gradients(&grads);
            pending = accumulate(pending, grads)?;
            if micro + 1 == o.accumulate {
                let unscaled = pending
                    .drain(..)
                    .map(|g| g.map(|g| g * (1.0 / self.scaler.scale)).transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                let finite = value.is_finite() && all_finite(&unscaled)?;
                if self.scaler.update(finite) {
                    self.nag.apply(&unscaled, lr)?;
                } else if o.precision == Precision::F16 {
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
                for (name, v) in loss.parts {
                    *parts.entry(format!("train_{name}")).or_default() += v;
                }
            }
            images += n;
            progress(Progress {
                epoch,
                epochs: o.epochs,
                batch: b + 1,
                batches,
                loss: loss_sum / (b + 1) as f64,
                lr,
                img_per_s: images as f64 / start.elapsed().as_secs_f64(),
            });
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let mut values = self.task.evaluate(epoch, dtype)?;
        for (name, sum) in parts {
            values.insert(name, sum / batches.max(1) as f64);
        }
        Ok(EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / batches.max(1) as f64,
            lr,
            img_per_s: images as f64 / train_seconds,
            seconds: start.elapsed().as_secs_f64(),
            skipped_updates: skipped,
            skipped_images: self.task.skipped_images().len(),
            loss_scale: self.scaler.scale,
            values,
        })
    }
}

/// Adds a batch's gradients to those pending from earlier batches of the same update.
fn accumulate(
    pending: Vec<Option<Tensor>>,
    grads: Vec<Option<Tensor>>,
) -> candle_core::Result<Vec<Option<Tensor>>> {
    if pending.is_empty() {
        return Ok(grads);
    }
    pending
        .into_iter()
        .zip(grads)
        .map(|(a, g)| match (a, g) {
            (Some(a), Some(g)) => Ok(Some((a + g)?)),
            (a, g) => Ok(a.or(g)),
        })
        .collect()
}
