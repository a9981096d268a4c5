//! `tricks export` checked by real consumers of its files: ONNX Runtime runs the ONNX graph
//! at the default size and at an odd one and must agree with `tricks forward` (max error
//! relative to the largest logit ≤ 1e-4). (candle-onnx's evaluator was dropped as a second
//! consumer: version 0.11 lacks `GlobalAveragePool` and padded pooling, so it ran none of the
//! exported networks, and it needs protoc to build.)

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use support::python::python_with;
use zoo::models::{create_model, ModelSpec};

fn tricks(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tricks"))
        .args(args)
        .output()
        .expect("running tricks");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tricks {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Random weights for `name` with batch-norm statistics away from (0, 1), so that the
/// exported `BatchNormalization` nodes are really exercised.
fn random_weights(name: &str, classes: usize, path: &Path) {
    let spec = ModelSpec::find(name).unwrap().with_num_classes(classes);
    let model = create_model(&spec, &Device::Cpu, 7).unwrap();
    for (i, (var_name, var)) in model.vars.data().lock().unwrap().iter().enumerate() {
        let n = var.elem_count();
        let seed_shift = (i as f64 * 0.37).sin();
        let replaced = if var_name.ends_with("running_mean") {
            Tensor::randn(0f32, 0.1, n, &Device::Cpu).unwrap()
        } else if var_name.ends_with("running_var") {
            (Tensor::rand(0.5f32, 1.5, n, &Device::Cpu).unwrap() + 0.1 * seed_shift).unwrap()
        } else if var_name.contains("bn") && var_name.ends_with(".bias") {
            Tensor::randn(0f32, 0.1, n, &Device::Cpu).unwrap()
        } else {
            continue;
        };
        var.set(&replaced.reshape(var.shape()).unwrap()).unwrap();
    }
    zoo::weights::save_weights(&model.vars, path).unwrap();
}

fn write_input(path: &Path, h: usize, w: usize, seed: u64) {
    let x = ops::gradcheck::uniform(&[2, 3, h, w], seed, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let tensors = HashMap::from([("input".to_string(), x)]);
    zoo::weights::save_tensors(&tensors, path).unwrap();
}

/// Exports `name` and compares ONNX Runtime with `tricks forward` at
/// `sizes`.
fn check_model(name: &str, classes: usize, sizes: &[(usize, usize)]) {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    random_weights(name, classes, &weights);
    let out = dir.path().join("export");
    let w = weights.to_str().unwrap();
    tricks(&[
        "export",
        w,
        "--model",
        name,
        "--onnx",
        "--out",
        out.to_str().unwrap(),
    ]);
    let onnx = out.join("model.onnx");
    // Our own reader parses it back (opset, graph) before anything runs it.
    zoo::onnx::read(&onnx).unwrap();
    let python = python_with(&["onnxruntime", "safetensors", "numpy"]);
    for (i, &(h, wd)) in sizes.iter().enumerate() {
        let input = dir.path().join(format!("input{i}.safetensors"));
        let logits = dir.path().join(format!("logits{i}.safetensors"));
        write_input(&input, h, wd, i as u64);
        let (input_s, logits_s) = (input.to_str().unwrap(), logits.to_str().unwrap());
        tricks(&[
            "forward",
            "--model",
            name,
            "--weights",
            w,
            "--input",
            input_s,
            "--output",
            logits_s,
        ]);
        if let Some(python) = &python {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check_onnx.py");
            let out = Command::new(python)
                .args([script, onnx.to_str().unwrap(), input_s, logits_s, "1e-4"])
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            println!("{name} {h}x{wd}: {report}");
            assert!(out.status.success(), "{name} {h}x{wd}: {report}");
        }
    }
}

#[test]
fn resnet10d_tiny_runs_in_onnx_runtime() {
    // ResNet-D: deep stem, average-pool shortcut with ceil_mode (odd sizes hang over).
    check_model("resnet10d_tiny", 10, &[(64, 64), (75, 97)]);
}

#[test]
fn resnet50d_runs_in_onnx_runtime() {
    check_model("resnet50d", 1000, &[(224, 224), (161, 193)]);
}

#[test]
fn resnet18_and_resnet50_v1_run_in_onnx_runtime() {
    // The plain 7×7 stem, basic blocks, and the original stride-in-1×1 bottleneck.
    check_model("resnet18", 5, &[(224, 224), (97, 131)]);
    check_model("resnet50_v1", 5, &[(97, 131)]);
}

#[test]
fn mobilenet_and_inception_run_in_onnx_runtime() {
    // Depthwise convolutions and ReLU6 (Clip); Inception's 1x7/7x1 padding, concatenation
    // and average pooling that counts its padding.
    check_model("mobilenetv1_100", 1000, &[(224, 224), (193, 225)]);
    check_model("inception_v3", 10, &[(299, 299), (311, 305)]);
}

#[test]
fn tampered_onnx_is_rejected_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    random_weights("resnet10d_tiny", 3, &weights);
    let out = dir.path().join("export");
    tricks(&[
        "export",
        weights.to_str().unwrap(),
        "--model",
        "resnet10d_tiny",
        "--onnx",
        "--out",
        out.to_str().unwrap(),
    ]);
    let onnx = out.join("model.onnx");
    let mut bytes = std::fs::read(&onnx).unwrap();
    bytes.truncate(bytes.len() - 1000);
    std::fs::write(&onnx, &bytes).unwrap();
    let err = zoo::onnx::read(&onnx).unwrap_err().to_string();
    assert!(err.contains("model.onnx"), "{err}");
}
