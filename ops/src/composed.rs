//! The custom ops of this crate composed from Candle's own tensor ops: what runs on devices
//! other than the CPU (CUDA with `--features cuda`), where the custom kernels have no
//! implementation. Each is checked against its CPU kernel, on the CPU, in the tests below.

use candle_core::{Result, Tensor};

use crate::epilogue::Activation;
use crate::pool::Pool2dParams;

/// `x: (N, C, H, W)` padded by `pad` on every side with `inner`, then cut or extended (with
/// `outer`) at the bottom and right to `(height, width)`.
fn padded(
    x: &Tensor,
    pad: usize,
    (height, width): (usize, usize),
    inner: f64,
    outer: f64,
) -> Result<Tensor> {
    let fill = |x: &Tensor, dim: usize, len: usize, value: f64| -> Result<Tensor> {
        let mut shape = x.dims().to_vec();
        shape[dim] = len;
        Tensor::ones(shape, x.dtype(), x.device())?.affine(0.0, value)
    };
    let mut x = x.clone();
    // All of the explicit padding first, so that the overhang's corners get `outer`.
    for dim in [2, 3] {
        if pad > 0 {
            let edge = fill(&x, dim, pad, inner)?;
            x = Tensor::cat(&[&edge, &x, &edge], dim)?;
        }
    }
    for (dim, target) in [(2, height), (3, width)] {
        let len = x.dim(dim)?;
        x = if target > len {
            Tensor::cat(&[&x, &fill(&x, dim, target - len, outer)?], dim)?
        } else {
            x.narrow(dim, 0, target)?
        };
    }
    Ok(x)
}

/// The padded extent `(oh − 1)·stride + kernel` that the windows of `p` reach on an
/// `h × w` input: padding after the input, and the ceil mode's overhang, included.
fn reach(p: &Pool2dParams, h: usize, w: usize) -> Result<((usize, usize), (usize, usize))> {
    let (oh, ow) = p.output_size(h, w)?;
    let span = |o: usize| (o - 1) * p.stride + p.kernel;
    Ok(((span(oh), span(ow)), (oh, ow)))
}

/// [`crate::max_pool2d`]: the input padded with −∞ to the windows' reach, then Candle's
/// unpadded max pooling.
pub(crate) fn max_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (size, _) = reach(&p, h, w)?;
    let x = padded(x, p.padding, size, f64::NEG_INFINITY, f64::NEG_INFINITY)?;
    x.max_pool2d_with_stride(p.kernel, p.stride)
}

/// [`crate::avg_pool2d`]: window sums of the zero-padded input divided by the window sums of
/// a mask that is one on the pixels that count (the input, and the explicit padding when
/// `count_include_pad`; never the ceil mode's overhang).
pub(crate) fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (size, _) = reach(&p, h, w)?;
    let sums = padded(x, p.padding, size, 0.0, 0.0)?.avg_pool2d_with_stride(p.kernel, p.stride)?;
    let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
    let counted = if p.count_include_pad { 1.0 } else { 0.0 };
    let counts =
        padded(&ones, p.padding, size, counted, 0.0)?.avg_pool2d_with_stride(p.kernel, p.stride)?;
    sums.broadcast_div(&counts)
}

/// [`crate::batch_norm_train_act`]: the batch's mean and biased variance per channel, the
/// normalisation, the residual and the activation as separate tensor ops.
pub(crate) fn batch_norm_train_act(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    residual: Option<&Tensor>,
    act: Activation,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (_, c, _, _) = x.dims4()?;
    let per_channel =
        |t: &Tensor| -> Result<Tensor> { t.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3) };
    let mean = per_channel(x)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = per_channel(&centred.sqr()?)?;
    let channel = |t: &Tensor| -> Result<Tensor> { t.to_dtype(x.dtype())?.reshape((1, c, 1, 1)) };
    let y = centred
        .broadcast_div(&(var.clone() + eps)?.sqrt()?)?
        .broadcast_mul(&channel(gamma)?)?
        .broadcast_add(&channel(beta)?)?;
    let stats = |t: Tensor| -> Result<Tensor> { t.detach().flatten_all()?.to_dtype(gamma.dtype()) };
    Ok((act.after_residual(&y, residual)?, stats(mean)?, stats(var)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{assert_close, uniform};
    use candle_core::{Device, Var};

    fn input(shape: &[usize], seed: u64) -> Tensor {
        (uniform(shape, seed, &Device::Cpu).unwrap() * 3.0).unwrap()
    }

    #[test]
    fn pooling_matches_the_cpu_kernels() -> Result<()> {
        let windows = [
            Pool2dParams::new(3, 2).padding(1),
            Pool2dParams::new(3, 2).padding(1).ceil_mode(true),
            Pool2dParams::new(2, 2)
                .ceil_mode(true)
                .count_include_pad(false),
            Pool2dParams::new(3, 1).padding(1),
            Pool2dParams::new(3, 1).padding(1).count_include_pad(false),
            Pool2dParams::new(2, 2),
            Pool2dParams::new(3, 3).ceil_mode(true),
        ];
        for (case, p) in windows.into_iter().enumerate() {
            for (h, w) in [(7, 7), (8, 5), (112, 112), (5, 9)] {
                let x = input(&[2, 3, h, w], 10 + case as u64);
                assert_close(&max_pool2d(&x, p)?, &crate::max_pool2d(&x, p)?, 0.0);
                assert_close(&avg_pool2d(&x, p)?, &crate::avg_pool2d(&x, p)?, 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn batch_norm_matches_the_cpu_kernel() -> Result<()> {
        for (case, (residual, act)) in [
            (false, Activation::Identity),
            (true, Activation::Relu),
            (false, Activation::Relu6),
        ]
        .into_iter()
        .enumerate()
        {
            let seed = 40 + 10 * case as u64;
            let x = Var::from_tensor(&input(&[3, 4, 5, 6], seed))?;
            let gamma = Var::from_tensor(&input(&[4], seed + 1))?;
            let beta = Var::from_tensor(&input(&[4], seed + 2))?;
            let r = residual.then(|| input(&[3, 4, 5, 6], seed + 3));
            let (y, mean, var) = batch_norm_train_act(&x, &gamma, &beta, 1e-5, r.as_ref(), act)?;
            let (y_cpu, mean_cpu, var_cpu) =
                crate::batch_norm_train_act(&x, &gamma, &beta, 1e-5, r.as_ref(), act)?;
            assert_close(&y, &y_cpu, 1e-4);
            assert_close(&mean, &mean_cpu, 1e-5);
            assert_close(&var, &var_cpu, 1e-4);
            let dy = input(y.dims(), seed + 4);
            let grads = (&y * &dy)?.sum_all()?.backward()?;
            let grads_cpu = (&y_cpu * &dy)?.sum_all()?.backward()?;
            for v in [&x, &gamma, &beta] {
                assert_close(
                    grads.get(v).expect("grad"),
                    grads_cpu.get(v).expect("grad"),
                    1e-3,
                );
            }
        }
        Ok(())
    }
}
