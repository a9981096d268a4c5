//! One step of SGD with momentum and L2 weight decay (the paper's NAG, Section 2.1, and
//! plain momentum SGD) on one parameter, fused into one pass over memory on the CPU.
//!
//! Composed from Candle's ops the step reads and writes whole tensors eight times (a
//! scaled copy, a sum, …, each a new allocation); fused, it reads the weight, the gradient
//! and the velocity once and writes the new weight and velocity once. Both forms do the
//! same floating-point operations in the same order (Candle's `t * s` is `t · s + 0`), so
//! they give the same bits: the parity runs against PyTorch and a resumed run are
//! unchanged by which one runs.

use candle_core::{DType, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::storage::{contiguous, Elem};

/// The settings of one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Momentum μ.
    pub momentum: f64,
    /// L2 weight decay λ (0: none).
    pub weight_decay: f64,
    /// Nesterov's update `w ← w − η·(g + μ·v)`; otherwise `w ← w − η·v`.
    pub nesterov: bool,
    /// The step size η.
    pub lr: f64,
}

/// Elements per parallel task.
const CHUNK: usize = 1 << 16;

/// `(w', v')` after one step from weight `w`, gradient `grad` (same shape and dtype) and
/// velocity `v` (`None` before the first step, taken as 0):
///
/// g = ∇ + λ·w,  v' = μ·v + g,  w' = w − η·(g + μ·v') (Nesterov) or w − η·v'.
///
/// One pass for contiguous f32 or f64 tensors on the CPU; Candle's ops elsewhere.
pub fn sgd_momentum_step(
    w: &Tensor,
    grad: &Tensor,
    v: Option<&Tensor>,
    step: SgdStep,
) -> Result<(Tensor, Tensor)> {
    let fusable = w.device().is_cpu()
        && matches!(w.dtype(), DType::F32 | DType::F64)
        && grad.dtype() == w.dtype()
        && v.is_none_or(|v| v.dtype() == w.dtype() && v.dims() == w.dims())
        && grad.dims() == w.dims();
    if !fusable {
        return composed(w, grad, v, step);
    }
    match w.dtype() {
        DType::F32 => fused::<f32>(w, grad, v, step),
        _ => fused::<f64>(w, grad, v, step),
    }
}

/// The step as Candle's ops (any device and dtype).
fn composed(w: &Tensor, grad: &Tensor, v: Option<&Tensor>, s: SgdStep) -> Result<(Tensor, Tensor)> {
    let g = if s.weight_decay > 0.0 {
        (grad + (w * s.weight_decay)?)?
    } else {
        grad.clone()
    };
    let v = match v {
        Some(v) => ((v * s.momentum)? + &g)?,
        None => g.clone(),
    };
    let update = if s.nesterov {
        (&g + (&v * s.momentum)?)?
    } else {
        v.clone()
    };
    Ok(((w - (update * s.lr)?)?, v))
}

/// The step in one pass over contiguous CPU storage of `T`.
fn fused<T: Elem>(
    w: &Tensor,
    grad: &Tensor,
    v: Option<&Tensor>,
    s: SgdStep,
) -> Result<(Tensor, Tensor)> {
    // The new weight and velocity start as copies; the gradient is read in place.
    let w_all = w.flatten_all()?.to_vec1::<T>()?;
    let v_all = v.map(|v| v.flatten_all()?.to_vec1::<T>()).transpose()?;
    let grad = grad.contiguous()?;
    let (storage, layout) = grad.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("sgd_momentum_step: the gradient is not on the CPU");
    };
    let g_all = contiguous::<T>(cpu, layout, "sgd_momentum_step")?;
    let (mu, wd, lr) = (
        T::from_f64(s.momentum),
        T::from_f64(s.weight_decay),
        T::from_f64(s.lr),
    );
    let zero = T::zero();
    let decay = s.weight_decay > 0.0;
    let mut w_new = w_all;
    let mut v_new = match v_all {
        Some(v) => v,
        None => vec![zero; w_new.len()],
    };
    let first = v.is_none();
    w_new
        .par_chunks_mut(CHUNK)
        .zip(v_new.par_chunks_mut(CHUNK))
        .zip(g_all.par_chunks(CHUNK))
        .for_each(|((w, v), grad)| {
            for ((w, v), &grad) in w.iter_mut().zip(v.iter_mut()).zip(grad) {
                // Each line is the composed form's op, `x · s` being `x · s + 0`.
                let g = if decay { grad + (*w * wd + zero) } else { grad };
                *v = if first { g } else { (*v * mu + zero) + g };
                let update = if s.nesterov { g + (*v * mu + zero) } else { *v };
                *w = *w - (update * lr + zero);
            }
        });
    let (shape, device) = (w.shape(), w.device());
    Ok((
        Tensor::from_vec(w_new, shape, device)?,
        Tensor::from_vec(v_new, shape, device)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::uniform;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u64> {
        let t = t.flatten_all().unwrap();
        match t.dtype() {
            DType::F32 => t
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64)
                .collect(),
            _ => t
                .to_vec1::<f64>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        }
    }

    /// Fused and composed agree to the bit over three steps, for both dtypes, with and
    /// without Nesterov and weight decay, across several parallel chunks.
    #[test]
    fn fused_and_composed_give_the_same_bits() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for (nesterov, weight_decay) in [(true, 1e-4), (false, 1e-4), (true, 0.0)] {
                let step = SgdStep {
                    momentum: 0.9,
                    weight_decay,
                    nesterov,
                    lr: 0.1,
                };
                let w0 = uniform(&[3, CHUNK + 17], 1, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let (mut wf, mut wc) = (w0.clone(), w0);
                let (mut vf, mut vc): (Option<Tensor>, Option<Tensor>) = (None, None);
                for k in 0..3 {
                    let g = uniform(&[3, CHUNK + 17], 10 + k, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    let (w, v) = sgd_momentum_step(&wf, &g, vf.as_ref(), step).unwrap();
                    (wf, vf) = (w, Some(v));
                    let (w, v) = composed(&wc, &g, vc.as_ref(), step).unwrap();
                    (wc, vc) = (w, Some(v));
                    assert_eq!(bits(&wf), bits(&wc), "{dtype:?} {step:?} step {k}: weights");
                    let (vf, vc) = (vf.as_ref().unwrap(), vc.as_ref().unwrap());
                    assert_eq!(bits(vf), bits(vc), "{dtype:?} {step:?} step {k}: velocity");
                }
            }
        }
    }

    /// The formula by hand: w = 1, ∇ = 0.5, λ = 0.1, μ = 0.9, η = 0.1. First step:
    /// g = 0.6, v = 0.6, Nesterov w = 1 − 0.1·(0.6 + 0.54) = 0.886, plain 1 − 0.06 = 0.94.
    #[test]
    fn matches_the_formula() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[1.0f64], &dev).unwrap();
        let g = Tensor::new(&[0.5f64], &dev).unwrap();
        for (nesterov, want) in [(true, 0.886), (false, 0.94)] {
            let step = SgdStep {
                momentum: 0.9,
                weight_decay: 0.1,
                nesterov,
                lr: 0.1,
            };
            let (w, v) = sgd_momentum_step(&w, &g, None, step).unwrap();
            let (w, v) = (
                w.to_vec1::<f64>().unwrap()[0],
                v.to_vec1::<f64>().unwrap()[0],
            );
            assert!((w - want).abs() < 1e-12, "{nesterov}: {w}");
            assert!((v - 0.6).abs() < 1e-12, "{v}");
        }
    }
}
