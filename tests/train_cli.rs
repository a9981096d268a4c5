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

/// Every tensor of the safetensors file `a` equals `b`'s, bit for bit.
fn assert_same_bits(a: &Path, b: &Path) {
    let (a_t, b_t) = (weights(a), weights(b));
    assert_eq!(
        a_t.keys().collect::<std::collections::BTreeSet<_>>(),
        b_t.keys().collect::<std::collections::BTreeSet<_>>(),
        "{} and {} hold different tensors",
        a.display(),
        b.display()
    );
    let bits = |t: &Tensor| -> Vec<u64> {
        t.flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(f64::to_bits)
            .collect()
    };
    for (name, t) in &a_t {
        assert!(
            bits(t) == bits(&b_t[name]),
            "{name} differs: {}",
            b.display()
        );
    }
}

/// Temporary files (`.NAME.tmp-PID`) left in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect()
}

#[test]
fn a_run_killed_at_many_points_resumes_to_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    // The `tricks` recipe exercises warmup, cosine decay, mixup, label smoothing, zero-γ and
    // gradient accumulation: all of their state must survive the restarts.
    let extra = [
        "--epochs",
        "8",
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

    // SIGKILL at spread-out points: each attempt (the new run, then `--resume`) is killed
    // once it has finished an epoch of its own, after a delay that differs from attempt to
    // attempt, so the kills land at different points of different epochs: right after an
    // epoch's metrics line (between it and the checkpoint, or inside the writes), early in
    // the next epoch, in its middle.
    let delays_ms = [0u64, 40, 90, 10, 140, 60, 0, 120];
    let mut kills = 0;
    for (attempt, delay) in delays_ms.iter().enumerate() {
        let before = metrics_lines(&killed);
        if before >= 7 {
            break;
        }
        // A run killed before it wrote run.json has to start anew.
        let mut cmd = if !killed.join("run.json").exists() {
            train("tricks", &killed, &extra)
        } else {
            let mut c = Command::new(env!("CARGO_BIN_EXE_tricks"));
            c.args(["train", "--resume", s(&killed)]);
            c
        };
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while metrics_lines(&killed) <= before && child.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "attempt {attempt} made no progress"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(*delay));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 5, "only {kills} attempts were killed");

    let out = tricks(&["train", "--resume", s(&killed)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metrics_lines(&killed), 8);
    assert_same_bits(
        &whole.join("model.safetensors"),
        &killed.join("model.safetensors"),
    );
    assert_same_bits(
        &whole.join("checkpoint.safetensors"),
        &killed.join("checkpoint.safetensors"),
    );
    assert_eq!(temporaries(&killed), Vec::<String>::new());
    // The finished run's files agree with each other: run.json reads back, and resuming a
    // finished run does nothing.
    let again = ok(&["train", "--resume", s(&killed)]);
    assert!(again.contains("already finished"), "{again}");
    assert_same_bits(
        &whole.join("model.safetensors"),
        &killed.join("model.safetensors"),
    );
}

