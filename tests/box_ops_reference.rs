//! RoIAlign and NMS against ONNX Runtime's RoiAlign and NonMaxSuppression, through the
//! fixture `tests/fixtures/make_box_fixtures.py` made (why ONNX Runtime and not
//! torchvision: see the script). RoIAlign in f64 on both sides, so the tolerance is
//! rounding only.

use candle_core::{Device, Tensor};
use ops::boxes::{nms, roi_align, RoiAlignParams};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/box_ops.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn roi_align_matches_onnx_runtime_in_both_conventions() {
    let f = fixture();
    let shape: Vec<usize> = f["features"]["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let x = Tensor::from_vec(floats(&f["features"]["data"]), shape, &Device::Cpu).unwrap();
    let rows: Vec<f64> = f["rois"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    let rois = Tensor::from_vec(rows, (6, 5), &Device::Cpu).unwrap();
    let cases = f["roi_align"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let pooled = floats(&case["pooled"]);
        let p = RoiAlignParams {
            pooled: (pooled[0] as usize, pooled[1] as usize),
            spatial_scale: case["spatial_scale"].as_f64().unwrap(),
            sampling_ratio: case["sampling_ratio"].as_u64().unwrap() as usize,
            aligned: case["aligned"].as_bool().unwrap(),
        };
        let ours: Vec<f64> = roi_align(&x, &rois, p)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let theirs = floats(&case["output"]);
        assert_eq!(ours.len(), theirs.len(), "{p:?}");
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-12, "{p:?}: max |ours − ORT| = {worst}");
    }
}

#[test]
fn nms_matches_onnx_runtime() {
    let f = fixture();
    let boxes: Vec<[f32; 4]> = f["nms"]["boxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let v = floats(b);
            [v[0] as f32, v[1] as f32, v[2] as f32, v[3] as f32]
        })
        .collect();
    let scores: Vec<f32> = floats(&f["nms"]["scores"])
        .iter()
        .map(|&s| s as f32)
        .collect();
    for case in f["nms"]["cases"].as_array().unwrap() {
        let t = case["threshold"].as_f64().unwrap() as f32;
        let kept: Vec<usize> = floats(&case["kept"]).iter().map(|&k| k as usize).collect();
        assert_eq!(nms(&boxes, &scores, t, usize::MAX), kept, "threshold {t}");
    }
}
