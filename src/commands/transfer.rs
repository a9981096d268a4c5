//! `tricks transfer detect` and `tricks transfer segment`: fine-tune a zoo backbone as
//! Faster R-CNN on a VOCdevkit (Section 6.1) or as FCN on ADE20K (Section 6.2), with the
//! run machinery of `tricks train`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use training::recipe::{DetectionRecipe, SegmentationRecipe};
use training::run_dir::EpochMetrics;
use training::trainer::{Task, Trainer};
use transfer::detection::{Detection, DetectionSpec};
use transfer::segmentation::{Segmentation, SegmentationSpec};
use transfer::voc::VOC_CLASSES;
use zoo::reference::WeightsRef;

use crate::commands::train::OptimOverrides;
use crate::progress::RunProgress;
use crate::weights_ref::ZooArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: TransferCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TransferCommand {
    /// Faster R-CNN (C4) on Pascal VOC from a zoo ResNet; at the end the test detections in
    /// the devkit format under RUN/detections/, scored as `tricks eval detection` does.
    Detect(Box<DetectArgs>),
    /// FCN on ADE20K from a zoo ResNet dilated to output stride 8; at the end the
    /// validation predictions as label PNGs under RUN/predictions/, scored as `tricks eval
    /// segmentation` does.
    Segment(Box<SegmentArgs>),
}

/// The segmenter settings that can be overridden on the command line.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct SegmentationOverrides {
    /// The longer side is drawn in scale-range × this.
    #[arg(long)]
    pub base_size: Option<usize>,
    /// Square training crop.
    #[arg(long)]
    pub crop_size: Option<usize>,
    /// Backbone output stride (8: stages 3 and 4 dilated).
    #[arg(long)]
    pub output_stride: Option<usize>,
    /// Batch norm with running statistics, not trained (for tiny batches).
    #[arg(long)]
    pub freeze_bn: Option<bool>,
    /// The auxiliary head on stage 3.
    #[arg(long)]
    pub aux: Option<bool>,
    /// Weight of the auxiliary loss (GluonCV 0.5, mmsegmentation 0.4).
    #[arg(long)]
    pub aux_weight: Option<f64>,
    /// Learning-rate multiplier of the heads.
    #[arg(long)]
    pub head_lr_mult: Option<f64>,
    /// Validate at GluonCV's scales (0.5 to 1.75 × base size) with flip, in crop-sized
    /// windows where a scaled image is larger than the crop.
    #[arg(long)]
    pub multi_scale_eval: bool,
}

impl SegmentationOverrides {
    fn apply(&self, mut r: SegmentationRecipe) -> SegmentationRecipe {
        let c = &mut r.segmentation;
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { c.$field = v.clone(); })* };
        }
        set!(
            base_size,
            crop_size,
            output_stride,
            freeze_bn,
            aux,
            aux_weight,
            head_lr_mult
        );
        if self.multi_scale_eval {
            c.val_scales = training::recipe::MULTI_SCALE_EVAL.to_vec();
            c.val_flip = true;
        }
        r
    }
}

#[derive(Debug, clap::Args)]
pub struct SegmentArgs {
    /// The backbone: anything `tricks train --init` takes (a safetensors file with
    /// `--backbone-model`, a run directory, `zoo:NAME[@VERSION]`, `hf:OWNER/REPO[@REV]`).
    #[arg(long, required_unless_present_any = ["resume", "from_scratch"])]
    pub backbone: Option<WeightsRef>,
    /// The backbone's architecture, for a bare safetensors file; with `--from-scratch`,
    /// the architecture to initialise.
    #[arg(long)]
    pub backbone_model: Option<String>,
    /// Train the backbone from its random initialisation (needs `--backbone-model`).
    #[arg(long, requires = "backbone_model", conflicts_with = "backbone")]
    pub from_scratch: bool,
    /// The ADEChallengeData2016 folder.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Run directory.
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["backbone", "data", "out"])]
    pub resume: Option<PathBuf>,
    /// A shipped recipe (`segmentation`) or a TOML file.
    #[arg(long, default_value = "segmentation")]
    pub recipe: String,
    /// Stop at the first bad image or mask instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Device: `cpu`, or `cuda[:N]` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub optim: OptimOverrides,
    #[command(flatten)]
    pub segmentation: SegmentationOverrides,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

