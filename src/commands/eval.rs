//! `tricks eval`: top-1/top-5 and the logit-gap statistic of Section 5.2 on a validation
//! folder.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::DType;
use training::data::augment::AugmentConfig;
use training::data::{ImageFolder, Loader, LoaderConfig};
use training::trainer::evaluate;

use crate::weights_ref::WeightsArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Dataset root in the ImageNet layout; its `val` split is evaluated.
    #[arg(long)]
    pub data: PathBuf,
    /// Crop size (default: the model's input size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Stop at the first unreadable image instead of skipping it.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: Args) -> Result<()> {
    let model = args.weights.load()?.model;
    // The classes: the training split's folders where there is one, else the validation
    // split's (evaluation data alone).
    let split = if args.data.join("train").is_dir() {
        "train"
    } else {
        "val"
    };
    let classes = ImageFolder::class_names_of(&args.data, split)?;
    let val = ImageFolder::open(&args.data, "val", &classes)?;
    // The classifier's size from the model's spec (a probe forward pass would need an input
    // the network accepts: Inception-V3 refuses anything under 75×75).
    let out = model.spec.output_dims();
    if out != classes.len() {
        bail!(
            "{} has {out} classes, the data {}",
            args.weights.weights,
            classes.len()
        );
    }
    let augment = AugmentConfig {
        size: args.size.unwrap_or(model.spec.input_size.1),
        ..Default::default()
    };
    let loader = Loader::new(
        val.samples,
        LoaderConfig {
            batch_size: args.batch_size,
            train: false,
            augment,
            seed: 0,
            workers: 2,
            prefetch: 2,
            strict: args.strict,
        },
    )?;
    let e = evaluate(
        model.frozen()?.as_ref(),
        &loader,
        DType::F32,
        &candle_core::Device::Cpu,
    )?;
    println!("images       {}", e.images);
    println!("top-1        {:.2}%", 100.0 * e.top1);
    println!("top-5        {:.2}%", 100.0 * e.top5);
    println!("loss         {:.4}", e.loss);
    println!(
        "logit gap    {:.3} ± {:.3} (max logit minus the mean of the others)",
        e.logit_gap_mean, e.logit_gap_std
    );
    let skipped = loader.skips().skipped;
    if !skipped.is_empty() {
        eprintln!("{} unreadable image(s) skipped:", skipped.len());
        for s in skipped.iter().take(20) {
            eprintln!("  {s}");
        }
    }
    Ok(())
}
