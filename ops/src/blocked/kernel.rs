//! The AVX-512 direct-convolution microkernel of the blocked layout: `R` output positions
//! of one row × `J` blocks of 16 output channels, kept in `R·J` registers over a chunk of
//! input-channel blocks and every kernel tap, then stored once (through the epilogue on the
//! last chunk).
//!
//! Each step broadcasts one input channel of `R` positions and multiplies it by the 16
//! output channels of `J` weight vectors: `R + J` loads for `R·J` FMAs, the input and the
//! weights both read in place (no packing per call: the weights were packed once by
//! [`super::BlockedConv::new`], the activations are already blocked).

use std::arch::x86_64::*;

use super::BLOCK;
use crate::Activation;

/// Floats in one `16 × 16` (input lane × output lane) weight tile of a tap.
const TAP: usize = BLOCK * BLOCK;

/// What is the same for every tile of a convolution.
pub(super) struct Geometry {
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Floats between two channel blocks of the input (`H·W·16`).
    pub x_block: usize,
    /// Input-channel blocks in one chunk.
    pub blocks: usize,
    /// Kernel height and width.
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub dilation: usize,
    /// Padding of height and width.
    pub pad_h: usize,
    pub pad_w: usize,
    /// Floats between two output-channel blocks of the packed weight.
    pub w_block: usize,
    /// Floats between two channel blocks of the output (`OH·OW·16`).
    pub out_block: usize,
    pub act: Activation,
}

/// One tile: where it reads and writes, and whether its chunk is the first or the last.
pub(super) struct Tile {
    /// The input of the tile's image at the chunk's first channel block, position (0, 0).
    pub x: *const f32,
    /// The packed weight of the tile's first output block at the chunk's first input block.
    pub weight: *const f32,
    /// The output at the tile's first output block and position.
    pub out: *mut f32,
    /// The residual at the same place as `out`, or null.
    pub residual: *const f32,
    /// The bias of the tile's first output block (16·J values).
    pub bias: *const f32,
    /// Output row and first output column.
    pub oy: usize,
    pub ox: usize,
    /// The chunk starts the sum (else the tile's partial sums are read from `out`).
    pub first: bool,
    /// The chunk ends the sum: apply the epilogue.
    pub last: bool,
}

/// A kernel for one `(R, J, CHECKED)`.
pub(super) type Kernel = unsafe fn(&Geometry, &Tile);

/// The most output positions a tile of `j` output blocks covers: `R·J ≤ 24` accumulators
/// (of 32 vector registers), at most 12 positions.
pub(super) fn max_positions(j: usize) -> usize {
    (24 / j.clamp(1, 4)).min(12)
}

/// The kernel for `r ≤ max_positions(j)` positions and `j ≤ 4` output blocks, with bounds
/// checks on the input columns (`checked`: the tile touches the left or right padding) or
/// without.
pub(super) fn select(r: usize, j: usize, checked: bool) -> Kernel {
    if checked {
        select_j::<true>(r, j)
    } else {
        select_j::<false>(r, j)
    }
}

/// `tile::<R, J, C>` for the run-time `r` among the listed widths.
macro_rules! by_width {
    ($r:expr, $j:literal, $c:ident; $($w:literal)+) => {
        match $r {
            $($w => tile::<$w, $j, $c> as Kernel,)+
            r => unreachable!("no tile of {r} positions for {} output blocks", $j),
        }
    };
}

fn select_j<const C: bool>(r: usize, j: usize) -> Kernel {
    match j {
        1 => by_width!(r, 1, C; 1 2 3 4 5 6 7 8 9 10 11 12),
        2 => by_width!(r, 2, C; 1 2 3 4 5 6 7 8 9 10 11 12),
        3 => by_width!(r, 3, C; 1 2 3 4 5 6 7 8),
        _ => by_width!(r, 4, C; 1 2 3 4 5 6),
    }
}

/// `act(v)` on 16 lanes: the activation of every blocked epilogue.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn activate(act: Activation, v: __m512) -> __m512 {
    let zero = _mm512_setzero_ps();
    match act {
        Activation::Identity => v,
        Activation::Relu => _mm512_max_ps(v, zero),
        Activation::Relu6 => _mm512_min_ps(_mm512_max_ps(v, zero), _mm512_set1_ps(6.0)),
    }
}

