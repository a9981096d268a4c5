//! A trained detector leaves its run: `tricks predict` draws and writes its detections,
//! `tricks export` writes safetensors, config and ONNX (checked in ONNX Runtime against
//! `tricks predict` on the same image at two input sizes), and `tricks zoo publish` makes
//! a zoo entry of task `detection` that predicts the same bits.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use support::python::python_with;
use support::train::{ok, s, tricks};
use training::data::Image;

/// A one-epoch detector run on a tiny generated VOCdevkit.
fn tiny_run(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (data, run) = (root.join("VOCdevkit"), root.join("run"));
    ok(&[
        "data",
        "synth",
        "--task",
        "detection",
        "--out",
        s(&data),
        "--trainval",
        "8",
        "--test",
        "2",
        "--size",
        "96",
    ]);
    ok(&[
        "transfer",
        "detect",
        "--data",
        s(&data),
        "--out",
        s(&run),
        "--from-scratch",
        "--backbone-model",
        "resnet10d_tiny",
        "--train",
        "voc2007:trainval",
        "--min-size",
        "96",
        "--max-size",
        "160",
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
        "--epochs",
        "1",
        // Keep many low-scoring detections so that the comparison has something to match.
        "--score-threshold",
        "0.01",
    ]);
    (data, run)
}

/// A generated test image resized to `w × h`, as PNG at `path`.
fn image_of_size(data: &Path, w: usize, h: usize, path: &Path) -> Image {
    let img = Image::open(&data.join("VOC2007/JPEGImages/000009.jpg"))
        .unwrap()
        .resize(w, h);
    let bytes: Vec<u8> = img.data.iter().map(|v| v.round() as u8).collect();
    image::RgbImage::from_raw(w as u32, h as u32, bytes)
        .unwrap()
        .save(path)
        .unwrap();
    Image::open(path).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_detector_predicts_exports_to_onnx_runtime_and_publishes_to_the_zoo() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = tiny_run(tmp.path());

    // Predict: a PNG with the boxes and a JSON file of every detection, per image.
    let img = data.join("VOC2007/JPEGImages/000009.jpg");
    let pred = tmp.path().join("pred");
    let stdout = ok(&[
        "predict",
        "--weights",
        s(&run),
        s(&img),
        "--out",
        s(&pred),
        "--draw-threshold",
        "0",
    ]);
    assert!(stdout.contains("detections"), "{stdout}");
    let doc = json(&pred.join("000009.json"));
    let dets = doc["detections"].as_array().unwrap();
    assert!(!dets.is_empty(), "{doc}");
    let (w, h) = (
        doc["width"].as_f64().unwrap(),
        doc["height"].as_f64().unwrap(),
    );
    for d in dets {
        let b: Vec<f64> = d["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(
            b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h && b[0] <= b[2],
            "{d}"
        );
        assert!(d["class"].is_string() && d["score"].as_f64().unwrap() > 0.01);
    }
    let png = image::open(pred.join("000009.png")).unwrap();
    assert_eq!((png.width() as f64, png.height() as f64), (w, h));
    // A detector without --out is told what to give.
    let out = tricks(&["predict", "--weights", s(&run), s(&img)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));

    // Export and ONNX Runtime at two sizes: images of the graph's input size run at scale 1.
    let python = python_with(&["onnxruntime", "safetensors", "numpy"]);
    for (k, (hh, ww)) in [(96usize, 128usize), (96, 144)].into_iter().enumerate() {
        let exp = tmp.path().join(format!("export{k}"));
        let size = format!("{hh}x{ww}");
        ok(&["export", s(&run), "--out", s(&exp), "--onnx-size", &size]);
        let config = json(&exp.join("config.json"));
        assert_eq!(config["task"], "detection");
        assert_eq!(config["onnx_input_size"], serde_json::json!([hh, ww]));
        zoo::onnx::read(&exp.join("model.onnx")).unwrap();
        let png = tmp.path().join(format!("img{k}.png"));
        let im = image_of_size(&data, ww, hh, &png);
        let p = tmp.path().join(format!("p{k}"));
        ok(&["predict", "--weights", s(&exp), s(&png), "--out", s(&p)]);
        let input = tmp.path().join(format!("input{k}.safetensors"));
        let x = Tensor::from_vec(
            training::data::augment::normalize(&im),
            (1, 3, hh, ww),
            &Device::Cpu,
        )
        .unwrap();
        zoo::weights::save_tensors(&HashMap::from([("image".to_string(), x)]), &input).unwrap();
        if let Some(python) = &python {
            let script = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/check_onnx_detector.py"
            );
            let stem = png.file_stem().unwrap().to_string_lossy().into_owned();
            let out = Command::new(python)
                .args([
                    script,
                    s(&exp.join("model.onnx")),
                    s(&input),
                    s(&p.join(format!("{stem}.json"))),
                ])
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            println!("{size}: {report}");
            assert!(out.status.success(), "{size}: {report}");
        }
    }

    // Publish: a zoo entry of task detection; predicting from it gives the same bits.
    let zoo_dir = tmp.path().join("zoo");
    let published = ok(&[
        "zoo",
        "publish",
        s(&run),
        "--name",
        "resnet10d_tiny.synth_voc_frcnn",
        "--version",
        "1.0.0",
        "--zoo",
        s(&zoo_dir),
    ]);
    assert!(published.contains("model.onnx"), "{published}");
    let shown = ok(&[
        "zoo",
        "show",
        "resnet10d_tiny.synth_voc_frcnn@1.0.0",
        "--zoo",
        s(&zoo_dir),
    ]);
    for want in [
        "task = \"detection\"",
        "map07 = ",
        "architecture = \"resnet10d_tiny\"",
    ] {
        assert!(shown.contains(want), "{want}: {shown}");
    }
    let listed = ok(&["zoo", "list", "--zoo", s(&zoo_dir)]);
    assert!(
        listed
            .lines()
            .any(|l| l.contains("synth_voc_frcnn") && l.contains("detection")),
        "{listed}"
    );
    let pred2 = tmp.path().join("pred2");
    ok(&[
        "predict",
        "--weights",
        "zoo:resnet10d_tiny.synth_voc_frcnn",
        "--zoo",
        s(&zoo_dir),
        s(&img),
        "--out",
        s(&pred2),
    ]);
    assert_eq!(
        json(&pred2.join("000009.json"))["detections"],
        doc["detections"]
    );
}

