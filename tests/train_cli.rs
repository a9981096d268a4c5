//! `tricks data synth`, `train`, `eval`, `schedule` and `demo` as a user runs them: a killed
//! run resumes to the same weights, mixed precision trains on the CPU, bad images are
//! skipped or stop a strict run, fine-tuning replaces the classifier.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

fn tricks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tricks"))
        .args(args)
        .output()
        .expect("running tricks")
}

fn ok(args: &[&str]) -> String {
    let out = tricks(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Generates the shapes dataset at 40×40 into `out`: `classes` classes of `train` and `val`
/// images each.
fn synth(out: &Path, classes: usize, train: usize, val: usize, seed: u64) {
    let n = |v: usize| v.to_string();
    ok(&[
        "data",
        "synth",
        "--out",
        s(out),
        "--classes",
        &n(classes),
        "--train-per-class",
        &n(train),
        "--val-per-class",
        &n(val),
        "--size",
        "40",
        "--seed",
        &seed.to_string(),
    ]);
}

/// A small generated dataset (3 classes of 40×40 images) shared by the tests.
fn dataset() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        synth(dir.path(), 3, 32, 6, 3);
        dir
    })
    .path()
}

/// Training flags small enough for a test: 12 batches of 8 per epoch, 32×32 crops.
const SMALL: [&str; 10] = [
    "--model",
    "resnet10d_tiny",
    "--batch-size",
    "8",
    "--size",
    "32",
    "--workers",
    "2",
    "--seed",
    "5",
];

fn train(recipe: &str, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tricks"));
    cmd.args([
        "train",
        "--recipe",
        recipe,
        "--data",
        s(dataset()),
        "--out",
        s(out),
    ])
    .args(SMALL)
    .args(extra);
    cmd
}

