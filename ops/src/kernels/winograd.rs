//! Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", CVPR 2016) for the 3×3 stride-1 convolutions of ResNet's bottlenecks:
//! 16 multiplications per 2×2 output tile and input channel instead of 36.
//!
//! For a 4×4 input patch `d` and a 3×3 filter `g`, the 2×2 output tile is
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, the element-wise product becomes
//! one GEMM per position `p = (ξ, ν)` of the 4×4 transformed tile:
//!
//! `M[p] (C_out × T) = U[p] (C_out × C_in) · V[p] (C_in × T)`,
//!
//! with `U = G g Gᵀ` the transformed filters and `V = Bᵀ d B` the transformed tiles (`T` of
//! them). The tiles are processed in blocks of whole tile rows, sized so that a block's `V`
//! and `M` stay in the L2 cache; each thread takes a contiguous range of blocks and runs
//! single-threaded GEMMs. The output transform applies the epilogue as it writes each row.
//!
//! Each transform step is one vector loop over all the tile slots of a block (see
//! [`Tiling`]), compiled for AVX-512 at run time where the CPU has it. The input gradient of
//! such a convolution is again one (the output gradient correlated with the flipped,
//! transposed filters, padding `2 − pad`): the backward takes the same path through
//! [`grad_input`]. The weight gradient ([`grad_weight`]) runs the same transforms backwards:
//! 16 GEMMs over the tiles, then the filters' transform applied transposed.

use std::mem::MaybeUninit;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::epilogue::Epilogue;
use crate::gemm::{flip_transpose, gemm_strided, GemmElem};
use crate::geometry::ConvGeometry;
use crate::storage::SharedMut;
use crate::vmath::with_avx512;

/// Positions of a transformed tile (4×4).
const POSITIONS: usize = 16;

/// Values of `V` (or `M`) per position that a block aims at: 16 positions of 16 Ki f32
/// values each are 1 MiB, half of a Sapphire Rapids core's L2.
const BLOCK_VALUES: usize = 16 * 1024;

/// …but never fewer tile slots than this per block: the 16 GEMMs `U[p] · V[p]` pack all of
/// `U[p]` (`C_out × C_in`) for each block, so with wide channels and the one tile row the
/// cache rule leaves (2048 → 512 at 32×32: 17 slots) packing outweighs the products.
/// Measured (docs/performance.md, session 17, batch 2 at 32×32): 2048 → 512 230 → 140 ms,
/// 512 → 512 65–75 → 35–40 ms; ResNet-50's stages at batch 16 within the noise.
const MIN_BLOCK_SLOTS: usize = 128;

/// Whether [`forward`] can compute this convolution: one group, a 3×3 window, stride 1, no
/// dilation and at most 2 pixels of padding (so the input gradient is one too).
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    let w = &g.win;
    g.groups == 1
        && (w.kh, w.kw, w.stride, w.dilation) == (3, 3, 1, 1)
        && w.pad_h <= 2
        && w.pad_w <= 2
}

/// `U = G g Gᵀ` for every (output, input) channel pair of `w: (C_out, C_in, 3, 3)`, as 16
/// matrices `(C_out, C_in)`, with `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`.
///
/// The pairs go in chunks, their 9 taps transposed to 9 rows first, so that each step of
/// both products with `G` is a vector operation over the chunk's pairs.
fn transform_filters<T: GemmElem>(w: &[T], pairs: usize) -> Vec<T> {
    const CHUNK: usize = 256;
    let half = T::from_f64(0.5);
    let mut u = vec![T::zero(); POSITIONS * pairs];
    let mut taps = [T::zero(); 9 * CHUNK];
    let mut columns = [T::zero(); 12 * CHUNK];
    for start in (0..pairs).step_by(CHUNK) {
        let len = CHUNK.min(pairs - start);
        for (i, f) in w[start * 9..][..len * 9].chunks_exact(9).enumerate() {
            for (t, &v) in f.iter().enumerate() {
                taps[t * CHUNK + i] = v;
            }
        }
        // G g: row i of the product, column b, at `columns[(i·3 + b)·CHUNK ..]`.
        for b in 0..3 {
            let tap = |t: usize| &taps[t * CHUNK..][..len];
            let (f0, f1, f2) = (tap(b), tap(3 + b), tap(6 + b));
            for i in 0..4 {
                g_row(
                    i,
                    [f0, f1, f2],
                    half,
                    &mut columns[(i * 3 + b) * CHUNK..][..len],
                );
            }
        }
        // (G g) Gᵀ: position (i, j).
        for i in 0..4 {
            let column = |b: usize| &columns[(i * 3 + b) * CHUNK..][..len];
            let (c0, c1, c2) = (column(0), column(1), column(2));
            for j in 0..4 {
                g_row(
                    j,
                    [c0, c1, c2],
                    half,
                    &mut u[(i * 4 + j) * pairs + start..][..len],
                );
            }
        }
    }
    u
}

