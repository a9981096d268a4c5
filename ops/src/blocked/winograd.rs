//! Winograd's F(2×2, 3×3) in the blocked layout, for 3×3 stride-1 convolutions with
//! padding 1: 16 multiplications per 2×2 output tile and input channel instead of 36.
//!
//! Per unit of work (whole rows of tiles, about [`TILES`] tiles), into scratch of the
//! thread's own:
//! 1. the input transform `V = Bᵀ·d·B` of each tile's 4×4 window, 16 channels per vector,
//!    stored as 16 blocked "images" `V[pos]: (C_in/16, T, 16)` (one per Winograd position);
//! 2. 16 pointwise products `M[pos] = U[pos]·V[pos]` on the blocked microkernel, `U` the
//!    transformed filters `G·g·Gᵀ` packed once like 1×1 weights ([`pack_filters`]);
//! 3. the output transform `Y = Aᵀ·M·A` of each tile with the epilogue (bias, residual,
//!    activation) in registers, straight into the output.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::kernel::{self, Geometry, Tile};
use super::{BLOCK, CHUNK_TAPS, MAX_J};
use crate::storage::SharedMut;
use crate::Activation;

/// Tiles per unit of work, about (whole tile rows are taken).
const TILES: usize = 128;
/// Winograd positions: a 4×4 transformed tile.
const POS: usize = 16;

/// `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The transformed filters `U = G·g·Gᵀ` of `w: (C_out, C_in, 3, 3)` as 16 pointwise weights
/// packed like [`super::BlockedConv`]'s `(C_out/16, C_in/16, 16 in, 16 out)`, one after the
/// other by position.
pub(super) fn pack_filters(w: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    let (cib, cob) = (c_in.div_ceil(BLOCK), c_out.div_ceil(BLOCK));
    let per_pos = cob * cib * BLOCK * BLOCK;
    let mut u = vec![0.0f32; POS * per_pos];
    for (o, row) in w.chunks_exact(c_in * 9).enumerate() {
        for (i, g) in row.chunks_exact(9).enumerate() {
            let at = ((o / BLOCK * cib + i / BLOCK) * BLOCK + i % BLOCK) * BLOCK + o % BLOCK;
            for (a, ga) in G.iter().enumerate() {
                for (b, gb) in G.iter().enumerate() {
                    // (G·g·Gᵀ)[a][b] = Σ_k Σ_l G[a][k]·g[k][l]·G[b][l]
                    let mut v = 0.0;
                    for k in 0..3 {
                        for l in 0..3 {
                            v += ga[k] * f64::from(g[k * 3 + l]) * gb[l];
                        }
                    }
                    u[(a * 4 + b) * per_pos + at] = v as f32;
                }
            }
        }
    }
    u
}

/// What one Winograd convolution needs besides the input.
pub(super) struct Plan<'a> {
    pub c_in: usize,
    pub c_out: usize,
    /// [`pack_filters`]'s output.
    pub u: &'a [f32],
    /// One per output channel, whole blocks.
    pub bias: &'a [f32],
    pub act: Activation,
}

