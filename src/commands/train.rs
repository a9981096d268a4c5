//! `tricks train`: train a zoo model on a folder of images with a recipe; `--resume`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use training::data::augment::ColorJitter;
use training::recipe::{LrSchedule, Optimisation, Precision, Recipe};
use training::trainer::{RunSpec, Trainer};
use zoo::init::WeightInit;
use zoo::reference::WeightsRef;

use crate::progress::RunProgress;
use crate::weights_ref::ZooArgs;

/// The recipe of a new run when none is named.
const DEFAULT_RECIPE: &str = "baseline";

/// The shared recipe settings (optimiser, schedule, batch, precision, seed) that can be
/// overridden on the command line: the same flags for every task.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct OptimOverrides {
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per forward pass.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Batches whose gradients are summed per update.
    #[arg(long)]
    pub accumulate: Option<usize>,
    /// Learning rate (default: the recipe's, or linear scaling).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate decay.
    #[arg(long, value_enum)]
    pub lr_schedule: Option<LrSchedule>,
    /// Epochs of step decay, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub lr_step_epochs: Option<Vec<usize>>,
    /// Epochs of linear warmup.
    #[arg(long)]
    pub warmup_epochs: Option<f64>,
    /// Factor of each step decay.
    #[arg(long)]
    pub lr_step_factor: Option<f64>,
    /// Momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum on or off.
    #[arg(long)]
    pub nesterov: Option<bool>,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// No bias decay on or off.
    #[arg(long)]
    pub no_bias_decay: Option<bool>,
    /// Arithmetic precision (Section 3.2).
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Initial loss scale (default: 65536 in f16, none otherwise).
    #[arg(long)]
    pub loss_scale: Option<f64>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Loader threads.
    #[arg(long)]
    pub workers: Option<usize>,
}

impl OptimOverrides {
    /// `o` with every given flag applied.
    pub fn apply(&self, mut o: Optimisation) -> Optimisation {
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { o.$field = v.clone(); })* };
        }
        set!(
            epochs,
            batch_size,
            accumulate,
            lr_step_epochs,
            lr_step_factor,
            warmup_epochs,
            momentum,
            nesterov,
            weight_decay,
            no_bias_decay,
            seed,
            workers,
            lr_schedule,
            precision
        );
        if let Some(lr) = self.lr {
            o.lr = Some(lr);
        }
        if let Some(s) = self.loss_scale {
            o.loss_scale = Some(s);
        }
        o
    }
}

/// Classification recipe settings that can be overridden on the command line.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Overrides {
    /// The shared settings.
    #[command(flatten)]
    pub optim: OptimOverrides,
    /// Zero-γ on or off.
    #[arg(long)]
    pub zero_gamma: Option<bool>,
    /// Inception-V3's auxiliary classifier (loss weight 0.4) on or off.
    #[arg(long)]
    pub aux_logits: Option<bool>,
    /// Convolution initialisation: `xavier` (Section 2.1) or `kaiming` (timm, GluonCV's MSRA).
    #[arg(long, value_enum)]
    pub weight_init: Option<WeightInit>,
    /// Label smoothing ε.
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// Mixup α (0: off).
    #[arg(long)]
    pub mixup_alpha: Option<f64>,
    /// Teacher weights for knowledge distillation (a path, `zoo:` or `hf:` reference).
    #[arg(long)]
    pub teacher: Option<String>,
    /// The teacher's architecture (default: the student's).
    #[arg(long)]
    pub teacher_model: Option<String>,
    /// Distillation temperature.
    #[arg(long)]
    pub distill_temperature: Option<f64>,
    /// Training crop size.
    #[arg(long)]
    pub size: Option<usize>,
    /// Smallest area of the random-resized crop, as a fraction of the image.
    #[arg(long)]
    pub crop_area_min: Option<f64>,
    /// Probability of a horizontal flip.
    #[arg(long)]
    pub flip_prob: Option<f64>,
    /// Brightness, saturation and hue scaled by 1 ± this.
    #[arg(long)]
    pub jitter: Option<f64>,
    /// Colour jitter: `gluoncv` (brightness, contrast, saturation; the default) or `paper`
    /// (brightness, saturation, hue).
    #[arg(long, value_enum)]
    pub color_jitter: Option<ColorJitter>,
    /// Standard deviation of the PCA lighting noise.
    #[arg(long)]
    pub lighting_std: Option<f64>,
}

