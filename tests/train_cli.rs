//! `tricks data synth`, `train`, `eval`, `schedule` and `demo` as a user runs them: mixed
//! precision trains on the CPU, bad images are skipped or stop a strict run, fine-tuning
//! replaces the classifier, every network trains with every recipe. (What a run does when
//! it is killed, locked or given bad settings: `train_reliability.rs`.)

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use support::train::*;

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

/// `tricks ablate`: rows of the previous row plus one refinement, over seeds; a second
/// call reuses every finished run, and a longer list trains only its new rows.
#[test]
fn ablate_writes_the_table_and_reuses_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ablation");
    let flags = |steps: &str| -> Vec<String> {
        let mut v: Vec<String> = [
            "ablate",
            "--data",
            s(dataset()),
            "--out",
            s(&out),
            "--steps",
            steps,
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--accumulate",
            "1",
            "--lr",
            "0.05",
            "--precision",
            "f32",
        ]
        .map(String::from)
        .to_vec();
        v.extend(SMALL.map(String::from));
        v
    };
    let run = |steps: &str| {
        let args = flags(steps);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run("baseline,+cosine,+label-smoothing");
    let md = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    for row in [
        "| baseline | — |",
        "| +cosine | cosine learning-rate decay |",
        "| +label-smoothing | label smoothing ε = 0.1 |",
    ] {
        assert!(md.contains(row), "{md}");
    }
    assert!(md.contains(" ± "), "{md}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["top1"].as_array().unwrap().len(), 2);
        assert_eq!(r["runs"].as_array().unwrap().len(), 2);
    }
    assert_ne!(
        rows[0]["runs"][0], rows[0]["runs"][1],
        "seeds get their own runs"
    );
    assert_eq!(first.matches("reused").count(), 0);
    // Again, one row longer: the six runs are reused, only +mixup's two train.
    let second = run("baseline,+cosine,+label-smoothing,+mixup");
    assert_eq!(second.matches("reused").count(), 6, "{second}");
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    assert_eq!(again["rows"].as_array().unwrap()[..3], rows[..]);
    assert_eq!(again["rows"].as_array().unwrap().len(), 4);
    // Bad step lists are errors before anything trains.
    for (steps, message) in [
        ("+cosine", "must start with a recipe"),
        ("baseline,+cosin", "unknown refinement +cosin"),
        ("baseline,+distill", "--teacher"),
    ] {
        let args = flags(steps);
        let out = tricks(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{steps}: {err}");
    }
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
    // Table 6: the baseline, the efficient recipe, then each refinement in turn.
    for row in [
        "| `baseline` | — |",
        "| `efficient` | the `efficient` recipe |",
        "| `+cosine` | cosine learning-rate decay |",
        "| `+label-smoothing` | label smoothing ε = 0.1 |",
        "| `+mixup` | mixup α = 0.2 |",
    ] {
        assert!(report.contains(row), "{row} missing: {report}");
    }
    assert!(report.contains("| baseline |") && report.contains("| tricks |"));
    for section in ["Table 6", "Table 8", "Table 9", "Figure 4"] {
        assert!(report.contains(section), "{section} missing: {report}");
    }
    // Both backbones in the demo's zoo, with ONNX; a detector and a segmenter from each.
    assert!(
        report.contains("`resnet10d_tiny.demo_baseline@1.0.0`"),
        "{report}"
    );
    let zoo = tmp.path().join("zoo");
    let list = ok(&["zoo", "list", "--zoo", s(&zoo)]);
    for name in ["resnet10d_tiny.demo_baseline", "resnet10d_tiny.demo_tricks"] {
        assert!(list.contains(name), "{list}");
    }
    let registry = std::fs::read_to_string(zoo.join("weights.toml")).unwrap();
    assert_eq!(
        registry.matches("path = \"model.onnx\"").count(),
        2,
        "{registry}"
    );
    for run in [
        "detect-baseline",
        "detect-tricks",
        "segment-baseline",
        "segment-tricks",
    ] {
        assert!(
            tmp.path().join(run).join("model.safetensors").is_file(),
            "{run}"
        );
    }
    for plot in ["lr.png", "top1.png", "gap_theory.png", "gap_hist.png"] {
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
