//! Detection as a [`Task`] of the shared training loop: `tricks transfer detect`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use training::data::{mix, Batching, Loader};
use training::recipe::DetectionRecipe;
use training::run_dir::RunDir;
use training::trainer::{Loss, Step, Task, Trainer};
use training::TrainingError;

use super::data::{DetectionBatch, VocSource};
use super::model::FasterRcnn;
use crate::voc::{self, parse_splits, VocDataset, VOC_CLASSES};
use crate::TransferError;

/// What a detection run was asked to do (`run.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionSpec {
    /// Always `detection` (what [`RunDir::task`] reads).
    pub task: String,
    /// The backbone's architecture (a zoo ResNet).
    pub backbone: String,
    /// The backbone's weights, resolved to a file; none: trained from scratch.
    pub init: Option<PathBuf>,
    /// The zoo entry the backbone came from (the parent of a published detector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The VOCdevkit folder.
    pub data: PathBuf,
    /// Training splits (`voc2007:trainval,voc2012:trainval`).
    pub train: String,
    /// Test split (`voc2007:test`).
    pub test: String,
    /// Stop at the first unreadable annotation or image.
    pub strict: bool,
    /// The recipe.
    pub recipe: DetectionRecipe,
}

/// The file under a run with the test detections, in the devkit's results format.
pub const DETECTIONS: &str = "detections";

/// Training Faster R-CNN.
pub struct Detection {
    spec: DetectionSpec,
    model: FasterRcnn,
    vars: VarMap,
    device: Device,
    train: Loader<VocSource>,
    test: Loader<VocSource>,
    test_set: VocDataset,
    skipped: Vec<String>,
    run_root: PathBuf,
}

impl Detection {
    /// Starts a detection run in `dir`.
    pub fn create(
        dir: &Path,
        spec: DetectionSpec,
        device: &Device,
    ) -> Result<Trainer<Self>, TransferError> {
        spec.recipe.validate().map_err(TransferError::Config)?;
        let run = RunDir::create(dir)?;
        let task = Detection::build(&run, spec.clone(), device)?;
        run.start(&spec, &spec.recipe.to_toml())?;
        Ok(Trainer::new(
            run,
            &spec.recipe.optim,
            spec.recipe.base_lr(),
            task,
        ))
    }

    /// Continues the detection run in `dir` from its last checkpoint.
    pub fn resume(dir: &Path, device: &Device) -> Result<Trainer<Self>, TransferError> {
        let (run, spec): (RunDir, DetectionSpec) = crate::resume_spec(dir, "detection")?;
        spec.recipe.validate().map_err(|e| {
            TransferError::data(&run.path(RunDir::SPEC), format!("cannot be resumed: {e}"))
        })?;
        let task = Detection::build(&run, spec.clone(), device)?;
        Ok(Trainer::new(run, &spec.recipe.optim, spec.recipe.base_lr(), task).restore()?)
    }

