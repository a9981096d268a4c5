//! im2col and its adjoint col2im for one image: the data movement that turns a convolution
//! into a GEMM.
//!
//! For an image `(C, H, W)` and a `kh × kw` window, im2col fills a matrix `(C·kh·kw, L)`,
//! `L = OH·OW`, whose row `c·kh·kw + i·kw + j` holds, for every output position, the input
//! pixel under tap `(i, j)` of channel `c` (zero in the padding). The row order matches a
//! weight `(C_out, C, kh, kw)` flattened to `(C_out, C·kh·kw)`. col2im scatters such a
//! matrix back into the image, summing overlaps: it is exactly the transpose of im2col and
//! serves as its gradient.
//!
//! Both walk one output row at a time over the columns whose tap lands inside the image
//! (computed once per tap), so the inner loop has no bounds tests, and with stride 1 it is
//! a plain copy (im2col) or add (col2im) of a contiguous run.

use crate::geometry::Window;
use crate::storage::Elem;
use crate::strided::{gather_with, scatter_with};

/// Writes the im2col matrix `(C·kh·kw, OH·OW)` of one image `x: (C, H, W)` into `cols`,
/// whose rows start `ld ≥ OH·OW` values apart (wider when images sit side by side, as in
/// [`crate::panel`]).
pub(crate) fn im2col_image<T: Elem>(x: &[T], c: usize, win: &Window, cols: &mut [T], ld: usize) {
    let (l, plane) = (win.oh * win.ow, win.h * win.w);
    let columns: Vec<_> = (0..win.kw).map(|j| win.valid_columns(j)).collect();
    for ch in 0..c {
        let src_plane = &x[ch * plane..][..plane];
        for i in 0..win.kh {
            for (j, &(lo, hi, x0)) in columns.iter().enumerate() {
                let row = &mut cols[(ch * win.taps() + i * win.kw + j) * ld..][..l];
                for (oy, dst) in row.chunks_exact_mut(win.ow).enumerate() {
                    let Some(y) = win.source(oy, i, win.pad_h, win.h) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    // At most a pixel or two of padding at either end, and none for most
                    // taps: element by element, not a `memset` call per row.
                    let (head, rest) = dst.split_at_mut(lo);
                    for v in head.iter_mut().chain(&mut rest[hi - lo..]) {
                        *v = T::zero();
                    }
                    let src = &src_plane[y * win.w + x0..];
                    gather_with(&mut dst[lo..hi], src, win.stride, |d, s| *d = s);
                }
            }
        }
    }
}