impl Plan<'_> {
    /// The convolution of blocked `x: (N, C_in/16, H, W, 16)` into `out` (same size,
    /// `C_out/16` blocks), every output value written.
    ///
    /// # Safety
    /// AVX-512F; `out` holds `N·C_out/16·H·W·16` values, `residual` (if any) as many.
    pub(super) unsafe fn run(
        &self,
        x: &[f32],
        residual: Option<&[f32]>,
        (n, h, w): (usize, usize, usize),
        out: SharedMut<f32>,
    ) {
        let (cib, cob) = (self.c_in.div_ceil(BLOCK), self.c_out.div_ceil(BLOCK));
        let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
        let threads = rayon::current_num_threads().max(1);
        let rows = n * th;
        let rows_per_unit = TILES
            .div_ceil(tw)
            .clamp(1, rows.div_ceil(2 * threads).max(1));
        let units = rows.div_ceil(rows_per_unit);
        let zeros = vec![0.0f32; cob * BLOCK];
        (0..units).into_par_iter().for_each(|u| {
            let first_row = u * rows_per_unit;
            let t = (rows_per_unit.min(rows - first_row)) * tw;
            let mut v: Vec<MaybeUninit<f32>> = Vec::with_capacity(POS * cib * t * BLOCK);
            let mut m: Vec<MaybeUninit<f32>> = Vec::with_capacity(POS * cob * t * BLOCK);
            // SAFETY: MaybeUninit needs no initialisation; each value is written before it
            // is read (the transform fills V whole, the first chunk of each product M).
            unsafe {
                v.set_len(v.capacity());
                m.set_len(m.capacity());
            }
            let (vp, mp) = (v.as_mut_ptr().cast::<f32>(), m.as_mut_ptr().cast::<f32>());
            let tiles = Tiles {
                first_row,
                t,
                th,
                tw,
                h,
                w,
            };
            // SAFETY: AVX-512F (the caller's promise); V holds POS·cib·t·16 values.
            unsafe { input_transform(x, cib, &tiles, vp) };
            for pos in 0..POS {
                // SAFETY: V[pos] and M[pos] hold cib·t·16 and cob·t·16 values; U[pos] is a
                // packed pointwise weight of cob × cib blocks.
                unsafe {
                    self.product(
                        vp.add(pos * cib * t * BLOCK),
                        self.u[pos * cob * cib * BLOCK * BLOCK..].as_ptr(),
                        mp.add(pos * cob * t * BLOCK),
                        t,
                        &zeros,
                    )
                };
            }
            // SAFETY: M is written whole; the unit's output tiles belong to it alone.
            unsafe { self.output_transform(mp, cob, &tiles, residual, out) };
        });
    }

    /// `M = U·V` for one position: a pointwise convolution over the unit's `t` tiles.
    ///
    /// # Safety
    /// AVX-512F; pointers as in [`Self::run`].
    unsafe fn product(&self, v: *const f32, u: *const f32, m: *mut f32, t: usize, zeros: &[f32]) {
        let (cib, cob) = (self.c_in.div_ceil(BLOCK), self.c_out.div_ceil(BLOCK));
        let chunk = CHUNK_TAPS.clamp(1, cib);
        for c0 in (0..cib).step_by(chunk) {
            let blocks = chunk.min(cib - c0);
            let g = Geometry {
                h: 1,
                w: t,
                x_block: t * BLOCK,
                blocks,
                kh: 1,
                kw: 1,
                stride: 1,
                dilation: 1,
                pad_h: 0,
                pad_w: 0,
                w_block: cib * BLOCK * BLOCK,
                out_block: t * BLOCK,
                act: Activation::Identity,
            };
            for j0 in (0..cob).step_by(MAX_J) {
                let jn = MAX_J.min(cob - j0);
                let tiles = t.div_ceil(kernel::max_positions(jn));
                let (base, extra) = (t / tiles, t % tiles);
                for i in 0..tiles {
                    let ox = i * base + i.min(extra);
                    let tile = Tile {
                        x: v.wrapping_add(c0 * t * BLOCK),
                        weight: u.wrapping_add((j0 * cib + c0) * BLOCK * BLOCK),
                        out: m.wrapping_add(j0 * t * BLOCK + ox * BLOCK),
                        residual: std::ptr::null(),
                        bias: zeros.as_ptr(),
                        oy: 0,
                        ox,
                        first: c0 == 0,
                        last: c0 + blocks == cib,
                    };
                    let k = kernel::select(base + usize::from(i < extra), jn, false);
                    // SAFETY: the tile lies inside V, U and M (the caller's promise).
                    unsafe { k(&g, &tile) };
                }
            }
        }
    }

    /// `Y = Aᵀ·M·A` per tile and output block, `act(Y + bias + residual)` stored where it
    /// falls inside the output.
    ///
    /// # Safety
    /// AVX-512F; as for [`Self::run`].
    #[target_feature(enable = "avx512f")]
    unsafe fn output_transform(
        &self,
        m: *const f32,
        cob: usize,
        tiles: &Tiles,
        residual: Option<&[f32]>,
        out: SharedMut<f32>,
    ) {
        let (h, w, t) = (tiles.h, tiles.w, tiles.t);
        let zero = _mm512_setzero_ps();
        // Block by block, tile by tile: each of the 16 planes of M is read in order.
        for b in 0..cob {
            for k in 0..t {
                let (img, ty, tx) = tiles.at(k);
                let mut mv = [zero; POS];
                for (pos, mv) in mv.iter_mut().enumerate() {
                    // SAFETY: M[pos][b][k] lies inside M.
                    *mv = unsafe { _mm512_loadu_ps(m.add(((pos * cob + b) * t + k) * BLOCK)) };
                }
                // Rows: t0 = m0 + m1 + m2, t1 = m1 − m2 − m3 (for each of the 4 columns).
                let mut r = [[zero; 4]; 2];
                for c in 0..4 {
                    let (m0, m1, m2, m3) = (mv[c], mv[4 + c], mv[8 + c], mv[12 + c]);
                    r[0][c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
                    r[1][c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
                }
                // SAFETY: the group's bias has 16 values per block.
                let bias = unsafe { _mm512_loadu_ps(self.bias.as_ptr().add(b * BLOCK)) };
                for (dy, r) in r.iter().enumerate() {
                    let oy = 2 * ty + dy;
                    if oy >= h {
                        continue;
                    }
                    let y = [
                        _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]),
                        _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]),
                    ];
                    for (dx, &y) in y.iter().enumerate() {
                        let ox = 2 * tx + dx;
                        if ox >= w {
                            continue;
                        }
                        let at = (((img * cob + b) * h + oy) * w + ox) * BLOCK;
                        let mut v = _mm512_add_ps(y, bias);
                        if let Some(res) = residual {
                            // SAFETY: the residual has the output's layout.
                            v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(res.as_ptr().add(at)) });
                        }
                        v = kernel::activate(self.act, v);
                        // SAFETY: output (img, b, oy, ox) belongs to this unit's tiles.
                        unsafe { _mm512_storeu_ps(out.at(at), v) };
                    }
                }
            }
        }
    }
}