/// The detector settings that can be overridden on the command line.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct DetectionOverrides {
    /// Shorter image side after resizing.
    #[arg(long)]
    pub min_size: Option<usize>,
    /// Longer image side at most.
    #[arg(long)]
    pub max_size: Option<usize>,
    /// Drop `difficult` objects from the training targets (mmdetection; GluonCV keeps them).
    #[arg(long)]
    pub drop_difficult: bool,
    /// First backbone stage that trains (2: stem and stage 1 frozen).
    #[arg(long)]
    pub train_from_stage: Option<usize>,
    /// Channels of the RPN's 3×3 convolution.
    #[arg(long)]
    pub rpn_channels: Option<usize>,
    /// Proposals before / after NMS in training, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub rpn_train_proposals: Option<Vec<usize>>,
    /// Proposals before / after NMS at test time, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub rpn_test_proposals: Option<Vec<usize>>,
    /// Regions sampled per image for the head.
    #[arg(long)]
    pub rcnn_batch: Option<usize>,
    /// RoIAlign with the half-pixel offset (Detectron2's `aligned=True`).
    #[arg(long)]
    pub roi_aligned: Option<bool>,
    /// Test-time filter: torchvision's (score 0.05, NMS 0.5, 100 per image) instead of
    /// GluonCV's (0.001, 0.3, 100).
    #[arg(long)]
    pub torchvision_test: bool,
    /// Test: score threshold.
    #[arg(long)]
    pub score_threshold: Option<f64>,
    /// Test: per-class NMS threshold.
    #[arg(long)]
    pub nms_threshold: Option<f64>,
    /// Test: detections per image.
    #[arg(long)]
    pub detections_per_image: Option<usize>,
}

impl DetectionOverrides {
    fn apply(&self, mut r: DetectionRecipe) -> Result<DetectionRecipe> {
        let d = &mut r.detection;
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { d.$field = v.clone(); })* };
        }
        if self.torchvision_test {
            let (s, n, k) = training::recipe::TORCHVISION_TEST_FILTER;
            (d.score_threshold, d.nms_threshold, d.detections_per_image) = (s, n, k);
        }
        set!(
            min_size,
            max_size,
            train_from_stage,
            rpn_channels,
            rcnn_batch,
            roi_aligned,
            score_threshold,
            nms_threshold,
            detections_per_image
        );
        if self.drop_difficult {
            d.drop_difficult = true;
        }
        for (flag, given, (pre, post)) in [
            (
                "--rpn-train-proposals",
                &self.rpn_train_proposals,
                (&mut d.rpn_pre_nms_train, &mut d.rpn_post_nms_train),
            ),
            (
                "--rpn-test-proposals",
                &self.rpn_test_proposals,
                (&mut d.rpn_pre_nms_test, &mut d.rpn_post_nms_test),
            ),
        ] {
            match given.as_deref() {
                None => {}
                Some([a, b]) => (*pre, *post) = (*a, *b),
                Some(other) => bail!(
                    "{flag} takes two counts, before and after NMS (as 12000,2000), not {other:?}"
                ),
            }
        }
        Ok(r)
    }
}

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// The backbone: anything `tricks train --init` takes (a safetensors file with
    /// `--backbone-model`, a run directory, `zoo:NAME[@VERSION]`, `hf:OWNER/REPO[@REV]`).
    #[arg(long, required_unless_present_any = ["resume", "from_scratch"])]
    pub backbone: Option<WeightsRef>,
    /// The backbone's architecture, for a bare safetensors file; with `--from-scratch`,
    /// the architecture to initialise.
    #[arg(long)]
    pub backbone_model: Option<String>,
    /// Train the backbone from its random initialisation (needs `--backbone-model`).
    #[arg(long, requires = "backbone_model", conflicts_with = "backbone")]
    pub from_scratch: bool,
    /// The VOCdevkit folder.
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Training splits.
    #[arg(long, default_value = "voc2007:trainval,voc2012:trainval")]
    pub train: String,
    /// Test split.
    #[arg(long, default_value = "voc2007:test")]
    pub test: String,
    /// Run directory.
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["backbone", "data", "out"])]
    pub resume: Option<PathBuf>,
    /// A shipped recipe (`detection`) or a TOML file.
    #[arg(long, default_value = "detection")]
    pub recipe: String,
    /// Stop at the first bad annotation or image instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Device: `cpu`, or `cuda[:N]` in a build with `--features cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub optim: OptimOverrides,
    #[command(flatten)]
    pub detection: DetectionOverrides,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        TransferCommand::Detect(a) => detect(*a),
        TransferCommand::Segment(a) => segment(*a),
    }
}

/// `--resume` with recipe flags (`given`) is refused: a run keeps the recipe it started with.
fn refuse_recipe_flags(dir: &std::path::Path, given: bool) -> Result<()> {
    if given {
        bail!(
            "--resume continues a run with the recipe it was started with ({}); recipe flags apply to new runs only",
            dir.join("recipe.toml").display()
        );
    }
    Ok(())
}

/// Trains `trainer` to its last epoch with a progress bar, reports the files skipped, and
/// returns the epochs this call ran (none: the run had already finished).
fn train_to_end<T: Task>(trainer: &mut Trainer<T>) -> Result<Vec<EpochMetrics>> {
    let metrics = RunProgress::new("").drive(|progress, epoch| trainer.run(progress, epoch))?;
    let skipped = trainer.skipped_images();
    if !skipped.is_empty() {
        eprintln!("{} file(s) skipped:", skipped.len());
        for s in skipped.iter().take(20) {
            eprintln!("  {s}");
        }
    }
    Ok(metrics)
}