    fn build(run: &RunDir, spec: DetectionSpec, device: &Device) -> Result<Self, TransferError> {
        let cfg = &spec.recipe.detection;
        let train_set = VocDataset::open(&spec.data, &parse_splits(&spec.train)?, spec.strict)?;
        let test_set = VocDataset::open(&spec.data, &parse_splits(&spec.test)?, spec.strict)?;
        let o = &spec.recipe.optim;
        if train_set.images.len() < o.batch_size {
            return Err(TransferError::Config(format!(
                "{} training images are fewer than one batch of {}",
                train_set.images.len(),
                o.batch_size
            )));
        }
        let vars = VarMap::new();
        let model = FasterRcnn::new(
            &spec.backbone,
            VOC_CLASSES.len(),
            cfg,
            &vars,
            o.seed,
            device,
        )?;
        if let Some(init) = &spec.init {
            FasterRcnn::load_backbone(&vars, init, &spec.backbone)?;
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
        skipped.extend(test_set.skipped.iter().cloned());
        let train = Loader::over(VocSource::new(train_set.images, cfg.clone()), batching)?;
        let test = Loader::over(
            VocSource::new(test_set.images.clone(), cfg.clone()),
            Batching {
                train: false,
                batch_size: 1,
                ..batching
            },
        )?;
        run.write_classes(&VOC_CLASSES.map(String::from))?;
        Ok(Self {
            spec,
            model,
            vars,
            device: device.clone(),
            train,
            test,
            test_set,
            skipped,
            run_root: run.root().to_path_buf(),
        })
    }

    /// The detector.
    pub fn model(&self) -> &FasterRcnn {
        &self.model
    }

    /// Detects every test image, writes the devkit results under `dir`, and scores them
    /// with the code of `tricks eval detection` (reading the files back).
    pub fn evaluate_into(&self, dir: &Path) -> Result<eval::voc::VocMap, TransferError> {
        let mut dets = Vec::new();
        for batch in self.test.epoch(0, 0) {
            let batch: DetectionBatch = batch?;
            let originals: Vec<(usize, usize)> = batch
                .samples
                .iter()
                .map(|s| {
                    let (w, h) = self.test_set.images[s.index].size;
                    (h, w)
                })
                .collect();
            for (s, d) in
                batch
                    .samples
                    .iter()
                    .zip(self.model.detect(&batch, &originals, &self.device)?)
            {
                for k in 0..d.boxes.len() {
                    dets.push(eval::voc::Detection {
                        image: s.index,
                        class: d.classes[k],
                        score: d.scores[k] as f64,
                        bbox: voc::from_pixels(d.boxes[k]),
                    });
                }
            }
        }
        voc::write_results(dir, &self.test_ids(), &dets)?;
        self.score(dir)
    }

    /// Scores the devkit results under `dir` (as the last evaluation wrote them) against the
    /// test split, with the code of `tricks eval detection`.
    pub fn score(&self, dir: &Path) -> Result<eval::voc::VocMap, TransferError> {
        let read = voc::read_results(dir, &self.test_ids())?;
        eval::voc::voc_map(&self.test_set.ground_truth(), &read, VOC_CLASSES.len())
            .map_err(|e| TransferError::Config(e.to_string()))
    }

    fn test_ids(&self) -> Vec<String> {
        self.test_set.images.iter().map(|i| i.id.clone()).collect()
    }
}

impl Task for Detection {
    type Batch = DetectionBatch;

    fn vars(&self) -> &VarMap {
        &self.vars
    }

    fn trainable(&self) -> Vec<(String, Var)> {
        self.model.trainable(&self.vars)
    }

    fn batches_per_epoch(&self) -> usize {
        self.train.batches_per_epoch()
    }

    fn batches(
        &self,
        epoch: usize,
    ) -> Box<dyn Iterator<Item = Result<DetectionBatch, TrainingError>>> {
        Box::new(self.train.epoch(epoch, 0))
    }

    fn images(batch: &DetectionBatch) -> usize {
        batch.samples.len()
    }

    fn loss(&mut self, batch: DetectionBatch, at: Step) -> Result<Loss, TrainingError> {
        let seed = mix(self.spec.recipe.optim.seed
            ^ mix((at.epoch as u64) << 32 | at.batch as u64)
            ^ 0x5A17);
        let l = self
            .model
            .loss(&batch, &mut ChaCha8Rng::seed_from_u64(seed), &self.device)?;
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
        let m = self.evaluate_into(&self.run_root.join(DETECTIONS))?;
        Ok(BTreeMap::from([
            ("map07".to_string(), m.map07),
            ("map".to_string(), m.map),
        ]))
    }

    fn skipped_images(&self) -> Vec<String> {
        let mut all = self.skipped.clone();
        all.extend(self.train.skips().skipped);
        all.extend(self.test.skips().skipped);
        all
    }
}