fn weights(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn metrics_lines(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

#[test]
fn a_run_killed_mid_epoch_resumes_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    // The `tricks` recipe exercises warmup, cosine decay, mixup, label smoothing, zero-γ and
    // gradient accumulation: all of their state must survive the restart.
    let extra = [
        "--epochs",
        "3",
        "--accumulate",
        "2",
        "--warmup-epochs",
        "1",
        "--precision",
        "f32",
    ];
    let out = train("tricks", &whole, &extra).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = train("tricks", &killed, &extra)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while metrics_lines(&killed) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "first epoch never finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Into the second epoch, then SIGKILL.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        metrics_lines(&killed) < 3,
        "the run finished before it could be killed"
    );

    ok(&["train", "--resume", s(&killed)]);
    assert_eq!(metrics_lines(&killed), 3);
    let (a, b) = (
        weights(&whole.join("model.safetensors")),
        weights(&killed.join("model.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let u = &b[name];
        let same = t
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            == u.flatten_all()
                .unwrap()
                .to_dtype(candle_core::DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
        assert!(same, "{name} differs after resume");
    }
}

#[test]
fn mixed_precision_trains_on_the_cpu() {
    for precision in ["f16", "bf16"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = train(
            "baseline",
            tmp.path(),
            &["--epochs", "1", "--precision", precision, "--lr", "0.02"],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{precision}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = std::fs::read_to_string(tmp.path().join("metrics.jsonl")).unwrap();
        let m: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
        assert!(
            m["train_loss"].as_f64().unwrap().is_finite(),
            "{precision}: {m}"
        );
        let scale = m["loss_scale"].as_f64().unwrap();
        assert!(
            if precision == "f16" {
                scale > 1.0
            } else {
                scale == 1.0
            },
            "{precision}: {m}"
        );
        // The saved weights are f32 masters.
        let w = weights(&tmp.path().join("model.safetensors"));
        assert_eq!(w["fc.weight"].dtype(), candle_core::DType::F32);
    }
}

#[test]
fn eval_and_finetuning_from_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let out = train("baseline", &run, &["--epochs", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let weights_path = run.join("model.safetensors");
    let text = ok(&[
        "eval",
        "--model",
        "resnet10d_tiny",
        "--weights",
        s(&weights_path),
        "--data",
        s(dataset()),
        "--size",
        "32",
    ]);
    assert!(
        text.contains("images       18") && text.contains("top-1") && text.contains("logit gap"),
        "{text}"
    );

    // Knowledge distillation from that run's weights as the teacher, with mixup.
    let student = tmp.path().join("student");
    let teacher = [
        "--epochs",
        "1",
        "--teacher",
        s(&weights_path),
        "--teacher-model",
        "resnet10d_tiny",
        "--distill-temperature",
        "4",
        "--mixup-alpha",
        "0.2",
    ];
    let out = train("baseline", &student, &teacher).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recipe = std::fs::read_to_string(student.join("recipe.toml")).unwrap();
    assert!(
        recipe.contains("distill_temperature = 4.0") && recipe.contains("model.safetensors"),
        "{recipe}"
    );

    // Fine-tune on a 4-class dataset: the 3-class classifier is replaced, the rest loads.
    let four = tmp.path().join("four");
    synth(&four, 4, 8, 2, 0);
    // The run predicts with its own class names, and keeps them through the zoo.
    let image = dataset()
        .join("val/circle")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let predicted = ok(&["predict", "--weights", s(&run), "--top", "3", s(&image)]);
    for class in ["circle", "square", "triangle"] {
        assert!(
            predicted.contains(class),
            "{class} missing from {predicted}"
        );
    }
    let zoo_dir = tmp.path().join("zoo");
    let published = ok(&[
        "zoo",
        "publish",
        s(&run),
        "--name",
        "resnet10d_tiny.shapes",
        "--version",
        "1.0.0",
        "--zoo",
        s(&zoo_dir),
    ]);
    assert!(published.contains("model.onnx"), "{published}");
    let shown = ok(&["zoo", "show", "resnet10d_tiny.shapes", "--zoo", s(&zoo_dir)]);
    assert!(
        shown.contains("top1") && shown.contains("dataset = \"") && shown.contains("[[files]]"),
        "{shown}"
    );
    let via_zoo = ok(&[
        "predict",
        "--weights",
        "zoo:resnet10d_tiny.shapes@1.0.0",
        "--zoo",
        s(&zoo_dir),
        "--top",
        "3",
        s(&image),
    ]);
    assert_eq!(
        via_zoo.lines().skip(1).collect::<Vec<_>>(),
        predicted.lines().skip(1).collect::<Vec<_>>()
    );

    // Fine-tune from the zoo entry.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tricks"));
    let tuned = tmp.path().join("tuned");
    cmd.args([
        "train",
        "--data",
        s(&four),
        "--out",
        s(&tuned),
        "--init",
        "zoo:resnet10d_tiny.shapes",
        "--zoo",
        s(&zoo_dir),
        "--epochs",
        "1",
    ])
    .args(SMALL);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = weights(&tuned.join("model.safetensors"));
    assert_eq!(w["fc.weight"].dims(), [4, 256]);
    // Published from that run, the entry names its parent.
    ok(&[
        "zoo",
        "publish",
        s(&tuned),
        "--name",
        "resnet10d_tiny.four",
        "--version",
        "1.0.0",
        "--zoo",
        s(&zoo_dir),
    ]);
    let shown = ok(&["zoo", "show", "resnet10d_tiny.four", "--zoo", s(&zoo_dir)]);
    assert!(
        shown.contains("parent = \"resnet10d_tiny.shapes@1.0.0\""),
        "{shown}"
    );
}

#[test]
fn unreadable_images_are_skipped_or_stop_a_strict_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 2, 12, 2, 0);
    let bad: PathBuf = data.join("train/square/00003.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let run = |strict: bool, out: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tricks"));
        cmd.args([
            "train",
            "--data",
            s(&data),
            "--out",
            s(&tmp.path().join(out)),
            "--epochs",
            "1",
        ])
        .args(SMALL);
        if strict {
            cmd.arg("--strict");
        }
        cmd.output().unwrap()
    };
    let out = run(false, "lenient");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 unreadable image(s) skipped") && err.contains("00003.png"),
        "{err}"
    );
    let out = run(true, "strict");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("00003.png") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn schedule_prints_the_learning_rate_of_every_update() {
    let text = ok(&[
        "schedule",
        "--recipe",
        "tricks",
        "--epochs",
        "2",
        "--iters-per-epoch",
        "5",
        "--warmup-epochs",
        "1",
    ]);
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 10);
    // Linear scaling for 256 × 4: η = 0.4; warmup over 5 updates, then cosine over 5.
    assert_eq!(rows[0][2], 0.0);
    assert!((rows[1][2] - 0.08).abs() < 1e-8);
    assert!((rows[5][2] - 0.4).abs() < 1e-8);
    let t = 2.0 * std::f64::consts::PI / 5.0;
    assert!((rows[7][2] - 0.2 * (1.0 + t.cos())).abs() < 1e-8);
}

