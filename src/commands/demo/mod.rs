//! `tricks demo`: the whole pipeline offline on generated data: make a dataset, train a
//! small ResNet-D with the `baseline` recipe and with the `tricks` recipe, publish both to
//! a local zoo, fine-tune Faster R-CNN and FCN from each ([`transfer`]), and write a report
//! comparing them with the paper's tables and Figure 3 curves.

mod transfer;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use training::data::augment::ColorJitter;
use training::data::synth::{generate, SynthConfig};
use training::recipe::ablation::{self, Refinement, Row, Step};
use training::recipe::{Precision, Recipe};
use training::run_dir::RunDir;
use training::trainer::{EpochMetrics, RunSpec, Trainer};
use zoo::init::WeightInit;

use crate::plot::{line_plot, Corner, Figure, Series};
use crate::progress::RunProgress;
use transfer::{DetResult, SegResult};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the data, the runs and the report go.
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// A smaller run (under three minutes) that still exercises every step; its numbers
    /// are not results.
    #[arg(long)]
    pub quick: bool,
}

/// The demo's scale: what fits the time budget on two CPU cores.
struct Scale {
    train_per_class: usize,
    val_per_class: usize,
    epochs: usize,
    transfer: transfer::TransferScale,
}

/// The demo's model: a narrow ResNet-10-D on 64×64 crops.
const MODEL: &str = "resnet10d_tiny";
const BATCH: usize = 32;
const LR: f64 = 0.025;

/// Any recipe at the demo's scale: the same batch, learning rate, epochs, crop, precision
/// and initialisation for every row, so that the refinements are the only difference.
fn at_demo_scale(mut r: Recipe, epochs: usize) -> Recipe {
    r.optim.epochs = epochs;
    r.optim.batch_size = BATCH;
    r.optim.accumulate = 1;
    r.optim.lr = Some(LR);
    r.augment.size = 64;
    // Step decay at the paper's 3/4 point; warmup over the first epoch.
    r.optim.lr_step_epochs = vec![(epochs * 3).div_ceil(4)];
    r.optim.warmup_epochs = if r.optim.warmup_epochs > 0.0 {
        1.0f64.min(epochs as f64 / 4.0)
    } else {
        0.0
    };
    // FP16 has no fast CPU kernels; the demo runs every recipe in FP32.
    r.optim.precision = Precision::F32;
    // Xavier (the paper's text) trains this small network several times slower in the
    // first epochs than Kaiming init (the init of GluonCV's released script and timm's);
    // the demo's budget is a few epochs.
    r.weight_init = WeightInit::Kaiming;
    r
}

