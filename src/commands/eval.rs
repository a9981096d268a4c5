//! `tricks eval`: top-1/top-5 and the logit-gap statistic of Section 5.2 on a validation
//! folder; `tricks eval detection`: the VOC metric of devkit-format detections; `tricks
//! eval segmentation`: pixel accuracy and mean IoU of ADE20K-encoded label PNGs.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::DType;
use training::data::augment::AugmentConfig;
use training::data::{ImageFolder, Loader, LoaderConfig};
use training::trainer::evaluate;

use crate::weights_ref::WeightsArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub task: Option<EvalTask>,
    /// Weights: a safetensors file in timm's names, a run directory, `zoo:NAME[@VERSION]`
    /// or `hf:OWNER/REPO[@REV]` (required without a subcommand).
    #[arg(long)]
    pub weights: Option<zoo::reference::WeightsRef>,
    /// Architecture, as listed by `tricks models` (needed for a bare safetensors file
    /// without a timm `config.json` beside it).
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub zoo: crate::weights_ref::ZooArgs,
    /// Dataset root in the ImageNet layout; its `val` split is evaluated (required without a
    /// subcommand).
    #[arg(long)]
    pub data: Option<PathBuf>,
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

#[derive(Debug, clap::Subcommand)]
pub enum EvalTask {
    /// Pascal VOC AP per class and mAP (VOC2007 11-point and VOC2010+ area) of detections
    /// in the devkit results format (`comp4_det_test_<class>.txt`).
    Detection(DetectionArgs),
    /// Pixel accuracy, per-class IoU and mean IoU (over all 150 classes, GluonCV's; over the
    /// classes present, mmsegmentation's) of predicted ADE20K label PNGs.
    Segmentation(SegmentationArgs),
}

#[derive(Debug, clap::Args)]
pub struct SegmentationArgs {
    /// The ADEChallengeData2016 folder.
    #[arg(long)]
    pub data: PathBuf,
    /// The split the predictions are of (`training` or `validation`).
    #[arg(long, default_value = "validation")]
    pub split: String,
    /// The folder of predicted label PNGs, named as the annotations.
    #[arg(long)]
    pub predictions: PathBuf,
}

/// The segmentation metric as a table: per-class IoU of the classes present, then pixel
/// accuracy and both means, each saying which it is.
pub fn print_segmentation(m: &eval::segmentation::SegMetrics, names: &[&str]) {
    println!("{:<20} {:>8}", "class", "IoU");
    for (c, iou) in m.class_iou.iter().enumerate() {
        if let Some(iou) = iou {
            println!("{:<20} {:>8.2}", names[c], 100.0 * iou);
        }
    }
    let present = m.class_iou.iter().flatten().count();
    let rows = [
        (
            "pixel accuracy".to_string(),
            m.pixel_accuracy,
            format!("over {} labelled pixels", m.labelled_pixels),
        ),
        (
            format!("mIoU, all {} classes", names.len()),
            m.miou_all,
            "GluonCV's: an absent class counts 0".to_string(),
        ),
        (
            format!("mIoU, {present} present classes"),
            m.miou_present,
            "mmsegmentation's: classes in truth or prediction".to_string(),
        ),
    ];
    for (what, v, note) in rows {
        println!("{what:<28} {:>7.2}%  ({note})", 100.0 * v);
    }
}

fn segmentation(args: SegmentationArgs) -> Result<()> {
    let m = transfer::segmentation::score_predictions(&args.data, &args.split, &args.predictions)?;
    print_segmentation(&m, &transfer::ade20k::ADE_CLASSES);
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DetectionArgs {
    /// The VOCdevkit folder.
    #[arg(long)]
    pub data: PathBuf,
    /// The split the detections are of.
    #[arg(long, default_value = "voc2007:test")]
    pub split: String,
    /// The folder of `comp4_det_test_<class>.txt` files.
    #[arg(long)]
    pub predictions: PathBuf,
}

/// Prints the per-class table and both means.
pub fn print_voc(m: &eval::voc::VocMap, names: &[&str]) {
    println!(
        "{:<14} {:>9} {:>10} {:>8} {:>8}",
        "class", "objects", "detections", "AP07", "AP"
    );
    let pct = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{:.2}", 100.0 * v));
    for (c, ap) in m.classes.iter().enumerate() {
        if ap.positives == 0 && ap.detections == 0 {
            continue;
        }
        println!(
            "{:<14} {:>9} {:>10} {:>8} {:>8}",
            names[c],
            ap.positives,
            ap.detections,
            pct(ap.ap07),
            pct(ap.ap)
        );
    }
    let counted = m.classes.iter().filter(|c| c.positives > 0).count();
    println!(
        "mAP (VOC2007 11-point)   {:.2}%  over the {counted} classes with ground truth",
        100.0 * m.map07
    );
    println!("mAP (VOC2010+ area)      {:.2}%", 100.0 * m.map);
}

fn detection(args: DetectionArgs) -> Result<()> {
    use transfer::voc::{parse_splits, read_results, VocDataset, VOC_CLASSES};
    let data = VocDataset::open(&args.data, &parse_splits(&args.split)?, true)?;
    let ids: Vec<String> = data.images.iter().map(|i| i.id.clone()).collect();
    let dets = read_results(&args.predictions, &ids)?;
    let m = eval::voc::voc_map(&data.ground_truth(), &dets, VOC_CLASSES.len())?;
    println!("images {}  detections {}", ids.len(), dets.len());
    print_voc(&m, &VOC_CLASSES);
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    match args.task {
        Some(EvalTask::Detection(d)) => return detection(d),
        Some(EvalTask::Segmentation(s)) => return segmentation(s),
        None => {}
    }
    let (Some(reference), Some(data)) = (args.weights.clone(), args.data.clone()) else {
        bail!(
            "tricks eval needs --weights and --data (or a subcommand: tricks eval detection, \
             tricks eval segmentation)"
        );
    };
    let weights = WeightsArgs {
        weights: reference,
        model: args.model.clone(),
        zoo: args.zoo.clone(),
    };
    let model = weights.load()?.model;
    // The classes: the training split's folders where there is one, else the validation
    // split's (evaluation data alone).
    let split = if data.join("train").is_dir() {
        "train"
    } else {
        "val"
    };
    let classes = ImageFolder::class_names_of(&data, split)?;
    let val = ImageFolder::open(&data, "val", &classes)?;
    // The classifier's size from the model's spec (a probe forward pass would need an input
    // the network accepts: Inception-V3 refuses anything under 75×75).
    let out = model.spec.output_dims();
    if out != classes.len() {
        bail!(
            "{} has {out} classes, the data {}",
            weights.weights,
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
