//! `tricks transfer detect`, `tricks eval detection` and `tricks data synth --task
//! detection` end to end on a tiny generated VOCdevkit, and their bad inputs.

mod support;

use std::path::Path;

use support::train::{
    assert_same_bits, kill_repeatedly, metrics_lines, ok, s, temporaries, tricks,
};

/// A tiny detector run's flags (small images, few proposals and regions).
const SMALL: &[&str] = &[
    "--from-scratch",
    "--backbone-model",
    "resnet10d_tiny",
    "--train",
    "voc2007:trainval",
    "--min-size",
    "96",
    "--max-size",
    "128",
    "--rpn-channels",
    "32",
    "--rpn-train-proposals",
    "600,64",
    "--rpn-test-proposals",
    "300,32",
    "--rcnn-batch",
    "32",
    "--workers",
    "1",
];

fn voc(dir: &Path) {
    ok(&[
        "data",
        "synth",
        "--task",
        "detection",
        "--out",
        s(dir),
        "--trainval",
        "8",
        "--test",
        "4",
        "--size",
        "96",
    ]);
}

fn detect(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["transfer", "detect", "--data", s(data), "--out", s(out)];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    tricks(&args)
}

#[test]
fn a_detector_trains_writes_devkit_detections_and_scores_them_like_eval_detection() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("VOCdevkit"), tmp.path().join("run"));
    voc(&data);
    let out = detect(&data, &run, &["--epochs", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("mAP (VOC2007 11-point)"), "{stdout}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in [
        "map",
        "map07",
        "train_rpn_cls",
        "train_rpn_box",
        "train_rcnn_cls",
        "train_rcnn_box",
    ] {
        let v = lines[1][key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    let dets = run.join("detections");
    assert!(dets.join("comp4_det_test_aeroplane.txt").is_file());
    // The same files through `tricks eval detection` give the run's last mAP.
    let eval = ok(&[
        "eval",
        "detection",
        "--data",
        s(&data),
        "--split",
        "voc2007:test",
        "--predictions",
        s(&dets),
    ]);
    let map = lines[1]["map"].as_f64().unwrap();
    assert!(
        eval.contains(&format!("mAP (VOC2010+ area)      {:.2}%", 100.0 * map)),
        "{eval}\n{map}"
    );
    // The run's weights hold the backbone under its prefix and the heads.
    let names = String::from_utf8_lossy(&std::fs::read(run.join("model.safetensors")).unwrap())
        .into_owned();
    for n in [
        "backbone.layer4.0.conv1.weight",
        "rpn.cls.weight",
        "rcnn.box.weight",
    ] {
        assert!(names.contains(n), "{n}");
    }
    // A finished run resumes to nothing and keeps its files.
    let before = std::fs::read(run.join("model.safetensors")).unwrap();
    ok(&["transfer", "detect", "--resume", s(&run)]);
    assert_eq!(
        std::fs::read(run.join("model.safetensors")).unwrap(),
        before
    );
    // A detection run is not a classifier.
    let out = tricks(&["eval", "--weights", s(&run), "--data", s(&data)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a detection run"));
}

#[test]
fn bad_datasets_and_results_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("VOCdevkit");
    voc(&data);
    let err = |out: std::process::Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // A split file that does not exist.
    let e = err(detect(
        &data,
        &tmp.path().join("r1"),
        &["--test", "voc2012:test"],
    ));
    assert!(e.contains("VOC2012/ImageSets/Main/test.txt"), "{e}");
    // A malformed annotation: an error with --strict, skipped and reported without.
    let xml = data.join("VOC2007/Annotations/000002.xml");
    let text = std::fs::read_to_string(&xml).unwrap();
    std::fs::write(&xml, text.replacen("<name>", "<name>wolf", 1)).unwrap();
    let e = err(detect(
        &data,
        &tmp.path().join("r2"),
        &["--strict", "--epochs", "1"],
    ));
    assert!(
        e.contains("000002.xml") && e.contains("unknown class"),
        "{e}"
    );
    std::fs::write(&xml, &text).unwrap();
    // A missing image.
    std::fs::remove_file(data.join("VOC2007/JPEGImages/000003.jpg")).unwrap();
    let e = err(detect(
        &data,
        &tmp.path().join("r3"),
        &["--strict", "--epochs", "1"],
    ));
    assert!(e.contains("000003.jpg") && e.contains("missing"), "{e}");
    // A bad flag value is refused before anything runs.
    let e = err(detect(
        &data,
        &tmp.path().join("r4"),
        &["--rpn-train-proposals", "5"],
    ));
    assert!(e.contains("two counts"), "{e}");
    let r5 = tmp.path().join("r5");
    let mut args = vec!["transfer", "detect", "--data", s(&data), "--out", s(&r5)];
    args.extend_from_slice(&[
        "--from-scratch",
        "--backbone-model",
        "resnet10d_tiny",
        "--train",
        "voc2007:trainval",
        "--min-size",
        "8",
    ]);
    let e = err(tricks(&args));
    assert!(e.contains("detection.min_size"), "{e}");
    // Results with a malformed line.
    let preds = tmp.path().join("preds");
    std::fs::create_dir(&preds).unwrap();
    std::fs::write(preds.join("comp4_det_test_dog.txt"), "000010 0.9 1 1 5\n").unwrap();
    let e = err(tricks(&[
        "eval",
        "detection",
        "--data",
        s(&data),
        "--predictions",
        s(&preds),
    ]));
    assert!(
        e.contains("comp4_det_test_dog.txt") && e.contains("line 1"),
        "{e}"
    );
    // Generating over an existing set is refused.
    let e = err(tricks(&[
        "data",
        "synth",
        "--task",
        "detection",
        "--out",
        s(&data),
    ]));
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn a_detection_run_killed_at_many_points_resumes_to_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("VOCdevkit");
    voc(&data);
    let (whole, killed) = (tmp.path().join("whole"), tmp.path().join("killed"));
    // Accumulation, warmup and cosine: the schedule's and the sampler's state must survive.
    let extra = [
        "--epochs",
        "5",
        "--batch-size",
        "2",
        "--accumulate",
        "2",
        "--warmup-epochs",
        "1",
        "--lr-schedule",
        "cosine",
    ];
    let out = detect(&data, &whole, &extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tricks"));
        c.args([
            "transfer",
            "detect",
            "--data",
            s(&data),
            "--out",
            s(&killed),
        ]);
        c.args(SMALL).args(extra);
        c
    };
    let resume = || {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tricks"));
        c.args(["transfer", "detect", "--resume", s(&killed)]);
        c
    };
    let kills = kill_repeatedly(&killed, &[0, 60, 20, 150, 5, 90], 4, fresh, resume);
    assert!(kills >= 3, "only {kills} attempts were killed");
    let out = tricks(&["transfer", "detect", "--resume", s(&killed)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(metrics_lines(&killed), 5);
    for file in ["model.safetensors", "checkpoint.safetensors"] {
        assert_same_bits(&whole.join(file), &killed.join(file));
    }
    // The same test detections, and the same metrics apart from the clock.
    let dets = |dir: &Path| {
        let mut files: Vec<(String, String)> = std::fs::read_dir(dir.join("detections"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    };
    assert_eq!(dets(&whole), dets(&killed));
    let maps = |dir: &Path| -> Vec<(f64, f64)> {
        std::fs::read_to_string(dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["map"].as_f64().unwrap(),
                    v["train_loss"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(maps(&whole), maps(&killed));
    assert_eq!(temporaries(&killed), Vec::<String>::new());
}
