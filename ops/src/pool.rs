//! Pooling: the entry points, routed by [`crate::plan::pool`] to the CPU kernels (padding,
//! `ceil_mode`, `count_include_pad`, a backward for any kernel and stride) or to Candle's
//! ops composed.

use candle_core::{Result, Tensor, D};

use crate::geometry::Pool2dParams;
use crate::kernels::{composed, pool};
use crate::plan::{self, OpKernel, Target};

/// Max pooling of `x: (N, C, H, W)`; padding is −∞, so it never wins a window.
pub fn max_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    match plan::pool(Target::of(x.device())) {
        OpKernel::Cpu => pool::max_pool2d(x, p),
        OpKernel::Composed => composed::max_pool2d(x, p),
    }
}

/// Average pooling of `x: (N, C, H, W)` (`torch.nn.functional.avg_pool2d`).
pub fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    match plan::pool(Target::of(x.device())) {
        OpKernel::Cpu => pool::avg_pool2d(x, p),
        OpKernel::Composed => composed::avg_pool2d(x, p),
    }
}

/// Global average pooling: `(N, C, H, W)` to `(N, C)`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h * w))?.mean(D::Minus1)
}