#[test]
fn demo_quick_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let start = Instant::now();
    ok(&["demo", "--quick", "--out", s(tmp.path())]);
    eprintln!(
        "tricks demo --quick: {:.0} s",
        start.elapsed().as_secs_f64()
    );
    let report = std::fs::read_to_string(tmp.path().join("report.md")).unwrap();
    assert!(
        report.contains("| baseline |") && report.contains("| tricks |"),
        "{report}"
    );
    for plot in ["lr.png", "top1.png"] {
        let img = image::open(tmp.path().join(plot)).unwrap();
        assert_eq!((img.width(), img.height()), (800, 500));
    }
}

#[test]
fn mobilenet_and_inception_train_with_every_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 2, 8, 2, 0);
    let run = |model: &str, recipe: &str, size: &str, extra: &[&str]| {
        let out = tmp.path().join(format!("{model}-{recipe}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tricks"));
        cmd.args([
            "train",
            "--recipe",
            recipe,
            "--model",
            model,
            "--data",
            s(&data),
            "--out",
            s(&out),
        ])
        .args([
            "--epochs",
            "1",
            "--warmup-epochs",
            "0.5",
            "--batch-size",
            "8",
            "--size",
            size,
            "--workers",
            "2",
        ])
        .args(extra);
        let result = cmd.output().unwrap();
        assert!(
            result.status.success(),
            "{model} {recipe}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let w = weights(&out.join("model.safetensors"));
        assert!(w.values().all(|t| t
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|v| v.is_finite())));
        w
    };
    for recipe in ["baseline", "efficient", "tricks"] {
        let w = run("mobilenetv1_025", recipe, "32", &[]);
        assert_eq!(w["classifier.weight"].dims(), [2, 256]);
    }
    let w = run("inception_v3", "tricks", "107", &[]);
    assert_eq!(w["fc.weight"].dims(), [2, 2048]);
    assert!(!w.contains_key("AuxLogits.fc.weight"));
    // With its auxiliary classifier trained alongside (loss weight 0.4), which needs the
    // full 299x299 input: a clear error below it, one step on it.
    let out = tmp.path().join("aux-small");
    let small = Command::new(env!("CARGO_BIN_EXE_tricks"))
        .args([
            "train",
            "--model",
            "inception_v3",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--aux-logits",
            "true",
        ])
        .args(["--epochs", "1", "--batch-size", "8", "--size", "107"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&small.stderr);
    assert!(
        !small.status.success() && err.contains("299x299") && !err.contains("panicked"),
        "{err}"
    );
    let w = run("inception_v3", "baseline", "299", &["--aux-logits", "true"]);
    assert_eq!(w["AuxLogits.fc.weight"].dims(), [2, 768]);
}
