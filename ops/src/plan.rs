//! The one place that decides which kernel runs, as PyTorch's `select_conv_backend` does:
//! [`conv`] looks at a convolution's geometry, dtype, device, layout and whether a gradient
//! is needed, once, and returns a [`ConvKernel`]; the op layer ([`crate::conv2d`], the
//! blocked [`crate::blocked::BlockedConv`]) runs it, and every kernel is a leaf that does
//! not choose again. [`conv_layout`] decides which activation layout a layer runs in, and
//! [`pool`] and [`batch_norm`] route the other op families.
//!
//! Every threshold is a named constant below, with the reason and the measurement behind
//! it (`docs/performance.md` has the runs). `tricks bench --conv …` prints the plan of the
//! convolution it times, and the zoo's kernel-table test lists the kernel of every layer of
//! ResNet-50-D and MobileNet v1.

use std::fmt;

use candle_core::{DType, Device};

use crate::geometry::ConvGeometry;

/// Where a kernel would run: the device, and what the CPU can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The tensors are in CPU memory (else composed Candle ops run, e.g. on CUDA).
    pub cpu: bool,
    /// The CPU has AVX-512F (the direct, padded and blocked kernels need it).
    pub avx512f: bool,
}

impl Target {
    /// The target of tensors on `device`, with this machine's CPU features.
    pub fn of(device: &Device) -> Self {
        Self {
            cpu: device.is_cpu(),
            avx512f: cpu_has_avx512f(),
        }
    }
}

/// Whether this machine's CPU has AVX-512F (detected at run time).
pub fn cpu_has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// How activations are stored between layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `(N, C, H, W)`, every op's default.
    Nchw,
    /// `(N, C/16, H, W, 16)`, the blocked inference layout of [`crate::blocked`].
    Blocked,
}

/// The kernel a convolution runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKernel {
    /// Candle's own ops composed (`kernels::composed`): off the CPU, with exact gradients.
    Composed,
    /// The direct depthwise kernel (`kernels::depthwise`), both gradients.
    Depthwise,
    /// Winograd's F(2×2, 3×3) in NCHW (`kernels::winograd`): forward and both gradients.
    Winograd,
    /// A dilated 3×3 convolution as [`ConvKernel::Winograd`] over its input's `d²`
    /// interleaved sub-grids ([`dilated_sub_grids`]), moved into the batch and back.
    WinogradDilated,
    /// The direct AVX-512 kernel reading padded rows in place (`kernels::conv_padded`):
    /// f32 forward of stride-1 convolutions on wide maps.
    Padded,
    /// im2col + one GEMM per image or panel (`kernels::conv_gemm`): anything on the CPU.
    Gemm,
    /// The blocked direct kernel (`blocked::kernel`): any window, stride and dilation.
    BlockedDirect,
    /// The blocked Winograd F(2×2, 3×3) (`blocked::winograd`).
    BlockedWinograd,
    /// The blocked depthwise kernel (`blocked::depthwise`).
    BlockedDepthwise,
}

impl fmt::Display for ConvKernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConvKernel::Composed => "composed",
            ConvKernel::Depthwise => "depthwise",
            ConvKernel::Winograd => "winograd",
            ConvKernel::WinogradDilated => "winograd-dilated",
            ConvKernel::Padded => "padded",
            ConvKernel::Gemm => "gemm",
            ConvKernel::BlockedDirect => "blocked-direct",
            ConvKernel::BlockedWinograd => "blocked-winograd",
            ConvKernel::BlockedDepthwise => "blocked-depthwise",
        })
    }
}

/// What [`conv`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct ConvQuery {
    /// Shapes, window and groups.
    pub geometry: ConvGeometry,
    /// The tensors' dtype.
    pub dtype: DType,
    /// Where it runs.
    pub target: Target,
    /// Whether a gradient flows through (to the input or the weight).
    pub needs_grad: bool,
    /// Whether a residual is added in the epilogue.
    pub residual: bool,
    /// The input's layout.
    pub layout: Layout,
}

/// What runs: the kernel, the dtype it computes in, and whether the inference epilogue
/// (bias, residual, activation) is applied inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPlan {
    /// The kernel.
    pub kernel: ConvKernel,
    /// The dtype it computes in (bf16 on the CPU: f32, rounded back after).
    pub compute: DType,
    /// The epilogue runs in the kernel, on each output while in cache; otherwise it is
    /// Candle's ops after the convolution (with their gradients).
    pub fused_epilogue: bool,
}

