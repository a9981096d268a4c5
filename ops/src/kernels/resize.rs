//! Bilinear resizing of NCHW tensors (PyTorch's `F.interpolate(mode="bilinear",
//! antialias=False)`), with its gradient: each output pixel is a weighted sum of four input
//! pixels, the weights depending only on the output position, so one table of taps per axis
//! serves every plane, forward and backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use num_traits::Zero as _;
use rayon::prelude::*;

use crate::storage::{contiguous, dispatch_float};

/// One output position along an axis: the two input positions it reads and their weights.
#[derive(Debug, Clone, Copy)]
struct AxisTap {
    i0: usize,
    i1: usize,
    w0: f64,
    w1: f64,
}

/// PyTorch's source index for `out` positions from `input` ones (`area_pixel_compute_
/// source_index` and `upsample_bilinear2d`): with `align_corners` the corner pixels' centres
/// line up, `(in − 1)/(out − 1)` apart; without, pixel areas line up, `(o + ½)·in/out − ½`,
/// clamped at 0. The upper neighbour is clamped at the last pixel.
fn axis_taps(input: usize, out: usize, align_corners: bool) -> Vec<AxisTap> {
    let scale = if align_corners {
        if out > 1 {
            (input as f64 - 1.0) / (out as f64 - 1.0)
        } else {
            0.0
        }
    } else {
        input as f64 / out as f64
    };
    (0..out)
        .map(|o| {
            let src = if align_corners {
                scale * o as f64
            } else {
                (scale * (o as f64 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src.floor() as usize).min(input - 1);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            let w1 = src - i0 as f64;
            AxisTap {
                i0,
                i1,
                w0: 1.0 - w1,
                w1,
            }
        })
        .collect()
}

/// The forward op: `(N, C, H, W)` → `(N, C, out.0, out.1)`.
pub(crate) struct ResizeBilinear {
    pub out: (usize, usize),
    pub align_corners: bool,
}

impl CustomOp1 for ResizeBilinear {
    fn name(&self) -> &'static str {
        "resize_bilinear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = self.out;
        let (ys, xs) = (
            axis_taps(h, oh, self.align_corners),
            axis_taps(w, ow, self.align_corners),
        );
        let out = dispatch_float!("resize_bilinear", s, |T| {
            let x = contiguous::<T>(s, l, "resize_bilinear")?;
            let mut out = vec![T::zero(); n * c * oh * ow];
            out.par_chunks_mut(oh * ow)
                .zip(x.par_chunks(h * w))
                .for_each(|(dst, plane)| {
                    let at = |y: usize, x: usize| WithDType::to_f64(plane[y * w + x]);
                    for (row, ty) in dst.chunks_exact_mut(ow).zip(&ys) {
                        for (d, tx) in row.iter_mut().zip(&xs) {
                            let top = tx.w0 * at(ty.i0, tx.i0) + tx.w1 * at(ty.i0, tx.i1);
                            let bottom = tx.w0 * at(ty.i1, tx.i0) + tx.w1 * at(ty.i1, tx.i1);
                            *d = <T as WithDType>::from_f64(ty.w0 * top + ty.w1 * bottom);
                        }
                    }
                });
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let op = ResizeBilinearGrad {
            input: (h, w),
            align_corners: self.align_corners,
        };
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

/// The gradient with respect to the input: each output gradient spread back onto its four
/// input pixels with the forward's weights (the forward's transpose), plane by plane.
struct ResizeBilinearGrad {
    input: (usize, usize),
    align_corners: bool,
}

impl CustomOp1 for ResizeBilinearGrad {
    fn name(&self) -> &'static str {
        "resize_bilinear_backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, oh, ow) = l.shape().dims4()?;
        let (h, w) = self.input;
        let (ys, xs) = (
            axis_taps(h, oh, self.align_corners),
            axis_taps(w, ow, self.align_corners),
        );
        let out = dispatch_float!("resize_bilinear_backward", s, |T| {
            let g = contiguous::<T>(s, l, "resize_bilinear_backward")?;
            let mut out = vec![T::zero(); n * c * h * w];
            out.par_chunks_mut(h * w)
                .zip(g.par_chunks(oh * ow))
                .for_each(|(dst, plane)| {
                    let mut acc = vec![0.0f64; h * w];
                    for (row, ty) in plane.chunks_exact(ow).zip(&ys) {
                        for (v, tx) in row.iter().zip(&xs) {
                            let v = WithDType::to_f64(*v);
                            acc[ty.i0 * w + tx.i0] += ty.w0 * tx.w0 * v;
                            acc[ty.i0 * w + tx.i1] += ty.w0 * tx.w1 * v;
                            acc[ty.i1 * w + tx.i0] += ty.w1 * tx.w0 * v;
                            acc[ty.i1 * w + tx.i1] += ty.w1 * tx.w1 * v;
                        }
                    }
                    for (d, a) in dst.iter_mut().zip(acc) {
                        *d = <T as WithDType>::from_f64(a);
                    }
                });
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, h, w))))
    }
}
