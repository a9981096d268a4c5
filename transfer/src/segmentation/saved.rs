//! A trained segmenter as files, and back: `model.safetensors` (the backbone in timm's names
//! under `backbone.`, then both heads) beside a `config.json` (task, backbone, classes,
//! every head setting, the normalisation). Loaded from a training run, an exported folder, a
//! zoo entry or a Hub repository; exported with its ONNX graph; published to the local zoo
//! as an entry of task `segmentation` whose parent is the backbone.

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use training::data::augment::normalize_with;
use training::data::Image;
use training::recipe::SegmentationConfig;
use training::run_dir::RunDir;
use zoo::export::ExportedFiles;
use zoo::publish::PublishRequest;
use zoo::reference::{Provenance, WeightsRef, ZooContext};
use zoo::registry::{Entry, FileRole, Task};

use super::model::Fcn;
use super::task::SegmentationSpec;
use crate::saved::{
    check_normalisation, imagenet_normalisation, model_files, EntryFacts, CONFIG, ONNX, WEIGHTS,
};
use crate::TransferError;

/// The head layout this crate builds (GluonCV's FCN).
pub const ARCHITECTURE: &str = "fcn";

/// `config.json` of a segmenter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmenterConfig {
    /// Always `segmentation`.
    pub task: Task,
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    /// The backbone's zoo architecture (a ResNet).
    pub backbone: String,
    /// Classes.
    pub num_classes: usize,
    /// Their names, in output order.
    pub label_names: Vec<String>,
    /// Per-channel mean of pixels scaled to [0, 1], subtracted before the network.
    pub mean: [f64; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f64; 3],
    /// Output stride, heads, upsampling, transform.
    pub segmentation: SegmentationConfig,
}

impl SegmenterConfig {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self, TransferError> {
        let text = std::fs::read_to_string(path).map_err(|e| TransferError::data(path, e))?;
        let cfg: Self = serde_json::from_str(&text)
            .map_err(|e| TransferError::data(path, format!("not a segmenter's config: {e}")))?;
        if cfg.task != Task::Segmentation || cfg.architecture != ARCHITECTURE {
            return Err(TransferError::data(
                path,
                format!(
                    "task `{}` and architecture `{}`: this build reads segmentation / {ARCHITECTURE}",
                    cfg.task, cfg.architecture
                ),
            ));
        }
        if cfg.label_names.len() != cfg.num_classes || cfg.num_classes == 0 {
            return Err(TransferError::data(
                path,
                format!(
                    "{} label names for num_classes = {}",
                    cfg.label_names.len(),
                    cfg.num_classes
                ),
            ));
        }
        check_normalisation(path, cfg.mean, cfg.std)?;
        cfg.segmentation
            .validate()
            .map_err(|e| TransferError::data(path, e))?;
        Ok(cfg)
    }
}

/// A segmenter with its weights and what is known about it.
pub struct SavedSegmenter {
    /// What it is.
    pub config: SegmenterConfig,
    /// The network.
    pub model: Fcn,
    /// Its variables.
    pub vars: VarMap,
    /// Dataset, metrics (`pixacc`, `miou` in percent), recipe, parent.
    pub provenance: Provenance,
}

impl SavedSegmenter {
    /// The segmenter `reference` names: a segmentation run's directory, an exported folder
    /// (or its `model.safetensors`) with `config.json`, a zoo entry or a Hub repository of
    /// task `segmentation`.
    pub fn load(reference: &WeightsRef, ctx: &ZooContext) -> Result<Self, TransferError> {
        match reference {
            WeightsRef::Path(p) if RunDir::is_run(p) => Self::from_run(p),
            r => {
                let (config, weights, provenance) = model_files(r, ctx, Task::Segmentation)?;
                Self::from_files(&config, &weights, provenance)
            }
        }
    }

    fn with_weights(
        config: SegmenterConfig,
        weights: &Path,
        provenance: Provenance,
    ) -> Result<Self, TransferError> {
        let vars = VarMap::new();
        let model = Fcn::new(
            &config.backbone,
            config.num_classes,
            &config.segmentation,
            &vars,
            0,
            &Device::Cpu,
        )?;
        if !weights.is_file() {
            return Err(TransferError::data(weights, "missing"));
        }
        let tensors = zoo::weights::read_tensors(weights, &Device::Cpu)?;
        zoo::weights::load_tensors(&vars, tensors, weights, ARCHITECTURE)?;
        Ok(Self {
            config,
            model,
            vars,
            provenance,
        })
    }

