//! Winograd's three passes against the direct convolution, the epilogue, the plan's routing
//! and f32 accuracy.

use super::*;
use crate::geometry::Window;
use crate::kernels::conv_gemm::tests::direct;

fn geometry(
    n: usize,
    c_in: usize,
    c_out: usize,
    (h, w): (usize, usize),
    pad: (usize, usize),
) -> ConvGeometry {
    ConvGeometry {
        win: Window {
            kh: 3,
            kw: 3,
            stride: 1,
            pad_h: pad.0,
            pad_w: pad.1,
            dilation: 1,
            h,
            w,
            oh: h + 2 * pad.0 - 2,
            ow: w + 2 * pad.1 - 2,
        },
        n,
        c_in,
        c_out,
        groups: 1,
    }
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        })
        .collect()
}

fn max_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

/// Odd and even sizes down to a single tile, every padding up to 2 (asymmetric too), and
/// batches whose blocks of tile rows straddle images: forward and input gradient equal
/// the direct convolution in f64.
#[test]
fn matches_the_direct_convolution() {
    let cases = [
        (1, 1, 1, (3, 3), (0, 0)),
        (2, 3, 4, (4, 5), (1, 1)),
        (3, 5, 2, (7, 6), (1, 1)),
        (5, 2, 3, (5, 9), (2, 2)),
        (2, 4, 3, (6, 3), (0, 2)),
        (4, 3, 5, (8, 8), (1, 0)),
        (7, 6, 7, (3, 4), (2, 1)),
        (3, 8, 16, (12, 11), (1, 1)),
    ];
    for (case, &(n, c_in, c_out, size, pad)) in cases.iter().enumerate() {
        let g = geometry(n, c_in, c_out, size, pad);
        let x = values(n * c_in * size.0 * size.1, 3 * case as u64 + 1);
        let w = values(c_out * c_in * 9, 3 * case as u64 + 2);
        let dy = values(n * c_out * g.win.oh * g.win.ow, 3 * case as u64 + 3);
        let [y, dx, dw] = direct(&x, &w, &dy, &g);
        let err = max_error(&forward(&x, &w, &g, None), &y);
        assert!(err < 1e-12, "case {case} {g:?}: output off by {err}");
        let err = max_error(&grad_input(&dy, &w, &g), &dx);
        assert!(
            err < 1e-12,
            "case {case} {g:?}: input gradient off by {err}"
        );
        // Also one tile row per step, so that steps straddle images.
        for values in [GRAD_WEIGHT_VALUES, 1] {
            let err = max_error(&grad_weight_in_steps(&dy, &x, &g, values), &dw);
            assert!(
                err < 1e-12,
                "case {case} {g:?}: weight gradient ({values} values a step) off by {err}"
            );
        }
    }
}

/// The epilogue (bias, residual, activation) lands on every output value once, across
/// blocks that straddle images and rows cut short by odd sizes.
#[test]
fn applies_the_epilogue_to_every_value() {
    let g = geometry(3, 4, 5, (9, 7), (1, 1));
    let x = values(3 * 4 * 9 * 7, 21);
    let w = values(5 * 4 * 9, 22);
    let bias = values(5, 23);
    let residual = values(3 * 5 * 9 * 7, 24);
    let [y, _, _] = direct(&x, &w, &vec![0.0; residual.len()], &g);
    for act in [crate::Activation::Identity, crate::Activation::Relu] {
        let e = Epilogue {
            bias: &bias,
            residual: Some(&residual),
            act,
        };
        let expected: Vec<f64> = (0..y.len())
            .map(|i| {
                let v = y[i] + bias[i / 63 % 5] + residual[i];
                if act == crate::Activation::Relu {
                    v.max(0.0)
                } else {
                    v
                }
            })
            .collect();
        let err = max_error(&forward(&x, &w, &g, Some(&e)), &expected);
        assert!(err < 1e-12, "{act:?}: off by {err}");
    }
}

/// `conv2d` routes a ResNet-sized 3×3 convolution here, forward and input gradient.
#[test]
fn conv2d_takes_this_path_where_it_pays() -> candle_core::Result<()> {
    use candle_core::{Device, Tensor, Var};
    let g = geometry(2, 64, 64, (14, 14), (1, 1));
    let q = crate::plan::ConvQuery {
        geometry: g,
        dtype: candle_core::DType::F64,
        target: crate::plan::Target::of(&candle_core::Device::Cpu),
        needs_grad: true,
        residual: false,
        layout: crate::plan::Layout::Nchw,
    };
    assert_eq!(
        crate::plan::conv(&q).kernel,
        crate::plan::ConvKernel::Winograd
    );
    let x = values(2 * 64 * 14 * 14, 31);
    let w = values(64 * 64 * 9, 32);
    let dy = values(2 * 64 * 14 * 14, 33);
    let [y, dx, dw] = direct(&x, &w, &dy, &g);
    let dev = Device::Cpu;
    let xt = Var::from_tensor(&Tensor::from_vec(x, (2, 64, 14, 14), &dev)?)?;
    let wt = Var::from_tensor(&Tensor::from_vec(w, (64, 64, 3, 3), &dev)?)?;
    let p = crate::Conv2dParams {
        padding: 1,
        ..Default::default()
    };
    let out = crate::conv2d(&xt, &wt, p)?;
    let dyt = Tensor::from_vec(dy, out.dims(), &dev)?;
    let grads = (&out * &dyt)?.sum_all()?.backward()?;
    let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f64>();
    assert!(max_error(&flat(&out)?, &y) < 1e-10);
    assert!(max_error(&flat(grads.get(&xt).expect("dx"))?, &dx) < 1e-10);
    assert!(max_error(&flat(grads.get(&wt).expect("dw"))?, &dw) < 1e-10);
    Ok(())
}

/// In f32 over 256 input channels (a ResNet stage) the transforms' extra additions keep
/// the error at the level of the plain GEMM's rounding.
#[test]
fn f32_stays_close_to_f64() {
    let g = geometry(2, 256, 8, (14, 14), (1, 1));
    let x = values(2 * 256 * 14 * 14, 7);
    let w: Vec<f64> = values(8 * 256 * 9, 8).iter().map(|v| v * 0.05).collect();
    let dy = vec![0.0; 2 * 8 * 14 * 14];
    let [y, _, _] = direct(&x, &w, &dy, &g);
    let to32 = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let y32: Vec<f64> = forward(&to32(&x), &to32(&w), &g, None)
        .into_iter()
        .map(f64::from)
        .collect();
    let scale = y.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let err = max_error(&y32, &y) / scale;
    assert!(err < 2e-6, "relative error {err}");
    // The weight gradient sums over the batch's 98 tiles as well.
    let dy = values(2 * 8 * 14 * 14, 9);
    let [_, _, dw] = direct(&x, &w, &dy, &g);
    let dw32: Vec<f64> = grad_weight(&to32(&dy), &to32(&x), &g)
        .into_iter()
        .map(f64::from)
        .collect();
    let scale = dw.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let err = max_error(&dw32, &dw) / scale;
    assert!(err < 2e-6, "weight gradient: relative error {err}");
}
