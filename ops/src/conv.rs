//! 2-D convolution with an exact gradient for any input size: the public entry point, which
//! picks the kernel for the device, dtype and grouping.

use candle_core::{DType, Result, Tensor};

use crate::conv_gemm::{ConvGemm, ConvGemmFused, ConvGeometry};
use crate::epilogue::Activation;
use crate::im2col::Window;
use crate::shape::pool_output_size;

/// Hyper-parameters of a 2-D convolution: the same on both spatial axes, except that the
/// width's padding may differ (Inception-V3's 1×7 and 7×1 convolutions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between windows.
    pub stride: usize,
    /// Zeros added on every side (top and bottom; left and right too unless `padding_w`).
    pub padding: usize,
    /// Zeros added left and right when that differs from `padding`.
    pub padding_w: Option<usize>,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups (input and output channels split into this many independent parts).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            padding_w: None,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Padding of height and width.
    pub fn pads(&self) -> (usize, usize) {
        (self.padding, self.padding_w.unwrap_or(self.padding))
    }

    /// Output height and width for an `h × w` input and a `kh × kw` kernel, if the kernel
    /// fits at all.
    pub fn output_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let (ph, pw) = self.pads();
        let oh = pool_output_size(h, kh, self.stride, ph, self.dilation, false)?;
        let ow = pool_output_size(w, kw, self.stride, pw, self.dilation, false)?;
        Some((oh, ow))
    }
}

/// `a · b`, also for bf16 on the CPU, where Candle has no bf16 matmul kernel: there the
/// product is accumulated in f32 and rounded back to bf16 (activations and weights stay
/// bf16-rounded, as on hardware whose bf16 matmuls accumulate in f32).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == DType::BF16 && a.device().is_cpu() {
        a.to_dtype(DType::F32)?
            .matmul(&b.to_dtype(DType::F32)?)?
            .to_dtype(DType::BF16)
    } else {
        a.matmul(b)
    }
}

/// Convolution of `x: (N, C_in, H, W)` with `weight: (C_out, C_in / groups, kh, kw)`, without
/// bias (every convolution of the paper's networks is followed by batch norm).
///
/// On the CPU it runs as per-image im2col + GEMM (the `conv_gemm` module), whose gradients
/// are exact for any input size (Candle's own `conv2d` backward assumes H and W share
/// parity) and skip the input gradient when the input needs none. bf16 is computed in f32
/// and rounded back (the `gemm` crate has no bf16 kernel). A depthwise convolution (groups =
/// input channels = output channels) runs on the direct kernel of
/// [`crate::depthwise_conv2d`]. On other devices it is composed from Candle's ops
/// (`composed::conv2d`), with gradients exact for any input size there too.
pub fn conv2d(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let (_, c_in, _, _) = x.dims4()?;
    let (c_out, c_in_group, _, _) = weight.dims4()?;
    if !x.device().is_cpu() {
        geometry(x, weight, p)?;
        return crate::composed::conv2d(x, weight, p);
    }
    if x.dtype() == DType::BF16 {
        let y = conv2d(&x.to_dtype(DType::F32)?, &weight.to_dtype(DType::F32)?, p)?;
        return y.to_dtype(DType::BF16);
    }
    if p.groups > 1 && p.groups == c_in && c_out == c_in && c_in_group == 1 {
        return crate::depthwise::depthwise_conv2d(x, weight, p);
    }
    conv2d_gemm(x, weight, p)
}

