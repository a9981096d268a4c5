//! Weights for any program, from any [`WeightsRef`]: what [`zoo::reference`] resolves (zoo
//! entries, Hub repositories, safetensors files) and, on top of it, a training run's
//! directory ([`RunDir`]), whose classes, recipe and last metrics come with it.

use std::path::{Path, PathBuf};

use zoo::export::ExportMeta;
use zoo::models::load_pretrained;
use zoo::reference::{Loaded, Provenance, WeightsRef, ZooContext};

use crate::run_dir::RunDir;
use crate::TrainingError;

/// The safetensors file `reference` names (a run directory: its `model.safetensors`).
pub fn safetensors(reference: &WeightsRef, ctx: &ZooContext) -> Result<PathBuf, TrainingError> {
    match reference {
        WeightsRef::Path(p) if RunDir::is_run(p) => Ok(RunDir::open(p)?.path(RunDir::MODEL)),
        r => Ok(r.safetensors(ctx)?),
    }
}

/// The model and its weights; `model` names the architecture of a bare safetensors file.
pub fn load(
    reference: &WeightsRef,
    model: Option<&str>,
    ctx: &ZooContext,
) -> Result<Loaded, TrainingError> {
    match reference {
        WeightsRef::Path(p) if RunDir::is_run(p) => load_run(p),
        r => Ok(r.load(model, ctx)?),
    }
}

/// A training run's final weights with its classes, recipe and last validation metrics;
/// the preprocessing is the recipe's validation transform.
fn load_run(dir: &Path) -> Result<Loaded, TrainingError> {
    let run = RunDir::open(dir)?;
    let task = run.task()?;
    if task != "classification" {
        return Err(TrainingError::data(
            dir,
            format!("is a {task} run: this command takes a classifier"),
        ));
    }
    let spec: crate::run_dir::RunSpec = run.spec()?;
    let labels = run.classes()?;
    let last = run.last_metrics()?;
    let model = load_pretrained(&spec.model, &run.path(RunDir::MODEL))?;
    let dataset = spec
        .data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Ok(Loaded {
        model,
        meta: ExportMeta {
            tag: None,
            input: spec.recipe.augment.input_config(),
            labels: Some(labels),
        },
        provenance: Provenance {
            dataset,
            metrics: [
                ("top1".to_string(), 100.0 * last.top1()),
                ("top5".to_string(), 100.0 * last.top5()),
            ]
            .into(),
            recipe: Some(spec.recipe.to_toml()),
            tricks: spec.recipe.tricks().into_iter().map(String::from).collect(),
            source: None,
            parent: spec.parent.clone(),
            license: None,
        },
    })
}
