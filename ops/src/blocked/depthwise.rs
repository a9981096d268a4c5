//! The depthwise convolution in the blocked layout (MobileNet's `conv_dw`): each output
//! vector is 16 channels' `Σ_taps x·w`, the taps' weight vectors kept in registers for a
//! whole plane, the epilogue applied before the one store.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use super::{kernel, BLOCK};
use crate::Activation;

/// One depthwise convolution's geometry and epilogue.
pub(super) struct Depthwise<'a> {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub dilation: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    /// `(C/16, KH, KW, 16)`.
    pub weight: &'a [f32],
    /// One per channel, whole blocks.
    pub bias: &'a [f32],
    pub act: Activation,
}

/// The taps a kernel may have at most (weights kept in registers).
pub(super) const MAX_TAPS: usize = 9;

impl Depthwise<'_> {
    /// Channel block `cb` of one image: input plane `x` to output plane `out`, with the
    /// residual plane `residual` if any.
    ///
    /// # Safety
    /// AVX-512F; `kh·kw ≤ MAX_TAPS`; the planes hold `h·w·16` and `oh·ow·16` values.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn plane(
        &self,
        cb: usize,
        x: &[f32],
        residual: Option<&[f32]>,
        out: &mut [MaybeUninit<f32>],
    ) {
        assert!(x.len() >= self.h * self.w * BLOCK && out.len() >= self.oh * self.ow * BLOCK);
        let taps = self.kh * self.kw;
        let zero = _mm512_setzero_ps();
        let mut wv = [zero; MAX_TAPS];
        for (t, wv) in wv.iter_mut().enumerate().take(taps) {
            // SAFETY: tap `t` of block `cb` lies inside the packed weight.
            *wv = unsafe { _mm512_loadu_ps(self.weight[(cb * taps + t) * BLOCK..].as_ptr()) };
        }
        // SAFETY: block `cb` of the bias has 16 values.
        let bias = unsafe { _mm512_loadu_ps(self.bias[cb * BLOCK..].as_ptr()) };
        let three = self.kh == 3 && self.kw == 3 && self.dilation == 1;
        for oy in 0..self.oh {
            let y0 = (oy * self.stride) as isize - self.pad_h as isize;
            let rows_inside = y0 >= 0 && y0 + 2 < self.h as isize;
            for ox in 0..self.ow {
                let x0 = (ox * self.stride) as isize - self.pad_w as isize;
                let mut acc = bias;
                if three && rows_inside && x0 >= 0 && x0 + 2 < self.w as isize {
                    // A 3×3 window inside the map: nine taps without bounds checks, in two
                    // chains.
                    let p = x[(y0 as usize * self.w + x0 as usize) * BLOCK..].as_ptr();
                    let mut other = zero;
                    for i in 0..3 {
                        for j in 0..3 {
                            // SAFETY: the window lies inside the plane (checked above).
                            let v = unsafe { _mm512_loadu_ps(p.add((i * self.w + j) * BLOCK)) };
                            if (i * 3 + j) % 2 == 0 {
                                acc = _mm512_fmadd_ps(v, wv[i * 3 + j], acc);
                            } else {
                                other = _mm512_fmadd_ps(v, wv[i * 3 + j], other);
                            }
                        }
                    }
                    acc = _mm512_add_ps(acc, other);
                } else {
                    acc = self.window(x, oy, ox, acc, &wv);
                }
                let at = (oy * self.ow + ox) * BLOCK;
                if let Some(r) = residual {
                    // SAFETY: the residual plane has the output's size.
                    acc = _mm512_add_ps(acc, unsafe { _mm512_loadu_ps(r.as_ptr().add(at)) });
                }
                acc = kernel::activate(self.act, acc);
                // SAFETY: output (oy, ox) lies inside the plane (asserted above).
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(at).cast(), acc) };
            }
        }
    }

    /// `acc + Σ x·w` over the taps of output `(oy, ox)` that fall inside the map.
    ///
    /// # Safety
    /// AVX-512F; `x` is a whole input plane.
    #[target_feature(enable = "avx512f")]
    unsafe fn window(
        &self,
        x: &[f32],
        oy: usize,
        ox: usize,
        mut acc: __m512,
        wv: &[__m512; MAX_TAPS],
    ) -> __m512 {
        for i in 0..self.kh {
            let iy = (oy * self.stride + i * self.dilation) as isize - self.pad_h as isize;
            if iy < 0 || iy >= self.h as isize {
                continue;
            }
            for j in 0..self.kw {
                let ix = (ox * self.stride + j * self.dilation) as isize - self.pad_w as isize;
                if ix < 0 || ix >= self.w as isize {
                    continue;
                }
                let at = (iy as usize * self.w + ix as usize) * BLOCK;
                // SAFETY: (iy, ix) lies inside the plane (checked).
                let v = unsafe { _mm512_loadu_ps(x.as_ptr().add(at)) };
                acc = _mm512_fmadd_ps(v, wv[i * self.kw + j], acc);
            }
        }
        acc
    }
}
