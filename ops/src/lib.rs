//! Candle custom ops, each with its gradient, that training the paper's CNNs needs and that
//! Candle 0.11 lacks or gets wrong.
//!
//! - [`conv2d`]: 2-D convolution as per-image im2col + GEMM with both gradients as GEMMs,
//!   exact for any input size (Candle's own `conv2d` backward assumes H and W share parity);
//!   3×3 stride-1 convolutions with at least 64 channels take Winograd's F(2×2, 3×3)
//!   (forward and both gradients) on the CPU, and so do dilated ones over their
//!   interleaved sub-grids (ResNet's stages 3 and 4 at output stride 8).
//! - [`conv2d_fused`]: the inference form `act(conv(x) + bias + residual)`, with batch norm's
//!   shift, the shortcut and the [`Activation`] applied to each image's output right after
//!   its GEMM (composed ops, with gradients, whenever something needs one).
//! - [`depthwise_conv2d`]: MobileNet's depthwise convolution as a direct kernel with both
//!   gradients ([`conv2d`] routes depthwise convolutions to it).
//! - [`max_pool2d`] and [`avg_pool2d`]: pooling with padding, `ceil_mode` and
//!   `count_include_pad`, with a backward for any kernel and stride (the 3×3/2 stem max-pool
//!   of ResNet, the 2×2 `ceil_mode` average-pool shortcut of ResNet-D).
//! - [`global_avg_pool`]: the classifier's pooling.
//! - [`boxes`]: RoIAlign with its gradient (Faster R-CNN), IoU and non-maximum suppression.
//! - [`blocked`]: the NCHW16c inference path (direct AVX-512 convolutions on weights packed
//!   once, Winograd F(2×2, 3×3), depthwise convolution, the epilogue in registers, pooling,
//!   layout conversions) that frozen ResNets, MobileNet v1 and Inception-V3 keep from the
//!   stem to the classifier's pooling.
//! - [`batch_norm_train`]: batch norm with batch statistics, its sums in f32 blocks with f64
//!   totals and a closed-form backward (the composed version loses three digits of the
//!   input gradient in f32);
//!   [`batch_norm_train_act`] adds the residual and the activation in the same op.
//! - [`loss::cross_entropy_2d`] (per-pixel, ignore label, fused, vectorised `exp`),
//!   [`resize::resize_bilinear`] (both `align_corners` conventions) and
//!   [`optim::sgd_momentum_step`] (the paper's NAG step, in place).
//!
//! [`plan`] is the one place that decides which kernel runs ([`plan::conv`]: Winograd (also
//! over a dilated convolution's sub-grids), the padded AVX-512 kernel, im2col + GEMM, depthwise, blocked, composed), with every threshold
//! a named constant.
//!
//! Off the CPU (CUDA with `--features cuda`) each op runs as Candle's own ops composed, checked
//! against the CPU kernels on the CPU. Every op is checked against finite differences by
//! [`gradcheck`]. This crate knows nothing
//! about models; it is the layer under `zoo`.

#![warn(missing_docs)]

// The layers of this crate, each importing only those below it (a test checks that no
// module imports one that imports it back):
// - shared types and helpers: `geometry`, `storage`, `epilogue`, `gemm`, `im2col`, `panel`,
//   `strided`, `vmath`;
// - kernels, leaves that never import each other: `kernels::*` and `blocked`'s kernels;
// - `plan`, which decides which kernel runs;
// - the entry points `conv`, `pool`, `norm` (and `blocked`'s `BlockedConv`), which ask the
//   plan and run the kernel, and `loss`, `resize`, `optim`, which have one kernel each.

pub mod blocked;
pub mod boxes;
mod conv;
mod epilogue;
mod gemm;
pub mod geometry;
pub mod gradcheck;
mod im2col;
mod kernels;
pub mod loss;
mod norm;
pub mod optim;
mod panel;
pub mod plan;
mod pool;
pub mod resize;
mod storage;
mod strided;
mod vmath;

pub use conv::{conv2d, conv2d_fused, depthwise_conv2d, matmul};
pub use epilogue::Activation;
pub use geometry::{pool_output_size, Conv2dParams, ConvGeometry, Pool2dParams, Window};
pub use norm::{batch_norm_train, batch_norm_train_act};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};