/// The paper's Table 6 at demo scale: the baseline (Section 2.1), the efficient training
/// of Section 3 (warmup, zero γ, no bias decay), then each refinement of Section 5 in turn;
/// the last row is the `tricks` recipe. Each row with the name of its run directory.
fn table6(epochs: usize) -> Result<Vec<(&'static str, Row)>> {
    let (names, steps): (Vec<&'static str>, Vec<Step>) = [
        ("baseline", Step::Recipe("baseline".into())),
        ("efficient", Step::Recipe("efficient".into())),
        ("cosine", Step::Add(Refinement::Cosine)),
        ("label-smoothing", Step::Add(Refinement::LabelSmoothing)),
        ("tricks", Step::Add(Refinement::Mixup)),
    ]
    .into_iter()
    .unzip();
    let source = at_demo_scale(Recipe::load("tricks")?, epochs);
    let rows = ablation::rows(
        &steps,
        |name| Recipe::load(name).map_err(|e| e.to_string()),
        |r| at_demo_scale(r, epochs),
        &source,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(names.into_iter().zip(rows).collect())
}

/// One row's run: its name, step and change, settings, per-epoch metrics, wall time and
/// learning-rate curve.
struct RecipeRun {
    name: &'static str,
    step: String,
    change: String,
    recipe: Recipe,
    metrics: Vec<EpochMetrics>,
    seconds: f64,
    /// (epoch, learning rate) for every update.
    lr: Vec<(f64, f64)>,
}

/// Where the demo's references resolve: its own local zoo `OUT/zoo`, offline.
fn zoo_context(out: &Path) -> zoo::reference::ZooContext {
    zoo::reference::ZooContext {
        local: zoo::local::LocalZoo::new(out.join("zoo")),
        offline: true,
    }
}

fn plot(path: &Path, fig: &Figure) -> Result<()> {
    line_plot(path, fig).map_err(anyhow::Error::msg)
}

pub fn run(args: Args) -> Result<()> {
    let scale = if args.quick {
        Scale {
            train_per_class: 16,
            val_per_class: 5,
            epochs: 2,
            transfer: transfer::TransferScale {
                det_images: (24, 12),
                det_size: 128,
                det_epochs: 2,
                seg_images: (24, 8),
                seg_size: 96,
                seg_crop: 80,
                seg_epochs: 2,
            },
        }
    } else {
        Scale {
            train_per_class: 120,
            val_per_class: 25,
            epochs: 8,
            transfer: transfer::TransferScale {
                det_images: (80, 40),
                det_size: 160,
                det_epochs: 5,
                seg_images: (160, 40),
                seg_size: 128,
                seg_crop: 112,
                seg_epochs: 5,
            },
        }
    };
    let start = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let data = args.out.join("data");
    if !data.join("train").is_dir() {
        let cfg = SynthConfig {
            classes: CLASSES,
            train_per_class: scale.train_per_class,
            val_per_class: scale.val_per_class,
            ..SynthConfig::default()
        };
        let n = generate(&data, &cfg)?;
        println!("generated {n} images in {}", data.display());
    }

    let mut results: Vec<RecipeRun> = Vec::new();
    for (name, row) in table6(scale.epochs)? {
        let recipe = row.recipe;
        let dir = args.out.join(format!("run-{name}"));
        let mut trainer = if RunDir::is_run(&dir) {
            Trainer::resume(&dir, &Device::Cpu)?
        } else {
            Trainer::create(
                &dir,
                RunSpec {
                    model: MODEL.into(),
                    data: data.clone(),
                    init: None,
                    parent: None,
                    strict: false,
                    recipe: recipe.clone(),
                },
                &Device::Cpu,
            )?
        };
        println!(
            "== {name}: {MODEL}, {} epochs, batch {BATCH}",
            recipe.optim.epochs
        );
        let t = Instant::now();
        RunProgress::new(name).drive(|progress, epoch| trainer.run(progress, epoch))?;
        let seconds = t.elapsed().as_secs_f64();
        let s = trainer.schedule();
        let lr: Vec<(f64, f64)> = (0..s.total_iters)
            .map(|i| (i as f64 / s.iters_per_epoch as f64, s.lr(i)))
            .collect();
        let metrics = trainer.run_dir().metrics()?;
        results.push(RecipeRun {
            name,
            step: row.label,
            change: row.change,
            recipe,
            metrics,
            seconds,
            lr,
        });
    }

    // Figure 3a: each schedule once, under the first row that uses it.
    let mut lr: Vec<Series> = Vec::new();
    for r in &results {
        if !lr.iter().any(|s| s.points == r.lr) {
            lr.push(Series {
                label: r.name.to_string(),
                points: r.lr.clone(),
            });
        }
    }
    plot(
        &args.out.join("lr.png"),
        &Figure {
            title: "Learning rate per update (Figure 3a)",
            x_label: "epoch",
            y_label: "learning rate",
            series: &lr,
            legend: Corner::UpperRight,
        },
    )?;
    let top1: Vec<Series> = results
        .iter()
        .map(|r| Series {
            label: r.name.to_string(),
            points: r
                .metrics
                .iter()
                .map(|m| (m.epoch as f64, 100.0 * m.top1()))
                .collect(),
        })
        .collect();
    plot(
        &args.out.join("top1.png"),
        &Figure {
            title: "Validation top-1 per epoch (Figure 3b)",
            x_label: "epoch",
            y_label: "top-1 accuracy (%)",
            series: &top1,
            legend: Corner::LowerRight,
        },
    )?;
    // The baseline and the `tricks` backbones, compared from here on.
    let backbones = [&results[0], &results[results.len() - 1]];
    let gaps = logit_gap_figures(&args.out, &data, &backbones)?;

    // Section 6: publish both backbones, then fine-tune a detector and a segmenter from each.
    let ctx = zoo_context(&args.out);
    let (voc, ade) = transfer::generate_data(&args.out, &scale.transfer)?;
    let mut transfers = Vec::new();
    for r in backbones {
        let run = args.out.join(format!("run-{}", r.name));
        let entry = transfer::publish_backbone(&ctx, &run, &format!("{MODEL}.demo_{}", r.name))?;
        println!("published {entry} in {}", ctx.local.root().display());
        let b = transfer::Backbone {
            label: r.name,
            model: MODEL,
            weights: run.join(RunDir::MODEL),
            entry,
        };
        let det = transfer::detect(
            &args.out.join(format!("detect-{}", r.name)),
            &b,
            &voc,
            &scale.transfer,
        )?;
        let seg = transfer::segment(
            &args.out.join(format!("segment-{}", r.name)),
            &b,
            &ade,
            &scale.transfer,
        )?;
        transfers.push((b.entry, det, seg));
    }

    let report = report(
        &results,
        &backbones,
        &gaps,
        &transfers,
        &scale,
        start.elapsed().as_secs_f64(),
        args.quick,
    );
    zoo::atomic::write(&args.out.join("report.md"), report.as_bytes())
        .with_context(|| format!("writing {}", args.out.join("report.md").display()))?;
    println!("\n{}", summary(&backbones, &transfers));
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}

/// The final table, as the terminal shows it: each backbone's top-1 and what its detector
/// and segmenter reached.
fn summary(results: &[&RecipeRun], transfers: &[(String, DetResult, SegResult)]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<10} {:>8} {:>10} {:>8} {:>8} {:>14}",
        "backbone", "top-1", "det mAP07", "det mAP", "pixAcc", "mIoU (present)"
    );
    for (r, (_, d, s)) in results.iter().zip(transfers) {
        let top1 = r.metrics.last().map_or(f64::NAN, |m| m.top1());
        let _ = writeln!(
            t,
            "{:<10} {:>7.2}% {:>9.2}% {:>7.2}% {:>7.2}% {:>13.2}%",
            r.name,
            100.0 * top1,
            100.0 * d.map07,
            100.0 * d.map,
            100.0 * s.pixel_accuracy,
            100.0 * s.miou_present
        );
    }
    t
}

