//! Depthwise 2-D convolution (one filter per channel, MobileNet's 3×3 `conv_dw`) as a direct
//! kernel with both gradients.
//!
//! im2col + matmul wastes a depthwise convolution: each group is a `(1, k·k) × (k·k, L)`
//! product, too thin for a matmul, and the loop over channel groups pays a dispatch per
//! channel. Here every `(image, channel)` plane is one task that walks the taps and, for each
//! tap, the output rows, so the inner loop is a contiguous multiply-add over a row. The input
//! gradient is the same walk scattering instead of gathering; the weight gradient is one task
//! per channel summing over the batch in f64.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::epilogue::{with_activation, Activation};
use crate::geometry::Conv2dParams;
use crate::storage::{contiguous, dispatch_float, Elem};

/// Geometry of a depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    stride: usize,
    dilation: usize,
    pad_h: usize,
    pad_w: usize,
}

impl Geometry {
    /// For output row/column `o` at tap `k`: the input coordinate, if inside `len`.
    #[inline]
    fn source(&self, o: usize, k: usize, pad: usize, len: usize) -> Option<usize> {
        let pos = (o * self.stride + k * self.dilation) as isize - pad as isize;
        (pos >= 0 && (pos as usize) < len).then_some(pos as usize)
    }

    /// The output columns `[lo, hi)` whose input column at tap `j` lies inside the image.
    fn valid_columns(&self, j: usize) -> (usize, usize) {
        let first = (0..self.ow).find(|&o| self.source(o, j, self.pad_w, self.w).is_some());
        match first {
            None => (0, 0),
            Some(lo) => {
                let hi = (lo..self.ow)
                    .take_while(|&o| self.source(o, j, self.pad_w, self.w).is_some())
                    .last()
                    .map_or(lo, |o| o + 1);
                (lo, hi)
            }
        }
    }
}

/// Calls `f(oy, y, lo, hi, x0)` for every output row `oy` reading input row `y` at tap
/// `(i, j)`, with the valid output columns `[lo, hi)` and the input column of `lo`.
fn for_each_row(
    g: &Geometry,
    i: usize,
    j: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let (lo, hi) = g.valid_columns(j);
    if lo == hi {
        return;
    }
    let x0 = g.source(lo, j, g.pad_w, g.w).expect("lo is valid");
    for oy in 0..g.oh {
        if let Some(y) = g.source(oy, i, g.pad_h, g.h) {
            f(oy, y, lo, hi, x0);
        }
    }
}

/// `Σ a·b` over one output row, in eight independent lanes so that it vectorises.
fn dot<T: Elem>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 8;
    let mut lanes = [T::zero(); LANES];
    let split = a.len() / LANES * LANES;
    for (ca, cb) in a[..split]
        .chunks_exact(LANES)
        .zip(b[..split].chunks_exact(LANES))
    {
        for i in 0..LANES {
            lanes[i] += ca[i] * cb[i];
        }
    }
    let tail = a[split..]
        .iter()
        .zip(&b[split..])
        .fold(T::zero(), |acc, (&x, &y)| acc + x * y);
    lanes.iter().fold(tail, |acc, &v| acc + v)
}

/// The forward, with an optional inference epilogue `act(y + bias[c])` applied to each plane
/// as soon as it is complete.
fn forward<T: Elem>(
    x: &[T],
    wt: &[T],
    g: &Geometry,
    epilogue: Option<(&[T], Activation)>,
) -> Vec<T> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut out = vec![T::zero(); g.n * g.c * plane_out];
    out.par_chunks_mut(plane_out)
        .enumerate()
        .for_each(|(nc, dst)| {
            let c = nc % g.c;
            let src = &x[nc * plane_in..][..plane_in];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let k = wt[c * taps + i * g.kw + j];
                    for_each_row(g, i, j, |oy, y, lo, hi, x0| {
                        let row = &mut dst[oy * g.ow..][lo..hi];
                        let input = &src[y * g.w + x0..];
                        for (d, &v) in row.iter_mut().zip(input.iter().step_by(g.stride)) {
                            *d += k * v;
                        }
                    });
                }
            }
            if let Some((bias, act)) = epilogue {
                let b = bias[c];
                with_activation!(act, T, |f| dst.iter_mut().for_each(|v| *v = f(*v + b)));
            }
        });
    out
}

fn grad_input<T: Elem>(grad: &[T], wt: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut out = vec![T::zero(); g.n * g.c * plane_in];
    out.par_chunks_mut(plane_in)
        .enumerate()
        .for_each(|(nc, dst)| {
            let c = nc % g.c;
            let src = &grad[nc * plane_out..][..plane_out];
            for i in 0..g.kh {
                for j in 0..g.kw {
                    let k = wt[c * taps + i * g.kw + j];
                    for_each_row(g, i, j, |oy, y, lo, hi, x0| {
                        let row = &src[oy * g.ow..][lo..hi];
                        let input = &mut dst[y * g.w + x0..];
                        for (d, &gv) in input.iter_mut().step_by(g.stride).zip(row) {
                            *d += k * gv;
                        }
                    });
                }
            }
        });
    out
}

