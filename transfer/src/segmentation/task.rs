//! Segmentation as a [`Task`] of the shared training loop: `tricks transfer segment`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use training::data::{mix, Batching, Loader};
use training::recipe::SegmentationRecipe;
use training::run_dir::RunDir;
use training::trainer::{Loss, Step, Task, Trainer};
use training::TrainingError;

use super::data::{AdeSource, SegBatch};
use super::model::Fcn;
use crate::ade20k::{write_mask, AdeDataset, ADE_CLASSES};
use crate::TransferError;

/// What a segmentation run was asked to do (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentationSpec {
    /// Always `segmentation` (what [`RunDir::task`] reads).
    pub task: String,
    /// The backbone's architecture (a zoo ResNet).
    pub backbone: String,
    /// The backbone's weights, resolved to a file; none: trained from scratch.
    pub init: Option<PathBuf>,
    /// The zoo entry the backbone came from (the parent of a published segmenter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The ADEChallengeData2016 folder.
    pub data: PathBuf,
    /// Stop at the first unreadable image or mask.
    pub strict: bool,
    /// The recipe.
    pub recipe: SegmentationRecipe,
}

/// The folder under a run with the validation predictions (ADE20K-encoded PNGs).
pub const PREDICTIONS: &str = "predictions";

/// Training FCN.
pub struct Segmentation {
    spec: SegmentationSpec,
    model: Fcn,
    vars: VarMap,
    device: Device,
    train: Loader<AdeSource>,
    val: Loader<AdeSource>,
    skipped: Vec<String>,
    run_root: PathBuf,
}

impl Segmentation {
    /// Starts a segmentation run in `dir`.
    pub fn create(
        dir: &Path,
        spec: SegmentationSpec,
        device: &Device,
    ) -> Result<Trainer<Self>, TransferError> {
        spec.recipe.validate().map_err(TransferError::Config)?;
        let run = RunDir::create(dir)?;
        let task = Self::build(&run, spec.clone(), device)?;
        run.start(&spec, &spec.recipe.to_toml())?;
        Ok(Trainer::new(
            run,
            &spec.recipe.optim,
            spec.recipe.base_lr(),
            task,
        ))
    }

    /// Continues the segmentation run in `dir` from its last checkpoint.
    pub fn resume(dir: &Path, device: &Device) -> Result<Trainer<Self>, TransferError> {
        let (run, spec): (RunDir, SegmentationSpec) = crate::resume_spec(dir, "segmentation")?;
        spec.recipe.validate().map_err(|e| {
            TransferError::data(&run.path(RunDir::SPEC), format!("cannot be resumed: {e}"))
        })?;
        let task = Self::build(&run, spec.clone(), device)?;
        Ok(Trainer::new(run, &spec.recipe.optim, spec.recipe.base_lr(), task).restore()?)
    }

    fn build(run: &RunDir, spec: SegmentationSpec, device: &Device) -> Result<Self, TransferError> {
        let cfg = &spec.recipe.segmentation;
        let train_set = AdeDataset::open(&spec.data, "training", spec.strict)?;
        let val_set = AdeDataset::open(&spec.data, "validation", spec.strict)?;
        let o = &spec.recipe.optim;
        if train_set.samples.len() < o.batch_size {
            return Err(TransferError::Config(format!(
                "{} training images are fewer than one batch of {}",
                train_set.samples.len(),
                o.batch_size
            )));
        }
        let vars = VarMap::new();
        let model = Fcn::new(
            &spec.backbone,
            ADE_CLASSES.len(),
            cfg,
            &vars,
            o.seed,
            device,
        )?;
        if let Some(init) = &spec.init {
            crate::backbone::load_backbone(&vars, init, &spec.backbone)?;
        }
        let batching = Batching {
            batch_size: o.batch_size,
            train: true,
            seed: o.seed,
            workers: o.workers,
            prefetch: 2,
            strict: spec.strict,
        };
        let mut skipped = train_set.skipped.clone();
        skipped.extend(val_set.skipped.iter().cloned());
        let train = Loader::over(AdeSource::new(train_set.samples, cfg.clone()), batching)?;
        let val = Loader::over(
            AdeSource::new(val_set.samples, cfg.clone()),
            Batching {
                train: false,
                batch_size: 1,
                ..batching
            },
        )?;
        run.write_classes(&ADE_CLASSES.map(String::from))?;
        Ok(Self {
            spec,
            model,
            vars,
            device: device.clone(),
            train,
            val,
            skipped,
            run_root: run.root().to_path_buf(),
        })
    }

