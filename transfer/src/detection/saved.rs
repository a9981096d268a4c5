//! A trained detector as files, and back: `model.safetensors` (the backbone in timm's names
//! under `backbone.`, then the heads) beside a `config.json` that says what it is (task,
//! backbone, classes, every head setting, the normalisation). Loaded from a training run, an
//! exported folder, a zoo entry or a Hub repository, exported with its ONNX graph, and
//! published to the local zoo as an entry of task `detection` whose parent is the backbone.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use training::data::Image;
use training::recipe::DetectionConfig;
use training::run_dir::RunDir;
use zoo::export::ExportedFiles;
use zoo::publish::PublishRequest;
use zoo::reference::{Provenance, WeightsRef, ZooContext};
use zoo::registry::{Entry, FileRole, Task};

use super::data::single_image_batch;
use super::model::{Detections, FasterRcnn};
use super::task::DetectionSpec;
use crate::TransferError;

/// The head layout this crate builds (GluonCV's C4 Faster R-CNN).
pub const ARCHITECTURE: &str = "faster_rcnn_c4";
use crate::saved::{check_normalisation, imagenet_normalisation, model_files, EntryFacts};
pub use crate::saved::{CONFIG, ONNX, WEIGHTS};

/// `config.json` of a detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Always `detection`.
    pub task: Task,
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    /// The backbone's zoo architecture (a ResNet).
    pub backbone: String,
    /// Object classes, background not counted.
    pub num_classes: usize,
    /// Their names, in output order.
    pub label_names: Vec<String>,
    /// Per-channel mean of pixels scaled to [0, 1], subtracted before the network (what
    /// `tricks predict` applies; a trained run records its pipeline's).
    pub mean: [f64; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f64; 3],
    /// Sizes, anchors, proposals, RoIAlign and the test-time filter.
    pub detection: DetectionConfig,
    /// `[height, width]` of the ONNX graph's fixed input, when one was exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx_input_size: Option<[usize; 2]>,
}

impl DetectorConfig {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, TransferError> {
        let text = std::fs::read_to_string(path).map_err(|e| TransferError::data(path, e))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| TransferError::data(path, format!("not a detector's config: {e}")))?;
        let bad = |why: String| TransferError::data(path, why);
        if cfg.task != Task::Detection || cfg.architecture != ARCHITECTURE {
            return Err(bad(format!(
                "task `{}` and architecture `{}`: this build reads detection / {ARCHITECTURE}",
                cfg.task, cfg.architecture
            )));
        }
        if cfg.label_names.len() != cfg.num_classes || cfg.num_classes == 0 {
            return Err(bad(format!(
                "{} label names for num_classes = {}",
                cfg.label_names.len(),
                cfg.num_classes
            )));
        }
        check_normalisation(path, cfg.mean, cfg.std)?;
        cfg.detection.validate().map_err(bad)?;
        Ok(cfg)
    }
}

/// A detector with its weights and what is known about it.
pub struct SavedDetector {
    /// What it is.
    pub config: DetectorConfig,
    /// The network.
    pub model: FasterRcnn,
    /// Its variables.
    pub vars: VarMap,
    /// Dataset, metrics (`map07`, `map` in percent), recipe, parent.
    pub provenance: Provenance,
}

impl SavedDetector {
    /// The detector `reference` names: a detection run's directory, an exported folder (or
    /// its `model.safetensors`) with `config.json`, a zoo entry or a Hub repository of task
    /// `detection`.
    pub fn load(reference: &WeightsRef, ctx: &ZooContext) -> Result<Self, TransferError> {
        match reference {
            WeightsRef::Path(p) if RunDir::is_run(p) => Self::from_run(p),
            r => {
                let (config, weights, provenance) = model_files(r, ctx, Task::Detection)?;
                Self::from_files(&config, &weights, provenance)
            }
        }
    }

    /// A detector from its `config.json` and weights; every tensor must be there with its
    /// shape, and no other.
    pub fn from_files(
        config: &Path,
        weights: &Path,
        provenance: Provenance,
    ) -> Result<Self, TransferError> {
        let cfg = DetectorConfig::read(config)?;
        let vars = VarMap::new();
        let model = FasterRcnn::new(
            &cfg.backbone,
            cfg.num_classes,
            &cfg.detection,
            &vars,
            0,
            &Device::Cpu,
        )?;
        let tensors = zoo::weights::read_tensors(weights, &Device::Cpu)?;
        zoo::weights::load_tensors(&vars, tensors, weights, ARCHITECTURE)?;
        Ok(Self {
            config: cfg,
            model,
            vars,
            provenance,
        })
    }