/// Row `i` of `G` applied to three vectors: `out = (G [a, b, c])[i]`, element-wise.
#[inline(always)]
fn g_row<T: GemmElem>(i: usize, [a, b, c]: [&[T]; 3], half: T, out: &mut [T]) {
    match i {
        0 => out.copy_from_slice(a),
        1 => {
            for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
                *o = (a + b + c) * half;
            }
        }
        2 => {
            for (o, ((&a, &b), &c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
                *o = (a - b + c) * half;
            }
        }
        _ => out.copy_from_slice(c),
    }
}

/// Tiling of the output: `th × tw` tiles of 2×2 per image, processed in blocks of
/// `rows_per_block` tile rows (counted over the whole batch, image after image).
///
/// Within a block every tile row has `tw + 1` slots: the padded input rows are `2·(tw + 1)`
/// values long, so tile slot `f` of the block starts at value `2f` of its stacked rows and
/// each transform step is one long vector loop over all the block's slots. The spare slot
/// of each row is computed and never written out.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    th: usize,
    tw: usize,
    rows_per_block: usize,
}

impl Tiling {
    fn new(g: &ConvGeometry) -> Self {
        let (th, tw) = (g.win.oh.div_ceil(2), g.win.ow.div_ceil(2));
        let rows = g.n * th;
        let by_cache = BLOCK_VALUES / (g.c_in.max(g.c_out) * (tw + 1)).max(1);
        let by_gemm = MIN_BLOCK_SLOTS.div_ceil(tw + 1);
        // At least two blocks per thread where the batch allows, so both cores stay busy.
        let by_threads = rows.div_ceil(2 * rayon::current_num_threads().max(1));
        Self {
            th,
            tw,
            rows_per_block: by_cache.max(by_gemm).min(by_threads).max(1),
        }
    }

    fn rows(&self, n: usize) -> usize {
        n * self.th
    }

    /// Values in one padded row, `2·(tw + 1)`.
    fn row_len(&self) -> usize {
        2 * (self.tw + 1)
    }
}

/// One task's buffers, reused from block to block.
struct Scratch<T> {
    /// `V`: 16 matrices `(C_in, slots)`.
    v: Vec<T>,
    /// `M`: 16 matrices `(C_out, slots)`.
    m: Vec<T>,
    /// The 4 stacks of padded input rows (row `2·ty + q − pad` of each tile row).
    stacked: Vec<T>,
    /// One row `i` of `Bᵀ d` over the stacks (the vertical step), reused for each `i`.
    transformed: Vec<T>,
    /// Even and odd values of one transformed stack.
    even: Vec<T>,
    odd: Vec<T>,
    /// The output transform's intermediate rows: 8 after `Aᵀ ·`, 4 after `· A`, 2 output
    /// rows per tile row.
    columns: Vec<T>,
    tiles: Vec<T>,
    out: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Self {
            v: Vec::new(),
            m: Vec::new(),
            stacked: Vec::new(),
            transformed: Vec::new(),
            even: Vec::new(),
            odd: Vec::new(),
            columns: Vec::new(),
            tiles: Vec::new(),
            out: Vec::new(),
        }
    }
}

