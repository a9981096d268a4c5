//! The custom ops of this crate composed from Candle's own tensor ops: what runs on devices
//! other than the CPU (CUDA with `--features cuda`), where the custom kernels have no
//! implementation. Each is checked against its CPU kernel, on the CPU, in the tests below.

use candle_core::{Result, Tensor};

use crate::epilogue::Activation;
use crate::geometry::{Conv2dParams, Pool2dParams};

/// `x: (N, C, H, W)` padded by `pad_h` rows above and below and `pad_w` columns left and
/// right with `inner`, then cut or extended (with `outer`) at the bottom and right to
/// `(height, width)`.
fn padded(
    x: &Tensor,
    (pad_h, pad_w): (usize, usize),
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
    for (dim, pad) in [(2, pad_h), (3, pad_w)] {
        if pad > 0 {
            let edge = fill(&x, dim, pad, inner)?;
            x = Tensor::cat(&[&edge, &x, &edge], dim)?;
        }
    }
    for (dim, target) in [(2, height), (3, width)] {
        let len = x.dim(dim)?;
        x = match target.cmp(&len) {
            std::cmp::Ordering::Greater => {
                Tensor::cat(&[&x, &fill(&x, dim, target - len, outer)?], dim)?
            }
            std::cmp::Ordering::Less => x.narrow(dim, 0, target)?,
            std::cmp::Ordering::Equal => x,
        };
    }
    Ok(x)
}

/// The windows of a 2-D sliding operation: `out` positions per axis, `stride`, and the
/// spacing of the taps, `dilation`.
#[derive(Debug, Clone, Copy)]
struct Taps {
    out: (usize, usize),
    kernel: (usize, usize),
    stride: usize,
    dilation: usize,
}

impl Taps {
    /// Rows and columns the windows reach on the padded input: `(o − 1)·stride +
    /// (k − 1)·dilation + 1` per axis.
    fn reach(&self) -> (usize, usize) {
        let span = |o: usize, k: usize| (o - 1) * self.stride + (k - 1) * self.dilation + 1;
        (
            span(self.out.0, self.kernel.0),
            span(self.out.1, self.kernel.1),
        )
    }

    /// [`Taps::reach`] plus `stride − 1` of slack, so that every [`Taps::tap`] is a whole
    /// number of strides long.
    fn extent(&self) -> (usize, usize) {
        let (h, w) = self.reach();
        (h + self.stride - 1, w + self.stride - 1)
    }

    /// Tap `(i, j)` of every window, `(N, C, OH, OW)`: element `(oy, ox)` is
    /// `xp[oy·stride + i·dilation, ox·stride + j·dilation]` of the input padded to
    /// [`Taps::extent`]. Narrow and reshape only, so gradients flow back through it.
    fn tap(&self, xp: &Tensor, (i, j): (usize, usize)) -> Result<Tensor> {
        let mut x = xp.clone();
        for (dim, offset, out) in [(2, i, self.out.0), (3, j, self.out.1)] {
            x = x.narrow(dim, offset * self.dilation, out * self.stride)?;
            if self.stride > 1 {
                let mut split = x.dims().to_vec();
                split[dim] = out;
                split.insert(dim + 1, self.stride);
                x = x.reshape(split)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?;
            }
        }
        Ok(x)
    }

    /// Every tap, row by row.
    fn all(&self, xp: &Tensor) -> Result<Vec<Tensor>> {
        (0..self.kernel.0)
            .flat_map(|i| (0..self.kernel.1).map(move |j| (i, j)))
            .map(|ij| self.tap(xp, ij))
            .collect()
    }
}

/// The taps of pooling `p` over an `h × w` input.
fn pool_taps(p: &Pool2dParams, h: usize, w: usize) -> Result<Taps> {
    Ok(Taps {
        out: p.output_size(h, w)?,
        kernel: (p.kernel, p.kernel),
        stride: p.stride,
        dilation: 1,
    })
}

/// [`crate::max_pool2d`]: the maximum over the window's taps of the input padded with −∞
/// (Candle's own max pooling has no backward when windows overlap; it serves inference).
pub(crate) fn max_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let taps = pool_taps(&p, h, w)?;
    let pad = (p.padding, p.padding);
    if !x.track_op() {
        // Nothing needs a gradient: Candle's own kernel, one pass, on the padded input.
        let xp = padded(x, pad, taps.reach(), f64::NEG_INFINITY, f64::NEG_INFINITY)?;
        return xp.max_pool2d_with_stride(p.kernel, p.stride);
    }
    let xp = padded(x, pad, taps.extent(), f64::NEG_INFINITY, f64::NEG_INFINITY)?;
    let mut taps = taps.all(&xp)?.into_iter();
    let first = taps.next().expect("a window has at least one tap");
    taps.try_fold(first, |acc, t| acc.maximum(&t))
}

/// [`crate::avg_pool2d`]: the sum of the window's taps of the zero-padded input divided by
/// the same sums over a mask that is one on the pixels that count (the input, and the
/// explicit padding when `count_include_pad`; never the ceil mode's overhang).
pub(crate) fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let taps = pool_taps(&p, h, w)?;
    let pad = (p.padding, p.padding);
    let window_sums = |x: &Tensor, inner: f64| -> Result<Tensor> {
        let xp = padded(x, pad, taps.extent(), inner, 0.0)?;
        let mut taps = taps.all(&xp)?.into_iter();
        let first = taps.next().expect("a window has at least one tap");
        taps.try_fold(first, |acc, t| acc + t)
    };
    let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
    let counted = if p.count_include_pad { 1.0 } else { 0.0 };
    window_sums(x, 0.0)?.broadcast_div(&window_sums(&ones, counted)?)
}