    /// The final weights of the detection run in `dir`, with its classes, recipe and last
    /// mAPs.
    pub fn from_run(dir: &Path) -> Result<Self, TransferError> {
        let run = RunDir::open(dir)?;
        let task = run.task()?;
        if task != "detection" {
            return Err(TransferError::data(
                dir,
                format!("is a {task} run, not a detection run"),
            ));
        }
        let spec: DetectionSpec = run.spec()?;
        let labels = run.classes()?;
        let (mean, std) = imagenet_normalisation();
        let config = DetectorConfig {
            task: Task::Detection,
            architecture: ARCHITECTURE.into(),
            backbone: spec.backbone.clone(),
            num_classes: labels.len(),
            label_names: labels,
            mean,
            std,
            detection: spec.recipe.detection.clone(),
            onnx_input_size: None,
        };
        let vars = VarMap::new();
        let model = FasterRcnn::new(
            &config.backbone,
            config.num_classes,
            &config.detection,
            &vars,
            0,
            &Device::Cpu,
        )?;
        let weights = run.path(RunDir::MODEL);
        if !weights.is_file() {
            return Err(TransferError::data(
                dir,
                "has no model.safetensors yet: the run has not finished an epoch",
            ));
        }
        let tensors = zoo::weights::read_tensors(&weights, &Device::Cpu)?;
        zoo::weights::load_tensors(&vars, tensors, &weights, ARCHITECTURE)?;
        let mut metrics = std::collections::BTreeMap::new();
        if let Ok(last) = run.last_metrics() {
            for key in ["map07", "map"] {
                if let Some(v) = last.values.get(key) {
                    metrics.insert(key.to_string(), 100.0 * v);
                }
            }
        }
        let years: Vec<String> = spec
            .train
            .split(',')
            .filter_map(|s| s.split(':').next())
            .map(str::to_string)
            .collect();
        let provenance = Provenance {
            dataset: Some(years.join("+")),
            metrics,
            recipe: Some(spec.recipe.to_toml()),
            tricks: spec
                .recipe
                .optim
                .tricks(true)
                .into_iter()
                .map(String::from)
                .collect(),
            source: None,
            parent: spec.parent.clone(),
            license: None,
        };
        Ok(Self {
            config,
            model,
            vars,
            provenance,
        })
    }

    /// The detector for inference ([`FasterRcnn::frozen`]): what [`Self::predict`] runs.
    pub fn inference(&self) -> Result<FasterRcnn, TransferError> {
        self.model.frozen(&self.vars)
    }

    /// The detections of one image, in its own pixels (continuous, 0-based), by `net`
    /// ([`Self::inference`]).
    pub fn predict(&self, net: &FasterRcnn, img: &Image) -> Result<Detections, TransferError> {
        let norm = (self.config.mean, self.config.std);
        let batch = single_image_batch(img, &self.config.detection, norm)?;
        let mut out = net.detect(&batch, &[(img.height, img.width)], &Device::Cpu)?;
        Ok(out.remove(0))
    }

    /// The ONNX graph's default input size: the shorter side at `min_size`, a 4:3 landscape
    /// image (VOC's most common shape) unless `max_size` is smaller.
    pub fn default_onnx_size(&self) -> [usize; 2] {
        let d = &self.config.detection;
        let h = d.min_size;
        [h, (h * 4).div_ceil(3).min(d.max_size)]
    }

    /// Writes `model.safetensors` and `config.json` (and `model.onnx` at `onnx_size`,
    /// `[height, width]`, when given) into `dir`, each through a temporary file.
    pub fn export(
        &self,
        dir: &Path,
        onnx_size: Option<[usize; 2]>,
    ) -> Result<ExportedFiles, TransferError> {
        std::fs::create_dir_all(dir).map_err(|e| TransferError::data(dir, e))?;
        let mut files: ExportedFiles = Vec::new();
        let weights = dir.join(WEIGHTS);
        zoo::weights::save_weights(&self.vars, &weights)?;
        files.push((FileRole::Safetensors, WEIGHTS.into(), weights));
        let mut config = self.config.clone();
        config.onnx_input_size = onnx_size;
        let path = dir.join(CONFIG);
        let text = serde_json::to_string_pretty(&config).expect("a config serialises");
        zoo::local::write_atomically(&path, text.as_bytes())?;
        files.push((FileRole::Config, CONFIG.into(), path));
        if let Some(size) = onnx_size {
            let proto = super::onnx::export(&self.model, size)?;
            let path = dir.join(ONNX);
            zoo::onnx::write(&proto, &path)?;
            files.push((FileRole::Onnx, ONNX.into(), path));
        }
        Ok(files)
    }

    /// Exports the detector (with ONNX at `onnx_size`) into the local zoo as an entry of
    /// task `detection`; its parent is the backbone's zoo entry when the run started from
    /// one.
    pub fn publish(
        &self,
        ctx: &ZooContext,
        req: PublishRequest,
        onnx_size: [usize; 2],
    ) -> Result<Entry, TransferError> {
        let facts = EntryFacts {
            task: Task::Detection,
            backbone: self.config.backbone.clone(),
            num_classes: self.config.num_classes,
            input_size: onnx_size,
            mean: self.config.mean,
            std: self.config.std,
        };
        let entry = crate::saved::entry(req, facts, self.provenance.clone());
        zoo::publish::publish_exported(ctx, entry, |dir: &Path| self.export(dir, Some(onnx_size)))
    }
}
