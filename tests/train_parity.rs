//! Whole training runs against the same runs in PyTorch + timm (issue 21): for each recipe
//! (`baseline`, `efficient`, `tricks`, distillation from a fixed teacher), a few dozen
//! updates of `resnet10d_nano` on generated data, compared after every batch (loss and
//! learning rate) and at the end (every parameter, momentum buffer and batch-norm running
//! statistic) with `tests/fixtures/train_parity/<case>.{json,safetensors}`.
//!
//! The fixtures come from `tests/fixtures/make_train_parity_fixtures.py` (pinned torch and
//! timm). It runs this file's `write_parity_inputs` (ignored by default) to write what our
//! trainer starts from and trains on: the initial weights, the teacher, every batch exactly
//! as our loader produced it (after augmentation) and each batch's mixup λ. It then trains
//! timm's ResNet with the same architecture on those batches in float64 (the reference) and
//! in float32 (to measure how far an f32 run drifts from the exact one). Our run is f64
//! too; the tolerance of each quantity is a multiple of the spread between PyTorch's f64
//! run and its channels-last f64 run (see [`tolerance`]), so the test fails on a wrong
//! formula (a drift orders of magnitude larger) and not on rounding.
//!
//! What the cases cover: warmup, step and cosine decay, label smoothing, mixup (λ from our
//! stream, mirrored pairing), zero-γ (checked in the script against timm's
//! `zero_init_last`), no bias decay, Nesterov and plain momentum, weight decay, gradient
//! accumulation and distillation; and loss scaling: the case `loss_scale` is `efficient`
//! with an initial loss scale of 2¹⁶ (`loss_scale`, on at any precision when set), compared
//! with the unscaled `efficient` fixture. A power of two scales the loss and unscales the
//! gradients exactly in f64, so the scaled run must match PyTorch's unscaled one as closely
//! as ours does; a scale applied twice or never undone would fail it by orders of
//! magnitude.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use training::recipe::{LrSchedule, Precision, Recipe};
use training::run_dir::{RunDir, RunSpec};
use training::trainer::{mixup_lambda, Task, Trainer};

const MODEL: &str = "resnet10d_nano";
const EPOCHS: usize = 3;
const BATCH: usize = 8;
/// The cases with a fixture of their own (what the PyTorch script trains).
const CASES: [&str; 4] = ["baseline", "efficient", "tricks", "distill"];
/// Every case compared, each with the fixture it must match.
const COMPARED: [(&str, &str); 5] = [
    ("baseline", "baseline"),
    ("efficient", "efficient"),
    ("tricks", "tricks"),
    ("distill", "distill"),
    ("loss_scale", "efficient"),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train_parity")
}

/// The recipe of a case: the shipped recipe at the fixture's scale (3 epochs of 10 batches
/// of 8 images at 64×64), f64.
fn recipe(case: &str, teacher: &Path) -> Recipe {
    let shipped = match case {
        "distill" => "tricks",
        "loss_scale" => "efficient",
        shipped => shipped,
    };
    let mut r = Recipe::load(shipped).unwrap();
    r.optim.epochs = EPOCHS;
    r.optim.batch_size = BATCH;
    r.optim.lr = Some(0.05);
    r.optim.workers = 1;
    r.optim.precision = Precision::F64;
    r.augment.size = 64;
    r.weight_init = zoo::init::WeightInit::Kaiming;
    // Accumulation where the recipe has it (over 2 batches: 5 updates an epoch).
    r.optim.accumulate = r.optim.accumulate.min(2);
    if r.optim.warmup_epochs > 0.0 {
        r.optim.warmup_epochs = 1.0;
    }
    if r.optim.lr_schedule == LrSchedule::Step {
        r.optim.lr_step_epochs = vec![2];
    }
    if case == "loss_scale" {
        r.optim.loss_scale = Some(65536.0);
    }
    if case == "distill" {
        r.teacher = Some(teacher.to_str().unwrap().to_string());
        r.distill_temperature = 2.0;
    }
    r
}

/// The data of every case: 10 classes, 8 training and 2 validation images each, 40×40.
fn data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    support::train::synth(&data, 10, 8, 2, 21);
    data
}

