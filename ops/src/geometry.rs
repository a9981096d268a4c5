//! The shapes every kernel shares, in one module that imports no kernel: the parameters of a
//! convolution ([`Conv2dParams`]) and of a pooling window ([`Pool2dParams`]), a
//! convolution placed over a batch ([`ConvGeometry`], with its [`Window`]), a pooling window
//! placed over an input ([`PoolGeometry`]), and PyTorch's output-size rule
//! ([`pool_output_size`]). The planner ([`crate::plan`]) decides from them which kernel
//! runs; kernels read them and never each other.

use candle_core::{Result, Tensor};

/// Channels per block of the blocked (NCHW16c) layout: one AVX-512 vector of f32.
pub const BLOCK: usize = 16;

/// Hyper-parameters of a 2-D convolution: the same on both spatial axes, except that the
/// width's padding may differ (Inception-V3's 1×7 and 7×1 convolutions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between windows.
    pub stride: usize,
    /// Zeros added on every side (top and bottom; left and right too unless `padding_w`).
    pub padding: usize,
    /// Zeros added left and right when that differs from `padding`.
    pub padding_w: Option<usize>,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups (input and output channels split into this many independent parts).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            padding_w: None,
            dilation: 1,
            groups: 1,
        }
    }
}

impl Conv2dParams {
    /// Padding of height and width.
    pub fn pads(&self) -> (usize, usize) {
        (self.padding, self.padding_w.unwrap_or(self.padding))
    }

    /// Output height and width for an `h × w` input and a `kh × kw` kernel, if the kernel
    /// fits at all.
    pub fn output_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
        let (ph, pw) = self.pads();
        let oh = pool_output_size(h, kh, self.stride, ph, self.dilation, false)?;
        let ow = pool_output_size(w, kw, self.stride, pw, self.dilation, false)?;
        Some((oh, ow))
    }
}

/// Geometry of one convolution window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Step between windows.
    pub stride: usize,
    /// Zeros above and below.
    pub pad_h: usize,
    /// Zeros left and right.
    pub pad_w: usize,
    /// Spacing between taps.
    pub dilation: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Window {
    /// The input coordinate that output coordinate `o` reads at tap `k` along an axis padded
    /// by `pad`, if inside `len`.
    #[inline]
    pub(crate) fn source(&self, o: usize, k: usize, pad: usize, len: usize) -> Option<usize> {
        let pos = (o * self.stride + k * self.dilation) as isize - pad as isize;
        (pos >= 0 && (pos as usize) < len).then_some(pos as usize)
    }

    /// The output columns `[lo, hi)` whose input column at tap `j` lies inside the image,
    /// and the input column of `lo` (the valid columns are contiguous).
    pub(crate) fn valid_columns(&self, j: usize) -> (usize, usize, usize) {
        let inside = |o: usize| self.source(o, j, self.pad_w, self.w);
        let Some(lo) = (0..self.ow).find(|&o| inside(o).is_some()) else {
            return (0, 0, 0);
        };
        let hi = (lo..self.ow)
            .take_while(|&o| inside(o).is_some())
            .last()
            .map_or(lo, |o| o + 1);
        (lo, hi, inside(lo).expect("lo is inside"))
    }

    pub(crate) fn taps(&self) -> usize {
        self.kh * self.kw
    }
}

/// Geometry of a grouped convolution over a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// The window over one image.
    pub win: Window,
    /// Images.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Channel groups.
    pub groups: usize,
}

