//! Bilinear resizing of NCHW tensors (PyTorch's `F.interpolate(mode="bilinear",
//! antialias=False)`), with its gradient: each output pixel is a weighted sum of four input
//! pixels, the weights depending only on the output position, so one table of taps per axis
//! serves every plane, forward and backward.
//!
//! Both run separably, plane by plane: the forward interpolates every input row along x
//! once (`top` and `bottom` of PyTorch's formula, shared by all the output rows that read
//! that input row), then each output row is one vector loop over two of those rows; the
//! backward is the transpose (rows summed along y in vector loops, then spread along x).
//! f32, f16 and bf16 are computed in f32 (PyTorch's accumulation type for them), f64 in
//! f64, compiled for AVX-512 where the CPU has it.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use num_traits::{Float, Zero as _};
use rayon::prelude::*;

use crate::storage::{contiguous, dispatch_float};
use crate::vmath::{with_avx512, Lanes};

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

/// The taps' weights of the two axes in lane arithmetic, `(w0, w1)` per position.
type LaneWeights<'a, L> = (&'a [(L, L)], &'a [(L, L)]);

/// The taps' weights in lane arithmetic, `(w0, w1)` per position.
fn lane_weights<L: Float>(taps: &[AxisTap]) -> Vec<(L, L)> {
    let lane = |v: f64| L::from(v).expect("a weight in [0, 1] converts");
    taps.iter().map(|t| (lane(t.w0), lane(t.w1))).collect()
}

/// One plane of the forward: `dst (oh, ow)` from `plane (h, w)`; `rows` is scratch.
#[inline(always)]
fn resize_plane<T: Lanes>(
    plane: &[T],
    w: usize,
    (ys, xs): (&[AxisTap], &[AxisTap]),
    (wy, wx): LaneWeights<'_, T::Lane>,
    rows: &mut [T::Lane],
    dst: &mut [T],
) {
    let ow = xs.len();
    // Every input row along x.
    for (row, src) in rows.chunks_exact_mut(ow).zip(plane.chunks_exact(w)) {
        for ((r, tx), &(w0, w1)) in row.iter_mut().zip(xs).zip(wx) {
            *r = w0 * src[tx.i0].load() + w1 * src[tx.i1].load();
        }
    }
    // Each output row from two of them.
    for ((out, ty), &(w0, w1)) in dst.chunks_exact_mut(ow).zip(ys).zip(wy) {
        let (top, bottom) = (&rows[ty.i0 * ow..][..ow], &rows[ty.i1 * ow..][..ow]);
        for ((d, &t), &b) in out.iter_mut().zip(top).zip(bottom) {
            *d = T::store(w0 * t + w1 * b);
        }
    }
}

/// One plane of the backward: `dst (h, w)` from the output gradient `plane (oh, ow)`;
/// `rows` (`h × ow`) and `acc` (`h × w`) are scratch.
#[inline(always)]
fn resize_plane_grad<T: Lanes>(
    plane: &[T],
    (ys, xs): (&[AxisTap], &[AxisTap]),
    (wy, wx): LaneWeights<'_, T::Lane>,
    (rows, acc): (&mut [T::Lane], &mut [T::Lane]),
    dst: &mut [T],
) {
    let ow = xs.len();
    let w = acc.len() / (rows.len() / ow);
    rows.fill(T::Lane::zero());
    acc.fill(T::Lane::zero());
    // Summed along y onto the input rows.
    for ((src, ty), &(w0, w1)) in plane.chunks_exact(ow).zip(ys).zip(wy) {
        for (r, &g) in rows[ty.i0 * ow..][..ow].iter_mut().zip(src) {
            *r = *r + w0 * g.load();
        }
        for (r, &g) in rows[ty.i1 * ow..][..ow].iter_mut().zip(src) {
            *r = *r + w1 * g.load();
        }
    }
    // Spread along x.
    for (a, row) in acc.chunks_exact_mut(w).zip(rows.chunks_exact(ow)) {
        for ((&v, tx), &(w0, w1)) in row.iter().zip(xs).zip(wx) {
            a[tx.i0] = a[tx.i0] + w0 * v;
            a[tx.i1] = a[tx.i1] + w1 * v;
        }
    }
    for (d, &a) in dst.iter_mut().zip(acc.iter()) {
        *d = T::store(a);
    }
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
            let (wy, wx) = (lane_weights(&ys), lane_weights(&xs));
            let mut out = vec![T::zero(); n * c * oh * ow];
            out.par_chunks_mut(oh * ow)
                .zip(x.par_chunks(h * w))
                .for_each_init(
                    || vec![<T as Lanes>::Lane::zero(); h * ow],
                    |rows, (dst, plane)| {
                        let taps = (&ys[..], &xs[..]);
                        with_avx512(|| resize_plane(plane, w, taps, (&wy, &wx), rows, dst))
                    },
                );
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
            let (wy, wx) = (lane_weights(&ys), lane_weights(&xs));
            let mut out = vec![T::zero(); n * c * h * w];
            out.par_chunks_mut(h * w)
                .zip(g.par_chunks(oh * ow))
                .for_each_init(
                    || {
                        let zero = <T as Lanes>::Lane::zero();
                        (vec![zero; h * ow], vec![zero; h * w])
                    },
                    |(rows, acc), (dst, plane)| {
                        let taps = (&ys[..], &xs[..]);
                        with_avx512(|| resize_plane_grad(plane, taps, (&wy, &wx), (rows, acc), dst))
                    },
                );
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, h, w))))
    }
}