/// The convolution `(N, C_out, OH, OW)` of `x: (N, C_in, H, W)` by `w: (C_out, C_in, 3, 3)`,
/// with the optional epilogue. Call only when [`applies`].
pub(crate) fn forward<T: GemmElem>(
    x: &[T],
    w: &[T],
    g: &ConvGeometry,
    epilogue: Option<&Epilogue<'_, T>>,
) -> Vec<T> {
    assert!(applies(g), "Winograd F(2x2, 3x3) does not apply to {g:?}");
    let tiling = Tiling::new(g);
    let u = transform_filters(w, g.c_out * g.c_in);
    let win = &g.win;
    let total = g.n * g.c_out * win.oh * win.ow;
    let mut out: Vec<T> = Vec::with_capacity(total);
    let dst = SharedMut(out.as_mut_ptr());
    let rows = tiling.rows(g.n);
    let blocks = rows.div_ceil(tiling.rows_per_block);
    let threads = rayon::current_num_threads().max(1).min(blocks);
    (0..threads).into_par_iter().for_each(|thread| {
        let mut s = Scratch::default();
        for block in (thread * blocks / threads)..((thread + 1) * blocks / threads) {
            let first = block * tiling.rows_per_block;
            let rows = first..(first + tiling.rows_per_block).min(rows);
            let job = Block {
                x,
                u: &u,
                g,
                tiling: &tiling,
                rows,
                epilogue,
            };
            // SAFETY: the blocks' tile rows are disjoint, so are the output rows they write.
            unsafe { job.run(dst, &mut s) };
        }
    });
    // SAFETY: the tiles cover every output position, and every block wrote its tiles.
    unsafe { out.set_len(total) };
    out
}

/// One block of tile rows and what it reads.
struct Block<'a, T> {
    x: &'a [T],
    u: &'a [T],
    g: &'a ConvGeometry,
    tiling: &'a Tiling,
    rows: std::ops::Range<usize>,
    epilogue: Option<&'a Epilogue<'a, T>>,
}

impl<T: GemmElem> Block<'_, T> {
    /// Input transform, the 16 GEMMs and the output transform of the block, with the
    /// transforms' vector loops compiled for AVX-512 where the CPU has it (the crate is
    /// built for baseline x86-64, whose vectors are 4 floats wide).
    ///
    /// # Safety
    /// `dst` must address the whole output, and no other thread may write this block's
    /// output rows.
    unsafe fn run(&self, dst: SharedMut<T>, s: &mut Scratch<T>) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is available; the rest is the caller's promise.
            return unsafe { self.run_avx512(dst, s) };
        }
        // SAFETY: the caller's promise.
        unsafe { self.run_portable(dst, s) }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, dst: SharedMut<T>, s: &mut Scratch<T>) {
        // SAFETY: the caller's promise.
        unsafe { self.run_portable(dst, s) }
    }

    #[inline(always)]
    unsafe fn run_portable(&self, dst: SharedMut<T>, s: &mut Scratch<T>) {
        let g = self.g;
        let slots = self.rows.len() * (self.tiling.tw + 1);
        transform_input(self.x, g, self.tiling, self.rows.clone(), s);
        s.m.resize(POSITIONS * g.c_out * slots, T::zero());
        for p in 0..POSITIONS {
            // SAFETY: U[p] is `(C_out, C_in)` inside `u`, V[p] `(C_in, slots)` inside
            // `s.v`, M[p] `(C_out, slots)` inside `s.m`, as sized above.
            unsafe {
                gemm_strided(
                    (g.c_out, slots, g.c_in),
                    s.m[p * g.c_out * slots..].as_mut_ptr(),
                    slots,
                    false,
                    (self.u[p * g.c_out * g.c_in..].as_ptr(), g.c_in, 1),
                    (s.v[p * g.c_in * slots..].as_ptr(), slots, 1),
                    Parallelism::None,
                )
            }
        }
        // SAFETY: the caller's promise.
        unsafe { transform_output(dst, g, self.tiling, self.rows.clone(), self.epilogue, s) };
    }
}

/// `out[f] = op(a[f], b[f])` over equal lengths: one vectorised step of a transform.
#[inline(always)]
fn zip2<T: Copy>(out: &mut [T], a: &[T], b: &[T], op: impl Fn(T, T) -> T) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = op(a, b);
    }
}

/// `out[f] = op(a[f], b[f], c[f])` over equal lengths.
#[inline(always)]
fn zip3<T: Copy>(out: &mut [T], a: &[T], b: &[T], c: &[T], op: impl Fn(T, T, T) -> T) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = op(a, b, c);
    }
}