/// NCHW Winograd needs this many input and output channels: its transforms cost per value
/// what the GEMMs cost per value and channel, so with fewer (ResNet-D's 32-channel stem) they
/// outweigh the saved multiplications. Measured (docs/performance.md, 2026-11-30 s6, per
/// layer, batch 16): 64→64 at 56 24.5 → 16.9 ms, 128→128 at 28 23.8 → 15.4 ms; the
/// 32-channel stem no faster.
pub const WINOGRAD_MIN_CHANNELS: usize = 64;
/// …and an output at least this wide: on 7×7 maps a row's spare tile slot is a quarter of
/// the GEMM (s6: 512→512 at 7 28 → 32 ms, slower; 256→256 at 14 22.5 → 16.0 ms).
pub const WINOGRAD_MIN_WIDTH: usize = 14;
/// The padded direct kernel (stride 1, f32, AVX-512F) needs maps at least this wide:
/// narrower maps would drop too many padded columns of its 48-position register tile, and
/// pointwise or strided convolutions have no shifted rows to read in place (s4: 32→32 at
/// 112 44–51 → 30–32 ms, 64→64 at 56 28–30 → 27–28 ms, 128→128 at 28 equal).
pub const PADDED_MIN_WIDTH: usize = 28;
/// Blocked Winograd needs this many input and output channels; blocked transforms are
/// cheaper than NCHW's, so it pays below 64 (s9, per layer, batch 16, against the blocked
/// direct kernel: 32→32 at 112 14.7–15.8 → 10.8–11.0 ms, 64→64 at 56 11.2–12.3 → 7.1–9.3).
pub const BLOCKED_WINOGRAD_MIN_CHANNELS: usize = 32;
/// …on maps at least this high and wide (s9: 512→512 at 7 12.7–13.2 → 9.1–9.9 ms, still a
/// gain at ResNet's smallest stage; smaller maps were not measured and stay direct).
pub const BLOCKED_WINOGRAD_MIN_MAP: usize = 7;
/// In the blocked layout a convolution of the image itself (fewer input channels than a
/// block, 3 for RGB) stays in NCHW: in NCHW16c its 3 channels would fill 3 of 16 lanes
/// (s9: the stem's first convolution in NCHW, converted once after it).
pub const BLOCKED_MIN_IN_CHANNELS: usize = crate::geometry::BLOCK;

/// Whether `g` is a depthwise convolution (one group per channel, as many outputs).
pub fn is_depthwise(g: &ConvGeometry) -> bool {
    g.groups > 1 && g.groups == g.c_in && g.c_out == g.c_in
}

/// Whether Winograd's F(2×2, 3×3) can compute `g` at all: one group, a 3×3 window, stride
/// 1, no dilation and at most 2 pixels of padding (so that the input gradient is one too);
/// the kernel's own rule.
pub fn winograd_applies(g: &ConvGeometry) -> bool {
    crate::kernels::winograd::applies(g)
}

/// Whether the padded direct kernel can compute `g` (given AVX-512F): one group, stride
/// 1, a window wider than one pixel.
fn padded_applies(g: &ConvGeometry) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::kernels::conv_padded::applies(g)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = g;
        false
    }
}

/// Whether NCHW Winograd is the faster kernel for `g` in `dtype`: it applies, the
/// thresholds above hold, and the dtype is f32 or f64 (its transforms add and subtract up
/// to 16 values, too coarse for f16).
fn winograd_pays(g: &ConvGeometry, dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
        && winograd_applies(g)
        && g.c_in >= WINOGRAD_MIN_CHANNELS
        && g.c_out >= WINOGRAD_MIN_CHANNELS
        && g.win.ow >= WINOGRAD_MIN_WIDTH
}

/// Dilated convolutions whose sub-grids are this wide take [`ConvKernel::WinogradDilated`]:
/// the sub-grids of ResNet's dilated stages 3 and 4 at output stride 8 are 8 to 16 wide
/// (a 32×32 map: 16×16 at dilation 2, 8×8 at 4), narrower than [`WINOGRAD_MIN_WIDTH`], yet
/// Winograd there beats the full map's padded and im2col kernels. Measured
/// (docs/performance.md, session 17, forward and both gradients, batch 2 at 32×32):
/// 512 → 512 at dilation 4 190–210 → 145–165 ms, 256 → 256 at dilation 2 46–52 → 35–40 ms.
pub const DILATED_WINOGRAD_MIN_WIDTH: usize = 8;

/// The dilation `d` of `g` when it is a "same" dilated 3×3 convolution (stride 1, padding
/// `d`, one group) over a map whose sides `d` divides: then output phase `(i mod d, j mod
/// d)` reads input phase `(i mod d, j mod d)` alone, and the convolution is an undilated
/// one with padding 1 over each of the `d²` sub-grids `x[.., py::d, px::d]`.
pub fn dilated_sub_grids(g: &ConvGeometry) -> Option<usize> {
    let w = &g.win;
    let d = w.dilation;
    (d > 1
        && g.groups == 1
        && (w.kh, w.kw, w.stride, w.pad_h, w.pad_w) == (3, 3, 1, d, d)
        && w.h.is_multiple_of(d)
        && w.w.is_multiple_of(d))
    .then_some(d)
}

