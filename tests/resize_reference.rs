//! Bilinear resizing against ONNX Runtime's Resize in PyTorch's two conventions
//! (`half_pixel` for `align_corners=False`, `align_corners`), through the fixture
//! `tests/fixtures/make_resize_fixtures.py` made: up, down, odd sizes, to 1×1, the same
//! size, 8× (FCN's upsampling factor). f32 on both sides; ours accumulates in f64, so the
//! tolerance covers f32 rounding of ONNX Runtime's arithmetic.

use candle_core::{Device, Tensor};
use ops::resize::resize_bilinear;
use serde_json::Value;

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn resize_bilinear_matches_onnx_runtime_in_both_conventions() {
    let f: Value = serde_json::from_str(include_str!("fixtures/resize.json")).unwrap();
    let cases = f["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for case in cases {
        let shape: Vec<usize> = numbers(&case["shape"])
            .iter()
            .map(|&v| v as usize)
            .collect();
        let size = numbers(&case["size"]);
        let align = case["align_corners"].as_bool().unwrap();
        let x: Vec<f32> = numbers(&case["x"]).iter().map(|&v| v as f32).collect();
        let x = Tensor::from_vec(x, shape.as_slice(), &Device::Cpu).unwrap();
        let y = resize_bilinear(&x, (size[0] as usize, size[1] as usize), align).unwrap();
        let ours: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        let want = numbers(&case["y"]);
        assert_eq!(ours.len(), want.len(), "{shape:?} -> {size:?}");
        let worst = ours
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 2e-6,
            "{shape:?} -> {size:?} align_corners {align}: max difference {worst}"
        );
    }
}
