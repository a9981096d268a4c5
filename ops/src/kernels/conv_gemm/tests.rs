//! Tests of the CPU convolution against the straightforward one, and the reference
//! [`direct`] that other modules' tests share.

use super::*;
use crate::conv::conv2d;
use crate::geometry::Conv2dParams;
use crate::gradcheck::{assert_close, uniform};
use crate::plan::ConvKernel;
use crate::Activation;
use candle_core::{DType, Device, Var};
use candle_core::{Result, Tensor};

/// The straightforward convolution and its two gradients, one multiply-add at a time:
/// `(y, dx, dw)` for the output gradient `dy`.
pub(crate) fn direct(x: &[f64], w: &[f64], dy: &[f64], g: &ConvGeometry) -> [Vec<f64>; 3] {
    let win = &g.win;
    let (cg, mg) = (g.c_in / g.groups, g.m());
    let mut y = vec![0.0; g.n * g.c_out * g.l()];
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    for img in 0..g.n {
        for o in 0..g.c_out {
            let grp = o / mg;
            for ci in 0..cg {
                let c = grp * cg + ci;
                for i in 0..win.kh {
                    for j in 0..win.kw {
                        let wi = ((o * cg + ci) * win.kh + i) * win.kw + j;
                        for oy in 0..win.oh {
                            for ox in 0..win.ow {
                                let (Some(sy), Some(sx)) = (
                                    win.source(oy, i, win.pad_h, win.h),
                                    win.source(ox, j, win.pad_w, win.w),
                                ) else {
                                    continue;
                                };
                                let xi = ((img * g.c_in + c) * win.h + sy) * win.w + sx;
                                let yi = ((img * g.c_out + o) * win.oh + oy) * win.ow + ox;
                                y[yi] += w[wi] * x[xi];
                                dx[xi] += w[wi] * dy[yi];
                                dw[wi] += x[xi] * dy[yi];
                            }
                        }
                    }
                }
            }
        }
    }
    [y, dx, dw]
}

fn vec_of(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .unwrap()
}

/// Random geometries: odd sizes, 1×1 (pointwise and strided), 3×3, 5×5, 7×7 strided,
/// 1×7, dilated, grouped; batches below, at and above the thread count.
#[test]
fn matches_the_direct_convolution_on_random_shapes() -> Result<()> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut pick = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let kernels = [
        (1, 1, 1, 0, 0, 1),
        (1, 1, 2, 0, 0, 1),
        (3, 3, 1, 1, 1, 1),
        (3, 3, 2, 1, 1, 1),
        (5, 5, 1, 2, 2, 1),
        (7, 7, 2, 3, 3, 1),
        (1, 7, 1, 0, 3, 1),
        (3, 3, 1, 2, 2, 2),
    ];
    for case in 0..24 {
        let kernel = kernels[case % kernels.len()];
        let (kh, kw, _, _, _, dilation) = kernel;
        let groups = [1, 1, 2, 3][pick(4)];
        let n = [1, 2, 3, 5][pick(4)];
        let (c_in, c_out) = (groups * (1 + pick(3)), groups * (1 + pick(4)));
        let (h, w) = (kh * dilation + pick(6), kw * dilation + pick(7));
        check_against_direct(n, (c_in, c_out, groups), (h, w), kernel, case as u64)?;
    }
    Ok(())
}

/// The convolution and both gradients of `n` images against [`direct`], to 1e-12 in
/// f64; `kernel` is `(kh, kw, stride, pad_h, pad_w, dilation)`.
fn check_against_direct(
    n: usize,
    (c_in, c_out, groups): (usize, usize, usize),
    (h, w): (usize, usize),
    (kh, kw, stride, padding, pad_w, dilation): (usize, usize, usize, usize, usize, usize),
    seed: u64,
) -> Result<()> {
    let dev = Device::Cpu;
    let p = Conv2dParams {
        stride,
        padding,
        padding_w: Some(pad_w),
        dilation,
        groups,
    };
    let x = Var::from_tensor(&uniform(&[n, c_in, h, w], 10 + seed, &dev)?.to_dtype(DType::F64)?)?;
    let wt = Var::from_tensor(
        &uniform(&[c_out, c_in / groups, kh, kw], 50 + seed, &dev)?.to_dtype(DType::F64)?,
    )?;
    let y = crate::conv::conv2d_on(&x, &wt, p, ConvKernel::Gemm)?;
    let dy = uniform(y.dims(), 90 + seed, &dev)?.to_dtype(DType::F64)?;
    let grads = (&y * &dy)?.sum_all()?.backward()?;
    let geo = ConvGeometry::of(&x, &wt, p)?;
    let [ry, rdx, rdw] = direct(&vec_of(&x), &vec_of(&wt), &vec_of(&dy), &geo);
    let close = |a: Vec<f64>, b: Vec<f64>, what: &str| {
        let err = a
            .iter()
            .zip(&b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-12, "seed {seed} {geo:?}: {what} off by {err}");
    };
    close(vec_of(&y), ry, "output");
    close(vec_of(grads.get(&x).expect("dx")), rdx, "input gradient");
    close(vec_of(grads.get(&wt).expect("dw")), rdw, "weight gradient");
    Ok(())
}