/// The same step of `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]`
/// applied to four vectors `d`, row `i`: `out = (Bᵀ d)[i]`.
#[inline(always)]
fn b_row<T: GemmElem>(i: usize, d: [&[T]; 4], out: &mut [T]) {
    match i {
        0 => zip2(out, d[0], d[2], |a, b| a - b),
        1 => zip2(out, d[1], d[2], |a, b| a + b),
        2 => zip2(out, d[2], d[1], |a, b| a - b),
        _ => zip2(out, d[1], d[3], |a, b| a - b),
    }
}

/// `V = Bᵀ d B` for the tiles of tile rows `rows`, into `s.v`: the block's 4 stacks of
/// padded input rows are combined down the rows (`Bᵀ ·`), then split into even and odd
/// values and combined along the rows (`· B`), each step a vector loop over the block.
#[inline(always)]
fn transform_input<T: GemmElem>(
    x: &[T],
    g: &ConvGeometry,
    tiling: &Tiling,
    rows: std::ops::Range<usize>,
    s: &mut Scratch<T>,
) {
    let win = &g.win;
    let row_len = tiling.row_len();
    let slots = rows.len() * (tiling.tw + 1);
    // Two values past the last row: the spare slot of the last tile row reads them.
    let stack = rows.len() * row_len + 2;
    s.v.resize(POSITIONS * g.c_in * slots, T::zero());
    s.stacked.resize(4 * stack, T::zero());
    s.transformed.resize(stack, T::zero());
    s.even.resize(slots + 1, T::zero());
    s.odd.resize(slots + 1, T::zero());
    let width = win.w.min(row_len - win.pad_w);
    for c in 0..g.c_in {
        for q in 0..4 {
            let stacked = &mut s.stacked[q * stack..][..stack];
            for (r, row) in rows.clone().enumerate() {
                let (img, ty) = (row / tiling.th, row % tiling.th);
                let padded = &mut stacked[r * row_len..][..row_len];
                match (2 * ty + q).checked_sub(win.pad_h).filter(|&y| y < win.h) {
                    Some(y) => {
                        let plane = (img * g.c_in + c) * win.h * win.w;
                        padded[..win.pad_w].fill(T::zero());
                        padded[win.pad_w..][..width]
                            .copy_from_slice(&x[plane + y * win.w..][..width]);
                        padded[win.pad_w + width..].fill(T::zero());
                    }
                    None => padded.fill(T::zero()),
                }
            }
            stacked[rows.len() * row_len..].fill(T::zero());
        }
        let stacked = &s.stacked;
        let d: [&[T]; 4] = std::array::from_fn(|q| &stacked[q * stack..][..stack]);
        for i in 0..4 {
            let t = &mut s.transformed[..];
            b_row(i, d, t);
            let pairs = t
                .chunks_exact(2)
                .zip(s.even.iter_mut().zip(s.odd.iter_mut()));
            for (pair, (even, odd)) in pairs {
                *even = pair[0];
                *odd = pair[1];
            }
            // Slot f reads values 2f .. 2f + 3: even[f], odd[f], even[f + 1], odd[f + 1].
            let (e0, o0) = (&s.even[..slots], &s.odd[..slots]);
            let (e1, o1) = (&s.even[1..], &s.odd[1..]);
            for j in 0..4 {
                let v = &mut s.v[((i * 4 + j) * g.c_in + c) * slots..][..slots];
                b_row(j, [e0, o0, e1, o1], v);
            }
        }
    }
}

