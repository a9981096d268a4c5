//! The CPU convolution: per image, im2col into a scratch buffer and one GEMM straight into
//! the output, with both gradients as GEMMs of the same shape family.
//!
//! For an image `x: (C_in, H, W)` and a weight `(C_out, C_in/g, kh, kw)` seen as the matrix
//! `W: (C_out, K)` with `K = C_in/g · kh · kw` per group, the forward is `Y = W · cols(x)`,
//! `cols(x): (K, L)`, `L = OH · OW`, written in place as the image's `(C_out, OH, OW)` plane.
//! The gradients are
//!
//! - input: `cols⁻¹(Wᵀ · G)` (col2im of a `(K, L)` product, summed into the image),
//! - weight: `Σ_images G · cols(x)ᵀ`, accumulated by the GEMM itself (`dst += …`).
//!
//! A 1×1 convolution with stride 1 and no padding needs no im2col at all: `cols(x)` is the
//! image itself, and the input gradient is written straight into its plane.
//!
//! Images are split into one contiguous chunk per thread, each with its own scratch (and,
//! for the weight gradient, its own accumulator, summed at the end), so the GEMMs run
//! single-threaded without synchronisation. With fewer images than threads the images run
//! one after the other and each GEMM uses every thread instead. On small maps a chunk's
//! images go side by side into [panels](crate::panel), one GEMM per panel.
//!
//! A leaf: [`crate::plan`] decides when it runs, `crate::conv` runs it.

use gemm::Parallelism;
use rayon::prelude::*;

use crate::epilogue::Epilogue;
use crate::gemm::{gemm_strided, GemmElem};
use crate::geometry::ConvGeometry;
use crate::im2col::{col2im_image, im2col_image};
use crate::panel::{panels, Panel};

/// How the batch is spread over the threads: contiguous chunks of images run in parallel
/// with single-threaded GEMMs, or (fewer images than threads) one image at a time with
/// multi-threaded GEMMs.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    images_per_chunk: usize,
    gemm: Parallelism,
}

impl Schedule {
    fn new(n: usize) -> Self {
        let threads = rayon::current_num_threads().max(1);
        if n >= threads && threads > 1 {
            Self {
                images_per_chunk: n.div_ceil(threads),
                gemm: Parallelism::None,
            }
        } else {
            Self {
                images_per_chunk: n.max(1),
                gemm: if threads > 1 {
                    Parallelism::Rayon(threads)
                } else {
                    Parallelism::None
                },
            }
        }
    }
}

/// The im2col matrix `(groups·K, width)` of a panel: the image itself for a pointwise
/// convolution of one image, else written into `scratch` (the images' matrices side by
/// side, see [`crate::panel`]).
fn panel_cols<'a, T: GemmElem>(
    x: &'a [T],
    g: &ConvGeometry,
    panel: &Panel,
    scratch: &'a mut Vec<T>,
) -> &'a [T] {
    if g.is_pointwise() {
        return panel.matrix(x, g.c_in, scratch);
    }
    let plane_in = g.c_in * g.win.h * g.win.w;
    let (l, width) = (g.l(), panel.width());
    scratch.resize(g.groups * g.k() * width, T::zero());
    for (i, img) in panel.images.clone().enumerate() {
        let x_img = &x[img * plane_in..][..plane_in];
        im2col_image(x_img, g.c_in, &g.win, &mut scratch[i * l..], width);
    }
    scratch
}

