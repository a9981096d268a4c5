//! What trained transfer models (detectors, segmenters) share as files: `model.safetensors`
//! beside a `config.json` whose `task` says what it is; where those two files come from (an
//! exported folder, a zoo entry, a Hub repository); what a weights reference is for; and
//! the registry entry a published model gets.

use std::path::{Path, PathBuf};

use training::data::augment::{MEAN, STD};
use training::run_dir::RunDir;
use zoo::publish::PublishRequest;
use zoo::reference::{Provenance, WeightsRef, ZooContext};
use zoo::registry::{Entry, FileRole, InputConfig, Interpolation, Origin, Task};

use crate::TransferError;

/// The configuration file beside the weights.
pub const CONFIG: &str = "config.json";
/// The weights file.
pub const WEIGHTS: &str = "model.safetensors";
/// The ONNX graph.
pub const ONNX: &str = "model.onnx";

/// The ImageNet mean and std on [0, 1] pixels, as the transfer pipelines apply them
/// (GluonCV's constants, 123.68 / 58.393 … on [0, 255]).
pub fn imagenet_normalisation() -> ([f64; 3], [f64; 3]) {
    (
        MEAN.map(|m| m as f64 / 255.0),
        STD.map(|s| s as f64 / 255.0),
    )
}

/// A finite mean and a positive std, or an error naming `path`.
pub fn check_normalisation(
    path: &Path,
    mean: [f64; 3],
    std: [f64; 3],
) -> Result<(), TransferError> {
    if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(TransferError::data(
            path,
            format!("mean {mean:?} / std {std:?}: the mean must be finite and the std positive"),
        ));
    }
    Ok(())
}

/// The `task` a `config.json` states (absent: classification), without checking the rest.
pub fn config_task(path: &Path) -> Result<Task, TransferError> {
    let text = std::fs::read_to_string(path).map_err(|e| TransferError::data(path, e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TransferError::data(path, format!("not JSON: {e}")))?;
    match value.get("task") {
        None => Ok(Task::Classification),
        Some(t) => serde_json::from_value(t.clone()).map_err(|_| {
            TransferError::data(
                path,
                format!("unknown task {t}: classification, detection or segmentation"),
            )
        }),
    }
}

/// What the weights `reference` names are for: a run's `run.json`, a `config.json`'s
/// `task` (beside a file, in a folder, of a zoo entry or Hub repository), else
/// classification.
pub fn task_of(reference: &WeightsRef, ctx: &ZooContext) -> Result<Task, TransferError> {
    match reference {
        WeightsRef::Path(p) if RunDir::is_run(p) => {
            let task = RunDir::open(p)?.task()?;
            serde_json::from_value(serde_json::Value::String(task.clone()))
                .map_err(|_| TransferError::data(p, format!("unknown task `{task}`")))
        }
        WeightsRef::Path(p) => {
            let config: PathBuf = if p.is_dir() {
                p.join(CONFIG)
            } else {
                p.with_file_name(CONFIG)
            };
            if config.is_file() {
                config_task(&config)
            } else {
                Ok(Task::Classification)
            }
        }
        WeightsRef::Zoo(r) => Ok(ctx.find_entry(r)?.1.task),
        WeightsRef::Hub { repo, revision } => {
            let config = ctx.hub()?.download(repo, revision, CONFIG, None)?;
            config_task(&config)
        }
    }
}

/// `config.json`, `model.safetensors` and what is known of them, for a reference that is
/// not a run directory: an exported folder (or its weights file), a zoo entry of `task`, or
/// a Hub repository.
pub fn model_files(
    reference: &WeightsRef,
    ctx: &ZooContext,
    task: Task,
) -> Result<(PathBuf, PathBuf, Provenance), TransferError> {
    match reference {
        WeightsRef::Path(p) => {
            let (dir, weights) = if p.is_dir() {
                (p.clone(), p.join(WEIGHTS))
            } else {
                (
                    p.parent().map(Path::to_path_buf).unwrap_or_default(),
                    p.clone(),
                )
            };
            Ok((dir.join(CONFIG), weights, Provenance::default()))
        }
        WeightsRef::Zoo(r) => {
            let (_, entry) = ctx.find_entry(r)?;
            if entry.task != task {
                return Err(TransferError::Config(format!(
                    "{} is a {} entry, not a {task} model",
                    entry.id(),
                    entry.task
                )));
            }
            let provenance = Provenance {
                dataset: Some(entry.dataset.clone()),
                metrics: entry.metrics.clone(),
                recipe: entry.recipe.clone(),
                tricks: entry.tricks.clone(),
                source: entry.source.clone(),
                parent: Some(entry.id()),
                license: Some(entry.license.clone()),
            };
            Ok((
                ctx.fetch(&entry, FileRole::Config)?,
                ctx.fetch(&entry, FileRole::Safetensors)?,
                provenance,
            ))
        }
        WeightsRef::Hub { repo, revision } => {
            let hub = ctx.hub()?;
            let provenance = Provenance {
                source: Some(format!("https://huggingface.co/{repo} at {revision}")),
                ..Default::default()
            };
            Ok((
                hub.download(repo, revision, CONFIG, None)?,
                hub.download(repo, revision, WEIGHTS, None)?,
                provenance,
            ))
        }
    }
}

/// What a published transfer model's registry entry needs beyond the request.
pub struct EntryFacts {
    /// Detection or segmentation.
    pub task: Task,
    /// The backbone's zoo architecture.
    pub backbone: String,
    /// Output classes.
    pub num_classes: usize,
    /// `[height, width]` of its ONNX graph's input (the entry's input size).
    pub input_size: [usize; 2],
    /// Normalisation.
    pub mean: [f64; 3],
    /// Normalisation.
    pub std: [f64; 3],
}

/// The local-zoo entry of a transfer model (files added by the publish).
pub fn entry(req: PublishRequest, facts: EntryFacts, prov: Provenance) -> Entry {
    Entry {
        name: req.name,
        version: req.version,
        task: facts.task,
        architecture: facts.backbone,
        dataset: req
            .dataset
            .or(prov.dataset)
            .unwrap_or_else(|| "unknown".into()),
        num_classes: facts.num_classes,
        recipe: prov.recipe,
        source: prov.source.or(Some(req.source)),
        tricks: prov.tricks,
        parent: req.parent.or(prov.parent),
        license: req
            .license
            .or(prov.license)
            .unwrap_or_else(|| "apache-2.0".into()),
        created: zoo::publish::now_rfc3339(),
        notes: None,
        metrics: prov.metrics,
        input: InputConfig {
            size: [3, facts.input_size[0], facts.input_size[1]],
            mean: facts.mean,
            std: facts.std,
            crop_pct: 1.0,
            interpolation: Interpolation::Bilinear,
        },
        origin: Origin {
            hub: None,
            revision: None,
        },
        files: vec![],
    }
}
