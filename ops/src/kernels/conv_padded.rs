//! The f32 stride-1 convolution on x86-64 with AVX-512: B read in place from the padded
//! input, an 8 × 48 register-tile microkernel, each output written once through its
//! epilogue.
//!
//! `Y = W · cols(x)` without materialising `cols(x)`: with the input padded once to
//! `(Hp, Wp)`, output position `(oy, ox)` is column `q = oy·Wp + ox` and its row
//! `k = (c, i, j)` is the padded input at `q + c·Hp·Wp + i·d·Wp + j·d`: row `k` of 48
//! consecutive columns is one contiguous run of the input. The microkernel walks `k` with
//! an offset table, keeping the `MR × NR` tile in 24 registers, and stores it once, through
//! the epilogue (batch norm's shift, the shortcut, the activation); the `Wp − OW` columns
//! that fall between two output rows are computed and dropped. The weight `(C_out, K)` is
//! packed once per call into panels of [`MR`] rows, k-major (read as broadcasts).
//!
//! Against the `gemm` crate (im2col, then a GEMM that packs both operands for every image)
//! this saves the 9×-sized im2col matrix and its packing, which dominate when `C_out` is
//! small: the stem's 3×3 convolutions run 1.2–1.5× faster. It serves only what it does well
//! (see [`applies`]); [`crate::conv_gemm`] handles the rest.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::epilogue::Epilogue;
use crate::geometry::ConvGeometry;
use crate::storage::SharedMut;

/// Rows of a register tile: output channels per weight panel.
const MR: usize = 8;
/// Lanes of one AVX-512 vector of f32.
const LANES: usize = 16;
/// Columns of a register tile: output positions per panel (three vectors).
const NR: usize = 3 * LANES;

/// Whether this CPU runs the kernel (AVX-512F, detected at run time).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// The weight `(M, K)` as panels of [`MR`] rows, each stored k-major (`panel[k·MR + r]`),
/// the last one padded with zero rows.
fn pack_weight(w: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.div_ceil(MR) * MR * k];
    for (i, panel) in out.chunks_exact_mut(MR * k).enumerate() {
        for r in 0..MR.min(m - i * MR) {
            let row = &w[(i * MR + r) * k..][..k];
            for (dst, &v) in panel.iter_mut().skip(r).step_by(MR).zip(row) {
                *dst = v;
            }
        }
    }
    out
}

/// Output positions `p .. p + len` of image `img`, filled from tile columns `t .. t + len`.
#[derive(Debug, Clone, Copy)]
struct Run {
    img: usize,
    p: usize,
    len: usize,
    t: usize,
}

/// Lanes `[0, len)` of a vector, `len ≤ 16`.
#[inline]
fn lane_mask(len: usize) -> __mmask16 {
    if len >= LANES {
        u16::MAX
    } else {
        (1u16 << len) - 1
    }
}

/// Where a tile goes: the output rows of channels `c0 ..` at the tile's runs, through the
/// epilogue.
struct TileStore<'a> {
    out: SharedMut<f32>,
    c0: usize,
    rows: usize,
    runs: &'a [Run],
    /// Output positions per image and output channels: the output's strides.
    l: usize,
    c_out: usize,
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    act: crate::Activation,
}