/// The backbone's architecture, its weights resolved to a file, and the zoo entry it came
/// from: from `--backbone` (with `--backbone-model` for a bare file), or from
/// `--backbone-model` alone for a run from scratch.
fn resolve_backbone(
    backbone: &Option<WeightsRef>,
    model: &Option<String>,
    zoo: &ZooArgs,
) -> Result<(String, Option<PathBuf>, Option<String>)> {
    let ctx = zoo.context();
    Ok(match backbone {
        Some(r) => {
            let loaded = training::weights::load(r, model.as_deref(), &ctx)?;
            let parent = match r {
                WeightsRef::Zoo(z) => Some(ctx.find_entry(z)?.1.id()),
                _ => None,
            };
            (
                loaded.model.spec.name.clone(),
                Some(training::weights::safetensors(r, &ctx)?),
                parent,
            )
        }
        None => (model.clone().expect("clap requires it"), None, None),
    })
}

fn segment(args: SegmentArgs) -> Result<()> {
    let device = crate::device::parse(&args.device)?;
    let mut trainer = match &args.resume {
        Some(dir) => {
            refuse_recipe_flags(
                dir,
                args.optim != OptimOverrides::default()
                    || args.segmentation != SegmentationOverrides::default()
                    || args.recipe != "segmentation",
            )?;
            let t = Segmentation::resume(dir, &device)?;
            println!("resuming {} after epoch {}", dir.display(), t.epochs_done());
            t
        }
        None => {
            let mut recipe = args
                .segmentation
                .apply(SegmentationRecipe::load(&args.recipe)?);
            recipe.optim = args.optim.apply(recipe.optim);
            let (backbone, init, parent) =
                resolve_backbone(&args.backbone, &args.backbone_model, &args.zoo)?;
            let (Some(data), Some(out)) = (args.data.clone(), args.out.clone()) else {
                bail!("--data and --out are required for a new run");
            };
            Segmentation::create(
                &out,
                SegmentationSpec {
                    task: "segmentation".into(),
                    backbone,
                    init,
                    parent,
                    data,
                    strict: args.strict,
                    recipe,
                },
                &device,
            )?
        }
    };
    let metrics = train_to_end(&mut trainer)?;
    let run = trainer.run_dir().root().to_path_buf();
    let dir = run.join(transfer::segmentation::task::PREDICTIONS);
    // Every epoch's evaluation wrote the predictions there: score those.
    let m = if dir.is_dir() {
        trainer.task().score(&dir)?
    } else {
        trainer.task().evaluate_into(&dir)?
    };
    crate::commands::eval::print_segmentation(&m, &transfer::ade20k::ADE_CLASSES);
    println!(
        "validation predictions (ADE20K label PNGs): {}",
        dir.display()
    );
    if metrics.is_empty() {
        println!("(the run had already finished)");
    }
    Ok(())
}

fn detect(args: DetectArgs) -> Result<()> {
    let device = crate::device::parse(&args.device)?;
    let mut trainer = match &args.resume {
        Some(dir) => {
            refuse_recipe_flags(
                dir,
                args.optim != OptimOverrides::default()
                    || args.detection != DetectionOverrides::default()
                    || args.recipe != "detection",
            )?;
            let t = Detection::resume(dir, &device)?;
            println!("resuming {} after epoch {}", dir.display(), t.epochs_done());
            t
        }
        None => {
            let mut recipe = args.detection.apply(DetectionRecipe::load(&args.recipe)?)?;
            recipe.optim = args.optim.apply(recipe.optim);
            let (backbone, init, parent) =
                resolve_backbone(&args.backbone, &args.backbone_model, &args.zoo)?;
            let (Some(data), Some(out)) = (args.data.clone(), args.out.clone()) else {
                bail!("--data and --out are required for a new run");
            };
            Detection::create(
                &out,
                DetectionSpec {
                    task: "detection".into(),
                    backbone,
                    init,
                    parent,
                    data,
                    train: args.train.clone(),
                    test: args.test.clone(),
                    strict: args.strict,
                    recipe,
                },
                &device,
            )?
        }
    };
    let metrics = train_to_end(&mut trainer)?;
    let run = trainer.run_dir().root().to_path_buf();
    let dir = run.join(transfer::detection::task::DETECTIONS);
    // Every epoch's evaluation wrote the test detections there: score those rather than
    // detecting again (a run resumed before its first epoch ended has none yet).
    let m = if dir.is_dir() {
        trainer.task().score(&dir)?
    } else {
        trainer.task().evaluate_into(&dir)?
    };
    crate::commands::eval::print_voc(&m, &VOC_CLASSES);
    println!("detections in the devkit format: {}", dir.display());
    if metrics.is_empty() {
        println!("(the run had already finished)");
    }
    Ok(())
}