/// `Y = Aᵀ M A` for the tiles of tile rows `rows` (from `s.m`), with
/// `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]`, written with the epilogue into the output.
///
/// # Safety
/// `dst` must address the whole output `(N, C_out, OH, OW)`, and no other thread may touch
/// the output rows of these tile rows.
#[inline(always)]
unsafe fn transform_output<T: GemmElem>(
    dst: SharedMut<T>,
    g: &ConvGeometry,
    tiling: &Tiling,
    rows: std::ops::Range<usize>,
    epilogue: Option<&Epilogue<'_, T>>,
    s: &mut Scratch<T>,
) {
    let win = &g.win;
    let row_len = tiling.row_len();
    let slots = rows.len() * (tiling.tw + 1);
    s.columns.resize(8 * slots, T::zero());
    s.tiles.resize(4 * slots, T::zero());
    s.out.resize(2 * (2 * slots), T::zero());
    for k in 0..g.c_out {
        let m: [&[T]; POSITIONS] =
            std::array::from_fn(|p| &s.m[(p * g.c_out + k) * slots..][..slots]);
        // Aᵀ M: upper (a = 0) and lower (a = 1) row of each column j.
        for j in 0..4 {
            let (upper, lower) = s.columns[j * 2 * slots..][..2 * slots].split_at_mut(slots);
            zip3(upper, m[j], m[4 + j], m[8 + j], |a, b, c| a + b + c);
            zip3(lower, m[4 + j], m[8 + j], m[12 + j], |a, b, c| a - b - c);
        }
        // (Aᵀ M) A: output (a, b) of each tile.
        for a in 0..2 {
            let column = |j: usize| &s.columns[(j * 2 + a) * slots..][..slots];
            let (left, right) = s.tiles[a * 2 * slots..][..2 * slots].split_at_mut(slots);
            zip3(left, column(0), column(1), column(2), |x, y, z| x + y + z);
            zip3(right, column(1), column(2), column(3), |x, y, z| x - y - z);
            let out = &mut s.out[a * 2 * slots..][..2 * slots];
            for ((pair, &l), &r) in out.chunks_exact_mut(2).zip(&*left).zip(&*right) {
                pair[0] = l;
                pair[1] = r;
            }
        }
        for (r, row) in rows.clone().enumerate() {
            let (img, ty) = (row / tiling.th, row % tiling.th);
            for a in 0..2 {
                let oy = 2 * ty + a;
                if oy >= win.oh {
                    break;
                }
                let values = &s.out[a * 2 * slots + r * row_len..][..win.ow];
                let at = ((img * g.c_out + k) * win.oh + oy) * win.ow;
                // SAFETY: row `oy` of channel `k` of image `img` lies inside the output and
                // belongs to this block (the caller's promise).
                let y = unsafe {
                    std::slice::from_raw_parts_mut(dst.0.add(at).cast::<MaybeUninit<T>>(), win.ow)
                };
                match epilogue {
                    Some(e) => e.run_from(values, y, k, at),
                    None => {
                        for (d, &v) in y.iter_mut().zip(values) {
                            d.write(v);
                        }
                    }
                }
            }
        }
    }
}

/// The input gradient `(N, C_in, H, W)` of a convolution [`forward`] computes, from the
/// output gradient `dy: (N, C_out, OH, OW)`: `dy` correlated with the filters flipped and
/// transposed to `(C_in, C_out, 3, 3)`, padded by `2 − pad`. Call only when [`applies`].
pub(crate) fn grad_input<T: GemmElem>(dy: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    assert!(applies(g), "Winograd F(2x2, 3x3) does not apply to {g:?}");
    let transposed = g
        .transposed()
        .expect("a stride-1 3x3 convolution has a transpose");
    forward(dy, &flip_transpose(w, g), &transposed, None)
}

/// Values of `V` and `dM` together that one step of [`grad_weight`] transforms before its
/// GEMMs (16 Mi f32, 64 MiB): the step's tiles are the GEMMs' inner dimension, so a step
/// holds as many as fit; the whole batch at the sizes of the results.
const GRAD_WEIGHT_VALUES: usize = 16 << 20;

/// The weight gradient `(C_out, C_in, 3, 3)` of a convolution [`forward`] computes, from
/// the output gradient `dy: (N, C_out, OH, OW)` and the input `x`. Call only when
/// [`applies`].
///
/// With `M = U ⊙ V` and `Y = Aᵀ M A` per tile, `dM = A dY Aᵀ` and, summed over the tiles,
/// `dU[p] = Σ_t dM[p] V[p]ᵀ`: 16 GEMMs `(C_out × T) · (T × C_in)` whose inner dimension is
/// the tiles, 16 multiplications per tile and channel pair instead of the 36 of im2col's
/// `dY · colsᵀ`. Then `dW = Gᵀ dU G` for each pair. The tiles go in steps of
/// [`GRAD_WEIGHT_VALUES`]: in each, the threads transform a share of the tile rows each,
/// then take 8 of the 16 positions each and accumulate their GEMMs over every share.
pub(crate) fn grad_weight<T: GemmElem>(dy: &[T], x: &[T], g: &ConvGeometry) -> Vec<T> {
    grad_weight_in_steps(dy, x, g, GRAD_WEIGHT_VALUES)
}