/// `act(conv2d(x, weight) + bias[c] + residual)`: a convolution with its inference epilogue
/// (batch norm's shift folded in as `bias`, the shortcut of a residual block, the
/// activation).
///
/// On the CPU, when nothing needs a gradient, the epilogue runs on each image's output right
/// after its GEMM, while it is in cache, instead of as two or three passes over memory;
/// otherwise (training, or frozen batch norm under fine-tuning) it is the composed ops, with
/// their gradients.
pub fn conv2d_fused(
    x: &Tensor,
    weight: &Tensor,
    p: Conv2dParams,
    bias: &Tensor,
    residual: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let tracks = x.track_op()
        || weight.track_op()
        || bias.track_op()
        || residual.is_some_and(Tensor::track_op);
    let (_, c_in, _, _) = x.dims4()?;
    let (c_out, c_in_group, _, _) = weight.dims4()?;
    let depthwise = p.groups > 1 && p.groups == c_in && c_out == c_in && c_in_group == 1;
    let on_cpu = x.device().is_cpu();
    if !tracks && on_cpu && depthwise && residual.is_none() && x.dtype().is_float() {
        return crate::depthwise::depthwise_conv2d_fused(x, weight, p, bias, act);
    }
    let fusable = on_cpu && matches!(x.dtype(), DType::F32 | DType::F64 | DType::F16) && !depthwise;
    if tracks || !fusable {
        let y = conv2d(x, weight, p)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
        return act.after_residual(&y, residual);
    }
    let geometry = geometry(x, weight, p)?;
    let op = ConvGemmFused {
        geometry,
        residual: residual.map(Tensor::contiguous).transpose()?,
        act,
    };
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.to_dtype(x.dtype())?.contiguous()?,
        &op,
    )
}