/// [`crate::conv2d`]: the input padded explicitly and cut to exactly the rows and columns
/// the windows reach, then Candle's unpadded convolution (Candle's padded one when nothing
/// needs a gradient); a depthwise convolution as the sum of its taps, each scaled by its
/// channel's weight. Candle's own backward assumes that the input's height and width leave
/// the same remainder after the last window; cut to the windows' reach, both leave none.
pub(crate) fn conv2d(x: &Tensor, weight: &Tensor, p: Conv2dParams) -> Result<Tensor> {
    let (_, c_in, h, w) = x.dims4()?;
    let (c_out, c_in_group, kh, kw) = weight.dims4()?;
    let (ph, pw) = p.pads();
    let Some(out) = p.output_size(h, w, kh, kw) else {
        candle_core::bail!("conv2d: a {kh}x{kw} kernel does not fit a {h}x{w} input");
    };
    let taps = Taps {
        out,
        kernel: (kh, kw),
        stride: p.stride,
        dilation: p.dilation,
    };
    if p.groups == c_in && c_out == c_in && c_in_group == 1 {
        let xp = padded(x, (ph, pw), taps.extent(), 0.0, 0.0)?;
        let mut y: Option<Tensor> = None;
        for (n, tap) in taps.all(&xp)?.into_iter().enumerate() {
            let (i, j) = (n / kw, n % kw);
            let scale = weight
                .narrow(2, i, 1)?
                .narrow(3, j, 1)?
                .reshape((1, c_in, 1, 1))?;
            let term = tap.broadcast_mul(&scale)?;
            y = Some(match y {
                Some(y) => (y + term)?,
                None => term,
            });
        }
        return Ok(y.expect("a window has at least one tap"));
    }
    if ph == pw && !x.track_op() && !weight.track_op() {
        // Nothing needs a gradient: Candle pads inside its kernel.
        return x.conv2d(weight, ph, p.stride, p.dilation, p.groups);
    }
    padded(x, (ph, pw), taps.reach(), 0.0, 0.0)?.conv2d(weight, 0, p.stride, p.dilation, p.groups)
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

    /// `f` and `g` agree in value, on plain tensors (inference) and on variables, and in the
    /// gradient of a random weighting of their output with respect to every input.
    fn same_values_and_gradients(
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
        g: impl Fn(&[Tensor]) -> Result<Tensor>,
        tol: f64,
    ) -> Result<()> {
        assert_close(&f(inputs)?, &g(inputs)?, tol);
        let vars = inputs
            .iter()
            .map(Var::from_tensor)
            .collect::<Result<Vec<_>>>()?;
        let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (f(&tensors)?, g(&tensors)?);
        assert_close(&a, &b, tol);
        let weights = uniform(b.dims(), 99, &Device::Cpu)?;
        let grads_a = (&a * &weights)?.sum_all()?.backward()?;
        let grads_b = (&b * &weights)?.sum_all()?.backward()?;
        for v in &vars {
            assert_close(
                grads_a.get(v).expect("grad"),
                grads_b.get(v).expect("grad"),
                tol,
            );
        }
        Ok(())
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
                let x = [input(&[2, 3, h, w], 10 + case as u64)];
                same_values_and_gradients(
                    &x,
                    |t| max_pool2d(&t[0], p),
                    |t| crate::max_pool2d(&t[0], p),
                    0.0,
                )?;
                same_values_and_gradients(
                    &x,
                    |t| avg_pool2d(&t[0], p),
                    |t| crate::avg_pool2d(&t[0], p),
                    1e-6,
                )?;
            }
        }
        Ok(())
    }

    /// Plain, strided, dilated, asymmetric (padding and input sides with different
    /// remainders after the last window, where Candle's own backward breaks), 7×7, 1×1
    /// and depthwise convolutions.
    #[test]
    fn convolution_matches_the_cpu_kernels() -> Result<()> {
        let conv = |c: (usize, usize), k: (usize, usize), stride, padding, dilation, groups| {
            let p = Conv2dParams {
                stride,
                padding,
                dilation,
                groups,
                ..Default::default()
            };
            (c, k, p)
        };
        let mut cases = vec![
            conv((3, 4), (3, 3), 1, 1, 1, 1),
            conv((3, 4), (3, 3), 2, 1, 1, 1),
            conv((4, 2), (3, 3), 1, 2, 2, 1),
            conv((3, 5), (7, 7), 2, 3, 1, 1),
            conv((6, 4), (1, 1), 1, 0, 1, 1),
            conv((4, 4), (1, 1), 2, 0, 1, 1),
            conv((4, 6), (3, 3), 1, 1, 1, 2),
            conv((5, 5), (3, 3), 1, 1, 1, 5),
            conv((5, 5), (3, 3), 2, 1, 1, 5),
            conv((4, 4), (5, 5), 2, 2, 1, 4),
        ];
        let mut wide = conv((3, 4), (1, 7), 1, 0, 1, 1);
        wide.2.padding_w = Some(3);
        cases.push(wide);
        for (case, ((c_in, c_out), (kh, kw), p)) in cases.into_iter().enumerate() {
            for (h, w) in [(9, 10), (8, 11), (12, 12)] {
                let seed = 100 + 10 * case as u64;
                let x = input(&[2, c_in, h, w], seed);
                let wt = input(&[c_out, c_in / p.groups, kh, kw], seed + 1);
                same_values_and_gradients(
                    &[x, wt],
                    |t| conv2d(&t[0], &t[1], p),
                    |t| crate::conv2d(&t[0], &t[1], p),
                    1e-5,
                )?;
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
