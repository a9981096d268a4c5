//! Classification as a [`Task`]: a zoo model on an ImageNet-layout folder, with label
//! smoothing, mixup, distillation and Inception-V3's auxiliary loss (Sections 2 and 5).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};
use zoo::models::{create_model_in, Model, ModelSpec};

use crate::data::Batch;
use crate::data::{ImageFolder, Loader, LoaderConfig};
use crate::loss::{distillation_loss, mixup, smoothed_targets_in, soft_cross_entropy};
use crate::recipe::Recipe;
use crate::run_dir::{RunDir, RunSpec};
use crate::TrainingError;

use super::{Loss, Step, Task, Trainer};

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
    Ok(evaluate_with_gaps(net, loader, dtype, device)?.0)
}

/// [`evaluate`], with every image's logit gap (the largest logit minus the mean of the
/// others, Section 5.2), in the loader's order: what the paper's Figure 4b histograms.
pub fn evaluate_with_gaps(
    net: &dyn zoo::Classifier,
    loader: &Loader,
    dtype: DType,
    device: &Device,
) -> Result<(Evaluation, Vec<f64>), TrainingError> {
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
    let e = Evaluation {
        loss: loss_sum / n,
        top1: acc.top1_accuracy(),
        top5: acc.top5_accuracy(),
        logit_gap_mean: mean,
        logit_gap_std: var.sqrt(),
        images: acc.total,
    };
    Ok((e, gaps))
}

/// The mixup weight λ ~ Beta(α, α) of batch `batch` of `epoch` (Section 5.3), drawn from
/// a stream that depends only on the recipe's seed and the batch's place, so that a resumed
/// run mixes as an uninterrupted one; `None` without mixup.
pub fn mixup_lambda(
    recipe: &Recipe,
    epoch: usize,
    batch: usize,
) -> Result<Option<f64>, TrainingError> {
    if recipe.mixup_alpha <= 0.0 {
        return Ok(None);
    }
    let seed = recipe.optim.seed
        ^ ((epoch as u64) << 40 | batch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let beta = Beta::new(recipe.mixup_alpha, recipe.mixup_alpha)
        .map_err(|e| TrainingError::Config(e.to_string()))?;
    Ok(Some(beta.sample(&mut ChaCha8Rng::seed_from_u64(seed))))
}

/// Training a classifier (see the module doc).
pub struct Classification {
    recipe: Recipe,
    model: Model,
    /// The distillation teacher, frozen (Section 5.4).
    teacher: Option<Box<dyn zoo::Classifier>>,
    /// Where the model and each batch live.
    device: Device,
    train: Loader,
    val: Loader,
    classes: usize,
}

impl Trainer<Classification> {
    /// Starts a new classification run in `dir` (which must not hold one already),
    /// training on `device`.
    pub fn create(dir: &Path, spec: RunSpec, device: &Device) -> Result<Self, TrainingError> {
        spec.recipe.validate().map_err(TrainingError::Config)?;
        let run = RunDir::create(dir)?;
        let task = Classification::build(&run, &spec, device)?;
        run.start(&spec, &spec.recipe.to_toml())?;
        Ok(Self::new(
            run,
            &spec.recipe.optim,
            spec.recipe.base_lr(),
            task,
        ))
    }

    /// Reopens the run in `dir` at its last checkpoint, on `device` (not necessarily the
    /// one it started on: checkpoints are device-independent). A run killed before its
    /// first checkpoint starts again from epoch 0 ([`Self::restarted`] says so).
    pub fn resume(dir: &Path, device: &Device) -> Result<Self, TrainingError> {
        let run = RunDir::resume(dir)?;
        let spec: RunSpec = run.spec()?;
        spec.recipe.validate().map_err(|e| {
            TrainingError::data(&run.path(RunDir::SPEC), format!("cannot be resumed: {e}"))
        })?;
        let task = Classification::build(&run, &spec, device)?;
        Self::new(run, &spec.recipe.optim, spec.recipe.base_lr(), task).restore()
    }

    /// The model being trained.
    pub fn model(&self) -> &Model {
        &self.task().model
    }
}

impl Classification {
    fn build(run: &RunDir, spec: &RunSpec, device: &Device) -> Result<Self, TrainingError> {
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
        if train_set.samples.len() < r.optim.batch_size {
            return Err(TrainingError::Config(format!(
                "{} training images are fewer than one batch of {}",
                train_set.samples.len(),
                r.optim.batch_size
            )));
        }
        let loader_cfg = LoaderConfig {
            batch_size: r.optim.batch_size,
            train: true,
            augment: r.augment.clone(),
            seed: r.optim.seed,
            workers: r.optim.workers,
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
        let model = create_model_in(
            &model_spec,
            device,
            r.optim.seed,
            r.weight_init,
            r.optim.precision.weight_dtype(),
        )?;
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
        run.write_classes(&classes)?;
        Ok(Self {
            recipe: r.clone(),
            classes: classes.len(),
            model,
            teacher,
            train,
            val,
            device: device.clone(),
        })
    }
}

impl Task for Classification {
    type Batch = Batch;

    fn vars(&self) -> &VarMap {
        &self.model.vars
    }

    fn batches_per_epoch(&self) -> usize {
        self.train.batches_per_epoch()
    }

    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<Batch, TrainingError>>> {
        Box::new(self.train.epoch(epoch, 0))
    }

    fn images(batch: &Batch) -> usize {
        batch.labels.len()
    }

    fn loss(&mut self, batch: Batch, at: Step) -> Result<Loss, TrainingError> {
        let r = &self.recipe;
        let (epoch, b) = (at.epoch, at.batch);
        // Targets, mixing and the loss in f32 (f64 in an f64 run); the network in the
        // compute dtype.
        let precise = r.optim.precision.loss_dtype();
        let mut targets = smoothed_targets_in(
            &batch.labels,
            self.classes,
            r.label_smoothing,
            precise,
            &self.device,
        )?;
        let mut x = batch.images.to_device(&self.device)?.to_dtype(precise)?;
        if let Some(lambda) = mixup_lambda(r, epoch, b)? {
            (x, targets) = mixup(&x, &targets, lambda)?;
        }
        let (logits, aux) = self
            .model
            .net
            .forward_with_aux(&x.to_dtype(at.dtype)?, true)?;
        let logits = logits.to_dtype(precise)?;
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
        let total = match aux {
            Some(aux) => {
                let aux_loss = soft_cross_entropy(&aux.to_dtype(precise)?, &targets)?;
                (loss + (aux_loss * zoo::inception::AUX_LOSS_WEIGHT)?)?
            }
            None => loss,
        };
        Ok(Loss {
            total,
            parts: Vec::new(),
        })
    }

    fn evaluate(
        &mut self,
        _epoch: usize,
        dtype: DType,
    ) -> Result<BTreeMap<String, f64>, TrainingError> {
        let e = evaluate(
            self.model.frozen()?.as_ref(),
            &self.val,
            dtype,
            &self.device,
        )?;
        Ok(BTreeMap::from([
            ("val_loss".to_string(), e.loss),
            ("top1".to_string(), e.top1),
            ("top5".to_string(), e.top5),
        ]))
    }

    fn skipped_images(&self) -> Vec<String> {
        let mut all = self.train.skips().skipped;
        all.extend(self.val.skips().skipped);
        all
    }
}