impl ConvGeometry {
    /// The geometry of `conv(x, weight)`, or a clear error if the shapes do not fit.
    pub fn of(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Self> {
        let (n, c_in, h, w) = x.dims4()?;
        let (c_out, c_in_group, kh, kw) = weight.dims4()?;
        if p.groups == 0 || c_in != c_in_group * p.groups || c_out % p.groups != 0 {
            candle_core::bail!(
                "conv2d: input has {c_in} channels, weight {:?} with {} groups expects {}",
                weight.dims(),
                p.groups,
                c_in_group * p.groups
            );
        }
        let Some(g) = Self::new(n, (c_in, c_out), (kh, kw), p, (h, w)) else {
            candle_core::bail!(
                "conv2d: a {kh}x{kw} kernel (dilation {}, padding {:?}) does not fit a {h}x{w} input",
                p.dilation,
                p.pads()
            );
        };
        Ok(g)
    }

    /// The geometry of a `kh × kw` convolution with `p` from `c_in` to `c_out` channels over
    /// `n` images of `h × w`, or `None` where the kernel does not fit.
    pub fn new(
        n: usize,
        (c_in, c_out): (usize, usize),
        (kh, kw): (usize, usize),
        p: Conv2dParams,
        (h, w): (usize, usize),
    ) -> Option<Self> {
        let (oh, ow) = p.output_size(h, w, kh, kw)?;
        let (pad_h, pad_w) = p.pads();
        Some(Self {
            win: Window {
                kh,
                kw,
                stride: p.stride,
                pad_h,
                pad_w,
                dilation: p.dilation,
                h,
                w,
                oh,
                ow,
            },
            n,
            c_in,
            c_out,
            groups: p.groups,
        })
    }

    /// Rows of one group's im2col matrix: `C_in/g · kh · kw`.
    pub(crate) fn k(&self) -> usize {
        self.c_in / self.groups * self.win.kh * self.win.kw
    }

    /// Output channels per group.
    pub(crate) fn m(&self) -> usize {
        self.c_out / self.groups
    }

    /// Output positions per image.
    pub(crate) fn l(&self) -> usize {
        self.win.oh * self.win.ow
    }

    /// 1×1, stride 1, no padding: the image is its own im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        let w = &self.win;
        w.kh == 1 && w.kw == 1 && w.stride == 1 && w.pad_h == 0 && w.pad_w == 0
    }

    /// The convolution whose forward is this one's input gradient, where there is one: for
    /// stride 1, no dilation and one group, the output gradient correlated with the filters
    /// flipped and transposed ([`flip_transpose`]), padded by `k − 1 − pad`.
    pub(crate) fn transposed(&self) -> Option<ConvGeometry> {
        let win = &self.win;
        if win.stride != 1 || win.dilation != 1 || self.groups != 1 {
            return None;
        }
        Some(ConvGeometry {
            win: Window {
                pad_h: (win.kh - 1).checked_sub(win.pad_h)?,
                pad_w: (win.kw - 1).checked_sub(win.pad_w)?,
                h: win.oh,
                w: win.ow,
                oh: win.h,
                ow: win.w,
                ..*win
            },
            n: self.n,
            c_in: self.c_out,
            c_out: self.c_in,
            groups: 1,
        })
    }
}

/// Hyper-parameters of a 2-D pooling window, with PyTorch's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dParams {
    /// Window height and width.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding on every side: −∞ for max pooling, zeros for average pooling.
    pub padding: usize,
    /// Let the last window hang over the right/bottom edge instead of dropping it.
    pub ceil_mode: bool,
    /// Average pooling only: divide by the window size including padding (`true`) or by the
    /// number of real pixels under the window (`false`).
    pub count_include_pad: bool,
}

impl Pool2dParams {
    /// A `kernel × kernel` window moved by `stride`, no padding, floor mode, padding counted.
    pub fn new(kernel: usize, stride: usize) -> Self {
        Self {
            kernel,
            stride,
            padding: 0,
            ceil_mode: false,
            count_include_pad: true,
        }
    }