/// `act(Σ_k A[r, k]·B[k, ·] + bias + residual)` for one `MR × (NV·16)` tile, kept in
/// registers over the whole `k` loop and stored once, run by run, with masked stores.
///
/// # Safety
/// AVX-512F; `a` must hold `k·MR` values and `b + offsets[k]` NV·16 for every `k`; the
/// store's runs must lie inside the output and belong to the calling thread.
#[target_feature(enable = "avx512f")]
unsafe fn microkernel<const NV: usize>(
    k: usize,
    a: *const f32,
    (b, offsets): (*const f32, &[usize]),
    store: &TileStore,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut a = a;
    for &offset in &offsets[..k] {
        // SAFETY: row `k` of B holds NV·16 values at `b + offset` (the padded source has
        // slack after its last image for the widest panel).
        let row = unsafe { b.add(offset) };
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, bv) in bv.iter_mut().enumerate() {
            // SAFETY: see `row`.
            *bv = unsafe { _mm512_loadu_ps(row.add(v * LANES)) };
        }
        for (r, acc) in acc.iter_mut().enumerate() {
            // SAFETY: row `k` of the A panel has MR values.
            let av = _mm512_set1_ps(unsafe { *a.add(r) });
            for (acc, &bv) in acc.iter_mut().zip(&bv) {
                *acc = _mm512_fmadd_ps(av, bv, *acc);
            }
        }
        // SAFETY: at most one past the panel's end after the last step.
        a = unsafe { a.add(MR) };
    }
    let (zero, six) = (_mm512_setzero_ps(), _mm512_set1_ps(6.0));
    for (r, acc) in acc.iter().enumerate().take(store.rows) {
        let c = store.c0 + r;
        let bias = _mm512_set1_ps(store.bias.map_or(0.0, |b| b[c]));
        for run in store.runs {
            let at = (run.img * store.c_out + c) * store.l + run.p;
            // Tile column `t` goes to `base + t`; lanes outside the run are masked off.
            let base = store.out.0.wrapping_add(at).wrapping_sub(run.t);
            let res = store
                .residual
                .map(|r| r.as_ptr().wrapping_add(at).wrapping_sub(run.t));
            for (v, &acc) in acc.iter().enumerate() {
                let (lo, hi) = (v * LANES, (v + 1) * LANES);
                let (from, to) = (run.t.max(lo), (run.t + run.len).min(hi));
                if from >= to {
                    continue;
                }
                let m = lane_mask(to - lo) & !lane_mask(from - lo);
                let mut y = _mm512_add_ps(acc, bias);
                // SAFETY: the unmasked lanes are the run's own output (and residual)
                // positions `at .. at + run.len`.
                unsafe {
                    if let Some(res) = res {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(m, res.wrapping_add(lo)));
                    }
                    // max/min return their second operand when one is NaN: NaN stays NaN.
                    y = match store.act {
                        crate::Activation::Identity => y,
                        crate::Activation::Relu => _mm512_max_ps(zero, y),
                        crate::Activation::Relu6 => _mm512_min_ps(six, _mm512_max_ps(zero, y)),
                    };
                    _mm512_mask_storeu_ps(base.wrapping_add(lo), m, y);
                }
            }
        }
    }
}

/// One panel of B: `width` columns from element `start` of the padded images, and the
/// output positions they fill.
#[derive(Debug, Clone)]
struct Panel {
    start: usize,
    width: usize,
    runs: Vec<Run>,
}

/// B read in place: the input padded once, so that output position `(oy, ox)` of an image
/// is column `q = oy·Wp + ox` and its row `k = (c, i, j)` sits at `q + c·Hp·Wp + i·d·Wp + j·d`
/// of that image's padded planes. The `Wp − OW` columns between two output rows are
/// computed and dropped.
struct PaddedInput {
    /// The padded images `(N, C_in, Hp, Wp)`, with slack after the last image for the
    /// widest panel's reads.
    data: Vec<f32>,
    /// Offset of row `k` from column `q`.
    offsets: Vec<usize>,
    /// Padded width and plane size of one image.
    wp: usize,
    image: usize,
}

impl PaddedInput {
    /// The padded input.
    fn new(x: &[f32], g: &ConvGeometry) -> Self {
        let win = &g.win;
        let (hp, wp) = (win.h + 2 * win.pad_h, win.w + 2 * win.pad_w);
        let plane = hp * wp;
        let len = g.n * g.c_in * plane + NR;
        let mut data = Vec::with_capacity(len);
        // Every element written once (no zero-fill of the whole buffer first): padding
        // rows, then each row as left padding, the image row, right padding.
        let spare = &mut data.spare_capacity_mut()[..len];
        let (planes, slack) = spare.split_at_mut(len - NR);
        slack.fill(MaybeUninit::new(0.0));
        planes
            .par_chunks_mut(plane)
            .zip(x.par_chunks(win.h * win.w))
            .for_each(|(dst, src)| {
                let (top, rest) = dst.split_at_mut(win.pad_h * wp);
                let (middle, bottom) = rest.split_at_mut(win.h * wp);
                top.fill(MaybeUninit::new(0.0));
                bottom.fill(MaybeUninit::new(0.0));
                for (dst, src) in middle.chunks_exact_mut(wp).zip(src.chunks_exact(win.w)) {
                    let (left, rest) = dst.split_at_mut(win.pad_w);
                    let (inside, right) = rest.split_at_mut(win.w);
                    left.fill(MaybeUninit::new(0.0));
                    right.fill(MaybeUninit::new(0.0));
                    for (d, &v) in inside.iter_mut().zip(src) {
                        d.write(v);
                    }
                }
            });
        // SAFETY: all `len` elements were initialised above.
        unsafe { data.set_len(len) };
        let d = win.dilation;
        let offsets = (0..g.c_in)
            .flat_map(|c| (0..win.kh).flat_map(move |i| (0..win.kw).map(move |j| (c, i, j))))
            .map(|(c, i, j)| c * plane + i * d * wp + j * d)
            .collect();
        Self {
            data,
            offsets,
            wp,
            image: g.c_in * plane,
        }
    }
}

