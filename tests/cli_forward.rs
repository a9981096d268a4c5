//! `tricks models` and `tricks forward` as a user runs them: the numbers they print and write,
//! and a clear error (never a panic) for each kind of bad input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use zoo::models::{create_model, ModelSpec};

fn tricks(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tricks"))
        .args(args)
        .output()
        .expect("running tricks")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless `tricks args` exits with an error whose message contains every `needle`.
fn assert_fails_with(args: &[&str], needles: &[&str]) {
    let out = tricks(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: `{needle}` not in: {err}");
    }
}

/// A temporary directory with random ResNet-18 weights (10 classes) and two inputs, shared
/// by the tests of this file.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    let map: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn workspace() -> &'static Workspace {
    static WS: OnceLock<Workspace> = OnceLock::new();
    WS.get_or_init(|| {
        let ws = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        let spec = ModelSpec::find("resnet18").unwrap().with_num_classes(10);
        let model = create_model(&spec, &Device::Cpu, 3).unwrap();
        zoo::weights::save_weights(&model.vars, &ws.path("resnet18.safetensors")).unwrap();
        let x = ops::gradcheck::uniform(&[2, 3, 65, 47], 9, &Device::Cpu).unwrap();
        save(&ws.path("input.safetensors"), &[("input", x.clone())]);
        save(&ws.path("renamed.safetensors"), &[("image", x.clone())]);
        save(
            &ws.path("rank3.safetensors"),
            &[("input", x.get(0).unwrap())],
        );
        save(
            &ws.path("empty.safetensors"),
            &[("input", x.narrow(0, 0, 0).unwrap())],
        );
        let bytes = std::fs::read(ws.path("resnet18.safetensors")).unwrap();
        std::fs::write(
            ws.path("truncated.safetensors"),
            &bytes[..bytes.len() - 1000],
        )
        .unwrap();
        ws
    })
}

#[test]
fn models_lists_the_table_with_params_and_gmacs() {
    let out = tricks(&["models"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("resnet50")[1..3], ["25.56", "4.10"]);
    assert_eq!(row("resnet50d")[1..3], ["25.58", "4.34"]);
    assert_eq!(row("resnet152s")[3], "3x224x224");
}

#[test]
fn forward_writes_logits_and_features_matching_the_library() {
    let ws = workspace();
    for (mode, train) in [(None, false), (Some("--train-mode"), true)] {
        let mut args = vec![
            "forward".to_string(),
            "--model".into(),
            "resnet18".into(),
            "--weights".into(),
            ws.arg("resnet18.safetensors"),
            "--input".into(),
            ws.arg("input.safetensors"),
            "--output".into(),
            ws.arg("out.safetensors"),
            "--features".into(),
        ];
        args.extend(mode.map(str::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tricks(&args);
        assert!(out.status.success(), "{}", stderr(&out));

        let written =
            candle_core::safetensors::load(ws.path("out.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(written["logits"].dims(), [2, 10]);
        // Stage outputs of a 65x47 input: strides 4, 8, 16, 32 with rounding up.
        let expect = [
            [2, 64, 17, 12],
            [2, 128, 9, 6],
            [2, 256, 5, 3],
            [2, 512, 3, 2],
        ];
        for (i, dims) in expect.iter().enumerate() {
            assert_eq!(written[&format!("features.{i}")].dims(), dims);
        }

        let spec = ModelSpec::find("resnet18").unwrap().with_num_classes(10);
        let model = create_model(&spec, &Device::Cpu, 0).unwrap();
        zoo::weights::load_weights(&model.vars, &ws.path("resnet18.safetensors"), "resnet18")
            .unwrap();
        let input =
            candle_core::safetensors::load(ws.path("input.safetensors"), &Device::Cpu).unwrap();
        // What the command computes: the frozen model's features, then its head.
        let net = model.frozen().unwrap();
        let features = net.forward_features(&input["input"], train).unwrap();
        let logits = net.forward_head(&features[3]).unwrap();
        assert_eq!(
            ops::gradcheck::max_abs_diff(&logits, &written["logits"]).unwrap(),
            0.0
        );
    }
}

#[test]
fn forward_rejects_bad_inputs_with_clear_errors() {
    let ws = workspace();
    let run = |model: &str, weights: &str, input: &str| {
        vec![
            "forward".to_string(),
            "--model".into(),
            model.into(),
            "--weights".into(),
            ws.arg(weights),
            "--input".into(),
            ws.arg(input),
            "--output".into(),
            ws.arg("never.safetensors"),
        ]
    };
    let check = |args: Vec<String>, needles: &[&str]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_fails_with(&args, needles);
    };
    check(
        run("resnet51", "resnet18.safetensors", "input.safetensors"),
        &["unknown model `resnet51`", "resnet50d"],
    );
    check(
        run("resnet18", "resnet18.safetensors", "renamed.safetensors"),
        &["no tensor named `input`", "image"],
    );
    check(
        run("resnet18", "resnet18.safetensors", "rank3.safetensors"),
        &["(N, C, H, W)", "[3, 65, 47]"],
    );
    check(
        run("resnet18", "resnet18.safetensors", "missing.safetensors"),
        &["missing.safetensors"],
    );
    // A batch of 0 images: an error, for every network alike (it used to panic in a
    // ResNet's convolution).
    check(
        run("resnet18", "resnet18.safetensors", "empty.safetensors"),
        &["no images", "batch of 0"],
    );
    check(
        run("resnet50d", "resnet18.safetensors", "input.safetensors"),
        &["resnet18.safetensors", "resnet50d", "conv1.0.weight"],
    );
    check(
        run("resnet34", "resnet18.safetensors", "input.safetensors"),
        &["resnet34", "layer1.2"],
    );
    check(
        run("resnet18", "truncated.safetensors", "input.safetensors"),
        &["truncated.safetensors", "safetensors"],
    );
    check(
        run("resnet18", "input.safetensors", "input.safetensors"),
        &["input.safetensors", "`input`", "not weights of this model"],
    );
    assert!(!ws.path("never.safetensors").exists());
}
