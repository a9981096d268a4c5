//! `tricks data`: datasets the program makes itself.

use std::path::PathBuf;

use anyhow::Result;
use training::data::synth::{generate, SynthConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Generate the procedural shapes dataset in the ImageNet folder layout.
    Synth(SynthArgs),
}

/// What `data synth` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SynthTask {
    /// Shapes in the ImageNet folder layout.
    #[default]
    Classification,
    /// Shapes with boxes in the VOCdevkit layout (VOC2007: trainval, train, val, test).
    Detection,
    /// Textured regions and shapes with masks in the ADEChallengeData2016 layout
    /// (images/ and annotations/, training and validation).
    Segmentation,
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Dataset root (train/ and val/ are created under it; for detection, VOC2007/; for
    /// segmentation, images/ and annotations/).
    #[arg(long)]
    pub out: PathBuf,
    /// What to generate.
    #[arg(long, value_enum, default_value_t = SynthTask::Classification)]
    pub task: SynthTask,
    /// Number of classes (classification: 2 to 20, the last 10 fine-grained twins of the
    /// first 10, default 10; detection: the first N VOC classes, default 6;
    /// segmentation: 4 to 12, 2 stuff classes and shapes, default 8).
    #[arg(long)]
    pub classes: Option<usize>,
    /// Detection: images in trainval.
    #[arg(long, default_value_t = 200)]
    pub trainval: usize,
    /// Detection: images in test.
    #[arg(long, default_value_t = 100)]
    pub test: usize,
    /// Segmentation: images in training.
    #[arg(long, default_value_t = 200)]
    pub training: usize,
    /// Segmentation: images in validation.
    #[arg(long, default_value_t = 50)]
    pub validation: usize,
    /// Training images per class.
    #[arg(long, default_value_t = 200)]
    pub train_per_class: usize,
    /// Validation images per class.
    #[arg(long, default_value_t = 50)]
    pub val_per_class: usize,
    /// Image height and width (detection and segmentation: the longer side; default 72,
    /// detection 192, segmentation 128).
    #[arg(long)]
    pub size: Option<usize>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SynthArgs {
    /// The generator's configuration.
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            classes: self.classes.unwrap_or(10),
            train_per_class: self.train_per_class,
            val_per_class: self.val_per_class,
            size: self.size.unwrap_or(72),
            seed: self.seed,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        DataCommand::Synth(a) if a.task == SynthTask::Detection => {
            let defaults = transfer::synth_voc::SynthVocConfig::default();
            let cfg = transfer::synth_voc::SynthVocConfig {
                classes: a.classes.unwrap_or(defaults.classes),
                trainval: a.trainval,
                test: a.test,
                size: a.size.unwrap_or(defaults.size),
                seed: a.seed,
            };
            let n = transfer::synth_voc::generate(&a.out, &cfg)?;
            println!(
                "{n} images written under {}",
                a.out.join("VOC2007").display()
            );
        }
        DataCommand::Synth(a) if a.task == SynthTask::Segmentation => {
            let defaults = transfer::synth_ade::SynthAdeConfig::default();
            let cfg = transfer::synth_ade::SynthAdeConfig {
                classes: a.classes.unwrap_or(defaults.classes),
                training: a.training,
                validation: a.validation,
                size: a.size.unwrap_or(defaults.size),
                seed: a.seed,
            };
            let n = transfer::synth_ade::generate(&a.out, &cfg)?;
            println!("{n} images and masks written under {}", a.out.display());
        }
        DataCommand::Synth(a) => {
            let n = generate(&a.out, &a.config())?;
            println!("{n} images written under {}", a.out.display());
        }
    }
    Ok(())
}