/// Whether [`ConvKernel::WinogradDilated`] is the faster kernel for `g` in `dtype`.
fn dilated_winograd_pays(g: &ConvGeometry, dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F64)
        && dilated_sub_grids(g).is_some_and(|d| g.win.w / d >= DILATED_WINOGRAD_MIN_WIDTH)
        && g.c_in >= WINOGRAD_MIN_CHANNELS
        && g.c_out >= WINOGRAD_MIN_CHANNELS
}

/// Whether a blocked convolution with this weight keeps Winograd-transformed filters: a
/// 3×3, stride-1, padding-1, undilated, ungrouped convolution with at least
/// [`BLOCKED_WINOGRAD_MIN_CHANNELS`] each way. (Whether they are used depends on the map:
/// [`conv`].)
pub fn blocked_winograd_filters(g: &ConvGeometry) -> bool {
    let w = &g.win;
    g.groups == 1
        && (w.kh, w.kw, w.stride, w.dilation, w.pad_h, w.pad_w) == (3, 3, 1, 1, 1, 1)
        && g.c_in.min(g.c_out) >= BLOCKED_WINOGRAD_MIN_CHANNELS
        && cfg!(target_arch = "x86_64")
}

/// The kernel for `q` (see the module doc).
pub fn conv(q: &ConvQuery) -> ConvPlan {
    let g = &q.geometry;
    let plan = |kernel, fused_epilogue| ConvPlan {
        kernel,
        compute: q.dtype,
        fused_epilogue,
    };
    if !q.target.cpu {
        return plan(ConvKernel::Composed, false);
    }
    if q.layout == Layout::Blocked {
        let kernel = if is_depthwise(g) {
            ConvKernel::BlockedDepthwise
        } else if blocked_winograd_filters(g) && g.win.h.min(g.win.w) >= BLOCKED_WINOGRAD_MIN_MAP {
            ConvKernel::BlockedWinograd
        } else {
            ConvKernel::BlockedDirect
        };
        return ConvPlan {
            kernel,
            compute: DType::F32,
            fused_epilogue: true,
        };
    }
    if is_depthwise(g) {
        // The depthwise kernel runs every float type; its fused form takes no residual.
        let fused = !q.needs_grad && !q.residual;
        let compute = if fused || q.dtype != DType::BF16 {
            q.dtype
        } else {
            DType::F32
        };
        return ConvPlan {
            kernel: ConvKernel::Depthwise,
            compute,
            fused_epilogue: fused,
        };
    }
    // bf16 has no GEMM kernel: computed in f32 and rounded back.
    let compute = if q.dtype == DType::BF16 {
        DType::F32
    } else {
        q.dtype
    };
    let fusable = !q.needs_grad && matches!(compute, DType::F32 | DType::F64 | DType::F16);
    let kernel = if winograd_pays(g, compute) {
        ConvKernel::Winograd
    } else if dilated_winograd_pays(g, compute) {
        ConvKernel::WinogradDilated
    } else if compute == DType::F32
        && q.target.avx512f
        && padded_applies(g)
        && g.win.ow >= PADDED_MIN_WIDTH
    {
        ConvKernel::Padded
    } else {
        ConvKernel::Gemm
    };
    ConvPlan {
        kernel,
        compute,
        // The sub-grids' convolution is a plain one; its epilogue runs after it.
        fused_epilogue: fusable && q.dtype == compute && kernel != ConvKernel::WinogradDilated,
    }
}

/// The kernel of both gradients (input and weight) of a CPU NCHW convolution whose forward
/// runs on `forward`: Winograd after Winograd (the input gradient is again a 3×3 stride-1
/// convolution, the weight gradient 16 GEMMs over the same tiles), else the GEMM.
pub fn conv_gradients(forward: ConvKernel) -> ConvKernel {
    match forward {
        ConvKernel::Winograd | ConvKernel::WinogradDilated => ConvKernel::Winograd,
        _ => ConvKernel::Gemm,
    }
}

