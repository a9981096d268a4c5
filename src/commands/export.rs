//! `tricks export`: a checkpoint as safetensors + `config.json` (timm's for a classifier,
//! the heads' settings for a detector), and/or ONNX.

use std::path::PathBuf;

use anyhow::{bail, Result};
use transfer::detection::SavedDetector;
use zoo::export::{export, ExportFormats};
use zoo::registry::Task;

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
    /// A detector's ONNX input size, HEIGHTxWIDTH (default: its shorter side `min_size`,
    /// 4:3 landscape).
    #[arg(long, value_parser = parse_size)]
    pub onnx_size: Option<[usize; 2]>,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

/// `HEIGHTxWIDTH`, both at least 32.
pub fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let bad = || format!("`{s}`: give HEIGHTxWIDTH, e.g. 600x800, both at least 32");
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (h, w): (usize, usize) = (h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
    if h < 32 || w < 32 || h > 8192 || w > 8192 {
        return Err(bad());
    }
    Ok([h, w])
}

pub fn run(args: Args) -> Result<()> {
    let ctx = args.zoo.context();
    // Neither flag: both formats.
    let both = !args.safetensors && !args.onnx;
    let formats = ExportFormats {
        safetensors: args.safetensors || both,
        onnx: args.onnx || both,
    };
    let files = match transfer::saved::task_of(&args.checkpoint, &ctx)? {
        Task::Detection => {
            let det = SavedDetector::load(&args.checkpoint, &ctx)?;
            let size = args.onnx_size.unwrap_or_else(|| det.default_onnx_size());
            // The weights and the config travel together: ONNX alone still writes them.
            det.export(&args.out, formats.onnx.then_some(size))?
        }
        Task::Segmentation => {
            if args.onnx_size.is_some() {
                bail!("--onnx-size is for detectors: a segmenter's ONNX graph takes any size");
            }
            let seg = transfer::segmentation::SavedSegmenter::load(&args.checkpoint, &ctx)?;
            seg.export(&args.out, formats.onnx)?
        }
        Task::Classification => {
            if args.onnx_size.is_some() {
                bail!("--onnx-size is for detectors: a classifier's ONNX graph takes any size");
            }
            let loaded = training::weights::load(&args.checkpoint, args.model.as_deref(), &ctx)?;
            export(&loaded.model, &loaded.meta, formats, &args.out)?
        }
    };
    for (_, name, path) in files {
        let size = std::fs::metadata(&path)?.len();
        println!("{name:<20} {:>10} bytes  {}", size, path.display());
    }
    Ok(())
}