/// Forward: `(N, C_out, OH, OW)` from `x: (N, C_in, H, W)` and `w: (C_out, C_in/g, kh, kw)`,
/// with an optional epilogue per image; any element type and group count.
pub(crate) fn forward<T: GemmElem>(
    x: &[T],
    w: &[T],
    g: &ConvGeometry,
    epilogue: Option<Epilogue<'_, T>>,
) -> Vec<T> {
    let (k, m, l) = (g.k(), g.m(), g.l());
    let plane_out = g.c_out * l;
    let sched = Schedule::new(g.n);
    let total = g.n * plane_out;
    // Not zero-filled first: the GEMMs or the panels' scatters write every element.
    let mut out: Vec<T> = Vec::with_capacity(total);
    out.spare_capacity_mut()[..total]
        .par_chunks_mut(sched.images_per_chunk * plane_out)
        .enumerate()
        .for_each(|(chunk, outs)| {
            let first = chunk * sched.images_per_chunk;
            let (mut cols_buf, mut out_buf) = (Vec::new(), Vec::new());
            for panel in panels(first..first + outs.len() / plane_out, l) {
                let width = panel.width();
                let cols = panel_cols(x, g, &panel, &mut cols_buf);
                let planes = &mut outs[(panel.images.start - first) * plane_out..];
                // One image's GEMMs write its plane directly; a panel's go to `out_buf`.
                let dst = if panel.is_single() {
                    planes.as_mut_ptr().cast::<T>()
                } else {
                    out_buf.resize(g.c_out * width, T::zero());
                    out_buf.as_mut_ptr()
                };
                for grp in 0..g.groups {
                    // SAFETY: the three matrices lie inside `dst` (`C_out·width` values:
                    // the image's plane or `out_buf`), `w` (`C_out·K`) and `cols`
                    // (`groups·K·width`).
                    unsafe {
                        gemm_strided(
                            (m, width, k),
                            dst.add(grp * m * width),
                            width,
                            false,
                            (w[grp * m * k..].as_ptr(), k, 1),
                            (cols[grp * k * width..].as_ptr(), width, 1),
                            sched.gemm,
                        )
                    }
                }
                for (i, img) in panel.images.clone().enumerate() {
                    let y = &mut planes[i * plane_out..][..plane_out];
                    match (&epilogue, panel.is_single()) {
                        (Some(epilogue), true) => {
                            // SAFETY: the GEMMs wrote all `C_out·L` values.
                            let y = unsafe { &mut *(y as *mut [_] as *mut [T]) };
                            epilogue.run(y, img, l);
                        }
                        (None, true) => {}
                        // A panel's output goes to its images through the epilogue.
                        (Some(epilogue), false) => {
                            let rows = y.chunks_exact_mut(l).zip(panel.rows_of(i, &out_buf));
                            for (c, (dst, src)) in rows.enumerate() {
                                epilogue.run_from(src, dst, c, img * plane_out + c * l);
                            }
                        }
                        (None, false) => panel.scatter(i, &out_buf, y),
                    }
                }
            }
        });
    // SAFETY: every image's plane was written above.
    unsafe { out.set_len(total) };
    out
}

/// Input gradient `(N, C_in, H, W)` from the output gradient and the weight.
pub(crate) fn grad_input<T: GemmElem>(grad: &[T], w: &[T], g: &ConvGeometry) -> Vec<T> {
    let (k, m, l) = (g.k(), g.m(), g.l());
    let plane_in = g.c_in * g.win.h * g.win.w;
    let sched = Schedule::new(g.n);
    let pointwise = g.is_pointwise();
    let total = g.n * plane_in;
    // Not zero-filled first: pointwise planes are written whole by the GEMMs or the
    // scatters, the others zero-filled image by image just before their col2im.
    let mut out: Vec<T> = Vec::with_capacity(total);
    out.spare_capacity_mut()[..total]
        .par_chunks_mut(sched.images_per_chunk * plane_in)
        .enumerate()
        .for_each(|(chunk, dxs)| {
            let first = chunk * sched.images_per_chunk;
            let (mut grad_buf, mut dcols_buf) = (Vec::new(), Vec::new());
            for panel in panels(first..first + dxs.len() / plane_in, l) {
                let width = panel.width();
                let gmat = panel.matrix(grad, g.c_out, &mut grad_buf);
                let dx = &mut dxs[(panel.images.start - first) * plane_in..];
                // `Wᵀ · G`, `(groups·K, width)`: straight into the plane of one pointwise
                // image, else into `dcols_buf`.
                let direct = pointwise && panel.is_single();
                let dcols = if direct {
                    dx.as_mut_ptr().cast::<T>()
                } else {
                    dcols_buf.resize(g.groups * k * width, T::zero());
                    dcols_buf.as_mut_ptr()
                };
                for grp in 0..g.groups {
                    // SAFETY: `Wᵀ` of group `grp` is `(K, m)` with strides `(1, K)` inside
                    // `w`; `G` is `(m, width)` inside `gmat`; `dcols` holds
                    // `groups·K·width` values (the image's plane or `dcols_buf`).
                    unsafe {
                        gemm_strided(
                            (k, width, m),
                            dcols.add(grp * k * width),
                            width,
                            false,
                            (w[grp * m * k..].as_ptr(), 1, k),
                            (gmat[grp * m * width..].as_ptr(), width, 1),
                            sched.gemm,
                        )
                    }
                }
                if direct {
                    continue;
                }
                for (i, dx) in dx.chunks_mut(plane_in).take(panel.images.len()).enumerate() {
                    if pointwise {
                        panel.scatter(i, &dcols_buf, dx);
                    } else {
                        for v in dx.iter_mut() {
                            v.write(T::zero());
                        }
                        // SAFETY: every element was just written.
                        let dx = unsafe { &mut *(dx as *mut [_] as *mut [T]) };
                        col2im_image(&dcols_buf[i * l..], g.c_in, &g.win, dx, width);
                    }
                }
            }
        });
    // SAFETY: every image's plane was written above.
    unsafe { out.set_len(total) };
    out
}

