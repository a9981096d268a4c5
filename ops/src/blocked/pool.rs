//! Average pooling in the blocked layout: each window sums whole 16-channel vectors.

use candle_core::{Result, Tensor};

use super::{blocked_dims, with_f32, BLOCK};
use crate::dispatch::par_filled;
use crate::pool::Pool2dParams;

/// `acc += v`, sixteen lanes.
#[inline]
fn add(acc: &mut [f32; BLOCK], v: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(v) {
        *a += v;
    }
}

/// Average pooling of a blocked `(N, C/16, H, W, 16)` tensor with PyTorch's meaning of
/// `p` (padding, `ceil_mode`, `count_include_pad`), as [`crate::avg_pool2d`] on NCHW.
pub fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let (n, cb, h, w) = blocked_dims(x, "avg_pool2d (blocked)")?;
    let g = p.geometry(h, w)?;
    let (ys, xs) = g.spans();
    let x = x.contiguous()?;
    let (in_plane, out_plane) = (h * w * BLOCK, g.oh * g.ow * BLOCK);
    let out = with_f32(&x, "avg_pool2d (blocked)", |x| {
        // SAFETY: each piece (one output plane) is written whole below.
        Ok(unsafe {
            par_filled(n * cb * out_plane, out_plane, |i, dst| {
                let src = &x[i * in_plane..][..in_plane];
                for (oy, ys) in ys.iter().enumerate() {
                    for (ox, xs) in xs.iter().enumerate() {
                        let mut acc = [0.0f32; BLOCK];
                        for y in ys.start..ys.end {
                            for xx in xs.start..xs.end {
                                add(&mut acc, &src[(y * w + xx) * BLOCK..][..BLOCK]);
                            }
                        }
                        let scale = 1.0 / g.divisor(*ys, *xs) as f32;
                        let at = (oy * g.ow + ox) * BLOCK;
                        for (d, a) in dst[at..at + BLOCK].iter_mut().zip(acc) {
                            d.write(a * scale);
                        }
                    }
                }
            })
        })
    })?;
    Tensor::from_vec(out, (n, cb, g.oh, g.ow, BLOCK), x.device())
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
                    add(&mut acc, v);
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
