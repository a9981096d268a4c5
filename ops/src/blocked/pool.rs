//! Pooling in the blocked layout: each window reduces whole 16-channel vectors.

use std::mem::MaybeUninit;

use candle_core::{Result, Tensor};

use super::{blocked_dims, with_f32, BLOCK};
use crate::geometry::{Pool2dParams, PoolGeometry as Geometry};
use crate::storage::par_filled;

/// Max pooling of a blocked `(N, C/16, H, W, 16)` tensor with PyTorch's meaning of `p`
/// (padding as −∞, `ceil_mode`, a NaN winning), as [`crate::max_pool2d`] on NCHW (the
/// ResNet stem's 3×3/2 max-pool).
pub fn max_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    pool::<true>(x, p, "max_pool2d (blocked)")
}

/// Average pooling of a blocked `(N, C/16, H, W, 16)` tensor with PyTorch's meaning of
/// `p` (padding, `ceil_mode`, `count_include_pad`), as [`crate::avg_pool2d`] on NCHW.
pub fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    pool::<false>(x, p, "avg_pool2d (blocked)")
}

/// Max (`MAX`) or average pooling of every window of `x`, one output plane per task.
fn pool<const MAX: bool>(x: &Tensor, p: Pool2dParams, op: &str) -> Result<Tensor> {
    let (n, cb, h, w) = blocked_dims(x, op)?;
    let g = p.geometry(h, w)?;
    if !super::available() {
        candle_core::bail!("{op}: this CPU lacks AVX-512F");
    }
    let x = x.contiguous()?;
    let (in_plane, out_plane) = (h * w * BLOCK, g.oh * g.ow * BLOCK);
    let out = with_f32(&x, op, |x| {
        // SAFETY: each piece (one output plane) is written whole by `pool_plane`.
        Ok(unsafe {
            par_filled(n * cb * out_plane, out_plane, |i, dst| {
                pool_plane::<MAX>(&x[i * in_plane..][..in_plane], dst, &g);
            })
        })
    })?;
    Tensor::from_vec(out, (n, cb, g.oh, g.ow, BLOCK), x.device())
}

/// One plane of [`pool`] (AVX-512F, checked by the caller).
#[cfg(target_arch = "x86_64")]
fn pool_plane<const MAX: bool>(src: &[f32], dst: &mut [MaybeUninit<f32>], g: &Geometry) {
    // SAFETY: `pool` runs only where `available()` found AVX-512F.
    unsafe { simd::pool_plane::<MAX>(src, dst, g) }
}

#[cfg(not(target_arch = "x86_64"))]
fn pool_plane<const MAX: bool>(_: &[f32], _: &mut [MaybeUninit<f32>], _: &Geometry) {
    unreachable!("available() is false off x86-64")
}

/// The mean over positions of a blocked `(N, C/16, H, W, 16)` tensor as `(N, c)`: the
/// classifier's pooling, dropping the padding channels.
pub fn global_avg_pool(x: &Tensor, c: usize) -> Result<Tensor> {
    let (n, cb, h, w) = blocked_dims(x, "global_avg_pool (blocked)")?;
    if c > cb * BLOCK || c + BLOCK <= cb * BLOCK {
        candle_core::bail!("global_avg_pool (blocked): {c} channels do not fill {cb} blocks");
    }
    let x = x.contiguous()?;
    let plane = h * w * BLOCK;
    let sums = with_f32(&x, "global_avg_pool (blocked)", |x| {
        // SAFETY: each piece (one channel block of one image) is written whole below.
        Ok(unsafe {
            par_filled(n * cb * BLOCK, BLOCK, |i, dst| {
                let mut acc = [0.0f32; BLOCK];
                for v in x[i * plane..][..plane].chunks_exact(BLOCK) {
                    for (a, &v) in acc.iter_mut().zip(v) {
                        *a += v;
                    }
                }
                let scale = 1.0 / (h * w) as f32;
                for (d, a) in dst.iter_mut().zip(acc) {
                    d.write(a * scale);
                }
            })
        })
    })?;
    Tensor::from_vec(sums, (n, cb * BLOCK), x.device())?
        .narrow(1, 0, c)?
        .contiguous()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::BLOCK;
    use crate::geometry::PoolGeometry as Geometry;

    /// Every window of one input plane `src` into the output plane `dst`: the max of its
    /// vectors (−∞ padding, a NaN winning) or their sum divided by the window's divisor.
    ///
    /// # Safety
    /// AVX-512F; `src` and `dst` are planes of `g`'s input and output.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool_plane<const MAX: bool>(
        src: &[f32],
        dst: &mut [MaybeUninit<f32>],
        g: &Geometry,
    ) {
        assert!(src.len() >= g.h * g.w * BLOCK && dst.len() >= g.oh * g.ow * BLOCK);
        let (ys, xs) = g.spans();
        for (oy, ys) in ys.iter().enumerate() {
            for (ox, xs) in xs.iter().enumerate() {
                let mut acc = if MAX {
                    _mm512_set1_ps(f32::NEG_INFINITY)
                } else {
                    _mm512_setzero_ps()
                };
                for y in ys.start..ys.end {
                    for x in xs.start..xs.end {
                        // SAFETY: (y, x) lies inside the plane (asserted above).
                        let v = unsafe { _mm512_loadu_ps(src.as_ptr().add((y * g.w + x) * BLOCK)) };
                        acc = if MAX {
                            let wins = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, acc)
                                | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                            _mm512_mask_mov_ps(acc, wins, v)
                        } else {
                            _mm512_add_ps(acc, v)
                        };
                    }
                }
                if !MAX {
                    let scale = 1.0 / g.divisor(*ys, *xs) as f32;
                    acc = _mm512_mul_ps(acc, _mm512_set1_ps(scale));
                }
                let at = (oy * g.ow + ox) * BLOCK;
                // SAFETY: output (oy, ox) lies inside the plane (asserted above).
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr().add(at).cast(), acc) };
            }
        }
    }
}