/// [`grad_weight`] with steps of at most `step_values` values of `V` and `dM` (at least one
/// tile row).
fn grad_weight_in_steps<T: GemmElem>(
    dy: &[T],
    x: &[T],
    g: &ConvGeometry,
    step_values: usize,
) -> Vec<T> {
    assert!(applies(g), "Winograd F(2x2, 3x3) does not apply to {g:?}");
    let tiling = Tiling::new(g);
    let slots_per_row = tiling.tw + 1;
    let rows = tiling.rows(g.n);
    let per_row = POSITIONS * (g.c_in + g.c_out) * slots_per_row;
    let rows_per_step = (step_values / per_row).max(1);
    let threads = rayon::current_num_threads().max(1);
    let mut shares: Vec<(std::ops::Range<usize>, Scratch<T>)> =
        (0..threads).map(|_| (0..0, Scratch::default())).collect();
    let pairs = g.c_out * g.c_in;
    let mut du = vec![T::zero(); POSITIONS * pairs];
    for start in (0..rows).step_by(rows_per_step) {
        let step = start..(start + rows_per_step).min(rows);
        let parts = threads.min(step.len());
        shares[..parts]
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, (share, s))| {
                *share =
                    step.start + i * step.len() / parts..step.start + (i + 1) * step.len() / parts;
                with_avx512(|| {
                    transform_input(x, g, &tiling, share.clone(), s);
                    transform_grad_output(dy, g, &tiling, share.clone(), s);
                });
            });
        let shares = &shares[..parts];
        du.par_chunks_mut(pairs).enumerate().for_each(|(p, du)| {
            for (share, s) in shares {
                let slots = share.len() * slots_per_row;
                // SAFETY: `dU[p]` is `(C_out, C_in)` in `du`; `dM[p]` is `(C_out, slots)`
                // inside `s.m` and `V[p]` `(C_in, slots)` inside `s.v`, read transposed.
                unsafe {
                    gemm_strided(
                        (g.c_out, g.c_in, slots),
                        du.as_mut_ptr(),
                        g.c_in,
                        true,
                        (s.m[p * g.c_out * slots..].as_ptr(), slots, 1),
                        (s.v[p * g.c_in * slots..].as_ptr(), 1, slots),
                        Parallelism::None,
                    )
                }
            }
        });
    }
    with_avx512(|| untransform_filters(&du, pairs))
}

/// Row `i` of `A = [[1, 0], [1, 1], [1, −1], [0, −1]]` applied to two vectors: `out = (A
/// [a, b])[i]`, element-wise.
#[inline(always)]
fn a_row<T: GemmElem>(i: usize, a: &[T], b: &[T], out: &mut [T]) {
    match i {
        0 => out.copy_from_slice(a),
        1 => zip2(out, a, b, |a, b| a + b),
        2 => zip2(out, a, b, |a, b| a - b),
        _ => {
            for (o, &b) in out.iter_mut().zip(b) {
                *o = -b;
            }
        }
    }
}

