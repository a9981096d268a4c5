//! Where a command's weights come from: a path (a safetensors file, or a run directory), a
//! zoo entry `zoo:NAME[@VERSION]`, or a Hub repository `hf:OWNER/REPO[@REV]` in timm's
//! layout. Every command that takes weights resolves them here, so they all accept the same
//! three forms.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use training::data::augment::{MEAN, STD};
use training::trainer::{EpochMetrics, RunSpec};
use zoo::export::{read_timm_config, ExportMeta};
use zoo::hub::Hub;
use zoo::local::{check_file, FileCheck, LocalZoo};
use zoo::models::{load_pretrained, Model};
use zoo::registry::{Entry, EntryRef, FileRole, InputConfig, Interpolation, Registry};

/// Options shared by every command that reads weights.
#[derive(Debug, Clone, clap::Args)]
pub struct ZooArgs {
    /// The local zoo directory (default: $TRICKS_ZOO, else ~/.cache/tricks/zoo).
    #[arg(long, global = true)]
    pub zoo: Option<PathBuf>,
    /// Use only the local Hugging Face cache (also: HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
}

impl ZooArgs {
    /// The local zoo.
    pub fn local(&self) -> LocalZoo {
        LocalZoo::new(self.zoo.clone().unwrap_or_else(LocalZoo::default_dir))
    }

    /// A Hub client (nothing is contacted until a download).
    pub fn hub(&self) -> Result<Hub> {
        Ok(Hub::from_env(self.offline)?)
    }
}

/// The weights a command runs: the reference, the architecture of a bare file, the zoo.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArgs {
    /// Weights: a safetensors file in timm's names (the classifier's size is read from the
    /// file; a file without one runs the model without its classifier), a run directory,
    /// `zoo:NAME[@VERSION]` or `hf:OWNER/REPO[@REV]`.
    #[arg(long)]
    pub weights: String,
    /// Architecture, as listed by `tricks models` (needed for a bare safetensors file
    /// without a timm `config.json` beside it).
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

impl WeightsArgs {
    /// The model with its weights and what is known about them.
    pub fn load(&self) -> Result<Loaded> {
        load(&self.weights, self.model.as_deref(), &self.zoo)
    }
}

/// Which registry an entry was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The registry shipped in the binary.
    Shipped,
    /// The local zoo's registry.
    Local,
}

impl Origin {
    /// One-word marker for tables.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Shipped => "shipped",
            Origin::Local => "local",
        }
    }
}

/// Both registries, shipped first.
pub fn registries(zoo: &LocalZoo) -> Result<Vec<(Origin, Registry)>> {
    Ok(vec![
        (Origin::Shipped, Registry::shipped()?),
        (Origin::Local, zoo.registry()?),
    ])
}

/// The entry `r` names in either registry (the highest version across both when none is
/// given).
pub fn find_entry(zoo: &LocalZoo, r: &EntryRef) -> Result<(Origin, Entry)> {
    let mut best: Option<(Origin, Entry)> = None;
    for (origin, registry) in registries(zoo)? {
        if let Some(e) = registry.find(r) {
            if best.as_ref().is_none_or(|(_, b)| e.version > b.version) {
                best = Some((origin, e.clone()));
            }
        }
    }
    best.with_context(|| format!("no zoo entry {r}; `tricks zoo list` shows the entries"))
}

/// The path of `entry`'s file of `role`: from the local zoo's blobs (verified), or
/// downloaded from the Hub into the Hugging Face cache (verified when pinned).
pub fn fetch(zoo: &LocalZoo, hub: &Hub, entry: &Entry, role: FileRole) -> Result<PathBuf> {
    let file = entry
        .file(role)
        .with_context(|| format!("{} has no {role:?} file", entry.id()))?;
    match &entry.origin.hub {
        Some(repo) => Ok(hub.download(
            repo,
            entry.origin.revision(),
            &file.path,
            file.sha256.as_deref(),
        )?),
        None => {
            let sha = file.sha256.as_deref().unwrap_or_default();
            let path = zoo.blob_path(sha);
            match check_file(&path, sha)? {
                FileCheck::Ok => Ok(path),
                FileCheck::Missing => bail!(
                    "{}: {} is missing from the zoo at {}",
                    entry.id(),
                    file.path,
                    path.display()
                ),
                FileCheck::Mismatch(found) => {
                    bail!("{}: {} has sha256 {found}, the registry says {sha}: the zoo file was altered", entry.id(), file.path)
                }
            }
        }
    }
}

/// The safetensors file `reference` names: a path as is (a run directory: its
/// `model.safetensors`), a zoo entry's or a Hub repository's `model.safetensors` fetched into
/// the cache.
pub fn resolve_path(reference: &str, args: &ZooArgs) -> Result<PathBuf> {
    if let Some(r) = reference.strip_prefix("zoo:") {
        let zoo = args.local();
        let (_, entry) = find_entry(&zoo, &r.parse()?)?;
        return fetch(&zoo, &args.hub()?, &entry, FileRole::Safetensors);
    }
    if let Some(r) = reference.strip_prefix("hf:") {
        let (repo, revision) = r.split_once('@').unwrap_or((r, "main"));
        return Ok(args
            .hub()?
            .download(repo, revision, "model.safetensors", None)?);
    }
    let path = PathBuf::from(reference);
    if path.join("run.json").is_file() {
        return Ok(path.join("model.safetensors"));
    }
    Ok(path)
}