fn grad_weight<T: Elem>(grad: &[T], x: &[T], g: &Geometry) -> Vec<T> {
    let (plane_in, plane_out, taps) = (g.h * g.w, g.oh * g.ow, g.kh * g.kw);
    let mut out = vec![T::zero(); g.c * taps];
    out.par_chunks_mut(taps).enumerate().for_each(|(c, dst)| {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let mut acc = 0f64;
                for img in 0..g.n {
                    let nc = img * g.c + c;
                    let gp = &grad[nc * plane_out..][..plane_out];
                    let xp = &x[nc * plane_in..][..plane_in];
                    for_each_row(g, i, j, |oy, y, lo, hi, x0| {
                        let row = &gp[oy * g.ow..][lo..hi];
                        let input = &xp[y * g.w + x0..];
                        let partial = if g.stride == 1 {
                            dot(row, &input[..row.len()])
                        } else {
                            let mut partial = T::zero();
                            for (&gv, &xv) in row.iter().zip(input.iter().step_by(g.stride)) {
                                partial += gv * xv;
                            }
                            partial
                        };
                        acc += <T as candle_core::WithDType>::to_f64(partial);
                    });
                }
                dst[i * g.kw + j] = <T as candle_core::WithDType>::from_f64(acc);
            }
        }
    });
    out
}

/// The forward op; its backward runs the two gradient kernels.
#[derive(Debug, Clone, Copy)]
struct Depthwise(Geometry);

/// Input gradient from the output gradient (arg 1) and the weight (arg 2).
#[derive(Debug, Clone, Copy)]
struct DepthwiseGradInput(Geometry);

/// Weight gradient from the output gradient (arg 1) and the input (arg 2).
#[derive(Debug, Clone, Copy)]
struct DepthwiseGradWeight(Geometry);

impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise_conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch_float!("depthwise_conv2d", s1, |T| Ok::<_, candle_core::Error>(
            forward::<T>(
                contiguous::<T>(s1, l1, "depthwise_conv2d")?,
                contiguous::<T>(s2, l2, "depthwise_conv2d")?,
                &g,
                None
            )
        ))?;
        Ok((out, Shape::from((g.n, g.c, g.oh, g.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gx = grad.apply_op2_no_bwd(&weight.contiguous()?, &DepthwiseGradInput(self.0))?;
        let gw = grad.apply_op2_no_bwd(&x.contiguous()?, &DepthwiseGradWeight(self.0))?;
        Ok((Some(gx), Some(gw)))
    }
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_grad_input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out =
            dispatch_float!("depthwise_conv2d_grad_input", s1, |T| Ok::<
                _,
                candle_core::Error,
            >(
                grad_input::<T>(
                    contiguous::<T>(s1, l1, "depthwise_conv2d_grad_input")?,
                    contiguous::<T>(s2, l2, "depthwise_conv2d_grad_input")?,
                    &g
                )
            ))?;
        Ok((out, Shape::from((g.n, g.c, g.h, g.w))))
    }
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_grad_weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let out = dispatch_float!("depthwise_conv2d_grad_weight", s1, |T| Ok::<
            _,
            candle_core::Error,
        >(
            grad_weight::<T>(
                contiguous::<T>(s1, l1, "depthwise_conv2d_grad_weight")?,
                contiguous::<T>(s2, l2, "depthwise_conv2d_grad_weight")?,
                &g
            )
        ))?;
        Ok((out, Shape::from((g.c, 1, g.kh, g.kw))))
    }
}

/// Depthwise convolution of `x: (N, C, H, W)` with `weight: (C, 1, kh, kw)` (groups = C) on
/// the CPU, with both gradients; `p.groups` must equal C.
pub(crate) fn depthwise_conv2d(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let g = geometry(x, weight, p)?;
    x.contiguous()?
        .apply_op2(&weight.contiguous()?, Depthwise(g))
}

/// `act(depthwise_conv2d(x, weight) + bias[c])` in one pass over each output plane, without
/// gradients: the inference path of [`crate::conv2d_fused`].
pub(crate) fn depthwise_conv2d_fused(
    x: &Tensor,
    weight: &Tensor,
    p: Conv2dParams,
    bias: &Tensor,
    act: Activation,
) -> Result<Tensor> {
    let g = geometry(x, weight, p)?;
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.to_dtype(x.dtype())?.contiguous()?,
        &DepthwiseFused(g, act),
    )
}

