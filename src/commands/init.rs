//! `tricks init`: a model's initial weights as a safetensors file in timm's names, e.g. to
//! start another framework from exactly our initialisation.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use zoo::models::{create_model, ModelSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architecture, as listed by `tricks models`.
    #[arg(long)]
    pub model: String,
    /// Where to write the weights.
    #[arg(long)]
    pub out: PathBuf,
    /// Classes of the classifier (0: no classifier).
    #[arg(long, default_value_t = 1000)]
    pub num_classes: usize,
    /// Seed of the Xavier-uniform draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Zero-γ (Section 3.1): γ = 0 in the last batch norm of every residual block.
    #[arg(long)]
    pub zero_gamma: bool,
}

pub fn run(args: Args) -> Result<()> {
    let spec = ModelSpec::find(&args.model)?
        .with_num_classes(args.num_classes)
        .with_zero_gamma(args.zero_gamma);
    let model = create_model(&spec, &Device::Cpu, args.seed)?;
    zoo::weights::save_weights(&model.vars, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "{}: {:.2} M parameters written to {}",
        spec.name,
        model.num_params() as f64 / 1e6,
        args.out.display()
    );
    Ok(())
}