/// A model with weights and what is known about them.
pub struct Loaded {
    /// The model.
    pub model: Model,
    /// Tag, preprocessing and class names.
    pub meta: ExportMeta,
    /// Dataset, metrics, recipe, tricks, parent: what a registry entry and a model card say.
    pub provenance: Provenance,
}

/// How a checkpoint came to be.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Dataset name.
    pub dataset: Option<String>,
    /// Metrics in percent (`top1`, `top5`).
    pub metrics: BTreeMap<String, f64>,
    /// The recipe (a run's effective recipe as TOML).
    pub recipe: Option<String>,
    /// Tricks of the paper the recipe used.
    pub tricks: Vec<String>,
    /// Where the weights came from, when not trained here.
    pub source: Option<String>,
    /// `name@version` when loaded from the zoo, or the zoo entry a run started from: the
    /// parent of what is published from it.
    pub parent: Option<String>,
    /// Licence.
    pub license: Option<String>,
}

/// Resolves `reference` (path, `zoo:`, `hf:`); `model` names the architecture of a bare
/// safetensors file.
pub fn load(reference: &str, model: Option<&str>, args: &ZooArgs) -> Result<Loaded> {
    if let Some(r) = reference.strip_prefix("zoo:") {
        let zoo = args.local();
        let (_, entry) = find_entry(&zoo, &r.parse()?)?;
        let hub = args.hub()?;
        let weights = fetch(&zoo, &hub, &entry, FileRole::Safetensors)?;
        let labels = match entry.file(FileRole::Config) {
            Some(_) => read_timm_config(&fetch(&zoo, &hub, &entry, FileRole::Config)?)?.labels,
            None => None,
        };
        let model = load_pretrained(&entry.architecture, &weights)?;
        return Ok(Loaded {
            model,
            meta: ExportMeta {
                tag: entry.name.split_once('.').map(|(_, t)| t.to_string()),
                input: entry.input.clone(),
                labels,
            },
            provenance: Provenance {
                dataset: Some(entry.dataset.clone()),
                metrics: entry.metrics.clone(),
                recipe: entry.recipe.clone(),
                tricks: entry.tricks.clone(),
                source: entry.source.clone(),
                parent: Some(entry.id()),
                license: Some(entry.license.clone()),
            },
        });
    }
    if let Some(r) = reference.strip_prefix("hf:") {
        let (repo, revision) = r.split_once('@').unwrap_or((r, "main"));
        let hub = args.hub()?;
        let config = read_timm_config(&hub.download(repo, revision, "config.json", None)?)?;
        let weights = hub.download(repo, revision, "model.safetensors", None)?;
        let model = load_pretrained(&config.architecture, &weights)?;
        return Ok(Loaded {
            model,
            meta: ExportMeta {
                tag: repo.split_once('.').map(|(_, t)| t.to_string()),
                input: config.input,
                labels: config.labels,
            },
            provenance: Provenance {
                source: Some(format!("https://huggingface.co/{repo} at {revision}")),
                ..Default::default()
            },
        });
    }
    let path = Path::new(reference);
    if path.join("run.json").is_file() {
        return load_run(path);
    }
    if path.is_dir() {
        bail!(
            "{}: a directory without run.json is not a training run",
            path.display()
        );
    }
    // A safetensors file, with --model or a timm config.json beside it.
    let config = path.with_file_name("config.json");
    let timm = if config.is_file() {
        Some(read_timm_config(&config)?)
    } else {
        None
    };
    let name = match (model, &timm) {
        (Some(m), _) => m.to_string(),
        (None, Some(c)) => c.architecture.clone(),
        (None, None) => bail!(
            "{}: say which architecture with --model (no config.json beside it)",
            path.display()
        ),
    };
    let model = load_pretrained(&name, path)?;
    let (_, h, _) = model.spec.input_size;
    let (input, labels) = match timm {
        Some(c) if c.architecture == name => (c.input, c.labels),
        _ => (InputConfig::imagenet(h), None),
    };
    Ok(Loaded {
        model,
        meta: ExportMeta {
            tag: None,
            input,
            labels,
        },
        provenance: Provenance::default(),
    })
}

/// A training run's final weights with its classes, recipe and last validation metrics.
fn load_run(dir: &Path) -> Result<Loaded> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .with_context(|| format!("reading {}", dir.join(name).display()))
    };
    let spec: RunSpec = serde_json::from_str(&read("run.json")?).context("run.json")?;
    let labels: Vec<String> =
        serde_json::from_str(&read("classes.json")?).context("classes.json")?;
    let last: Option<EpochMetrics> = read("metrics.jsonl")?
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .transpose()
        .context("metrics.jsonl")?;
    let Some(last) = last else {
        bail!("{}: the run has not finished an epoch yet", dir.display());
    };
    let model = load_pretrained(&spec.model, &dir.join("model.safetensors"))?;
    let augment = &spec.recipe.augment;
    let input = InputConfig {
        size: [3, augment.size, augment.size],
        mean: MEAN.map(|m| m as f64 / 255.0),
        std: STD.map(|s| s as f64 / 255.0),
        crop_pct: augment.crop_fraction,
        interpolation: Interpolation::Bilinear,
    };
    let dataset = spec
        .data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Ok(Loaded {
        model,
        meta: ExportMeta {
            tag: None,
            input,
            labels: Some(labels),
        },
        provenance: Provenance {
            dataset,
            metrics: [
                ("top1".to_string(), 100.0 * last.top1),
                ("top5".to_string(), 100.0 * last.top5),
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