/// `dM = A dY Aᵀ` for the tiles of tile rows `rows`, from the output gradient `dy`, into
/// `s.m` (16 matrices `(C_out, slots)`, as [`transform_input`] lays out `V`): each tile row's
/// two output rows are copied into rows of `2·(tw + 1)` values, zero past the output, so
/// that the spare slot and the tiles' positions past an odd edge get 0 and add nothing.
#[inline(always)]
fn transform_grad_output<T: GemmElem>(
    dy: &[T],
    g: &ConvGeometry,
    tiling: &Tiling,
    rows: std::ops::Range<usize>,
    s: &mut Scratch<T>,
) {
    let win = &g.win;
    let row_len = tiling.row_len();
    let slots = rows.len() * (tiling.tw + 1);
    s.m.resize(POSITIONS * g.c_out * slots, T::zero());
    s.stacked.resize(2 * slots * 2, T::zero());
    s.even.resize(2 * slots, T::zero());
    s.odd.resize(2 * slots, T::zero());
    s.columns.resize(2 * slots, T::zero());
    for k in 0..g.c_out {
        for a in 0..2 {
            let stacked = &mut s.stacked[a * 2 * slots..][..2 * slots];
            for (r, row) in rows.clone().enumerate() {
                let (img, ty) = (row / tiling.th, row % tiling.th);
                let padded = &mut stacked[r * row_len..][..row_len];
                let oy = 2 * ty + a;
                if oy < win.oh {
                    let at = ((img * g.c_out + k) * win.oh + oy) * win.ow;
                    padded[..win.ow].copy_from_slice(&dy[at..][..win.ow]);
                    padded[win.ow..].fill(T::zero());
                } else {
                    padded.fill(T::zero());
                }
            }
            let (even, odd) = (
                &mut s.even[a * slots..][..slots],
                &mut s.odd[a * slots..][..slots],
            );
            for ((pair, e), o) in stacked.chunks_exact(2).zip(even).zip(odd) {
                *e = pair[0];
                *o = pair[1];
            }
        }
        // Tile slot f holds dY[a][b] at (even, odd)[b] of row a.
        let (e0, e1) = s.even.split_at(slots);
        let (o0, o1) = s.odd.split_at(slots);
        for i in 0..4 {
            // (A dY)[i], left and right column.
            let (left, right) = s.columns.split_at_mut(slots);
            a_row(i, e0, e1, left);
            a_row(i, o0, o1, right);
            for j in 0..4 {
                let dm = &mut s.m[((i * 4 + j) * g.c_out + k) * slots..][..slots];
                a_row(j, left, right, dm);
            }
        }
    }
}

/// `dW = Gᵀ dU G` for every (output, input) channel pair, from the 16 matrices of `dU`
/// (`(C_out, C_in)` each), as `(C_out, C_in, 3, 3)`; the pairs go in chunks so that each
/// step is a vector operation over a chunk, as in [`transform_filters`].
fn untransform_filters<T: GemmElem>(du: &[T], pairs: usize) -> Vec<T> {
    const CHUNK: usize = 256;
    let half = T::from_f64(0.5);
    let mut dw = vec![T::zero(); 9 * pairs];
    let mut rows = [T::zero(); 12 * CHUNK];
    let mut taps = [T::zero(); 9 * CHUNK];
    for start in (0..pairs).step_by(CHUNK) {
        let len = CHUNK.min(pairs - start);
        // Gᵀ dU: row a, column j at `rows[(a·4 + j)·CHUNK ..]`.
        for j in 0..4 {
            let d = |i: usize| &du[(i * 4 + j) * pairs + start..][..len];
            for a in 0..3 {
                gt_row(
                    a,
                    [d(0), d(1), d(2), d(3)],
                    half,
                    &mut rows[(a * 4 + j) * CHUNK..][..len],
                );
            }
        }
        // (Gᵀ dU) G: tap (a, b).
        for a in 0..3 {
            let r = |j: usize| &rows[(a * 4 + j) * CHUNK..][..len];
            for b in 0..3 {
                gt_row(
                    b,
                    [r(0), r(1), r(2), r(3)],
                    half,
                    &mut taps[(a * 3 + b) * CHUNK..][..len],
                );
            }
        }
        for (i, f) in dw[start * 9..][..len * 9].chunks_exact_mut(9).enumerate() {
            for (t, v) in f.iter_mut().enumerate() {
                *v = taps[t * CHUNK + i];
            }
        }
    }
    dw
}

/// Row `a` of `Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]]` applied to four vectors.
#[inline(always)]
fn gt_row<T: GemmElem>(a: usize, [d0, d1, d2, d3]: [&[T]; 4], half: T, out: &mut [T]) {
    match a {
        0 => zip3(out, d0, d1, d2, |x, y, z| x + (y + z) * half),
        1 => zip2(out, d1, d2, |y, z| (y - z) * half),
        _ => zip3(out, d1, d2, d3, |y, z, w| (y + z) * half + w),
    }
}

#[cfg(test)]
mod tests;
