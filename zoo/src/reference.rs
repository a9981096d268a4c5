//! Where weights come from: a path (a safetensors file, or a training run's directory), a
//! zoo entry `zoo:NAME[@VERSION]`, or a Hub repository `hf:OWNER/REPO[@REV]` in timm's
//! layout. Every program that takes weights parses them with [`WeightsRef`]'s `FromStr` and
//! resolves them here, so they all accept the same three forms.
//!
//! Run directories are written by the `training` crate, which resolves them on top of this
//! module (`training::weights::load`); here a path is a safetensors file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::export::{read_timm_config, ExportMeta};
use crate::hub::Hub;
use crate::local::{check_recorded, FileCheck, LocalZoo};
use crate::models::{load_pretrained, Model};
use crate::registry::{Entry, EntryRef, FileRole, InputConfig, Registry};
use crate::{Result, ZooError};

/// A parsed weights reference (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsRef {
    /// `zoo:NAME[@VERSION]`: an entry of the shipped or the local registry.
    Zoo(EntryRef),
    /// `hf:OWNER/REPO[@REV]`: a timm-layout repository on the Hub (`main` by default).
    Hub {
        /// `OWNER/REPO`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
    },
    /// A file or a run directory.
    Path(PathBuf),
}

impl FromStr for WeightsRef {
    type Err = ZooError;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(r) = s.strip_prefix("zoo:") {
            return Ok(Self::Zoo(r.parse()?));
        }
        if let Some(r) = s.strip_prefix("hf:") {
            let (repo, revision) = r.split_once('@').unwrap_or((r, "main"));
            crate::hub::check_repo_id(repo)?;
            if revision.is_empty() {
                return Err(ZooError::Config(format!("`{s}`: empty revision after @")));
            }
            return Ok(Self::Hub {
                repo: repo.to_string(),
                revision: revision.to_string(),
            });
        }
        if s.is_empty() {
            return Err(ZooError::Config(
                "empty weights reference: give a path, zoo:NAME[@VERSION] or hf:OWNER/REPO".into(),
            ));
        }
        Ok(Self::Path(PathBuf::from(s)))
    }
}

impl fmt::Display for WeightsRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zoo(r) => write!(f, "zoo:{r}"),
            Self::Hub { repo, revision } => write!(f, "hf:{repo}@{revision}"),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Where references are resolved: the local zoo and the Hub client's settings.
#[derive(Debug, Clone)]
pub struct ZooContext {
    /// The local zoo.
    pub local: LocalZoo,
    /// Use only the local Hugging Face cache.
    pub offline: bool,
}

impl ZooContext {
    /// A Hub client (nothing is contacted until a download).
    pub fn hub(&self) -> Result<Hub> {
        Hub::from_env(self.offline)
    }

    /// Both registries, shipped first.
    pub fn registries(&self) -> Result<Vec<(RegistryKind, Registry)>> {
        Ok(vec![
            (RegistryKind::Shipped, Registry::shipped()?),
            (RegistryKind::Local, self.local.registry()?),
        ])
    }

    /// The entry `r` names in either registry (the highest version across both when none
    /// is given).
    pub fn find_entry(&self, r: &EntryRef) -> Result<(RegistryKind, Entry)> {
        let mut best: Option<(RegistryKind, Entry)> = None;
        for (origin, registry) in self.registries()? {
            if let Some(e) = registry.find(r) {
                if best.as_ref().is_none_or(|(_, b)| e.version > b.version) {
                    best = Some((origin, e.clone()));
                }
            }
        }
        best.ok_or_else(|| {
            ZooError::Config(format!(
                "no zoo entry {r}; `tricks zoo list` shows the entries"
            ))
        })
    }

    /// The path of `entry`'s file of `role`: from the local zoo's blobs (verified), or
    /// downloaded from the Hub into the Hugging Face cache (verified when pinned).
    pub fn fetch(&self, entry: &Entry, role: FileRole) -> Result<PathBuf> {
        let file = entry
            .file(role)
            .ok_or_else(|| ZooError::Config(format!("{} has no {role:?} file", entry.id())))?;
        if let Some(repo) = &entry.origin.hub {
            return self.hub()?.download(
                repo,
                entry.origin.revision(),
                &file.path,
                file.sha256.as_deref(),
            );
        }
        let sha = file.sha256.as_deref().unwrap_or_default();
        let path = self.local.blob_path(sha);
        let fail = |reason: String| ZooError::Registry {
            path: entry.id(),
            reason,
        };
        match check_recorded(&path, file)? {
            FileCheck::Ok => Ok(path),
            FileCheck::Missing => Err(fail(format!(
                "{} is missing from the zoo at {}",
                file.path,
                path.display()
            ))),
            FileCheck::Mismatch(found) => Err(fail(format!(
                "{} does not match the registry (found {found}; sha256 {sha}): the zoo file was altered",
                file.path
            ))),
        }
    }
}

