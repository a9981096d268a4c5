//! im2col and its adjoint col2im: the data movement that turns a convolution into a matmul.
//!
//! For an input `(N, C, H, W)` and a `kh × kw` window, im2col produces a matrix
//! `(C·kh·kw, N·OH·OW)` whose row `c·kh·kw + i·kw + j` holds, for every image and output
//! position, the input pixel under tap `(i, j)` of channel `c` (zero in the padding). The
//! row order matches a weight `(C_out, C, kh, kw)` flattened to `(C_out, C·kh·kw)`, and the
//! whole batch is one matrix, so a convolution is one large matmul and its weight gradient
//! another (no per-image products to sum). col2im scatters such columns back, summing
//! overlaps, so it is exactly the transpose of im2col and serves as its gradient.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::dispatch::{contiguous, dispatch_float, Elem};

/// Geometry of one convolution window, shared by im2col and col2im.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_h: usize,
    pub pad_w: usize,
    pub dilation: usize,
    /// Input height and width.
    pub h: usize,
    pub w: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
}

impl Window {
    /// The input coordinate that output coordinate `o` reads at tap `k` along an axis padded
    /// by `pad`, if inside the image.
    #[inline]
    fn source(&self, o: usize, k: usize, pad: usize, len: usize) -> Option<usize> {
        let pos = (o * self.stride + k * self.dilation) as isize - pad as isize;
        (pos >= 0 && (pos as usize) < len).then_some(pos as usize)
    }

    fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// im2col as a Candle op whose backward is col2im.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Im2Col(pub Window);

/// Unfolds `(N, C, H, W)` into `(C·kh·kw, N·L)`, one channel's `kh·kw` rows per task.
fn im2col<T: Elem>(x: &[T], n: usize, c: usize, win: &Window) -> Result<Vec<T>> {
    let l = win.oh * win.ow;
    let plane = win.h * win.w;
    let per_channel = win.taps() * n * l;
    let mut out = vec![T::zero(); c * per_channel];
    out.par_chunks_mut(per_channel)
        .enumerate()
        .for_each(|(ch, rows)| {
            for img in 0..n {
                let src_plane = &x[(img * c + ch) * plane..][..plane];
                for i in 0..win.kh {
                    for j in 0..win.kw {
                        let row = &mut rows[((i * win.kw + j) * n + img) * l..][..l];
                        for oy in 0..win.oh {
                            let Some(y) = win.source(oy, i, win.pad_h, win.h) else {
                                continue;
                            };
                            let src = &src_plane[y * win.w..][..win.w];
                            let dst = &mut row[oy * win.ow..][..win.ow];
                            for (ox, d) in dst.iter_mut().enumerate() {
                                if let Some(x) = win.source(ox, j, win.pad_w, win.w) {
                                    *d = src[x];
                                }
                            }
                        }
                    }
                }
            }
        });
    Ok(out)
}

/// Scatters the columns back into `(N, C, H, W)`, one output plane per task.
fn col2im<T: Elem>(cols: &[T], n: usize, c: usize, win: &Window) -> Result<Vec<T>> {
    let l = win.oh * win.ow;
    let plane = win.h * win.w;
    let mut out = vec![T::zero(); n * c * plane];
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(index, img)| {
            let (image, ch) = (index / c, index % c);
            for i in 0..win.kh {
                for j in 0..win.kw {
                    let row = &cols[((ch * win.taps() + i * win.kw + j) * n + image) * l..][..l];
                    for oy in 0..win.oh {
                        let Some(y) = win.source(oy, i, win.pad_h, win.h) else {
                            continue;
                        };
                        let dst = &mut img[y * win.w..][..win.w];
                        for (ox, &g) in row[oy * win.ow..][..win.ow].iter().enumerate() {
                            if let Some(x) = win.source(ox, j, win.pad_w, win.w) {
                                dst[x] += g;
                            }
                        }
                    }
                }
            }
        });
    Ok(out)
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let win = self.0;
        if (h, w) != (win.h, win.w) {
            candle_core::bail!(
                "im2col: input is {h}x{w}, op was built for {}x{}",
                win.h,
                win.w
            );
        }
        let out = dispatch_float!("im2col", s, |T| im2col::<T>(
            contiguous::<T>(s, l, "im2col")?,
            n,
            c,
            &win
        ))?;
        Ok((out, Shape::from((c * win.taps(), n * win.oh * win.ow))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im(self.0))?;
        Ok(Some(grad))
    }
}

/// col2im: the adjoint of [`Im2Col`], used for its gradient.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col2Im(pub Window);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, cols) = l.shape().dims2()?;
        let win = self.0;
        let per_image = win.oh * win.ow;
        if !rows.is_multiple_of(win.taps()) || !cols.is_multiple_of(per_image) {
            candle_core::bail!("col2im: columns {:?} do not fit window {win:?}", l.shape());
        }
        let (c, n) = (rows / win.taps(), cols / per_image);
        let out = dispatch_float!("col2im", s, |T| col2im::<T>(
            contiguous::<T>(s, l, "col2im")?,
            n,
            c,
            &win
        ))?;
        Ok((out, Shape::from((n, c, win.h, win.w))))
    }
}
