//! `tricks ablate`: the paper's Tables 4 and 6 as one command. Each row is the previous
//! row plus one refinement (or a named recipe), trained with `--seeds` seeds and evaluated;
//! the table of top-1/top-5 (mean ± standard deviation over the seeds) and the change
//! against the row before goes to `OUT/ablation.md` and `OUT/ablation.json`. Runs live in
//! `OUT/runs/<key>` under a key of their settings ([`run_key`]): a finished run is reused,
//! an interrupted one resumed, so an interrupted ablation continues where it stopped.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use training::recipe::ablation::{rows, run_key, Step};
use training::recipe::Recipe;
use training::run_dir::RunDir;
use training::trainer::{RunSpec, Trainer};
use zoo::reference::WeightsRef;

use super::train::Overrides;
use crate::progress::RunProgress;
use crate::weights_ref::ZooArgs;

/// The recipe `+refinement` steps copy their settings from (with the overrides applied).
const SOURCE: &str = "tricks";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architecture, as listed by `tricks models`.
    #[arg(long)]
    pub model: String,
    /// Dataset root in the ImageNet layout (train/ and val/ class folders).
    #[arg(long)]
    pub data: PathBuf,
    /// The rows, comma-separated: a recipe first (`baseline`, `efficient`, `tricks` or a
    /// TOML file), then `+warmup`, `+zero-gamma`, `+no-bias-decay`, `+fp16`, `+cosine`,
    /// `+label-smoothing`, `+distill` (with `--teacher`), `+mixup`, or another recipe.
    /// A refinement takes its value from the `tricks` recipe, or from the override of that
    /// setting (`--warmup-epochs`, `--label-smoothing`, …), which then applies from that row
    /// on; every other override applies to every row.
    #[arg(long, default_value = "baseline,+cosine,+label-smoothing,+mixup")]
    pub steps: String,
    /// Runs per row, with seeds `--seed`, `--seed` + 1, …
    #[arg(long, default_value_t = 1, value_parser = super::positive)]
    pub seeds: usize,
    /// Where the runs and the table go.
    #[arg(long)]
    pub out: PathBuf,
    /// Recipe overrides.
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(flatten)]
    pub zoo: ZooArgs,
}

/// One row's results: the final top-1 and top-5 of each seed's run.
struct RowResult {
    label: String,
    change: String,
    runs: Vec<String>,
    top1: Vec<f64>,
    top5: Vec<f64>,
}

/// Mean and sample standard deviation (0 for one value).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

pub fn run(args: Args) -> Result<()> {
    let steps = Step::parse_list(&args.steps).map_err(anyhow::Error::msg)?;
    let mut overrides = args.overrides.clone();
    // A teacher reference resolves to a file once, so that the run keys name real paths.
    if let Some(teacher) = &overrides.teacher {
        let r: WeightsRef = teacher.parse()?;
        overrides.teacher = Some(
            training::weights::safetensors(&r, &args.zoo.context())?
                .display()
                .to_string(),
        );
    }
    let load = |name: &str| Recipe::load(name).map_err(|e| e.to_string());
    let source = overrides.apply(Recipe::load(SOURCE)?);
    let plan = rows(&steps, load, |r| overrides.apply(r), &source).map_err(anyhow::Error::msg)?;
    let data = args
        .data
        .canonicalize()
        .with_context(|| format!("--data {}", args.data.display()))?;
    let runs = args.out.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;

    let mut results = Vec::new();
    for (i, row) in plan.iter().enumerate() {
        let mut result = RowResult {
            label: row.label.clone(),
            change: row.change.clone(),
            runs: Vec::new(),
            top1: Vec::new(),
            top5: Vec::new(),
        };
        for s in 0..args.seeds {
            let mut recipe = row.recipe.clone();
            recipe.optim.seed = row.recipe.optim.seed + s as u64;
            let key = run_key(&args.model, &data.display().to_string(), &recipe);
            let dir = runs.join(&key);
            println!(
                "== row {}/{} {} (seed {}): {}",
                i + 1,
                plan.len(),
                row.label,
                recipe.optim.seed,
                dir.display()
            );
            let last = train(&dir, &args.model, &data, recipe)?;
            result.top1.push(100.0 * last.top1());
            result.top5.push(100.0 * last.top5());
            result.runs.push(key);
        }
        results.push(result);
    }
    let md = table(&args, &results);
    let json = serde_json::json!({
        "model": args.model,
        "data": data,
        "seeds": args.seeds,
        "rows": results.iter().map(|r| serde_json::json!({
            "step": r.label,
            "change": r.change,
            "runs": r.runs,
            "top1": r.top1,
            "top5": r.top5,
        })).collect::<Vec<_>>(),
    });
    for (name, text) in [
        ("ablation.md", md.clone()),
        ("ablation.json", serde_json::to_string_pretty(&json)? + "\n"),
    ] {
        let path = args.out.join(name);
        zoo::atomic::write(&path, text.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print!("\n{md}");
    Ok(())
}

/// Trains (or resumes, or reuses) the run in `dir`; returns its last epoch's metrics.
fn train(
    dir: &Path,
    model: &str,
    data: &Path,
    recipe: Recipe,
) -> Result<training::trainer::EpochMetrics> {
    let device = Device::Cpu;
    let mut trainer = if RunDir::is_run(dir) {
        Trainer::resume(dir, &device)?
    } else {
        Trainer::create(
            dir,
            RunSpec {
                model: model.to_string(),
                data: data.to_path_buf(),
                init: None,
                parent: None,
                strict: false,
                recipe,
            },
            &device,
        )?
    };
    if trainer.epochs_done() >= trainer.total_epochs() {
        println!("   finished before: reused");
    } else {
        RunProgress::new("").drive(|progress, epoch| trainer.run(progress, epoch))?;
    }
    let metrics = trainer.run_dir().metrics()?;
    match metrics.last() {
        Some(m) => Ok(m.clone()),
        None => bail!("{} has no metrics after training", dir.display()),
    }
}

/// The Markdown table (Tables 4 and 6's shape) with a line on how it was made.
fn table(args: &Args, results: &[RowResult]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Ablation of {} on {}\n\nEach row is the row above plus one change, {} seed{} per row \
         (top-1 and top-5 of the last epoch on the validation split, mean ± standard deviation \
         over the seeds).\n",
        args.model,
        args.data.display(),
        args.seeds,
        if args.seeds == 1 { "" } else { "s" }
    );
    let _ = writeln!(md, "| step | change | top-1 (%) | top-5 (%) | Δ top-1 |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    let mut previous: Option<f64> = None;
    for r in results {
        let (t1, s1) = mean_std(&r.top1);
        let (t5, s5) = mean_std(&r.top5);
        let spread = |m: f64, s: f64| {
            if r.top1.len() > 1 {
                format!("{m:.2} ± {s:.2}")
            } else {
                format!("{m:.2}")
            }
        };
        let delta = previous.map_or("—".to_string(), |p| format!("{:+.2}", t1 - p));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {delta} |",
            r.label,
            r.change,
            spread(t1, s1),
            spread(t5, s5)
        );
        previous = Some(t1);
    }
    md
}