/// A unit's tiles: `t` consecutive tiles from tile row `first_row` (rows of `tw` tiles,
/// `th` rows per image) over `h × w` maps.
struct Tiles {
    first_row: usize,
    t: usize,
    th: usize,
    tw: usize,
    h: usize,
    w: usize,
}

impl Tiles {
    /// Image, tile row and tile column of the unit's tile `k`.
    fn at(&self, k: usize) -> (usize, usize, usize) {
        let row = self.first_row + k / self.tw;
        (row / self.th, row % self.th, k % self.tw)
    }
}

/// `V = Bᵀ·d·B` for each of the unit's tiles and input blocks, `d` the tile's 4×4 input
/// window (zero outside the map), stored at `V[pos][cb][k]`.
///
/// # Safety
/// AVX-512F; `v` holds `16·cib·t·16` values.
#[target_feature(enable = "avx512f")]
unsafe fn input_transform(x: &[f32], cib: usize, tiles: &Tiles, v: *mut f32) {
    let (h, w, t) = (tiles.h, tiles.w, tiles.t);
    let zero = _mm512_setzero_ps();
    // Block by block, tile by tile: each of the 16 planes of V is written in order.
    for cb in 0..cib {
        for k in 0..t {
            let (img, ty, tx) = tiles.at(k);
            let (y0, x0) = (2 * ty as isize - 1, 2 * tx as isize - 1);
            let plane = &x[(img * cib + cb) * h * w * BLOCK..][..h * w * BLOCK];
            let mut d = [[zero; 4]; 4];
            for (i, d) in d.iter_mut().enumerate() {
                let y = y0 + i as isize;
                if y < 0 || y >= h as isize {
                    continue;
                }
                for (j, d) in d.iter_mut().enumerate() {
                    let xx = x0 + j as isize;
                    if xx >= 0 && xx < w as isize {
                        let at = (y as usize * w + xx as usize) * BLOCK;
                        // SAFETY: (y, xx) lies inside the plane.
                        *d = unsafe { _mm512_loadu_ps(plane.as_ptr().add(at)) };
                    }
                }
            }
            // Bᵀ·d: r0 = d0 − d2, r1 = d1 + d2, r2 = d2 − d1, r3 = d1 − d3 (rows).
            let mut r = [[zero; 4]; 4];
            for c in 0..4 {
                r[0][c] = _mm512_sub_ps(d[0][c], d[2][c]);
                r[1][c] = _mm512_add_ps(d[1][c], d[2][c]);
                r[2][c] = _mm512_sub_ps(d[2][c], d[1][c]);
                r[3][c] = _mm512_sub_ps(d[1][c], d[3][c]);
            }
            // (Bᵀ·d)·B: the same on the columns.
            for (i, r) in r.iter().enumerate() {
                let row = [
                    _mm512_sub_ps(r[0], r[2]),
                    _mm512_add_ps(r[1], r[2]),
                    _mm512_sub_ps(r[2], r[1]),
                    _mm512_sub_ps(r[1], r[3]),
                ];
                for (j, &val) in row.iter().enumerate() {
                    let at = (((i * 4 + j) * cib + cb) * t + k) * BLOCK;
                    // SAFETY: V[pos][cb][k] lies inside V.
                    unsafe { _mm512_storeu_ps(v.add(at), val) };
                }
            }
        }
    }
}
