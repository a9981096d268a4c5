//! `tricks schedule`: the learning rate of every update of a recipe, as CSV (Figure 3a).

use anyhow::Result;
use training::recipe::Recipe;

use super::train::Overrides;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A shipped recipe or a TOML file.
    #[arg(long, default_value = "baseline")]
    pub recipe: String,
    /// Updates per epoch (at least 1).
    #[arg(long, value_parser = super::positive)]
    pub iters_per_epoch: usize,
    /// Recipe overrides (e.g. --epochs, --warmup-epochs, --lr-schedule).
    #[command(flatten)]
    pub overrides: Overrides,
}

pub fn run(args: Args) -> Result<()> {
    let recipe = args.overrides.apply(Recipe::load(&args.recipe)?);
    recipe.validate().map_err(anyhow::Error::msg)?;
    let schedule = recipe.schedule(args.iters_per_epoch);
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    writeln!(out, "iter,epoch,lr")?;
    for i in 0..schedule.total_iters {
        writeln!(
            out,
            "{i},{:.4},{:.8}",
            i as f64 / args.iters_per_epoch as f64,
            schedule.lr(i)
        )?;
    }
    Ok(())
}