/// A fixed teacher: `resnet10d_nano` with 10 classes, initialised from seed 7 (its
/// running statistics are those of a fresh network).
fn teacher(dir: &Path) -> PathBuf {
    let spec = zoo::models::ModelSpec::find(MODEL)
        .unwrap()
        .with_num_classes(10);
    let model = zoo::models::create_model(&spec, &Device::Cpu, 7).unwrap();
    let path = dir.join("teacher.safetensors");
    zoo::weights::save_weights(&model.vars, &path).unwrap();
    path
}

fn trainer(
    dir: &Path,
    case: &str,
    data: &Path,
    teacher: &Path,
) -> Trainer<training::trainer::Classification> {
    Trainer::create(
        &dir.join(format!("run-{case}")),
        RunSpec {
            model: MODEL.into(),
            data: data.to_path_buf(),
            init: None,
            parent: None,
            strict: true,
            recipe: recipe(case, teacher),
        },
        &Device::Cpu,
    )
    .unwrap()
}

/// Every training batch of the run, in order, with its mixup λ.
fn batches(
    t: &Trainer<training::trainer::Classification>,
    r: &Recipe,
) -> Vec<(Tensor, Vec<u32>, Option<f64>)> {
    let mut out = Vec::new();
    for epoch in 0..EPOCHS {
        for (b, batch) in t.task().batches(epoch).enumerate() {
            let batch = batch.unwrap();
            out.push((
                batch.images,
                batch.labels,
                mixup_lambda(r, epoch, b).unwrap(),
            ));
        }
    }
    out
}