/// The panels of the batch: [`NR`] padded columns at a time, per image (the last one of
/// each image narrower), with the output positions of the columns that are not dropped.
fn plan(g: &ConvGeometry, src: &PaddedInput) -> Vec<Panel> {
    let win = &g.win;
    let columns = (win.oh - 1) * src.wp + win.ow;
    let mut panels = Vec::new();
    for img in 0..g.n {
        for q0 in (0..columns).step_by(NR) {
            let width = NR.min(columns - q0);
            let mut runs = Vec::new();
            for oy in q0 / src.wp..=(q0 + width - 1) / src.wp {
                let from = q0.max(oy * src.wp);
                let to = (q0 + width).min(oy * src.wp + win.ow);
                if from < to {
                    let p = oy * win.ow + from - oy * src.wp;
                    runs.push(Run {
                        img,
                        p,
                        len: to - from,
                        t: from - q0,
                    });
                }
            }
            panels.push(Panel {
                start: img * src.image + q0,
                width,
                runs,
            });
        }
    }
    panels
}

/// Whether [`forward`] can compute this convolution (on a CPU with AVX-512F,
/// [`available`]): one group, stride 1, a window wider than one pixel (pointwise or strided
/// convolutions have no shifted rows to read in place). When it pays is
/// [`crate::plan::conv`]'s to decide.
pub(crate) fn applies(g: &ConvGeometry) -> bool {
    g.groups == 1 && g.win.stride == 1 && !g.is_pointwise()
}