fn report(
    results: &[RecipeRun],
    backbones: &[&RecipeRun],
    gaps: &[(f64, f64)],
    transfers: &[(String, DetResult, SegResult)],
    scale: &Scale,
    total_s: f64,
    quick: bool,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# tricks demo{}\n", if quick { " (quick)" } else { "" });
    let jitter = results
        .first()
        .map_or("gluoncv", |r| match r.recipe.augment.color_jitter {
            ColorJitter::Gluoncv => {
                "`gluoncv`: brightness, contrast and saturation, as GluonCV's code"
            }
            ColorJitter::Paper => "`paper`: brightness, saturation and hue, as the paper's text",
        });
    let _ = writeln!(
        md,
        "A narrow ResNet-10-D (`{MODEL}`) trained from scratch on the generated shapes dataset \
         ({CLASSES} classes, ten outlines and a fine-grained twin of each, 64×64 crops), {} \
         epochs per row, at the same batch ({BATCH}), base learning rate ({LR}), precision \
         (FP32), initialisation (Kaiming) and colour jitter ({jitter}).\n",
        scale.epochs
    );
    if quick {
        let _ = writeln!(
            md,
            "**Quick mode**: a few images and epochs to check that every stage runs; its numbers \
             are at chance level and are not results.\n"
        );
    }
    table6_section(&mut md, results, CLASSES * scale.val_per_class);
    if let Some(last) = results.last() {
        let _ = writeln!(
            md,
            "\nThe last row is the `tricks` recipe: {}. The training loss of a row with smoothed \
             or mixed targets is measured against those targets and is not comparable to the \
             baseline's.",
            describe(&last.recipe)
        );
    }
    transfer_tables(&mut md, backbones, transfers, scale);
    let k = CLASSES as f64;
    let eps = backbones
        .iter()
        .map(|r| r.recipe.label_smoothing)
        .fold(0.0, f64::max);
    let _ = writeln!(
        md,
        "\n## The logit gap under label smoothing (the paper's Figure 4)\n\nWith label smoothing ε \
         the optimal gap between the true class's logit and the others' is log((K − 1)(1 − ε)/ε) \
         (Section 5.2): {:.2} for the demo's K = {CLASSES} at ε = {eps}, unbounded without \
         smoothing. Measured on the validation images (largest logit minus the mean of the \
         others): {}.\n\n![theoretical gap](gap_theory.png)\n\n![measured gaps](gap_hist.png)\n",
        ((k - 1.0) * (1.0 - eps) / eps).ln(),
        backbones
            .iter()
            .zip(gaps)
            .map(|(r, (m, s))| format!("`{}` {m:.2} ± {s:.2}", r.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        md,
        "\n## Learning rate per update (the paper's Figure 3a)\n\n![learning rate](lr.png)\n"
    );
    let _ = writeln!(
        md,
        "## Validation top-1 per epoch (the paper's Figure 3b)\n\n![top-1](top1.png)\n"
    );
    let _ = writeln!(md, "## Per-epoch metrics\n");
    for RecipeRun {
        name, metrics: m, ..
    } in results
    {
        let _ = writeln!(md, "### {name}\n\n| epoch | train loss | val loss | top-1 | top-5 | lr | img/s |\n|---|---|---|---|---|---|---|");
        for e in m {
            let _ = writeln!(
                md,
                "| {} | {:.4} | {:.4} | {:.2}% | {:.2}% | {:.5} | {:.1} |",
                e.epoch,
                e.train_loss,
                e.val_loss(),
                100.0 * e.top1(),
                100.0 * e.top5(),
                e.lr,
                e.img_per_s
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "Total time {total_s:.0} s. Each run directory holds its recipe, metrics and checkpoints."
    );
    md
}

/// Classes of the demo's generated classification data.
const CLASSES: usize = 20;

/// Figure 4: the theoretical gap against ε (`gap_theory.png`) and the histogram of each
/// backbone's measured gaps on the validation images (`gap_hist.png`); returns each
/// backbone's mean and standard deviation of the gap.
fn logit_gap_figures(out: &Path, data: &Path, results: &[&RecipeRun]) -> Result<Vec<(f64, f64)>> {
    use training::data::{ImageFolder, Loader, LoaderConfig};
    let theory: Vec<Series> = [CLASSES, 1000]
        .iter()
        .map(|&k| Series {
            label: format!("K = {k}"),
            points: (1..=180)
                .map(|i| {
                    let eps = i as f64 * 0.005;
                    (eps, ((k as f64 - 1.0) * (1.0 - eps) / eps).ln())
                })
                .collect(),
        })
        .collect();
    plot(
        &out.join("gap_theory.png"),
        &Figure {
            title: "Optimal logit gap under label smoothing (Figure 4a)",
            x_label: "label smoothing ε",
            y_label: "log((K − 1)(1 − ε)/ε)",
            series: &theory,
            legend: Corner::UpperRight,
        },
    )?;
    let classes = ImageFolder::class_names(data)?;
    let ctx = zoo_context(out);
    let mut all = Vec::new();
    for r in results {
        let run = out.join(format!("run-{}", r.name));
        let loaded =
            training::weights::load(&zoo::reference::WeightsRef::Path(run.clone()), None, &ctx)?;
        let loader = Loader::new(
            ImageFolder::open(data, "val", &classes)?.samples,
            LoaderConfig {
                batch_size: BATCH,
                train: false,
                augment: r.recipe.augment.clone(),
                seed: 0,
                workers: r.recipe.optim.workers,
                prefetch: 2,
                strict: false,
            },
        )?;
        let net = loaded.model.frozen()?;
        let (e, gaps) = training::trainer::evaluate_with_gaps(
            net.as_ref(),
            &loader,
            candle_core::DType::F32,
            &Device::Cpu,
        )?;
        all.push((r.name, gaps, (e.logit_gap_mean, e.logit_gap_std)));
    }
    let (lo, hi) = all
        .iter()
        .flat_map(|(_, g, _)| g.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    const BINS: usize = 30;
    let width = ((hi - lo) / BINS as f64).max(1e-9);
    let hist: Vec<Series> = all
        .iter()
        .map(|(name, g, _)| {
            let mut counts = [0usize; BINS];
            for v in g {
                counts[(((v - lo) / width) as usize).min(BINS - 1)] += 1;
            }
            Series {
                label: name.to_string(),
                points: counts
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| {
                        (
                            lo + (i as f64 + 0.5) * width,
                            100.0 * c as f64 / g.len().max(1) as f64,
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    plot(
        &out.join("gap_hist.png"),
        &Figure {
            title: "Largest logit minus the mean of the others (Figure 4b)",
            x_label: "logit gap",
            y_label: "validation images per bin (%)",
            series: &hist,
            legend: Corner::UpperRight,
        },
    )?;
    Ok(all.into_iter().map(|(_, _, m)| m).collect())
}

/// Table 6: each row's top-1 and top-5 and its change against the row before, then which
/// changes exceed the noise of one seed on `val_images` images and why a lowering one can.
fn table6_section(md: &mut String, results: &[RecipeRun], val_images: usize) {
    let _ = writeln!(
        md,
        "## Each refinement in turn (the paper's Table 6)\n\n| row | change | top-1 | Δ top-1 | \
         top-5 | final val loss | train time |\n|---|---|---|---|---|---|---|"
    );
    let mut previous: Option<f64> = None;
    let (mut helped, mut hurt, mut flat, mut hurt_steps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Two standard errors of the difference of two independent accuracies near `p`.
    let noise = |p: f64| 200.0 * (2.0 * p * (1.0 - p) / val_images.max(1) as f64).sqrt();
    let mut threshold = 0.0f64;
    for r in results {
        let Some(last) = r.metrics.last() else {
            continue;
        };
        let top1 = 100.0 * last.top1();
        let delta = previous.map_or("—".to_string(), |p| format!("{:+.2}", top1 - p));
        if let Some(p) = previous {
            let d = top1 - p;
            let t = noise((p + top1) / 200.0);
            threshold = threshold.max(t);
            let what = format!("`{}` ({d:+.2})", r.step);
            if d > t {
                helped.push(what);
            } else if d < -t {
                hurt.push(what);
                hurt_steps.push(r.step.clone());
            } else {
                flat.push(what);
            }
        }
        previous = Some(top1);
        let _ = writeln!(
            md,
            "| `{}` | {} | {top1:.2}% | {delta} | {:.2}% | {:.3} | {:.0} s |",
            r.step,
            r.change,
            100.0 * last.top5(),
            last.val_loss(),
            r.seconds
        );
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(
        md,
        "\nOne seed on {val_images} validation images measures top-1 with a standard error of \
         √(p(1 − p)/{val_images}); a change smaller than twice the standard error of a difference \
         (up to {threshold:.1} points here) is not evidence either way. Measured against the row \
         before: raised top-1: {}; lowered it: {}; within that noise: {}.",
        list(&helped),
        list(&hurt),
        list(&flat)
    );
    if hurt.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nA refinement that lowers accuracy here does what it does at this budget, not something \
         wrong: every update of these recipes matches PyTorch's to about 1e-11 \
         (`tests/train_parity.rs`). Why each one can cost accuracy in a run this short:\n"
    );
    for r in results.iter().filter(|r| hurt_steps.contains(&r.step)) {
        let why = match r.step.as_str() {
            "efficient" => {
                "warmup and zero γ are there to make large-batch training stable (Section 3.1); at \
                 batch 32 there is nothing to stabilise and the warmup epoch is one of few"
            }
            "+cosine" => {
                "cosine decay keeps the rate above the step schedule's until the last epochs, and \
                 the step schedule's tenfold drop at 3/4 of the run is where a short run gains most"
            }
            "+label-smoothing" | "+mixup" => {
                "label smoothing and mixup regularise: they keep a model from fitting its training \
                 targets exactly, which pays off over long schedules (the paper trains 120 epochs, \
                 its mixup models 200) and slows a model that has not fit the data yet"
            }
            _ => continue,
        };
        let _ = writeln!(md, "- `{}`: {why}.", r.step);
    }
}

/// Tables 8 and 9: the detector and the segmenter fine-tuned from each backbone.
fn transfer_tables(
    md: &mut String,
    results: &[&RecipeRun],
    transfers: &[(String, DetResult, SegResult)],
    scale: &Scale,
) {
    let s = &scale.transfer;
    let top1 = |r: &RecipeRun| r.metrics.last().map_or(f64::NAN, |m| 100.0 * m.top1());
    let _ = writeln!(
        md,
        "\n## Transfer to detection (the paper's Table 8)\n\nFaster R-CNN (C4, the `detection` \
         recipe with RPN width 128, 2000 → 300 proposals in training and 1000 → 100 at test, \
         64 regions per image) fine-tuned for {} epochs from each backbone on a generated \
         VOCdevkit ({} trainval and {} test images of {} pixels, 6 classes); each backbone was \
         first published to the demo's zoo (`zoo/`: safetensors, ONNX, registry entry), and \
         each detector names it as its parent.\n",
        s.det_epochs, s.det_images.0, s.det_images.1, s.det_size
    );
    let _ = writeln!(
        md,
        "| backbone | zoo entry | top-1 | mAP (VOC2007 11-point) | mAP (area) | time |\n|---|---|---|---|---|---|"
    );
    for (r, (entry, d, _)) in results.iter().zip(transfers) {
        let _ = writeln!(
            md,
            "| {} | `{entry}` | {:.2}% | {:.2}% | {:.2}% | {:.0} s |",
            r.name,
            top1(r),
            100.0 * d.map07,
            100.0 * d.map,
            d.seconds
        );
    }
    let _ = writeln!(
        md,
        "\n## Transfer to segmentation (the paper's Table 9)\n\nFCN (the `segmentation` recipe: \
         output stride 8, auxiliary head, heads at 10× the rate, poly decay; batch 8, η = \
         0.01, {}-pixel crops) fine-tuned for {} epochs from each backbone on a generated \
         ADE20K ({} training and {} validation images of {} pixels, 8 classes present). The \
         mean IoU over the classes present is mmsegmentation's; over all 150 (GluonCV's) it \
         counts the 142 absent classes as 0.\n",
        s.seg_crop, s.seg_epochs, s.seg_images.0, s.seg_images.1, s.seg_size
    );
    let _ = writeln!(
        md,
        "| backbone | top-1 | pixAcc | mIoU (present classes) | mIoU (150 classes) | time |\n|---|---|---|---|---|---|"
    );
    for (r, (_, _, g)) in results.iter().zip(transfers) {
        let _ = writeln!(
            md,
            "| {} | {:.2}% | {:.2}% | {:.2}% | {:.2}% | {:.0} s |",
            r.name,
            top1(r),
            100.0 * g.pixel_accuracy,
            100.0 * g.miou_present,
            100.0 * g.miou_all,
            g.seconds
        );
    }
    if let ([a, b], [(_, da, sa), (_, db, sb)]) = (results, transfers) {
        let (better, worse) = if top1(a) >= top1(b) { (a, b) } else { (b, a) };
        let follows = |x: f64, y: f64| {
            if (top1(a) >= top1(b)) == (x >= y) {
                "follows"
            } else {
                "does not follow"
            }
        };
        let _ = writeln!(
            md,
            "\nThe paper's claim is that a better classifier transfers better. Here `{}` \
             classified better ({:.2}% against {:.2}% top-1); the detection mAP {} that order \
             ({:.2}% for `{}`, {:.2}% for `{}`) and the segmentation mIoU {} it ({:.2}% and \
             {:.2}%).",
            better.name,
            top1(better),
            top1(worse),
            follows(da.map, db.map),
            100.0 * da.map,
            a.name,
            100.0 * db.map,
            b.name,
            follows(sa.miou_present, sb.miou_present),
            100.0 * sa.miou_present,
            100.0 * sb.miou_present
        );
    }
}

/// The refinements a recipe switches on, in the paper's words.
fn describe(r: &Recipe) -> String {
    let mut on = Vec::new();
    if r.optim.warmup_epochs > 0.0 {
        on.push(format!("warmup {} epoch", r.optim.warmup_epochs));
    }
    if r.zero_gamma {
        on.push("zero-γ".into());
    }
    if r.optim.no_bias_decay {
        on.push("no bias decay".into());
    }
    if r.optim.lr_schedule == training::recipe::LrSchedule::Cosine {
        on.push("cosine decay".into());
    }
    if r.label_smoothing > 0.0 {
        on.push(format!("label smoothing ε={}", r.label_smoothing));
    }
    if r.mixup_alpha > 0.0 {
        on.push(format!("mixup α={}", r.mixup_alpha));
    }
    if on.is_empty() {
        "none (step decay)".into()
    } else {
        on.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table6_starts_at_the_baseline_and_ends_at_the_tricks_recipe() {
        let rows = table6(8).unwrap();
        let baseline = at_demo_scale(Recipe::load("baseline").unwrap(), 8);
        let tricks = at_demo_scale(Recipe::load("tricks").unwrap(), 8);
        assert_eq!(rows[0].1.recipe, baseline);
        assert_eq!(rows.last().unwrap().1.recipe, tricks);
        // The same scale everywhere: only the refinements differ between rows.
        for (_, row) in &rows {
            let r = &row.recipe;
            assert_eq!(
                (
                    r.optim.epochs,
                    r.optim.batch_size,
                    r.optim.lr,
                    r.augment.size
                ),
                (8, BATCH, Some(LR), 64)
            );
            assert_eq!(r.optim.precision, Precision::F32);
        }
    }
}