#[test]
fn bad_detector_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, run) = tiny_run(tmp.path());
    let exp = tmp.path().join("exp");
    ok(&["export", s(&run), "--out", s(&exp), "--safetensors"]);
    let config = exp.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let img = tmp.path().join("VOCdevkit/VOC2007/JPEGImages/000001.jpg");
    let run_predict = || {
        let out = tricks(&[
            "predict",
            "--weights",
            s(&exp),
            s(&img),
            "--out",
            s(&tmp.path().join("p")),
        ]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Fewer names than classes.
    std::fs::write(&config, text.replacen("\"aeroplane\",", "", 1)).unwrap();
    let e = run_predict();
    assert!(
        e.contains("config.json") && e.contains("label names"),
        "{e}"
    );
    // A standard deviation of zero.
    let mut broken: serde_json::Value = serde_json::from_str(&text).unwrap();
    broken["std"] = serde_json::json!([0.0, 1.0, 1.0]);
    std::fs::write(&config, broken.to_string()).unwrap();
    let e = run_predict();
    assert!(
        e.contains("config.json") && e.contains("std positive"),
        "{e}"
    );
    // A weights file of another detector (other head width).
    std::fs::write(
        &config,
        text.replace("\"rpn_channels\": 32", "\"rpn_channels\": 64"),
    )
    .unwrap();
    let e = run_predict();
    assert!(
        e.contains("model.safetensors") && e.contains("rpn.") && e.contains("shape"),
        "{e}"
    );
    // An unknown key.
    std::fs::write(&config, text.replacen("{", "{\n  \"colour\": 1,", 1)).unwrap();
    let e = run_predict();
    assert!(e.contains("config.json") && e.contains("colour"), "{e}");
    // --onnx-size is for detectors, and must be a size.
    std::fs::write(&config, &text).unwrap();
    let out = tricks(&["export", s(&run), "--out", s(&exp), "--onnx-size", "12x800"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("HEIGHTxWIDTH"));
}