/// The tile positions `r` whose input column `x0 + r·stride` lies in `[0, w)`.
#[inline]
fn valid_positions<const R: usize>(x0: isize, stride: usize, w: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if x0 < 0 { (-x0 + s - 1) / s } else { 0 };
    let hi = if x0 >= w as isize {
        0
    } else {
        (w as isize - x0 + s - 1) / s
    };
    (lo.min(R as isize) as usize, hi.min(R as isize) as usize)
}

/// `act(Σ x·w + bias + residual)` for one tile (see the module's doc).
///
/// # Safety
/// AVX-512F. The tile's pointers must address the tensors that [`super::BlockedConv`] lays
/// out for `g`: every tap of every in-bounds position readable, `R` positions of `J` output
/// blocks writable by this thread alone.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const J: usize, const CHECKED: bool>(g: &Geometry, t: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); J]; R];
    if !t.first {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (j, acc) in acc.iter_mut().enumerate() {
                // SAFETY: the tile's own output, written by its previous chunk.
                *acc = unsafe { _mm512_loadu_ps(t.out.add(j * g.out_block + r * BLOCK)) };
            }
        }
    }
    let step = g.stride * BLOCK;
    let mut wk = t.weight;
    for cb in 0..g.blocks {
        // SAFETY: block `cb` of the chunk lies inside the input.
        let plane = unsafe { t.x.add(cb * g.x_block) };
        for i in 0..g.kh {
            let iy = (t.oy * g.stride + i * g.dilation) as isize - g.pad_h as isize;
            if iy < 0 || iy >= g.h as isize {
                // SAFETY: skipping this row's taps stays inside the packed weight.
                wk = unsafe { wk.add(g.kw * TAP) };
                continue;
            }
            let row = plane.wrapping_add(iy as usize * g.w * BLOCK);
            for j in 0..g.kw {
                let x0 = (t.ox * g.stride + j * g.dilation) as isize - g.pad_w as isize;
                let (lo, hi) = if CHECKED {
                    valid_positions::<R>(x0, g.stride, g.w)
                } else {
                    (0, R)
                };
                let xp = row.wrapping_offset(x0 * BLOCK as isize);
                // One tap over the 16 input lanes; `$partial`: skip the positions whose
                // column falls in the padding (only at a checked tile's edge taps, so the
                // other taps keep the branch-free loop).
                macro_rules! tap {
                    ($partial:literal) => {
                        for lane in 0..BLOCK {
                            let mut wv = [_mm512_setzero_ps(); J];
                            for (jj, wv) in wv.iter_mut().enumerate() {
                                // SAFETY: output block `jj` of the group, this tap and lane.
                                *wv = unsafe {
                                    _mm512_loadu_ps(wk.add(jj * g.w_block + lane * BLOCK))
                                };
                            }
                            for (r, acc) in acc.iter_mut().enumerate() {
                                if $partial && (r < lo || r >= hi) {
                                    continue;
                                }
                                // SAFETY: position `r` reads an in-bounds column (checked
                                // above, or the whole tile is inside the input).
                                let xv =
                                    _mm512_set1_ps(unsafe { *xp.wrapping_add(r * step + lane) });
                                for (acc, &wv) in acc.iter_mut().zip(&wv) {
                                    *acc = _mm512_fmadd_ps(xv, wv, *acc);
                                }
                            }
                        }
                    };
                }
                if lo > 0 || hi < R {
                    tap!(true);
                } else {
                    tap!(false);
                }
                // SAFETY: the next tap of the packed weight.
                wk = unsafe { wk.add(TAP) };
            }
        }
    }
    // The store: raw partial sums, or on the last chunk `act(acc + bias + residual)`.
    for (j, bias) in (0..J).map(|j| {
        // SAFETY: the group's bias has 16·J values.
        (j, unsafe { _mm512_loadu_ps(t.bias.add(j * BLOCK)) })
    }) {
        for (r, acc) in acc.iter().enumerate() {
            let at = j * g.out_block + r * BLOCK;
            let mut v = acc[j];
            if t.last {
                v = _mm512_add_ps(v, bias);
                if !t.residual.is_null() {
                    // SAFETY: the residual has the output's layout.
                    v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(t.residual.add(at)) });
                }
                v = activate(g.act, v);
            }
            // SAFETY: the tile's output positions belong to this thread.
            unsafe { _mm512_storeu_ps(t.out.add(at), v) };
        }
    }
}