/// The geometry of `conv(x, weight)`, or a clear error if the shapes do not fit.
pub(crate) fn geometry(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<ConvGeometry> {
    let (n, c_in, h, w) = x.dims4()?;
    let (c_out, c_in_group, kh, kw) = weight.dims4()?;
    if p.groups == 0 || c_in != c_in_group * p.groups || c_out % p.groups != 0 {
        candle_core::bail!(
            "conv2d: input has {c_in} channels, weight {:?} with {} groups expects {}",
            weight.dims(),
            p.groups,
            c_in_group * p.groups
        );
    }
    let Some((oh, ow)) = p.output_size(h, w, kh, kw) else {
        candle_core::bail!(
            "conv2d: a {kh}x{kw} kernel (dilation {}, padding {:?}) does not fit a {h}x{w} input",
            p.dilation,
            p.pads()
        );
    };
    let (pad_h, pad_w) = p.pads();
    let win = Window {
        kh,
        kw,
        stride: p.stride,
        pad_h,
        pad_w,
        dilation: p.dilation,
        h,
        w,
        oh,
        ow,
    };
    Ok(ConvGeometry {
        win,
        n,
        c_in,
        c_out,
        groups: p.groups,
    })
}

/// The im2col + GEMM convolution for any groups (f32, f64, f16 on the CPU).
pub(crate) fn conv2d_gemm(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let g = geometry(x, weight, p)?;
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, ConvGemm(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_close, check_gradients};
    use candle_core::Device;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        crate::gradcheck::uniform(shape, seed, &Device::Cpu).unwrap()
    }

    #[test]
    fn forward_matches_candle_conv2d() -> Result<()> {
        for (h, w, k, p) in [
            (
                9usize,
                7usize,
                3usize,
                Conv2dParams {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
            ),
            (8, 8, 1, Conv2dParams::default()),
            (
                11,
                6,
                7,
                Conv2dParams {
                    stride: 2,
                    padding: 3,
                    ..Default::default()
                },
            ),
            (
                10,
                9,
                3,
                Conv2dParams {
                    padding: 2,
                    dilation: 2,
                    ..Default::default()
                },
            ),
            (
                7,
                5,
                1,
                Conv2dParams {
                    stride: 2,
                    ..Default::default()
                },
            ),
        ] {
            let x = rand(&[2, 4, h, w], 1);
            let wt = rand(&[6, 4, k, k], 2);
            let ours = conv2d(&x, &wt, p)?;
            let theirs = x.conv2d(&wt, p.padding, p.stride, p.dilation, 1)?;
            assert_close(&ours, &theirs, 1e-5);
        }
        Ok(())
    }

    #[test]
    fn grouped_forward_matches_candle() -> Result<()> {
        let x = rand(&[2, 6, 9, 8], 3);
        let wt = rand(&[6, 2, 3, 3], 4);
        let p = Conv2dParams {
            stride: 2,
            padding: 1,
            groups: 3,
            ..Default::default()
        };
        let ours = conv2d(&x, &wt, p)?;
        let theirs = x.conv2d(&wt, 1, 2, 1, 3)?;
        assert_close(&ours, &theirs, 1e-5);
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        // Odd, mixed-parity sizes: the case Candle's own backward gets wrong.
        for (h, w, k, p) in [
            (
                7usize,
                6usize,
                3usize,
                Conv2dParams {
                    stride: 2,
                    padding: 1,
                    ..Default::default()
                },
            ),
            (
                5,
                8,
                1,
                Conv2dParams {
                    stride: 2,
                    ..Default::default()
                },
            ),
            (
                6,
                5,
                3,
                Conv2dParams {
                    padding: 2,
                    dilation: 2,
                    ..Default::default()
                },
            ),
            (5, 4, 1, Conv2dParams::default()),
            (
                6,
                7,
                3,
                Conv2dParams {
                    stride: 1,
                    padding: 1,
                    groups: 2,
                    ..Default::default()
                },
            ),
        ] {
            let x = rand(&[2, 4, h, w], 5).to_dtype(DType::F64)?;
            let wt = rand(&[4, 4 / p.groups, k, k], 6).to_dtype(DType::F64)?;
            check_gradients(&[x, wt], |v| conv2d(&v[0], &v[1], p), 1e-6, 1e-5)?;
        }
        Ok(())
    }

    #[test]
    fn asymmetric_padding_matches_explicit_padding() -> Result<()> {
        // Inception-V3's 1×7 (padding (0, 3)) and 7×1 (padding (3, 0)) convolutions.
        for (kh, kw, p) in [
            (
                1,
                7,
                Conv2dParams {
                    padding: 0,
                    padding_w: Some(3),
                    ..Default::default()
                },
            ),
            (
                7,
                1,
                Conv2dParams {
                    padding: 3,
                    padding_w: Some(0),
                    ..Default::default()
                },
            ),
        ] {
            let x = rand(&[2, 3, 9, 11], 20);
            let wt = rand(&[4, 3, kh, kw], 21);
            let ours = conv2d(&x, &wt, p)?;
            let (ph, pw) = p.pads();
            let padded = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
            let reference = conv2d(&padded, &wt, Conv2dParams::default())?;
            assert_close(&ours, &reference, 1e-6);
            let (x, wt) = (x.to_dtype(DType::F64)?, wt.to_dtype(DType::F64)?);
            check_gradients(&[x, wt], |v| conv2d(&v[0], &v[1], p), 1e-6, 1e-5)?;
        }
        Ok(())
    }

    #[test]
    fn runs_in_half_precisions() -> Result<()> {
        let x = rand(&[2, 4, 9, 7], 12);
        let wt = rand(&[6, 4, 3, 3], 13);
        let p = Conv2dParams {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let reference = conv2d(&x, &wt, p)?;
        for dtype in [DType::F16, DType::BF16] {
            let y = conv2d(&x.to_dtype(dtype)?, &wt.to_dtype(dtype)?, p)?;
            assert_eq!(y.dtype(), dtype);
            assert_close(&y.to_dtype(DType::F32)?, &reference, 3e-2);
        }
        Ok(())
    }

    #[test]
    fn rejects_mismatched_channels_and_tiny_inputs() {
        let x = rand(&[1, 3, 8, 8], 7);
        let err = conv2d(&x, &rand(&[4, 2, 3, 3], 8), Conv2dParams::default()).unwrap_err();
        assert!(err.to_string().contains("3 channels"), "{err}");
        let small = rand(&[1, 3, 2, 2], 9);
        let err = conv2d(&small, &rand(&[4, 3, 3, 3], 8), Conv2dParams::default()).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    }
}
