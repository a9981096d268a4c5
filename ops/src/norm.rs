//! Batch norm in training: the entry points, routed by [`crate::plan::batch_norm`] to the
//! CPU kernel (sums in f32 blocks with f64 totals, closed-form backward) or to Candle's ops
//! composed.

use candle_core::{Result, Tensor};

use crate::epilogue::Activation;
use crate::kernels::{batch_norm, composed};
use crate::plan::{self, OpKernel, Target};

/// Batch norm of `x: (N, C, H, W)` with the batch's statistics, and those statistics.
///
/// Returns `(y, mean, var)` where `mean` and the biased `var` are per-channel `(C,)` tensors
/// (detached; the caller updates running averages from them). Gradients flow to `x`, `gamma`
/// and `beta`. `gamma` and `beta` may be any float dtype; they are used in f64.
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_act(x, gamma, beta, eps, None, Activation::Identity)
}

/// `act(batch_norm(x) + residual)` in training, as one op with one backward: the unit that
/// ends each convolution of a ResNet or MobileNet. The activation's backward is a single
/// masking pass read off the output, instead of Candle's compare, convert and multiply, and
/// the residual's gradient is that masked gradient itself. Returns `(y, mean, var)` as
/// [`batch_norm_train`] does. On the kernel [`plan::batch_norm`] picks.
pub fn batch_norm_train_act(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    residual: Option<&Tensor>,
    act: Activation,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (n, c, h, w) = x.dims4()?;
    if n * h * w < 2 {
        candle_core::bail!(
            "batch norm in training needs more than one value per channel, got input {:?}",
            x.dims()
        );
    }
    if gamma.dims() != [c] || beta.dims() != [c] {
        candle_core::bail!(
            "batch norm over {c} channels got γ {:?} and β {:?}",
            gamma.dims(),
            beta.dims()
        );
    }
    match plan::batch_norm(Target::of(x.device())) {
        OpKernel::Cpu => batch_norm::batch_norm_train_act(x, gamma, beta, eps, residual, act),
        OpKernel::Composed => composed::batch_norm_train_act(x, gamma, beta, eps, residual, act),
    }
}