/// The convolution `(N, C_out, OH, OW)` of `x: (N, C_in, H, W)` by `w: (C_out, C_in, kh, kw)`
/// with the optional epilogue. Call only when [`applies`].
pub(crate) fn forward(
    x: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    epilogue: Option<&Epilogue<'_, f32>>,
) -> Vec<f32> {
    assert!(
        applies(g) && available(),
        "the in-place convolution does not apply to {g:?}"
    );
    let win = &g.win;
    let (k, l) = (g.c_in * win.kh * win.kw, win.oh * win.ow);
    let total = g.n * g.c_out * l;
    let a = pack_weight(w, g.c_out, k);
    let src = PaddedInput::new(x, g);
    let panels = plan(g, &src);
    let threads = rayon::current_num_threads().max(1);
    let mut out: Vec<f32> = Vec::with_capacity(total);
    let shared = SharedMut(out.as_mut_ptr());
    panels
        .par_chunks(panels.len().div_ceil(threads))
        .for_each(|share| {
            for p in share {
                let b = (src.data[p.start..].as_ptr(), &src.offsets[..]);
                for (i, a) in a.chunks_exact(MR * k).enumerate() {
                    let store = TileStore {
                        out: shared,
                        c0: i * MR,
                        rows: MR.min(g.c_out - i * MR),
                        runs: &p.runs,
                        l,
                        c_out: g.c_out,
                        bias: epilogue.map(|e| e.bias),
                        residual: epilogue.and_then(|e| e.residual),
                        act: epilogue.map_or(crate::Activation::Identity, |e| e.act),
                    };
                    // SAFETY: AVX-512F is available (`applies`); the weight panel holds
                    // `k·MR` values; every B row read stays inside the padded input (its
                    // slack covers the widest panel); the panel's runs are this thread's.
                    unsafe {
                        match p.width.div_ceil(LANES) {
                            1 => microkernel::<1>(k, a.as_ptr(), b, &store),
                            2 => microkernel::<2>(k, a.as_ptr(), b, &store),
                            _ => microkernel::<3>(k, a.as_ptr(), b, &store),
                        }
                    }
                }
            }
        });
    // SAFETY: every element was written: the panels cover every output position of every
    // image, and each panel runs every weight panel (all output channels).
    unsafe { out.set_len(total) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Window;
    use crate::kernels::conv_gemm::tests::direct;
    use crate::Activation;

    /// A small xorshift generator: uniform values in [-1, 1) and choices.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn values(&mut self, len: usize) -> Vec<f32> {
            (0..len)
                .map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                .collect()
        }
    }

    fn geometry(
        n: usize,
        c: (usize, usize),
        kernel: [usize; 5],
        (h, w): (usize, usize),
    ) -> ConvGeometry {
        let [kh, kw, pad_h, pad_w, dilation] = kernel;
        let out_len = |len: usize, k: usize, pad: usize| len + 2 * pad - dilation * (k - 1);
        ConvGeometry {
            win: Window {
                kh,
                kw,
                stride: 1,
                pad_h,
                pad_w,
                dilation,
                h,
                w,
                oh: out_len(h, kh, pad_h),
                ow: out_len(w, kw, pad_w),
            },
            n,
            c_in: c.0,
            c_out: c.1,
            groups: 1,
        }
    }

    /// Random geometries it serves: output channels across weight panels (tails of 1–7
    /// rows), maps 28–60 wide so that panels cross output rows and the dropped padded
    /// columns, batches 1–5, 3×3 (padded, unpadded, dilated), 5×5, 7×7, 1×7, 7×1, 2×2.
    #[test]
    fn matches_the_direct_convolution_with_and_without_epilogue() {
        if !available() {
            eprintln!("no AVX-512F here: the in-place kernel is not used on this CPU");
            return;
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let kernels = [
            [3, 3, 1, 1, 1],
            [3, 3, 0, 0, 1],
            [3, 3, 2, 2, 2],
            [5, 5, 2, 2, 1],
            [7, 7, 3, 3, 1],
            [1, 7, 0, 3, 1],
            [7, 1, 3, 0, 1],
            [2, 2, 0, 0, 1],
        ];
        for case in 0..32 {
            let kernel = kernels[case % kernels.len()];
            let [kh, kw, _, _, dilation] = kernel;
            let size = (
                kh * dilation + rng.pick(6),
                28 + kw * dilation + rng.pick(33),
            );
            let channels = (1 + rng.pick(6), 1 + rng.pick(21));
            let g = geometry(1 + rng.pick(5), channels, kernel, size);
            assert!(applies(&g), "{g:?}");
            let l = g.win.oh * g.win.ow;
            let x = rng.values(g.n * g.c_in * size.0 * size.1);
            let wt = rng.values(g.c_out * g.c_in * kh * kw);
            let bias = rng.values(g.c_out);
            let residual = rng.values(g.n * g.c_out * l);
            let wide = |v: &[f32]| v.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
            let dy = vec![0.0; g.n * g.c_out * l];
            let [y, _, _] = direct(&wide(&x), &wide(&wt), &dy, &g);
            let act = [Activation::Identity, Activation::Relu, Activation::Relu6][case % 3];
            let epilogue = Epilogue {
                bias: &bias,
                residual: (case % 2 == 0).then_some(&residual[..]),
                act,
            };
            let expected: Vec<f64> = y
                .iter()
                .enumerate()
                .map(|(at, &y)| {
                    let c = at / l % g.c_out;
                    let r = epilogue.residual.map_or(0.0, |r| f64::from(r[at]));
                    let v = y + f64::from(bias[c]) + r;
                    match act {
                        Activation::Identity => v,
                        Activation::Relu => v.max(0.0),
                        Activation::Relu6 => v.clamp(0.0, 6.0),
                    }
                })
                .collect();
            // f32 sums of K ≤ 6·49 products of values in [-1, 1).
            let tolerance = 1e-6 * (g.c_in * kh * kw) as f64;
            let close = |got: Vec<f32>, want: &[f64], what: &str| {
                assert_eq!(got.len(), want.len());
                for (at, (&got, &want)) in got.iter().zip(want).enumerate() {
                    let err = (f64::from(got) - want).abs();
                    assert!(
                        err < tolerance,
                        "case {case} {g:?} {what}: [{at}] {got} vs {want}"
                    );
                }
            };
            close(forward(&x, &wt, &g, None), &y, "plain");
            close(forward(&x, &wt, &g, Some(&epilogue)), &expected, "epilogue");
        }
    }

    #[test]
    fn computes_only_ungrouped_stride_one_windows() {
        let wide = geometry(2, (3, 4), [3, 3, 1, 1, 1], (30, 30));
        assert!(applies(&wide));
        let narrow = geometry(2, (3, 4), [3, 3, 1, 1, 1], (14, 14));
        assert!(
            applies(&narrow),
            "narrow maps are the planner's choice, not a limit"
        );
        let pointwise = geometry(2, (3, 4), [1, 1, 0, 0, 1], (56, 56));
        let mut strided = wide;
        strided.win.stride = 2;
        let mut grouped = wide;
        (grouped.c_in, grouped.c_out, grouped.groups) = (4, 4, 2);
        for g in [pointwise, strided, grouped] {
            assert!(!applies(&g), "{g:?}");
        }
    }

    #[test]
    fn weight_panels_are_k_major_and_zero_padded() {
        // Rows 0..3 of a (3, 2) weight: panel[k·MR + r] = w[r][k], rows 3..8 zero.
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let a = pack_weight(&w, 3, 2);
        assert_eq!(a.len(), MR * 2);
        assert_eq!(&a[..MR], &[1.0, 3.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(&a[MR..], &[2.0, 4.0, 6.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
