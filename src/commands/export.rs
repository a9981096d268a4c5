//! `tricks export`: a checkpoint as safetensors + timm `config.json`, and/or ONNX.

use std::path::PathBuf;

use anyhow::Result;
use zoo::export::{export, ExportFormats};

use zoo::reference::WeightsRef;

use crate::weights_ref::ZooArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run directory, a safetensors file (with --model), `zoo:NAME[@VERSION]` or
    /// `hf:OWNER/REPO[@REV]`.
    pub checkpoint: WeightsRef,
    /// Architecture of a bare safetensors file.
    #[arg(long)]
    pub model: Option<String>,
    /// Write `model.safetensors` and `config.json` (timm's layout).
    #[arg(long)]
    pub safetensors: bool,
    /// Write `model.onnx` (opset 19, dynamic batch and size, input `input`, output `logits`).
    #[arg(long)]
    pub onnx: bool,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

pub fn run(args: Args) -> Result<()> {
    let loaded =
        training::weights::load(&args.checkpoint, args.model.as_deref(), &args.zoo.context())?;
    // Neither flag: both formats.
    let both = !args.safetensors && !args.onnx;
    let formats = ExportFormats {
        safetensors: args.safetensors || both,
        onnx: args.onnx || both,
    };
    for (_, name, path) in export(&loaded.model, &loaded.meta, formats, &args.out)? {
        let size = std::fs::metadata(&path)?.len();
        println!("{name:<20} {:>10} bytes  {}", size, path.display());
    }
    Ok(())
}