    /// The same window with `padding` on every side.
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }

    /// The same window in ceil mode.
    pub fn ceil_mode(self, ceil_mode: bool) -> Self {
        Self { ceil_mode, ..self }
    }

    /// The same window with `count_include_pad` set.
    pub fn count_include_pad(self, count_include_pad: bool) -> Self {
        Self {
            count_include_pad,
            ..self
        }
    }

    /// Output height and width on an `h × w` input, or a clear error if the window does not
    /// fit.
    pub(crate) fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let g = self.geometry(h, w)?;
        Ok((g.oh, g.ow))
    }

    pub(crate) fn geometry(&self, h: usize, w: usize) -> Result<PoolGeometry> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            candle_core::bail!(
                "pool2d: kernel {} stride {} padding {} (padding may be at most half the kernel)",
                self.kernel,
                self.stride,
                self.padding
            );
        }
        let size = |len| {
            pool_output_size(
                len,
                self.kernel,
                self.stride,
                self.padding,
                1,
                self.ceil_mode,
            )
        };
        match (size(h), size(w)) {
            (Some(oh), Some(ow)) => Ok(PoolGeometry {
                p: *self,
                h,
                w,
                oh,
                ow,
            }),
            _ => candle_core::bail!(
                "pool2d: a {0}x{0} window with padding {1} does not fit a {h}x{w} input",
                self.kernel,
                self.padding
            ),
        }
    }
}

/// A pooling window placed over an input of known size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolGeometry {
    pub p: Pool2dParams,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

/// The rows or columns under one window, clipped to the input, and the window's length
/// clipped to the padded input (the average's divisor when padding counts).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub padded_len: usize,
}

impl PoolGeometry {
    pub(crate) fn span(&self, o: usize, len: usize) -> Span {
        let start = (o * self.p.stride) as isize - self.p.padding as isize;
        let padded_end = (start + self.p.kernel as isize).min((len + self.p.padding) as isize);
        let end = padded_end.min(len as isize);
        Span {
            start: start.max(0) as usize,
            end: end.max(0) as usize,
            padded_len: (padded_end - start) as usize,
        }
    }

    pub(crate) fn divisor(&self, ys: Span, xs: Span) -> usize {
        if self.p.count_include_pad {
            ys.padded_len * xs.padded_len
        } else {
            (ys.end - ys.start) * (xs.end - xs.start)
        }
    }

    pub(crate) fn out_plane(&self) -> usize {
        self.oh * self.ow
    }

    pub(crate) fn in_plane(&self) -> usize {
        self.h * self.w
    }
}

/// Output length of a sliding window over `input` positions, with PyTorch's rule.
///
/// `padding` is added on both sides. With `ceil_mode` the last window may start in the
/// padding on the right, but never entirely inside it (the `(out - 1) * stride >= input +
/// padding` correction of `torch.nn.functional.max_pool2d`).
pub fn pool_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = input + 2 * padding;
    if padded < span || stride == 0 {
        return None;
    }
    let room = padded - span;
    let mut out = if ceil_mode {
        room.div_ceil(stride) + 1
    } else {
        room / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= input + padding {
        out -= 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::pool_output_size;

    #[test]
    fn matches_pytorch_formula() {
        // ResNet stem max-pool 3x3/2 pad 1 on 112 and on an odd 97.
        assert_eq!(pool_output_size(112, 3, 2, 1, 1, false), Some(56));
        assert_eq!(pool_output_size(97, 3, 2, 1, 1, false), Some(49));
        // ResNet-D shortcut 2x2/2 ceil_mode on odd sizes keeps the last, half-empty window.
        assert_eq!(pool_output_size(7, 2, 2, 0, 1, true), Some(4));
        assert_eq!(pool_output_size(7, 2, 2, 0, 1, false), Some(3));
        assert_eq!(pool_output_size(8, 2, 2, 0, 1, true), Some(4));
        // The correction: a window that would start inside the right padding is dropped.
        assert_eq!(pool_output_size(5, 2, 2, 1, 1, true), Some(3));
        // Dilated 3x3 conv, padding 2, keeps the size.
        assert_eq!(pool_output_size(28, 3, 1, 2, 2, false), Some(28));
        assert_eq!(pool_output_size(1, 3, 1, 0, 1, false), None);
    }
}