/// The sum of a batch's pixels (f64): what the fixture records of each batch, to tell a
/// change of the loader from a change of the trainer.
fn pixel_sum(images: &Tensor) -> f64 {
    images
        .to_dtype(DType::F64)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// Writes what the PyTorch script trains from into `$TRICKS_PARITY_INPUTS/<case>/`.
#[test]
#[ignore = "run by tests/fixtures/make_train_parity_fixtures.py"]
fn write_parity_inputs() {
    let out = PathBuf::from(std::env::var("TRICKS_PARITY_INPUTS").expect("TRICKS_PARITY_INPUTS"));
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let teacher = teacher(tmp.path());
    for case in CASES {
        let dir = out.join(case);
        std::fs::create_dir_all(&dir).unwrap();
        let t = trainer(tmp.path(), case, &data, &teacher);
        let r = recipe(case, &teacher);
        zoo::weights::save_weights(t.task().vars(), &dir.join("init.safetensors")).unwrap();
        if case == "distill" {
            std::fs::copy(&teacher, dir.join("teacher.safetensors")).unwrap();
        }
        let mut tensors = HashMap::new();
        let mut lambdas = Vec::new();
        for (k, (images, labels, lambda)) in batches(&t, &r).into_iter().enumerate() {
            tensors.insert(format!("images.{k}"), images);
            let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let n = labels.len();
            tensors.insert(
                format!("labels.{k}"),
                Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
            );
            lambdas.push(lambda);
        }
        candle_core::safetensors::save(&tensors, dir.join("batches.safetensors")).unwrap();
        let meta = serde_json::json!({
            "epochs": EPOCHS,
            "batches_per_epoch": t.task().batches_per_epoch(),
            "lambda": lambdas,
        });
        std::fs::write(dir.join("batches.json"), meta.to_string()).unwrap();
        std::fs::write(dir.join("recipe.toml"), r.to_toml()).unwrap();
    }
}

/// The largest relative error our run may have where PyTorch's second f64 run (the same
/// run with channels-last tensors, so that its convolutions and reductions sum in other
/// orders) differs from its first by `torch`: a hundred times that (two implementations
/// that sum in different orders drift apart by the same order of magnitude, not by the same
/// amount), and never under `floor`.
fn tolerance(torch: f64, floor: f64) -> f64 {
    (100.0 * torch).max(floor)
}

#[test]
fn training_runs_match_pytorch_step_by_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let teacher = teacher(tmp.path());
    for (case, fixture) in COMPARED {
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("{fixture}.json"))).unwrap(),
        )
        .unwrap();
        let expected = candle_core::safetensors::load(
            fixtures().join(format!("{fixture}.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        let r = recipe(case, &teacher);
        let mut t = trainer(tmp.path(), case, &data, &teacher);

        // The same batches as when the fixture was made (else the loader changed, and the
        // fixture must be made again).
        let seen = batches(&t, &r);
        let sums = json["pixel_sum"].as_array().unwrap();
        let lambdas = json["lambda"].as_array().unwrap();
        assert_eq!(seen.len(), sums.len(), "{case}: batch count");
        for (k, (images, _, lambda)) in seen.iter().enumerate() {
            let want = sums[k].as_f64().unwrap();
            assert!(
                (pixel_sum(images) - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{case}: batch {k} is not the fixture's; make the fixtures again"
            );
            // (serde_json's default float parsing may be one ulp off.)
            let want = lambdas[k].as_f64();
            assert_eq!(
                lambda.is_some(),
                want.is_some(),
                "{case}: mixup of batch {k}"
            );
            if let (Some(a), Some(b)) = (lambda, want) {
                assert!(
                    (a - b).abs() <= 1e-15,
                    "{case}: mixup λ of batch {k}: {a} vs {b}"
                );
            }
        }

        // Train, recording each batch's loss (from the running means) and learning rate.
        let (mut losses, mut lrs, mut previous) = (Vec::new(), Vec::new(), 0.0);
        t.run(
            &mut |p| {
                let total = p.loss * p.batch as f64;
                losses.push(total - previous);
                previous = if p.batch == p.batches { 0.0 } else { total };
                lrs.push(p.lr);
            },
            &mut |_| {},
        )
        .unwrap();

        let drift = &json["drift"]["f64_channels_last"];
        let want_lr = json["lr"].as_array().unwrap();
        for (k, lr) in lrs.iter().enumerate() {
            let want = want_lr[k].as_f64().unwrap();
            assert!(
                (lr - want).abs() <= 1e-12 * want.max(1e-3),
                "{case}: lr of batch {k}: {lr} vs {want}"
            );
        }
        let want_loss = json["loss"].as_array().unwrap();
        let loss_tol = tolerance(drift["loss"].as_f64().unwrap(), 1e-12);
        let mut worst_loss = 0f64;
        for (k, loss) in losses.iter().enumerate() {
            let want = want_loss[k].as_f64().unwrap();
            worst_loss = worst_loss.max((loss - want).abs() / want.abs());
        }
        assert!(
            worst_loss <= loss_tol,
            "{case}: losses differ by {worst_loss:e} (tolerance {loss_tol:e})"
        );

        // Every tensor of the checkpoint: parameters and running statistics (`model.*`),
        // momentum buffers (`optim.*`).
        let ckpt =
            candle_core::safetensors::load(t.run_dir().path(RunDir::CHECKPOINT), &Device::Cpu)
                .unwrap();
        let mut worst: HashMap<&str, (f64, String)> = HashMap::new();
        for (name, reference) in &expected {
            let ours = ckpt
                .get(name)
                .unwrap_or_else(|| panic!("{case}: our checkpoint has no {name}"));
            let kind = if name.starts_with("optim.") {
                "momentum"
            } else if name.ends_with("running_mean") || name.ends_with("running_var") {
                "running"
            } else if name.ends_with("num_batches_tracked") {
                assert_eq!(
                    ours.to_dtype(DType::I64).unwrap().to_vec0::<i64>().unwrap(),
                    reference
                        .to_dtype(DType::I64)
                        .unwrap()
                        .to_vec0::<i64>()
                        .unwrap(),
                    "{case}: {name}"
                );
                continue;
            } else {
                "param"
            };
            let err = support::parity::relative_error(
                &ours.to_dtype(DType::F64).unwrap(),
                &reference.to_dtype(DType::F64).unwrap(),
            );
            let w = worst.entry(kind).or_insert((0.0, String::new()));
            if err > w.0 {
                *w = (err, name.clone());
            }
        }
        let ours_only: Vec<_> = ckpt
            .keys()
            .filter(|k| !k.starts_with("state.") && !expected.contains_key(*k))
            .collect();
        assert!(
            ours_only.is_empty(),
            "{case}: not in the fixture: {ours_only:?}"
        );
        for (kind, (err, name)) in &worst {
            let tol = tolerance(drift[*kind].as_f64().unwrap(), 1e-10);
            println!("{case}: {kind} worst {err:.2e} ({name}), tolerance {tol:.2e}; loss worst {worst_loss:.2e}");
            assert!(
                err <= &tol,
                "{case}: {name} differs by {err:e} (tolerance {tol:e})"
            );
        }
    }
}
