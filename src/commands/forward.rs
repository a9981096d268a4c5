//! `tricks forward`: logits (and stage features) of a model on a tensor from a file, so that
//! anyone can check our numerics against another framework.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use zoo::models::ModelSpec;

use crate::weights_ref::WeightsArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Safetensors file with an f32 tensor `input` of shape (N, 3, H, W).
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write `logits` (and `features.0` … `features.3`).
    #[arg(long)]
    pub output: PathBuf,
    /// Use batch statistics in batch norm, as in training.
    #[arg(long)]
    pub train_mode: bool,
    /// Also write the outputs of the four stages.
    #[arg(long)]
    pub features: bool,
}

/// The `input` tensor of the file at `path`, checked to be an f32 image batch.
fn read_input(path: &PathBuf) -> Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading input {}", path.display()))?;
    let Some(input) = tensors.remove("input") else {
        let mut found: Vec<_> = tensors.keys().cloned().collect();
        found.sort();
        bail!(
            "{}: no tensor named `input` (found: {})",
            path.display(),
            if found.is_empty() {
                "none".into()
            } else {
                found.join(", ")
            }
        );
    };
    if input.rank() != 4 {
        bail!(
            "{}: `input` must have shape (N, C, H, W), got {:?}",
            path.display(),
            input.dims()
        );
    }
    if input.dtype() != DType::F32 {
        bail!(
            "{}: `input` must be f32, got {:?}",
            path.display(),
            input.dtype()
        );
    }
    Ok(input)
}

pub fn run(args: Args) -> Result<()> {
    if let Some(name) = &args.weights.model {
        ModelSpec::find(name)?;
    }
    let input = read_input(&args.input)?;
    let model = args.weights.load()?.model;
    let spec = &model.spec;
    let (_, c, _, _) = input.dims4()?;
    if c != spec.input_size.0 {
        bail!(
            "{}: `input` has {c} channels, {} takes {}",
            args.input.display(),
            spec.name,
            spec.input_size.0
        );
    }

    let net = model.frozen()?;
    let features = net.forward_features(&input, args.train_mode)?;
    let mut out = HashMap::new();
    out.insert("logits".to_string(), net.forward_head(&features[3])?);
    if args.features {
        for (i, f) in features.into_iter().enumerate() {
            out.insert(format!("features.{i}"), f);
        }
    }
    zoo::weights::save_tensors(&out, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}
