//! `tricks transfer segment`, `tricks eval segmentation` and `tricks data synth --task
//! segmentation` end to end on a tiny generated ADE20K, and their bad inputs.

mod support;

use std::path::Path;

use support::train::{ok, s, tricks};

/// A tiny segmenter run's flags (small crops, small batches).
const SMALL: &[&str] = &[
    "--from-scratch",
    "--backbone-model",
    "resnet10d_tiny",
    "--base-size",
    "64",
    "--crop-size",
    "48",
    "--batch-size",
    "4",
    "--workers",
    "1",
];

fn ade(dir: &Path) {
    ok(&[
        "data",
        "synth",
        "--task",
        "segmentation",
        "--out",
        s(dir),
        "--training",
        "8",
        "--validation",
        "3",
        "--size",
        "64",
    ]);
}

fn segment(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["transfer", "segment", "--data", s(data), "--out", s(out)];
    args.extend_from_slice(SMALL);
    args.extend_from_slice(extra);
    tricks(&args)
}

#[test]
fn a_segmenter_trains_writes_label_pngs_and_scores_them_like_eval_segmentation() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("ADE"), tmp.path().join("run"));
    ade(&data);
    let out = segment(&data, &run, &["--epochs", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("mIoU, all 150 classes"), "{stdout}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for key in ["pixacc", "miou", "miou_present", "train_seg", "train_aux"] {
        let v = lines[1][key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v >= 0.0, "{key} = {v}");
    }
    // The heads learn at 10× the backbone's rate: the learning rate recorded is the
    // schedule's (poly, decaying).
    assert!(lines[1]["lr"].as_f64().unwrap() < lines[0]["lr"].as_f64().unwrap());
    let preds = run.join("predictions");
    assert!(preds.join("ADE_val_00000001.png").is_file());
    let eval = ok(&[
        "eval",
        "segmentation",
        "--data",
        s(&data),
        "--predictions",
        s(&preds),
    ]);
    let pixacc = lines[1]["pixacc"].as_f64().unwrap();
    assert!(
        eval.contains(&format!("{:.2}%", 100.0 * pixacc)),
        "{eval}\n{pixacc}"
    );
    // The weights: the backbone under its prefix and both heads.
    let names = String::from_utf8_lossy(&std::fs::read(run.join("model.safetensors")).unwrap())
        .into_owned();
    for n in [
        "backbone.layer4.0.conv1.weight",
        "head.cls.weight",
        "aux.bn.running_mean",
    ] {
        assert!(names.contains(n), "{n}");
    }
    // A finished run resumes to nothing; a segmentation run is not a classifier.
    let before = std::fs::read(run.join("model.safetensors")).unwrap();
    ok(&["transfer", "segment", "--resume", s(&run)]);
    assert_eq!(
        std::fs::read(run.join("model.safetensors")).unwrap(),
        before
    );
    let out = tricks(&["eval", "--weights", s(&run), "--data", s(&data)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a segmentation run"));
    let out = tricks(&["transfer", "detect", "--resume", s(&run)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a detection run"));
}

#[test]
fn bad_masks_and_settings_are_errors_naming_the_file_or_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ADE");
    ade(&data);
    let err = |out: std::process::Output| {
        assert!(!out.status.success());
        let e = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!e.contains("panicked"), "{e}");
        e
    };
    let mask = data.join("annotations/training/ADE_train_00000002.png");
    // A mask of another size than its image.
    image::GrayImage::new(10, 10).save(&mask).unwrap();
    let e = err(segment(
        &data,
        &tmp.path().join("r1"),
        &["--epochs", "1", "--strict"],
    ));
    assert!(
        e.contains("ADE_train_00000002.png") && e.contains("10×10"),
        "{e}"
    );
    // Not strict: skipped and reported, the run goes on.
    let out = segment(&data, &tmp.path().join("r2"), &["--epochs", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ADE_train_00000002.png"));
    // A label above 150.
    let (w, h) =
        image::image_dimensions(data.join("images/training/ADE_train_00000002.jpg")).unwrap();
    image::GrayImage::from_pixel(w, h, image::Luma([200]))
        .save(&mask)
        .unwrap();
    let e = err(segment(
        &data,
        &tmp.path().join("r3"),
        &["--epochs", "1", "--strict"],
    ));
    assert!(e.contains("label 200"), "{e}");
    // An image without its mask.
    std::fs::remove_file(&mask).unwrap();
    let e = err(segment(
        &data,
        &tmp.path().join("r4"),
        &["--epochs", "1", "--strict"],
    ));
    assert!(
        e.contains("ADE_train_00000002.jpg") && e.contains("no mask"),
        "{e}"
    );
    // Settings out of their domain, named.
    let e = err(segment(
        &data,
        &tmp.path().join("r5"),
        &["--output-stride", "4"],
    ));
    assert!(e.contains("segmentation.output_stride"), "{e}");
    let e = err(segment(
        &data,
        &tmp.path().join("r6"),
        &["--aux-weight", "2"],
    ));
    assert!(e.contains("segmentation.aux_weight"), "{e}");
}

#[test]
fn a_segmenter_predicts_exports_to_onnx_runtime_and_publishes_to_the_zoo() {
    use std::collections::HashMap;
    use transfer::segmentation::SavedSegmenter;
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("ADE"), tmp.path().join("run"));
    ade(&data);
    let out = segment(&data, &run, &["--epochs", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Predict: the label PNG and the overlay per image; two images of different shapes.
    let images: Vec<std::path::PathBuf> = (1..=3)
        .map(|i| data.join(format!("images/validation/ADE_val_{i:08}.jpg")))
        .collect();
    let sizes: std::collections::HashSet<(u32, u32)> = images
        .iter()
        .map(|p| image::image_dimensions(p).unwrap())
        .collect();
    assert!(
        sizes.len() >= 2,
        "the generator gave one shape only: {sizes:?}"
    );
    let pred = tmp.path().join("pred");
    let mut args = vec!["predict", "--weights", s(&run), "--out", s(&pred)];
    args.extend(images.iter().map(|p| s(p)));
    ok(&args);
    for i in 1..=3 {
        let overlay = image::open(pred.join(format!("ADE_val_{i:08}_overlay.png"))).unwrap();
        let (w, _) = image::image_dimensions(&images[i - 1]).unwrap();
        assert!(
            overlay.width() > w,
            "the legend panel sits beside the image"
        );
    }
    // Export and ONNX Runtime on each image's own size.
    let exp = tmp.path().join("export");
    ok(&["export", s(&run), "--out", s(&exp)]);
    zoo::onnx::read(&exp.join("model.onnx")).unwrap();
    let python = support::python::python_with(&["onnxruntime", "safetensors", "numpy"]);
    let seg = SavedSegmenter::load(
        &zoo::reference::WeightsRef::Path(exp.clone()),
        &zoo_ctx(tmp.path()),
    )
    .unwrap();
    let net = seg.inference().unwrap();
    for (i, img_path) in images.iter().enumerate() {
        let img = training::data::Image::open(img_path).unwrap();
        let id = format!("ADE_val_{:08}", i + 1);
        let labels = transfer::ade20k::read_mask(
            &pred.join(format!("{id}.png")),
            Some((img.width, img.height)),
        )
        .unwrap();
        let labels = candle_core::Tensor::from_vec(
            labels,
            (img.height, img.width),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let (x_path, y_path) = (
            tmp.path().join(format!("x{i}.safetensors")),
            tmp.path().join(format!("y{i}.safetensors")),
        );
        zoo::weights::save_tensors(
            &HashMap::from([("image".to_string(), seg.input(&img).unwrap())]),
            &x_path,
        )
        .unwrap();
        // Our upsampled logits for the same input, to compare numbers and not only classes.
        let (logits, _) = net.forward(&seg.input(&img).unwrap(), false, None).unwrap();
        zoo::weights::save_tensors(
            &HashMap::from([
                ("labels".to_string(), labels),
                ("logits".to_string(), logits),
            ]),
            &y_path,
        )
        .unwrap();
        if let Some(python) = &python {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/check_onnx_segmenter.py"
            );
            let out = std::process::Command::new(python)
                .args([script, s(&exp.join("model.onnx")), s(&x_path), s(&y_path)])
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            println!("{id}: {report}");
            assert!(out.status.success(), "{id}: {report}");
        }
    }
    // Publish: an entry of task segmentation; predicting from it writes the same labels.
    let zoo_dir = tmp.path().join("zoo");
    ok(&[
        "zoo",
        "publish",
        s(&run),
        "--name",
        "resnet10d_tiny.synth_ade_fcn",
        "--version",
        "1.0.0",
        "--zoo",
        s(&zoo_dir),
    ]);
    let shown = ok(&[
        "zoo",
        "show",
        "resnet10d_tiny.synth_ade_fcn",
        "--zoo",
        s(&zoo_dir),
    ]);
    for want in [
        "task = \"segmentation\"",
        "pixacc = ",
        "miou = ",
        "num_classes = 150",
    ] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    let pred2 = tmp.path().join("pred2");
    ok(&[
        "predict",
        "--weights",
        "zoo:resnet10d_tiny.synth_ade_fcn",
        "--zoo",
        s(&zoo_dir),
        s(&images[0]),
        "--out",
        s(&pred2),
    ]);
    assert_eq!(
        std::fs::read(pred.join("ADE_val_00000001.png")).unwrap(),
        std::fs::read(pred2.join("ADE_val_00000001.png")).unwrap()
    );
    // A segmenter without --out is told what to give.
    let out = tricks(&["predict", "--weights", s(&run), s(&images[0])]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

fn zoo_ctx(root: &Path) -> zoo::reference::ZooContext {
    zoo::reference::ZooContext {
        local: zoo::local::LocalZoo::new(root.join("no-zoo")),
        offline: true,
    }
}