/// Weight gradient `(C_out, C_in/g, kh, kw)` from the output gradient and the input.
pub(crate) fn grad_weight<T: GemmElem>(grad: &[T], x: &[T], g: &ConvGeometry) -> Vec<T> {
    let (k, m, l) = (g.k(), g.m(), g.l());
    let sched = Schedule::new(g.n);
    let chunks = g.n.div_ceil(sched.images_per_chunk);
    // `G` and `cols` both run along the positions, so the `gemm` crate packs one of them
    // with a transposition: the left operand of its (column-major) product. That is `cols`
    // for `dW = G·colsᵀ` and `G` for `dWᵀ = cols·Gᵀ`. On large maps the transposition is
    // what costs, and the smaller operand goes through it: with more rows in `cols` than in
    // `G` (3×3 convolutions, the pointwise ones that shrink the channels) each group's
    // `dWᵀ: (K, m)` is accumulated and transposed at the end. On maps of 28×28 and less
    // this is no faster, or slower (docs/performance.md).
    let transposed = k > m && l >= 1024;
    let partials: Vec<Vec<T>> = (0..chunks)
        .into_par_iter()
        .map(|chunk| {
            let mut dw = vec![T::zero(); g.c_out * k];
            let (mut grad_buf, mut cols_buf) = (Vec::new(), Vec::new());
            let first = chunk * sched.images_per_chunk;
            let last = (first + sched.images_per_chunk).min(g.n);
            for panel in panels(first..last, l) {
                let width = panel.width();
                let gmat = panel.matrix(grad, g.c_out, &mut grad_buf);
                let cols = panel_cols(x, g, &panel, &mut cols_buf);
                for grp in 0..g.groups {
                    let dst = dw[grp * m * k..].as_mut_ptr();
                    let gmat = gmat[grp * m * width..].as_ptr();
                    let cols = cols[grp * k * width..].as_ptr();
                    // SAFETY: `G` is `(m, width)` with strides `(width, 1)` inside `gmat`,
                    // `cols` is `(K, width)` with strides `(width, 1)` inside `cols`, their
                    // transposes swap the strides; `dw` holds `C_out·K`.
                    unsafe {
                        if transposed {
                            let (lhs, rhs) = ((cols, width, 1), (gmat, 1, width));
                            gemm_strided((k, m, width), dst, m, true, lhs, rhs, sched.gemm)
                        } else {
                            let (lhs, rhs) = ((gmat, width, 1), (cols, 1, width));
                            gemm_strided((m, k, width), dst, k, true, lhs, rhs, sched.gemm)
                        }
                    }
                }
            }
            dw
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut total = partials
        .next()
        .unwrap_or_else(|| vec![T::zero(); g.c_out * k]);
    for partial in partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t += p;
        }
    }
    if transposed {
        let mut dw = vec![T::zero(); total.len()];
        for (to, from) in dw.chunks_exact_mut(m * k).zip(total.chunks_exact(m * k)) {
            for (r, row) in from.chunks_exact(m).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    to[c * k + r] = v;
                }
            }
        }
        total = dw;
    }
    total
}

#[cfg(test)]
pub(crate) mod tests;