#[test]
fn a_second_run_into_the_same_directory_is_refused_while_the_first_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    let mut first = train("baseline", &out_dir, &["--epochs", "30"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out_dir.join("run.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = tricks(&["train", "--resume", s(&out_dir)]);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().ok();
    first.wait().unwrap();
    if still_running {
        assert!(!second.status.success());
        let err = String::from_utf8_lossy(&second.stderr);
        assert!(err.contains("another run is using this directory"), "{err}");
    }
}

#[test]
fn resume_refuses_recipe_flags_and_says_when_it_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir_all(&dir).unwrap();
    let out = tricks(&["train", "--resume", s(&dir), "--epochs", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("recipe flags apply to new runs"),
        "{err}"
    );
    let out = tricks(&["train", "--resume", s(&dir)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no run to resume"),
        "{err}"
    );
}

#[test]
fn bad_flags_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value, field) in [
        ("--flip-prob", "2", "augment.flip_prob"),
        ("--crop-area-min", "2", "augment.crop_area"),
        ("--crop-area-min", "nan", "augment.crop_area"),
        ("--lighting-std", "nan", "augment.lighting_std"),
        ("--weight-decay", "nan", "weight_decay"),
        ("--lr", "-1", "lr"),
        ("--momentum", "2", "momentum"),
        ("--lr-step-factor", "-5", "lr_step_factor"),
        ("--lr-step-epochs", "5,2", "lr_step_epochs"),
        ("--label-smoothing", "1", "label_smoothing"),
        ("--accumulate", "0", "accumulate"),
        ("--epochs", "0", "epochs"),
    ] {
        let dir = tmp
            .path()
            .join(format!("run{}", flag.trim_start_matches('-')));
        let out = train("baseline", &dir, &[&format!("{flag}={value}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was accepted");
        assert!(err.contains(&format!("`{field}`")), "{flag} {value}: {err}");
        assert!(!dir.join("run.json").exists(), "{flag} {value} wrote a run");
    }
    // A crop of 100000 pixels a side: refused before the loader allocates anything.
    let dir = tmp.path().join("huge");
    let out = tricks(&[
        "train",
        "--model",
        "resnet10d_tiny",
        "--data",
        s(dataset()),
        "--out",
        s(&dir),
        "--size",
        "100000",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("`augment.size`"),
        "{err}"
    );
}

#[test]
fn data_synth_refuses_to_overwrite_a_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    synth(tmp.path(), 2, 2, 1, 0);
    let out = tricks(&["data", "synth", "--out", s(tmp.path()), "--classes", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already holds a dataset"),
        "{err}"
    );
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

#[test]
fn image_limits_are_configurable_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |var: &str, value: &str, out: &str| {
        train(
            "baseline",
            &tmp.path().join(out),
            &["--epochs", "1", "--strict"],
        )
        .env(var, value)
        .output()
        .unwrap()
    };
    // A limit below the dataset's 40×40 images: the first one is refused, naming the file.
    let out = run("TRICKS_MAX_IMAGE_PIXELS", "10", "small");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("1600 pixels, more than the 10") && err.contains(".png"),
        "{err}"
    );
    // A value that is no limit at all is an error naming the variable.
    let out = run("TRICKS_MAX_IMAGE_ASPECT", "none", "bad");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("TRICKS_MAX_IMAGE_ASPECT=none"),
        "{err}"
    );
}

#[test]
fn a_run_that_fails_to_set_up_leaves_the_directory_usable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = tricks(&[
        "train",
        "--model",
        "resnet10d_tiny",
        "--data",
        s(&tmp.path().join("nowhere")),
        "--out",
        s(&dir),
    ]);
    assert!(!out.status.success());
    assert!(
        !dir.join("run.json").exists(),
        "a run that never started was recorded"
    );
    let out = train("baseline", &dir, &["--epochs", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn eval_runs_inception_v3_and_names_skipped_images() {
    // Inception-V3 refuses inputs under 75×75: eval must not probe it with a small one.
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("inception.safetensors");
    ok(&[
        "init",
        "--model",
        "inception_v3",
        "--num-classes",
        "3",
        "--out",
        s(&weights),
    ]);
    // Validation data only (no train/ folder), one of its images corrupt.
    let data = tmp.path().join("val-only");
    for class in ["a", "b", "c"] {
        let dir = data.join("val").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..2 {
            image::RgbImage::from_pixel(90, 80, image::Rgb([40 * i as u8, 90, 200]))
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::fs::write(
        data.join("val/b/broken.png"),
        b"\x89PNG\r\n\x1a\nnot an image",
    )
    .unwrap();
    let out = tricks(&[
        "eval",
        "--model",
        "inception_v3",
        "--weights",
        s(&weights),
        "--data",
        s(&data),
        "--size",
        "80",
        "--batch-size",
        "4",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("images       6"), "{stdout}");
    assert!(
        stderr.contains("broken.png"),
        "the skipped image is named: {stderr}"
    );
}

#[test]
fn a_one_class_dataset_and_a_teacher_of_other_classes_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    synth(&data, 2, 8, 2, 1);
    let teacher = tmp.path().join("teacher.safetensors");
    ok(&[
        "init",
        "--model",
        "resnet10d_tiny",
        "--num-classes",
        "1000",
        "--out",
        s(&teacher),
    ]);
    let run = |data: &Path, extra: &[&str], out: &str| {
        let mut args = vec![
            "train",
            "--model",
            "resnet10d_tiny",
            "--data",
            s(data),
            "--out",
        ];
        let out = tmp.path().join(out);
        args.push(s(&out));
        args.extend_from_slice(&["--batch-size", "4", "--size", "32", "--epochs", "1"]);
        args.extend_from_slice(extra);
        let o = tricks(&args);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = run(&data, &["--teacher", s(&teacher)], "t");
    assert!(err.contains("has 1000 classes, the data 2"), "{err}");
    // One class left: a classifier needs two (ε = 0, so it is not about label smoothing).
    for split in ["train", "val"] {
        let mut names: Vec<_> = std::fs::read_dir(data.join(split))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        std::fs::remove_dir_all(&names[0]).unwrap();
    }
    let err = run(&data, &["--label-smoothing", "0"], "one");
    assert!(err.contains("holds 1 class folder"), "{err}");
}