    /// The segmenter.
    pub fn model(&self) -> &Fcn {
        &self.model
    }

    /// Predicts every validation image, writes the label PNGs under `dir` (ADE20K's
    /// encoding, the annotations' names), and scores them with the code of `tricks eval
    /// segmentation` (reading the files back).
    pub fn evaluate_into(
        &self,
        dir: &Path,
    ) -> Result<eval::segmentation::SegMetrics, TransferError> {
        std::fs::create_dir_all(dir).map_err(|e| TransferError::data(dir, e))?;
        let net = self.model.frozen(&self.vars)?;
        let val_set = AdeDataset::open(&self.spec.data, "validation", self.spec.strict)?;
        for batch in self.val.epoch(0, 0) {
            let batch: SegBatch = batch?;
            let images = batch.images.to_device(&self.device)?;
            let labels = if self.spec.recipe.segmentation.val_scales.is_empty() {
                net.predict(&images)?
            } else {
                (0..images.dim(0)?)
                    .map(|i| net.predict_multiscale(&images.narrow(0, i, 1)?))
                    .collect::<candle_core::Result<_>>()?
            };
            // Padded to the batch's largest image: each prediction cropped to its own.
            let stride = batch.images.dim(3)?;
            for ((index, (h, w)), pred) in batch.samples.iter().zip(labels) {
                let cropped: Vec<u32> = (0..*h)
                    .flat_map(|y| pred[y * stride..][..*w].to_vec())
                    .collect();
                let id = &val_set.samples[*index].id;
                write_mask(&dir.join(format!("{id}.png")), &cropped, *w, *h)?;
            }
        }
        self.score(dir)
    }

    /// Scores the predictions under `dir` against the validation split.
    pub fn score(&self, dir: &Path) -> Result<eval::segmentation::SegMetrics, TransferError> {
        super::score_predictions(&self.spec.data, "validation", dir)
    }
}

impl Task for Segmentation {
    type Batch = SegBatch;

    fn vars(&self) -> &VarMap {
        &self.vars
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        let frozen = self.spec.recipe.segmentation.freeze_bn;
        let data = self.vars.data().lock().expect("varmap lock poisoned");
        let mut names: Vec<String> = data
            .keys()
            .filter(|n| !zoo::layers::is_buffer(n) && data[*n].dtype().is_float())
            .filter(|n| {
                // Frozen batch norm: γ and β (beside a running mean) stay as loaded.
                let stem = n.rsplit_once('.').map(|(s, _)| s).unwrap_or(n);
                !(frozen && data.contains_key(&format!("{stem}.running_mean")))
            })
            .cloned()
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.clone(), data[&n].clone()))
            .collect()
    }

    fn lr_multiplier(&self, name: &str) -> f64 {
        if Fcn::is_head(name) {
            self.spec.recipe.segmentation.head_lr_mult
        } else {
            1.0
        }
    }

    fn batches_per_epoch(&self) -> usize {
        self.train.batches_per_epoch()
    }

    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<SegBatch, TrainingError>>> {
        Box::new(self.train.epoch(epoch, 0))
    }

    fn images(batch: &SegBatch) -> usize {
        batch.samples.len()
    }

    fn loss(&mut self, batch: SegBatch, at: Step) -> Result<Loss, TrainingError> {
        let seed = mix(self.spec.recipe.optim.seed
            ^ mix((at.epoch as u64) << 32 | at.batch as u64)
            ^ 0x5E6);
        let l = self.model.loss(&batch, seed, &self.device)?;
        Ok(Loss {
            total: l.total,
            parts: l.parts.to_vec(),
        })
    }

    fn evaluate(
        &mut self,
        _epoch: usize,
        _dtype: DType,
    ) -> Result<BTreeMap<String, f64>, TrainingError> {
        let m = self.evaluate_into(&self.run_root.join(PREDICTIONS))?;
        Ok(BTreeMap::from([
            ("pixacc".to_string(), m.pixel_accuracy),
            ("miou".to_string(), m.miou_all),
            ("miou_present".to_string(), m.miou_present),
        ]))
    }

    fn skipped_images(&self) -> Vec<String> {
        let mut all = self.skipped.clone();
        all.extend(self.train.skips().skipped);
        all.extend(self.val.skips().skipped);
        all
    }
}