impl Overrides {
    /// `recipe` with every given flag applied.
    pub fn apply(&self, mut r: Recipe) -> Recipe {
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(v) = &self.$field { r.$field = v.clone(); })* };
        }
        set!(
            zero_gamma,
            aux_logits,
            label_smoothing,
            mixup_alpha,
            distill_temperature,
            weight_init
        );
        r.optim = self.optim.apply(r.optim);
        if let Some(t) = &self.teacher {
            r.teacher = Some(t.clone());
        }
        if let Some(t) = &self.teacher_model {
            r.teacher_model = Some(t.clone());
        }
        if let Some(s) = self.size {
            r.augment.size = s;
        }
        if let Some(a) = self.crop_area_min {
            r.augment.crop_area.0 = a;
        }
        if let Some(p) = self.flip_prob {
            r.augment.flip_prob = p;
        }
        if let Some(j) = self.jitter {
            r.augment.jitter = j;
        }
        if let Some(l) = self.lighting_std {
            r.augment.lighting_std = l;
        }
        if let Some(c) = self.color_jitter {
            r.augment.color_jitter = c;
        }
        r
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A shipped recipe (`baseline`, `efficient`, `tricks`) or a TOML file.
    #[arg(long, default_value = DEFAULT_RECIPE)]
    pub recipe: String,
    /// Architecture, as listed by `tricks models`.
    #[arg(long, required_unless_present = "resume")]
    pub model: Option<String>,
    /// Dataset root in the ImageNet layout (train/ and val/ class folders).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// Run directory.
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with_all = ["model", "data", "out"])]
    pub resume: Option<PathBuf>,
    /// Start from these weights (a safetensors file, a run directory, `zoo:NAME[@VERSION]`
    /// or `hf:OWNER/REPO[@REV]`); a classifier of another size is replaced.
    #[arg(long)]
    pub init: Option<WeightsRef>,
    /// Stop at the first unreadable image instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Device to train on: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    /// A run may resume on another device than it started on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Recipe overrides.
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device::parse(&args.device)?;
    let mut trainer = match &args.resume {
        Some(dir) => {
            if args.init.is_some() {
                bail!("--init applies to new runs; a resumed run continues from its checkpoint");
            }
            if args.overrides != Overrides::default() || args.recipe != DEFAULT_RECIPE {
                bail!(
                    "--resume continues a run with the recipe it was started with ({}); recipe flags apply to new runs only",
                    dir.join("recipe.toml").display()
                );
            }
            let t = Trainer::resume(dir, &device)?;
            if t.restarted() {
                println!(
                    "{} has no checkpoint yet (stopped in its first epoch): starting it again from epoch 1",
                    dir.display()
                );
            } else if t.epochs_done() >= t.total_epochs() {
                println!(
                    "{} already finished its {} epochs: nothing to do",
                    dir.display(),
                    t.total_epochs()
                );
            } else {
                println!("resuming {} after epoch {}", dir.display(), t.epochs_done());
            }
            t
        }
        None => {
            let mut recipe = args.overrides.apply(Recipe::load(&args.recipe)?);
            let ctx = args.zoo.context();
            // References resolve to files once, so the run directory records real paths.
            if let Some(teacher) = &recipe.teacher {
                let teacher: WeightsRef = teacher.parse()?;
                recipe.teacher = Some(
                    training::weights::safetensors(&teacher, &ctx)?
                        .display()
                        .to_string(),
                );
            }
            let init = args
                .init
                .as_ref()
                .map(|r| training::weights::safetensors(r, &ctx))
                .transpose()?;
            let parent = match &args.init {
                Some(WeightsRef::Zoo(r)) => Some(ctx.find_entry(r)?.1.id()),
                _ => None,
            };
            let (Some(model), Some(data), Some(out)) = (args.model, args.data, args.out) else {
                bail!("--model, --data and --out are required for a new run");
            };
            Trainer::create(
                &out,
                RunSpec {
                    model,
                    data,
                    init,
                    parent,
                    strict: args.strict,
                    recipe,
                },
                &device,
            )?
        }
    };
    RunProgress::new("").drive(|progress, epoch| trainer.run(progress, epoch))?;
    let skipped = trainer.skipped_images();
    if !skipped.is_empty() {
        eprintln!("{} unreadable image(s) skipped:", skipped.len());
        for s in skipped.iter().take(20) {
            eprintln!("  {s}");
        }
    }
    Ok(())
}