/// The geometry of a depthwise convolution, or a clear error if the shapes do not fit.
fn geometry(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Geometry> {
    let (n, c, h, w) = x.dims4()?;
    let (c_out, one, kh, kw) = weight.dims4()?;
    if c_out != c || one != 1 || p.groups != c {
        candle_core::bail!(
            "depthwise_conv2d: input has {c} channels and groups {}, weight {:?} must be ({c}, 1, k, k)",
            p.groups,
            weight.dims()
        );
    }
    let Some((oh, ow)) = p.output_size(h, w, kh, kw) else {
        candle_core::bail!("depthwise_conv2d: a {kh}x{kw} kernel does not fit a {h}x{w} input");
    };
    let (pad_h, pad_w) = p.pads();
    Ok(Geometry {
        n,
        c,
        h,
        w,
        kh,
        kw,
        oh,
        ow,
        stride: p.stride,
        dilation: p.dilation,
        pad_h,
        pad_w,
    })
}

/// Inference depthwise convolution with its epilogue, on `(x, weight, bias)`.
#[derive(Debug, Clone, Copy)]
struct DepthwiseFused(Geometry, Activation);

impl CustomOp3 for DepthwiseFused {
    fn name(&self) -> &'static str {
        "depthwise_conv2d_fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, act) = (self.0, self.1);
        let name = "depthwise_conv2d_fused";
        let out = dispatch_float!(name, s1, |T| Ok::<_, candle_core::Error>(forward::<T>(
            contiguous::<T>(s1, l1, name)?,
            contiguous::<T>(s2, l2, name)?,
            &g,
            Some((contiguous::<T>(s3, l3, name)?, act))
        )))?;
        Ok((out, Shape::from((g.n, g.c, g.oh, g.ow))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_close, check_gradients, uniform};
    use candle_core::{DType, Device};

    #[test]
    fn fused_epilogue_equals_the_composed_ops() -> Result<()> {
        let d = Device::Cpu;
        for (stride, act) in [(1, crate::Activation::Relu6), (2, crate::Activation::Relu)] {
            let p = Conv2dParams {
                stride,
                padding: 1,
                groups: 4,
                ..Default::default()
            };
            let x = (uniform(&[3, 4, 9, 8], 30, &d)? * 8.0)?;
            let wt = uniform(&[4, 1, 3, 3], 31, &d)?;
            let bias = uniform(&[4], 32, &d)?;
            let fused = crate::conv2d_fused(&x, &wt, p, &bias, None, act)?;
            let composed = act.forward(
                &depthwise_conv2d(&x, &wt, p)?.broadcast_add(&bias.reshape((1, 4, 1, 1))?)?,
            )?;
            assert_close(&fused, &composed, 1e-6);
        }
        Ok(())
    }

    #[test]
    fn matches_the_grouped_im2col_convolution() -> Result<()> {
        // Odd sizes, strides, dilation, padding that hangs over.
        for (h, w, k, stride, padding, dilation) in [
            (9, 7, 3, 1, 1, 1),
            (10, 13, 3, 2, 1, 1),
            (11, 8, 5, 2, 2, 1),
            (12, 9, 3, 1, 2, 2),
            (5, 6, 3, 3, 0, 1),
        ] {
            let c = 5;
            let x = uniform(&[2, c, h, w], 1, &Device::Cpu)?;
            let wt = uniform(&[c, 1, k, k], 2, &Device::Cpu)?;
            let p = Conv2dParams {
                stride,
                padding,
                dilation,
                groups: c,
                ..Default::default()
            };
            let ours = depthwise_conv2d(&x, &wt, p)?;
            let reference = crate::conv::conv2d_on(&x, &wt, p, crate::plan::ConvKernel::Gemm)?;
            assert_close(&ours, &reference, 1e-5);
        }
        Ok(())
    }

    #[test]
    fn gradients_match_finite_differences() -> Result<()> {
        for (stride, padding) in [(1, 1), (2, 1), (2, 0)] {
            let x = uniform(&[2, 3, 7, 6], 3, &Device::Cpu)?.to_dtype(DType::F64)?;
            let wt = uniform(&[3, 1, 3, 3], 4, &Device::Cpu)?.to_dtype(DType::F64)?;
            let p = Conv2dParams {
                stride,
                padding,
                groups: 3,
                ..Default::default()
            };
            check_gradients(&[x, wt], |v| depthwise_conv2d(&v[0], &v[1], p), 1e-6, 1e-5)?;
        }
        Ok(())
    }

    #[test]
    fn f32_agrees_with_f64() -> Result<()> {
        let x = uniform(&[2, 4, 15, 17], 5, &Device::Cpu)?;
        let wt = uniform(&[4, 1, 3, 3], 6, &Device::Cpu)?;
        let p = Conv2dParams {
            stride: 2,
            padding: 1,
            groups: 4,
            ..Default::default()
        };
        let hi = depthwise_conv2d(&x.to_dtype(DType::F64)?, &wt.to_dtype(DType::F64)?, p)?;
        let lo = depthwise_conv2d(&x, &wt, p)?;
        assert_close(&lo.to_dtype(DType::F64)?, &hi, 1e-6);
        for dtype in [DType::F16, DType::BF16] {
            let y = depthwise_conv2d(&x.to_dtype(dtype)?, &wt.to_dtype(dtype)?, p)?;
            assert_close(&y.to_dtype(DType::F64)?, &hi, 3e-2);
        }
        Ok(())
    }
}
