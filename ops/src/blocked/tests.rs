//! The blocked ops against the NCHW ones (in f64) on random shapes, odd ones included.

use super::*;
use crate::gradcheck::{assert_close, uniform};
use crate::Pool2dParams;
use candle_core::Device;

/// Whether the blocked kernels can run here; the tests say so when they cannot.
fn runs_here() -> bool {
    let ok = available();
    if !ok {
        eprintln!("no AVX-512F: the blocked kernels are not exercised on this machine");
    }
    ok
}

/// One convolution case: `(N, C_in, H, W)`, `C_out`, kernel, stride, padding, dilation.
struct Case {
    x: [usize; 4],
    c_out: usize,
    k: (usize, usize),
    stride: usize,
    pad: (usize, usize),
    dilation: usize,
}

fn check(case: &Case, seed: u64) {
    let dev = Device::Cpu;
    let [n, c_in, h, w] = case.x;
    let x = uniform(&case.x, seed, &dev).unwrap();
    let weight = uniform(&[case.c_out, c_in, case.k.0, case.k.1], seed + 1, &dev).unwrap();
    let bias = uniform(&[case.c_out], seed + 2, &dev).unwrap();
    let p = Conv2dParams {
        stride: case.stride,
        padding: case.pad.0,
        padding_w: Some(case.pad.1),
        dilation: case.dilation,
        groups: 1,
    };
    let (oh, ow) = p.output_size(h, w, case.k.0, case.k.1).unwrap();
    let residual = uniform(&[n, case.c_out, oh, ow], seed + 3, &dev).unwrap();
    let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let conv = BlockedConv::new(&weight, &bias, p).unwrap();
    let xb = to_blocked(&x).unwrap();
    for (act, with_residual) in [
        (Activation::Identity, false),
        (Activation::Relu, true),
        (Activation::Relu6, true),
    ] {
        let r = with_residual.then_some(&residual);
        let expected = crate::conv2d_fused(
            &f64s(&x),
            &f64s(&weight),
            p,
            &f64s(&bias),
            r.map(f64s).as_ref(),
            act,
        )
        .unwrap();
        let rb = r.map(|r| to_blocked(r).unwrap());
        let got = conv.forward(&xb, rb.as_ref(), act).unwrap();
        // The padding channels stay zero.
        let all = from_blocked(&got, got.dim(1).unwrap() * BLOCK).unwrap();
        let pad = all
            .narrow(1, case.c_out, all.dim(1).unwrap() - case.c_out)
            .unwrap();
        assert_eq!(
            pad.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        let got = from_blocked(&got, case.c_out).unwrap();
        let fan_in = (c_in * case.k.0 * case.k.1) as f64;
        assert_close(&f64s(&got), &expected, 1e-6 * fan_in.sqrt());
    }
}

#[test]
fn convolutions_match_the_nchw_op() {
    if !runs_here() {
        return;
    }
    let cases = [
        // ResNet's shapes, small: 1×1 (flat rows), 3×3 with padding, strided 3×3 and 1×1.
        Case {
            x: [2, 64, 9, 9],
            c_out: 64,
            k: (1, 1),
            stride: 1,
            pad: (0, 0),
            dilation: 1,
        },
        Case {
            x: [2, 32, 11, 13],
            c_out: 80,
            k: (3, 3),
            stride: 1,
            pad: (1, 1),
            dilation: 1,
        },
        Case {
            x: [3, 48, 15, 14],
            c_out: 64,
            k: (3, 3),
            stride: 2,
            pad: (1, 1),
            dilation: 1,
        },
        Case {
            x: [1, 64, 9, 7],
            c_out: 128,
            k: (1, 1),
            stride: 2,
            pad: (0, 0),
            dilation: 1,
        },
        // Odd channel counts (padded blocks), more chunks than one, tiles of every width.
        Case {
            x: [2, 3, 17, 19],
            c_out: 5,
            k: (3, 3),
            stride: 1,
            pad: (1, 1),
            dilation: 1,
        },
        Case {
            x: [1, 300, 5, 23],
            c_out: 70,
            k: (1, 1),
            stride: 1,
            pad: (0, 0),
            dilation: 1,
        },
        Case {
            x: [2, 40, 12, 9],
            c_out: 24,
            k: (3, 3),
            stride: 1,
            pad: (2, 2),
            dilation: 2,
        },
        // Uneven kernels and paddings (Inception's 1×7 and 7×1), a 7×7 stride-2 stem.
        Case {
            x: [1, 20, 10, 12],
            c_out: 36,
            k: (1, 7),
            stride: 1,
            pad: (0, 3),
            dilation: 1,
        },
        Case {
            x: [1, 20, 10, 12],
            c_out: 36,
            k: (7, 1),
            stride: 1,
            pad: (3, 0),
            dilation: 1,
        },
        Case {
            x: [2, 3, 23, 21],
            c_out: 16,
            k: (7, 7),
            stride: 2,
            pad: (3, 3),
            dilation: 1,
        },
        // Winograd F(2×2, 3×3): ≥ 64 channels, maps ≥ 14, odd sizes (half tiles), channel
        // counts that leave padding lanes, more input blocks than one chunk.
        Case {
            x: [2, 64, 14, 14],
            c_out: 64,
            k: (3, 3),
            stride: 1,
            pad: (1, 1),
            dilation: 1,
        },
        Case {
            x: [1, 80, 15, 17],
            c_out: 96,
            k: (3, 3),
            stride: 1,
            pad: (1, 1),
            dilation: 1,
        },
        Case {
            x: [3, 160, 16, 21],
            c_out: 70,
            k: (3, 3),
            stride: 1,
            pad: (1, 1),
            dilation: 1,
        },
        // Padding wider than the kernel's reach at a 1-wide map; a 1×1 input.
        Case {
            x: [2, 16, 4, 1],
            c_out: 16,
            k: (3, 3),
            stride: 1,
            pad: (1, 1),
            dilation: 1,
        },
        Case {
            x: [4, 17, 1, 1],
            c_out: 33,
            k: (1, 1),
            stride: 1,
            pad: (0, 0),
            dilation: 1,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        check(case, 100 * i as u64 + 1);
    }
}

#[test]
fn depthwise_convolutions_match_the_nchw_op() {
    if !runs_here() {
        return;
    }
    let dev = Device::Cpu;
    // MobileNet's 3×3 stride 1 and 2, odd sizes and channel counts, a 1×5 kernel with
    // dilation.
    for (i, &([n, c, h, w], (kh, kw), stride, (ph, pw), dilation)) in [
        ([2, 32, 9, 11], (3, 3), 1, (1, 1), 1),
        ([1, 40, 13, 10], (3, 3), 2, (1, 1), 1),
        ([2, 8, 7, 7], (3, 3), 2, (1, 1), 1),
        ([1, 20, 6, 12], (1, 5), 1, (0, 4), 2),
    ]
    .iter()
    .enumerate()
    {
        let seed = 50 + 10 * i as u64;
        // Scaled so that ReLU6's upper bound is reached too.
        let x = (uniform(&[n, c, h, w], seed, &dev).unwrap() * 20.0).unwrap();
        let weight = uniform(&[c, 1, kh, kw], seed + 1, &dev).unwrap();
        let bias = uniform(&[c], seed + 2, &dev).unwrap();
        let p = Conv2dParams {
            stride,
            padding: ph,
            padding_w: Some(pw),
            dilation,
            groups: c,
        };
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
        let expected = crate::conv2d_fused(
            &f64s(&x),
            &f64s(&weight),
            p,
            &f64s(&bias),
            None,
            Activation::Relu6,
        )
        .unwrap();
        let conv = BlockedConv::new(&weight, &bias, p).unwrap();
        let got = conv
            .forward(&to_blocked(&x).unwrap(), None, Activation::Relu6)
            .unwrap();
        assert_close(&f64s(&from_blocked(&got, c).unwrap()), &expected, 1e-5);
    }
}

#[test]
fn layout_round_trips_and_pads_with_zeros() {
    let x = uniform(&[2, 21, 3, 5], 9, &Device::Cpu).unwrap();
    let b = to_blocked(&x).unwrap();
    assert_eq!(b.dims(), [2, 2, 3, 5, BLOCK]);
    let back = from_blocked(&b, 21).unwrap();
    let diff = (back - &x).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    // Channel 17 of image 1 at (2, 4) sits in block 1, lane 1.
    let v = |t: &Tensor, idx: &[usize]| {
        let mut t = t.clone();
        for &i in idx {
            t = t.get(i).unwrap();
        }
        t.to_scalar::<f32>().unwrap()
    };
    assert_eq!(v(&b, &[1, 1, 2, 4, 1]), v(&x, &[1, 17, 2, 4]));
    assert_eq!(v(&b, &[1, 1, 2, 4, 15]), 0.0);
    assert!(from_blocked(&b, 33).is_err());
    assert!(from_blocked(&b, 16).is_err());
    assert!(from_blocked(&x, 21).is_err());
}

#[test]
fn pooling_matches_the_nchw_ops() {
    if !runs_here() {
        return;
    }
    let x = (uniform(&[2, 20, 7, 9], 5, &Device::Cpu).unwrap() - 2.0).unwrap();
    let b = to_blocked(&x).unwrap();
    for p in [
        Pool2dParams::new(2, 2)
            .ceil_mode(true)
            .count_include_pad(false),
        Pool2dParams::new(3, 2).padding(1),
        Pool2dParams::new(3, 1).padding(1).count_include_pad(false),
    ] {
        let expected = crate::avg_pool2d(&x, p).unwrap();
        let got = from_blocked(&pool::avg_pool2d(&b, p).unwrap(), 20).unwrap();
        assert_close(&got, &expected, 1e-6);
    }
    for p in [
        Pool2dParams::new(3, 2).padding(1),
        Pool2dParams::new(2, 2).ceil_mode(true),
    ] {
        let expected = crate::max_pool2d(&x, p).unwrap();
        let got = from_blocked(&pool::max_pool2d(&b, p).unwrap(), 20).unwrap();
        assert_close(&got, &expected, 0.0);
    }
    let expected = crate::global_avg_pool(&x).unwrap();
    let got = global_avg_pool(&b, 20).unwrap();
    assert_close(&got, &expected.flatten_from(1).unwrap(), 1e-6);
    assert!(global_avg_pool(&x, 20).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Device::Cpu;
    let w = uniform(&[8, 4, 3, 3], 1, &dev).unwrap();
    let b = uniform(&[8], 2, &dev).unwrap();
    let grouped = Conv2dParams {
        groups: 2,
        ..Default::default()
    };
    assert!(BlockedConv::new(&w, &b, grouped).is_err());
    let depthwise_of_4 = Conv2dParams {
        groups: 8,
        ..Default::default()
    };
    assert!(BlockedConv::new(&w, &b, depthwise_of_4).is_err());
    assert!(BlockedConv::new(&w, &uniform(&[7], 2, &dev).unwrap(), Default::default()).is_err());
    if !runs_here() {
        return;
    }
    let conv = BlockedConv::new(&w, &b, Default::default()).unwrap();
    // Not blocked; too many channel blocks; smaller than the kernel; a residual of the
    // wrong shape.
    let x = uniform(&[1, 4, 5, 5], 3, &dev).unwrap();
    assert!(conv.forward(&x, None, Activation::Relu).is_err());
    let wide = to_blocked(&uniform(&[1, 20, 5, 5], 3, &dev).unwrap()).unwrap();
    assert!(conv.forward(&wide, None, Activation::Relu).is_err());
    let tiny = to_blocked(&uniform(&[1, 4, 2, 2], 3, &dev).unwrap()).unwrap();
    assert!(conv.forward(&tiny, None, Activation::Relu).is_err());
    let xb = to_blocked(&x).unwrap();
    let r = to_blocked(&uniform(&[1, 8, 5, 5], 4, &dev).unwrap()).unwrap();
    assert!(conv.forward(&xb, Some(&r), Activation::Relu).is_err());
}
