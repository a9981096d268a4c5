//! MobileNet v1 and Inception-V3 against timm: logits in eval and train mode at the default
//! and an odd size, parameter gradients (cross-entropy, plus 0.4 × the auxiliary classifier's
//! for Inception-V3) and running statistics after a training step.
//!
//! The fixtures (tests/fixtures/make_fixtures_mobilenet_inception.py) hold only timm's
//! outputs: weights and inputs are generated on both sides from each tensor's name with
//! splitmix64 (`fixture_values`, the same formula in Python and here), because Inception-V3's
//! weights are too big to commit.

use std::collections::HashMap;
use std::path::PathBuf;

mod support;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use support::parity::{check_step, read_only, relative_error};
use zoo::inception::AUX_LOSS_WEIGHT;
use zoo::models::ModelSpec;
use zoo::Classifier;

const NUM_CLASSES: usize = 10;

fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    })
}

/// Values in [0, 1), exactly representable in f32, from splitmix64 seeded by `name`.
fn uniform(name: &str, n: usize) -> impl Iterator<Item = f64> {
    let seed = fnv1a(name);
    (1..=n as u64).map(move |i| {
        let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f64 / (1u64 << 24) as f64
    })
}

/// The fixture's value of tensor `name` of `shape` (the Python script's `fixture_values`).
fn fixture_values(name: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product::<usize>().max(1);
    let last = name.rsplit('.').next().unwrap_or_default();
    let fan_in = if shape.len() > 1 { n / shape[0] } else { 1 };
    let values: Vec<f32> = uniform(name, n)
        .map(|u| {
            let v = if name.starts_with("input") {
                (u - 0.5) * 4.0
            } else if last == "running_mean" {
                (u - 0.5) * 0.4
            } else if last == "running_var" {
                u * 1.5 + 0.5
            } else if shape.len() == 1 && last == "weight" {
                u + 0.5
            } else if shape.len() == 1 {
                u - 0.5
            } else {
                (u - 0.5) * (6.0 / fan_in as f64).sqrt()
            };
            v as f32
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Model `name` (10 classes, Inception with its auxiliary classifier) with the fixture's
/// weights, computing in `dtype`.
fn model(name: &str, dtype: DType) -> (Box<dyn Classifier>, VarMap) {
    let spec = ModelSpec::find(name)
        .unwrap()
        .with_num_classes(NUM_CLASSES)
        .with_aux_logits(true);
    let vars = VarMap::new();
    let net = spec
        .build(VarBuilder::from_varmap(&vars, dtype, &Device::Cpu))
        .unwrap();
    for (k, var) in vars.data().lock().unwrap().iter() {
        if k.ends_with("num_batches_tracked") {
            var.set(&Tensor::new(7i64, &Device::Cpu).unwrap()).unwrap();
        } else {
            var.set(&fixture_values(k, var.dims()).to_dtype(dtype).unwrap())
                .unwrap();
        }
    }
    (net, vars)
}

/// Everything in f64, where rounding cannot hide a bug: train-mode batch norm on batch 2 is
/// ill-conditioned enough that f32 (ours or PyTorch's) drifts by up to 1e-2 in deep
/// gradients and 1e-4 in the auxiliary logits (whose batch norm sees 2 values per channel).
/// Then eval-mode logits in f32, the dtype we run in.
fn check(name: &str, sizes: [(usize, usize); 2]) {
    let dtype = DType::F64;
    let expected = candle_core::safetensors::load(
        fixtures().join(format!("{name}.expected.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let inputs: HashMap<&str, Tensor> = [("default", sizes[0]), ("odd", sizes[1])]
        .into_iter()
        .map(|(s, (h, w))| (s, fixture_values(&format!("input.{s}"), &[2, 3, h, w])))
        .collect();
    let mut worst_logits = 0f64;
    for size in ["default", "odd"] {
        for (mode, train) in [("eval", false), ("train", true)] {
            let (net, _) = model(name, dtype);
            let x = inputs[size].to_dtype(dtype).unwrap();
            let logits = net.forward_t(&x, train).unwrap();
            let err = relative_error(&logits, &expected[&format!("logits.{mode}.{size}")]);
            assert!(
                err <= 1e-6,
                "{name}: logits ({mode}, {size}) differ by {err:e}"
            );
            worst_logits = worst_logits.max(err);
        }
    }

    // In f32 also with read-only weights, as `Model::frozen` builds networks for inference
    // (MobileNet then runs on the blocked layout where the CPU has AVX-512F).
    let mut worst_f32 = 0f64;
    for size in ["default", "odd"] {
        for frozen in [false, true] {
            let (net, vars) = model(name, DType::F32);
            let net = if frozen {
                let tensors = read_only(&vars);
                ModelSpec::find(name)
                    .unwrap()
                    .with_num_classes(NUM_CLASSES)
                    .with_aux_logits(true)
                    .build(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
                    .unwrap()
            } else {
                net
            };
            let logits = net.forward_t(&inputs[size], false).unwrap();
            let err = relative_error(&logits, &expected[&format!("logits.eval.{size}")]);
            assert!(
                err <= 1e-4,
                "{name}: f32 eval logits ({size}, frozen {frozen}) differ by {err:e}"
            );
            worst_f32 = worst_f32.max(err);
        }
    }

    let (net, vars) = model(name, dtype);
    let target = Tensor::new(&[3u32, 7], &Device::Cpu).unwrap();
    let (logits, aux) = net
        .forward_with_aux(&inputs["odd"].to_dtype(dtype).unwrap(), true)
        .unwrap();
    let mut loss = candle_nn::loss::cross_entropy(&logits, &target).unwrap();
    if let Some(aux) = aux {
        let err = relative_error(&aux, &expected["aux.train.odd"]);
        assert!(err <= 1e-6, "{name}: auxiliary logits differ by {err:e}");
        loss = (loss
            + (candle_nn::loss::cross_entropy(&aux, &target).unwrap() * AUX_LOSS_WEIGHT).unwrap())
        .unwrap();
    } else {
        assert!(
            !expected.contains_key("aux.train.odd"),
            "{name}: timm has auxiliary logits, we do not"
        );
    }
    let grads = loss.backward().unwrap();
    let vars = vars.data().lock().unwrap();
    let (checked, worst_grad) = check_step(name, &expected, &grads, &vars, 1e-5, 1e-6);
    eprintln!(
        "{name}: worst relative error in f64: logits {worst_logits:.1e}, gradients {worst_grad:.1e} ({checked} checked); f32 eval logits {worst_f32:.1e}"
    );
}

#[test]
fn mobilenet_v1_matches_timm() {
    check("mobilenetv1_025", [(224, 224), (193, 225)]);
}

#[test]
fn inception_v3_with_aux_logits_matches_timm() {
    check("inception_v3", [(299, 299), (311, 305)]);
}

#[test]
fn inception_v3_loads_with_and_without_the_auxiliary_classifier() {
    // tv_in1k carries AuxLogits, gluon_in1k does not: both load, and the model is shaped
    // after the file.
    let dir = tempfile::tempdir().unwrap();
    let (_, vars) = model("inception_v3", DType::F32);
    let with = dir.path().join("with.safetensors");
    zoo::weights::save_weights(&vars, &with).unwrap();
    let loaded = zoo::models::load_pretrained("inception_v3", &with).unwrap();
    let x = fixture_values("input.default", &[1, 3, 299, 299]);
    let (_, aux) = loaded.net.forward_with_aux(&x, false).unwrap();
    assert!(aux.is_some());

    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&with, &Device::Cpu)
        .unwrap()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AuxLogits"))
        .collect();
    let without = dir.path().join("without.safetensors");
    zoo::weights::save_tensors(&tensors, &without).unwrap();
    let loaded = zoo::models::load_pretrained("inception_v3", &without).unwrap();
    let (logits, aux) = loaded.net.forward_with_aux(&x, false).unwrap();
    assert!(aux.is_none());
    assert_eq!(logits.dims(), [1, NUM_CLASSES]);
}

#[test]
fn full_size_models_have_timm_names_and_shapes() {
    let text = std::fs::read_to_string(fixtures().join("mobilenet_inception_names.json")).unwrap();
    let timm: HashMap<String, std::collections::BTreeMap<String, Vec<usize>>> =
        serde_json::from_str(&text).unwrap();
    for (name, expected) in &timm {
        let spec = ModelSpec::find(name).unwrap().with_aux_logits(true);
        let vars = VarMap::new();
        spec.build(VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu))
            .unwrap();
        let ours: std::collections::BTreeMap<String, Vec<usize>> = vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        assert_eq!(&ours, expected, "{name}");
    }
    assert_eq!(timm.len(), 6);
}
