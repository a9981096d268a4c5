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

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Dataset root (train/ and val/ are created under it).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of classes (2 to 10).
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Training images per class.
    #[arg(long, default_value_t = 200)]
    pub train_per_class: usize,
    /// Validation images per class.
    #[arg(long, default_value_t = 50)]
    pub val_per_class: usize,
    /// Image height and width.
    #[arg(long, default_value_t = 72)]
    pub size: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SynthArgs {
    /// The generator's configuration.
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            classes: self.classes,
            train_per_class: self.train_per_class,
            val_per_class: self.val_per_class,
            size: self.size,
            seed: self.seed,
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        DataCommand::Synth(a) => {
            let n = generate(&a.out, &a.config())?;
            println!("{n} images written under {}", a.out.display());
        }
    }
    Ok(())
}