/// Adds the im2col matrix `cols: (C·kh·kw, OH·OW)`, rows `ld` values apart, back into one
/// image `dx: (C, H, W)`.
pub(crate) fn col2im_image<T: Elem>(cols: &[T], c: usize, win: &Window, dx: &mut [T], ld: usize) {
    let (l, plane) = (win.oh * win.ow, win.h * win.w);
    let columns: Vec<_> = (0..win.kw).map(|j| win.valid_columns(j)).collect();
    for ch in 0..c {
        let dst_plane = &mut dx[ch * plane..][..plane];
        for i in 0..win.kh {
            for (j, &(lo, hi, x0)) in columns.iter().enumerate() {
                let row = &cols[(ch * win.taps() + i * win.kw + j) * ld..][..l];
                for (oy, src) in row.chunks_exact(win.ow).enumerate() {
                    let Some(y) = win.source(oy, i, win.pad_h, win.h) else {
                        continue;
                    };
                    let dst = &mut dst_plane[y * win.w + x0..];
                    scatter_with(dst, &src[lo..hi], win.stride, |d, s| *d += s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, one element at a time.
    fn im2col_reference(x: &[f64], c: usize, win: &Window) -> Vec<f64> {
        let l = win.oh * win.ow;
        let mut cols = vec![0.0; c * win.taps() * l];
        for ch in 0..c {
            for i in 0..win.kh {
                for j in 0..win.kw {
                    for oy in 0..win.oh {
                        for ox in 0..win.ow {
                            let (Some(y), Some(xx)) = (
                                win.source(oy, i, win.pad_h, win.h),
                                win.source(ox, j, win.pad_w, win.w),
                            ) else {
                                continue;
                            };
                            cols[(ch * win.taps() + i * win.kw + j) * l + oy * win.ow + ox] =
                                x[(ch * win.h + y) * win.w + xx];
                        }
                    }
                }
            }
        }
        cols
    }

    fn windows() -> Vec<Window> {
        let mut out = Vec::new();
        for (h, w) in [(7, 6), (5, 9), (8, 8), (1, 3)] {
            for (kh, kw, stride, pad_h, pad_w, dilation) in [
                (3, 3, 1, 1, 1, 1),
                (3, 3, 2, 1, 1, 1),
                (1, 1, 2, 0, 0, 1),
                (1, 3, 1, 0, 1, 1),
                (3, 1, 1, 1, 0, 1),
                (3, 3, 1, 2, 2, 2),
                (5, 5, 3, 2, 2, 1),
                (2, 2, 1, 0, 0, 1),
            ] {
                let size = |len: usize, k: usize, pad: usize| {
                    let span = dilation * (k - 1) + 1;
                    (len + 2 * pad >= span).then(|| (len + 2 * pad - span) / stride + 1)
                };
                if let (Some(oh), Some(ow)) = (size(h, kh, pad_h), size(w, kw, pad_w)) {
                    out.push(Window {
                        kh,
                        kw,
                        stride,
                        pad_h,
                        pad_w,
                        dilation,
                        h,
                        w,
                        oh,
                        ow,
                    });
                }
            }
        }
        out
    }

    #[test]
    fn im2col_matches_the_definition() {
        for win in windows() {
            let c = 2;
            let x: Vec<f64> = (0..c * win.h * win.w).map(|v| v as f64 + 1.0).collect();
            // Stale values in the buffer must be overwritten, padding included.
            let l = win.oh * win.ow;
            let mut cols = vec![f64::NAN; c * win.taps() * l];
            im2col_image(&x, c, &win, &mut cols, l);
            let reference = im2col_reference(&x, c, &win);
            assert_eq!(cols, reference, "{win:?}");
            // Rows 3 values further apart: the same rows, and the gaps left alone.
            let ld = l + 3;
            let mut wide = vec![f64::NAN; c * win.taps() * ld];
            im2col_image(&x, c, &win, &mut wide, ld);
            for (row, want) in wide.chunks_exact(ld).zip(reference.chunks_exact(l)) {
                assert_eq!(&row[..l], want, "{win:?}");
                assert!(row[l..].iter().all(|v| v.is_nan()), "{win:?}");
            }
        }
    }

    #[test]
    fn col2im_is_the_transpose_of_im2col() {
        // <im2col(x), y> = <x, col2im(y)> for every x and y.
        for win in windows() {
            let c = 2;
            let n_in = c * win.h * win.w;
            let n_cols = c * win.taps() * win.oh * win.ow;
            let x: Vec<f64> = (0..n_in).map(|v| ((v * 7 % 11) as f64) - 5.0).collect();
            let y: Vec<f64> = (0..n_cols).map(|v| ((v * 5 % 13) as f64) - 6.0).collect();
            let mut cols = vec![0.0; n_cols];
            let l = win.oh * win.ow;
            im2col_image(&x, c, &win, &mut cols, l);
            let mut back = vec![0.0; n_in];
            col2im_image(&y, c, &win, &mut back, l);
            let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{win:?}");
            // Rows further apart: the values in the gaps are not read.
            let ld = l + 2;
            let wide: Vec<f64> = y
                .chunks_exact(l)
                .flat_map(|row| row.iter().copied().chain([f64::NAN; 2]))
                .collect();
            let mut back_wide = vec![0.0; n_in];
            col2im_image(&wide, c, &win, &mut back_wide, ld);
            assert_eq!(back_wide, back, "{win:?}");
        }
    }
}
