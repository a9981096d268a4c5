//! The command-line face of weights references: the flags every command that reads weights
//! shares. Parsing and resolving live in the libraries (`zoo::reference` for zoo entries,
//! Hub repositories and files; `training::weights` for run directories).

use std::path::PathBuf;

use anyhow::Result;
use zoo::local::LocalZoo;
use zoo::reference::{Loaded, WeightsRef, ZooContext};

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
    /// Where references resolve.
    pub fn context(&self) -> ZooContext {
        ZooContext {
            local: LocalZoo::new(self.zoo.clone().unwrap_or_else(LocalZoo::default_dir)),
            offline: self.offline,
        }
    }
}

/// The weights a command runs: the reference, the architecture of a bare file, the zoo.
#[derive(Debug, Clone, clap::Args)]
pub struct WeightsArgs {
    /// Weights: a safetensors file in timm's names (the classifier's size is read from the
    /// file; a file without one runs the model without its classifier), a run directory,
    /// `zoo:NAME[@VERSION]` or `hf:OWNER/REPO[@REV]`.
    #[arg(long)]
    pub weights: WeightsRef,
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
        Ok(training::weights::load(
            &self.weights,
            self.model.as_deref(),
            &self.zoo.context(),
        )?)
    }
}