/// The layout a convolution runs in: blocked for inference (no gradient) in f32 on a CPU
/// with AVX-512F when its weights are read-only (packed once, a network built by
/// `Model::frozen`), except a convolution of the image itself
/// ([`BLOCKED_MIN_IN_CHANNELS`]) while the input is still in NCHW.
pub fn conv_layout(
    dtype: DType,
    target: Target,
    needs_grad: bool,
    read_only: bool,
    c_in: usize,
    input: Layout,
) -> Layout {
    let blocked_capable = target.cpu && target.avx512f && dtype == DType::F32;
    if !blocked_capable || needs_grad || !read_only {
        return Layout::Nchw;
    }
    if input == Layout::Nchw && c_in < BLOCKED_MIN_IN_CHANNELS {
        return Layout::Nchw;
    }
    Layout::Blocked
}

/// The kernel family of pooling and batch norm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKernel {
    /// The CPU kernel, with its closed-form backward.
    Cpu,
    /// Candle's ops composed (off the CPU).
    Composed,
}

/// The kernel of max and average pooling on `target`.
pub fn pool(target: Target) -> OpKernel {
    if target.cpu {
        OpKernel::Cpu
    } else {
        OpKernel::Composed
    }
}

/// The kernel of batch norm in training on `target`.
pub fn batch_norm(target: Target) -> OpKernel {
    pool(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Window;

    fn geometry(c_in: usize, c_out: usize, k: usize, stride: usize, size: usize) -> ConvGeometry {
        let pad = k / 2;
        let out = (size + 2 * pad - k) / stride + 1;
        ConvGeometry {
            win: Window {
                kh: k,
                kw: k,
                stride,
                pad_h: pad,
                pad_w: pad,
                dilation: 1,
                h: size,
                w: size,
                oh: out,
                ow: out,
            },
            n: 8,
            c_in,
            c_out,
            groups: 1,
        }
    }

    fn query(g: ConvGeometry, needs_grad: bool, layout: Layout) -> ConvQuery {
        ConvQuery {
            geometry: g,
            dtype: DType::F32,
            target: Target {
                cpu: true,
                avx512f: true,
            },
            needs_grad,
            residual: false,
            layout,
        }
    }

    #[test]
    fn thresholds_decide_at_their_boundaries() {
        let k = |g, grad| conv(&query(g, grad, Layout::Nchw)).kernel;
        assert_eq!(k(geometry(64, 64, 3, 1, 14), false), ConvKernel::Winograd);
        assert_eq!(k(geometry(32, 64, 3, 1, 56), false), ConvKernel::Padded);
        assert_eq!(k(geometry(64, 64, 3, 1, 7), false), ConvKernel::Gemm);
        assert_eq!(k(geometry(64, 64, 3, 2, 56), false), ConvKernel::Gemm);
        assert_eq!(k(geometry(64, 256, 1, 1, 56), false), ConvKernel::Gemm);
        let b = |g| conv(&query(g, false, Layout::Blocked)).kernel;
        assert_eq!(b(geometry(32, 32, 3, 1, 7)), ConvKernel::BlockedWinograd);
        assert_eq!(b(geometry(16, 32, 3, 1, 56)), ConvKernel::BlockedDirect);
        assert_eq!(b(geometry(32, 32, 3, 1, 6)), ConvKernel::BlockedDirect);
    }

    #[test]
    fn dtype_and_device_change_the_plan() {
        let mut q = query(geometry(64, 64, 3, 1, 28), false, Layout::Nchw);
        q.dtype = DType::F16;
        assert_eq!(conv(&q).kernel, ConvKernel::Gemm, "no Winograd in f16");
        q.dtype = DType::BF16;
        let p = conv(&q);
        assert_eq!((p.compute, p.fused_epilogue), (DType::F32, false));
        q.target.cpu = false;
        assert_eq!(conv(&q).kernel, ConvKernel::Composed);
        let mut q = query(geometry(64, 64, 3, 1, 28), true, Layout::Nchw);
        assert!(!conv(&q).fused_epilogue, "training composes the epilogue");
        q.target.avx512f = false;
        q.needs_grad = false;
        assert_eq!(conv(&q).kernel, ConvKernel::Winograd);
    }

    #[test]
    fn the_image_convolution_stays_nchw_in_the_blocked_layout() {
        let t = Target {
            cpu: true,
            avx512f: true,
        };
        let l = |c_in, input, read_only| conv_layout(DType::F32, t, false, read_only, c_in, input);
        assert_eq!(l(3, Layout::Nchw, true), Layout::Nchw);
        assert_eq!(l(32, Layout::Nchw, true), Layout::Blocked);
        assert_eq!(l(8, Layout::Blocked, true), Layout::Blocked);
        assert_eq!(l(32, Layout::Nchw, false), Layout::Nchw, "variables");
        let no_avx = Target {
            cpu: true,
            avx512f: false,
        };
        assert_eq!(
            conv_layout(DType::F32, no_avx, false, true, 64, Layout::Nchw),
            Layout::Nchw
        );
    }
}