#[test]
fn panels_of_small_images_and_single_wide_ones() -> Result<()> {
    // 8 images: the 5×5 maps go side by side in panels, the 24×24 ones (576 positions
    // each) one by one; pointwise, strided and grouped.
    for (i, kernel) in [(1, 1, 1, 0, 0, 1), (3, 3, 2, 1, 1, 1), (3, 3, 1, 1, 1, 1)]
        .into_iter()
        .enumerate()
    {
        for (size, groups) in [(5, 1), (5, 2), (24, 1)] {
            let seed = 200 + 10 * i as u64 + size as u64 + groups as u64;
            check_against_direct(8, (4, 6, groups), (size, size), kernel, seed)?;
        }
        // Maps of 1024 positions and more, channels shrinking: the weight gradient is
        // accumulated transposed.
        check_against_direct(3, (6, 4, 1), (33, 32), kernel, 250 + i as u64)?;
    }
    Ok(())
}

#[test]
fn the_image_gets_no_gradient_and_f32_matches_f64() -> Result<()> {
    let dev = Device::Cpu;
    let x = uniform(&[3, 4, 9, 7], 1, &dev)?;
    let wt = Var::from_tensor(&uniform(&[5, 4, 3, 3], 2, &dev)?)?;
    let p = Conv2dParams {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let y = conv2d(&x, &wt, p)?;
    let grads = y.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none());
    assert!(grads.get(&wt).is_some());
    let y64 = conv2d(&x.to_dtype(DType::F64)?, &wt.to_dtype(DType::F64)?, p)?;
    assert_close(&y.to_dtype(DType::F64)?, &y64, 1e-5);
    Ok(())
}

#[test]
fn fused_epilogue_equals_the_composed_ops() -> Result<()> {
    let dev = Device::Cpu;
    for (case, (n, k, stride, act)) in [
        (1usize, 3usize, 1usize, Activation::Relu),
        (3, 1, 1, Activation::Identity),
        (4, 3, 2, Activation::Relu6),
        (2, 1, 2, Activation::Relu),
    ]
    .into_iter()
    .enumerate()
    {
        let p = Conv2dParams {
            stride,
            padding: k / 2,
            ..Default::default()
        };
        let seed = 100 + 10 * case as u64;
        let x = (uniform(&[n, 5, 9, 8], seed, &dev)? * 4.0)?;
        let wt = uniform(&[6, 5, k, k], seed + 1, &dev)?;
        let bias = uniform(&[6], seed + 2, &dev)?;
        let plain = conv2d(&x, &wt, p)?.broadcast_add(&bias.reshape((1, 6, 1, 1))?)?;
        let residual = (uniform(plain.dims(), seed + 3, &dev)? * 4.0)?;
        for with_residual in [false, true] {
            let r = with_residual.then_some(&residual);
            let fused = crate::conv::conv2d_fused(&x, &wt, p, &bias, r, act)?;
            let sum = if with_residual {
                (&plain + &residual)?
            } else {
                plain.clone()
            };
            let expected = match act {
                Activation::Identity => sum,
                Activation::Relu => sum.relu()?,
                Activation::Relu6 => sum.relu()?.minimum(6.0)?,
            };
            assert_close(&fused, &expected, 1e-5);
        }
    }
    Ok(())
}

#[test]
fn fused_keeps_gradients_when_something_needs_them() -> Result<()> {
    let dev = Device::Cpu;
    let x = uniform(&[2, 3, 7, 7], 1, &dev)?;
    let wt = Var::from_tensor(&uniform(&[4, 3, 3, 3], 2, &dev)?)?;
    let bias = uniform(&[4], 3, &dev)?;
    let p = Conv2dParams {
        padding: 1,
        ..Default::default()
    };
    let y = crate::conv::conv2d_fused(&x, &wt, p, &bias, None, Activation::Relu)?;
    let grads = y.sum_all()?.backward()?;
    let expected = conv2d(&x, &wt, p)?
        .broadcast_add(&bias.reshape((1, 4, 1, 1))?)?
        .relu()?
        .sum_all()?
        .backward()?;
    assert_close(
        grads.get(&wt).expect("dw"),
        expected.get(&wt).expect("dw"),
        1e-6,
    );
    Ok(())
}