    /// A segmenter from its `config.json` and weights; every tensor must be there with its
    /// shape, and no other.
    pub fn from_files(
        config: &Path,
        weights: &Path,
        provenance: Provenance,
    ) -> Result<Self, TransferError> {
        Self::with_weights(SegmenterConfig::read(config)?, weights, provenance)
    }

    /// The final weights of the segmentation run in `dir`, with its classes, recipe and
    /// last metrics.
    pub fn from_run(dir: &Path) -> Result<Self, TransferError> {
        let run = RunDir::open(dir)?;
        let task = run.task()?;
        if task != "segmentation" {
            return Err(TransferError::data(
                dir,
                format!("is a {task} run, not a segmentation run"),
            ));
        }
        let spec: SegmentationSpec = run.spec()?;
        let labels = run.classes()?;
        let (mean, std) = imagenet_normalisation();
        let config = SegmenterConfig {
            task: Task::Segmentation,
            architecture: ARCHITECTURE.into(),
            backbone: spec.backbone.clone(),
            num_classes: labels.len(),
            label_names: labels,
            mean,
            std,
            segmentation: spec.recipe.segmentation.clone(),
        };
        let mut metrics = std::collections::BTreeMap::new();
        if let Ok(last) = run.last_metrics() {
            for key in ["pixacc", "miou", "miou_present"] {
                if let Some(v) = last.values.get(key) {
                    metrics.insert(key.to_string(), 100.0 * v);
                }
            }
        }
        let provenance = Provenance {
            dataset: Some("ade20k".into()),
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
        Self::with_weights(config, &run.path(RunDir::MODEL), provenance)
    }

    /// The segmenter for inference ([`Fcn::frozen`]): what [`Self::predict`] runs.
    pub fn inference(&self) -> Result<Fcn, TransferError> {
        self.model.frozen(&self.vars)
    }

    /// `img` normalised as the config says, `(1, 3, H, W)`.
    pub fn input(&self, img: &Image) -> Result<Tensor, TransferError> {
        let (mean, std) = (self.config.mean, self.config.std);
        let pixels = normalize_with(
            img,
            mean.map(|m| (m * 255.0) as f32),
            std.map(|s| (s * 255.0) as f32),
        );
        Ok(Tensor::from_vec(
            pixels,
            (1, 3, img.height, img.width),
            &Device::Cpu,
        )?)
    }

    /// The class of every pixel of `img` by `net`: the whole image at its own size, or at
    /// the config's validation scales (and flipped) when it has them.
    pub fn predict(&self, net: &Fcn, img: &Image) -> Result<Vec<u32>, TransferError> {
        Ok(net.predict_multiscale(&self.input(img)?)?)
    }

    /// Writes `model.safetensors` and `config.json` (and `model.onnx` when `onnx`) into
    /// `dir`, each through a temporary file.
    pub fn export(&self, dir: &Path, onnx: bool) -> Result<ExportedFiles, TransferError> {
        std::fs::create_dir_all(dir).map_err(|e| TransferError::data(dir, e))?;
        let mut files: ExportedFiles = Vec::new();
        let weights = dir.join(WEIGHTS);
        zoo::weights::save_weights(&self.vars, &weights)?;
        files.push((FileRole::Safetensors, WEIGHTS.into(), weights));
        let path = dir.join(CONFIG);
        let text = serde_json::to_string_pretty(&self.config).expect("a config serialises");
        zoo::local::write_atomically(&path, text.as_bytes())?;
        files.push((FileRole::Config, CONFIG.into(), path));
        if onnx {
            let proto = super::onnx::export(&self.inference()?)?;
            let path = dir.join(ONNX);
            zoo::onnx::write(&proto, &path)?;
            files.push((FileRole::Onnx, ONNX.into(), path));
        }
        Ok(files)
    }

    /// Exports the segmenter (with ONNX) into the local zoo as an entry of task
    /// `segmentation`, `metrics = { pixacc, miou, … }`; its parent is the backbone's zoo
    /// entry when the run started from one.
    pub fn publish(&self, ctx: &ZooContext, req: PublishRequest) -> Result<Entry, TransferError> {
        let crop = self.config.segmentation.crop_size;
        let facts = EntryFacts {
            task: Task::Segmentation,
            backbone: self.config.backbone.clone(),
            num_classes: self.config.num_classes,
            input_size: [crop, crop],
            mean: self.config.mean,
            std: self.config.std,
        };
        let entry = crate::saved::entry(req, facts, self.provenance.clone());
        zoo::publish::publish_exported(ctx, entry, |dir: &Path| self.export(dir, true))
    }
}