/// Which registry an entry was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    /// The registry shipped in the binary.
    Shipped,
    /// The local zoo's registry.
    Local,
}

impl RegistryKind {
    /// One-word marker for tables.
    pub fn label(self) -> &'static str {
        match self {
            RegistryKind::Shipped => "shipped",
            RegistryKind::Local => "local",
        }
    }
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

impl WeightsRef {
    /// The safetensors file this reference names: a path as is, a zoo entry's or a Hub
    /// repository's `model.safetensors` fetched into the cache. (A run directory is the
    /// training crate's to resolve.)
    pub fn safetensors(&self, ctx: &ZooContext) -> Result<PathBuf> {
        match self {
            Self::Zoo(r) => {
                let (_, entry) = ctx.find_entry(r)?;
                ctx.fetch(&entry, FileRole::Safetensors)
            }
            Self::Hub { repo, revision } => {
                ctx.hub()?
                    .download(repo, revision, "model.safetensors", None)
            }
            Self::Path(p) => Ok(p.clone()),
        }
    }

    /// The model and its weights; `model` names the architecture of a bare safetensors
    /// file (else a timm `config.json` beside it must).
    pub fn load(&self, model: Option<&str>, ctx: &ZooContext) -> Result<Loaded> {
        match self {
            Self::Zoo(r) => load_entry(r, ctx),
            Self::Hub { repo, revision } => load_hub(repo, revision, ctx),
            Self::Path(p) => load_file(p, model),
        }
    }
}

fn load_entry(r: &EntryRef, ctx: &ZooContext) -> Result<Loaded> {
    let (_, entry) = ctx.find_entry(r)?;
    let weights = ctx.fetch(&entry, FileRole::Safetensors)?;
    let labels = match entry.file(FileRole::Config) {
        Some(_) => read_timm_config(&ctx.fetch(&entry, FileRole::Config)?)?.labels,
        None => None,
    };
    let model = load_pretrained(&entry.architecture, &weights)?;
    Ok(Loaded {
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
    })
}

fn load_hub(repo: &str, revision: &str, ctx: &ZooContext) -> Result<Loaded> {
    let hub = ctx.hub()?;
    let config = read_timm_config(&hub.download(repo, revision, "config.json", None)?)?;
    let weights = hub.download(repo, revision, "model.safetensors", None)?;
    let model = load_pretrained(&config.architecture, &weights)?;
    Ok(Loaded {
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
    })
}

/// A safetensors file, with `model` or a timm `config.json` beside it.
fn load_file(path: &Path, model: Option<&str>) -> Result<Loaded> {
    if path.is_dir() {
        return Err(ZooError::Config(format!(
            "{}: a directory without run.json is not a training run",
            path.display()
        )));
    }
    let config = path.with_file_name("config.json");
    let timm = if config.is_file() {
        Some(read_timm_config(&config)?)
    } else {
        None
    };
    let name = match (model, &timm) {
        (Some(m), _) => m.to_string(),
        (None, Some(c)) => c.architecture.clone(),
        (None, None) => {
            return Err(ZooError::Config(format!(
                "{}: say which architecture with --model (no config.json beside it)",
                path.display()
            )))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            "hf:timm/resnet50d.gluon_in1k"
                .parse::<WeightsRef>()
                .unwrap(),
            WeightsRef::Hub {
                repo: "timm/resnet50d.gluon_in1k".into(),
                revision: "main".into()
            }
        );
        assert_eq!(
            "hf:me/net@v2".parse::<WeightsRef>().unwrap().to_string(),
            "hf:me/net@v2"
        );
        assert!(matches!(
            "zoo:resnet50d.gluon_in1k@1.0.0"
                .parse::<WeightsRef>()
                .unwrap(),
            WeightsRef::Zoo(_)
        ));
        assert_eq!(
            "runs/a".parse::<WeightsRef>().unwrap(),
            WeightsRef::Path("runs/a".into())
        );
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "hf:",
            "hf:no-slash",
            "hf:me/bad name",
            "hf:me/net@",
            "zoo:",
        ] {
            let err = bad.parse::<WeightsRef>();
            assert!(err.is_err(), "{bad:?} parsed");
        }
    }
}
