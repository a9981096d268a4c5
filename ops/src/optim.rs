//! One step of SGD with momentum and L2 weight decay (the paper's NAG, Section 2.1, and
//! plain momentum SGD) on one parameter, in place on the CPU.
//!
//! Composed from Candle's ops the step reads and writes whole tensors eight times, each a
//! new allocation (and, for the large weights, fresh pages the kernel must zero); in place
//! it is two passes, the velocity's and the weight's, with no allocation after the first
//! step. Both forms do the same floating-point operations in the same order (Candle's
//! `t * s` is `t · s + 0`), so they give the same bits: the parity runs against PyTorch and
//! a resumed run do not depend on which one runs.

use candle_core::{CpuStorage, DType, InplaceOp3, Layout, Result, Tensor, Var};
use rayon::prelude::*;

use crate::storage::Elem;

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

/// One step on `var` with gradient `grad` (same shape) and velocity `v` (`None` before the
/// first step, taken as 0); returns the new velocity:
///
/// g = ∇ + λ·w,  v' = μ·v + g,  w' = w − η·(g + μ·v') (Nesterov) or w − η·v'.
///
/// In place (`var` and the given velocity are overwritten) for contiguous f32 and f64 on
/// the CPU; elsewhere Candle's ops and [`Var::set`].
pub fn sgd_momentum_step(
    var: &Var,
    grad: &Tensor,
    v: Option<Tensor>,
    step: SgdStep,
) -> Result<Tensor> {
    let w = var.as_tensor();
    let grad = grad.detach().to_dtype(w.dtype())?.contiguous()?;
    let in_place = w.device().is_cpu()
        && matches!(w.dtype(), DType::F32 | DType::F64)
        && w.is_contiguous()
        && grad.dims() == w.dims()
        && v.as_ref()
            .is_none_or(|v| v.dtype() == w.dtype() && v.dims() == w.dims() && v.is_contiguous());
    if !in_place {
        let (w, v) = composed(&w.detach(), &grad, v.as_ref(), step)?;
        var.set(&w)?;
        return Ok(v);
    }
    let v = match v {
        Some(v) => {
            v.inplace_op3(&grad, w, &InPlace(step, Pass::Velocity))?;
            v
        }
        // The first velocity is g itself, in a buffer of its own (a later step overwrites
        // it, and with λ = 0 `g` would be the gradient's).
        None => decayed(&w.detach(), &grad, step)?.copy()?,
    };
    w.inplace_op3(&grad, &v, &InPlace(step, Pass::Weight))?;
    Ok(v)
}

/// `g = ∇ + λ·w` as Candle's ops (`∇` itself without decay).
fn decayed(w: &Tensor, grad: &Tensor, s: SgdStep) -> Result<Tensor> {
    if s.weight_decay > 0.0 {
        grad + (w * s.weight_decay)?
    } else {
        Ok(grad.clone())
    }
}

/// The step as Candle's ops (any device and dtype): `(w', v')`.
fn composed(w: &Tensor, grad: &Tensor, v: Option<&Tensor>, s: SgdStep) -> Result<(Tensor, Tensor)> {
    let g = decayed(w, grad, s)?;
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

/// The constants of a step in `T` and `g` of one element, as the composed form rounds them.
#[derive(Clone, Copy)]
struct Consts<T> {
    mu: T,
    wd: T,
    lr: T,
    decay: bool,
    nesterov: bool,
}

impl<T: Elem> Consts<T> {
    fn of(s: SgdStep) -> Self {
        Self {
            mu: T::from_f64(s.momentum),
            wd: T::from_f64(s.weight_decay),
            lr: T::from_f64(s.lr),
            decay: s.weight_decay > 0.0,
            nesterov: s.nesterov,
        }
    }

    /// `g = ∇ + (w · λ + 0)`.
    #[inline(always)]
    fn g(&self, grad: T, w: T) -> T {
        if self.decay {
            grad + (w * self.wd + T::zero())
        } else {
            grad
        }
    }
}

/// The two contiguous slices of `(storage, layout)` pairs an in-place op reads.
fn sources<'a, T: Elem>(
    name: &str,
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> Result<(&'a [T], &'a [T])> {
    Ok((
        crate::storage::contiguous::<T>(s2, l2, name)?,
        crate::storage::contiguous::<T>(s3, l3, name)?,
    ))
}

/// The destination of an in-place op, f32 or f64 storage, as a contiguous mutable slice.
fn destination<'a, T: Elem>(name: &str, all: &'a mut [T], l: &Layout) -> Result<&'a mut [T]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{name}: the destination must be contiguous");
    };
    Ok(&mut all[start..end])
}

/// Which of the step's two passes an in-place op makes.
#[derive(Debug, Clone, Copy)]
enum Pass {
    /// `v ← (v · μ + 0) + g` on the velocity, from `(∇, w)`.
    Velocity,
    /// `w ← w − (u · η + 0)` on the weight, `u = g + (v' · μ + 0)` (Nesterov) or `v'`, from
    /// `(∇, v')`.
    Weight,
}

/// One pass of the step, in place on its destination.
struct InPlace(SgdStep, Pass);

impl InPlace {
    /// The pass over f32 or f64 storage: `dst` and the two sources.
    fn run<T: Elem>(
        &self,
        (dst, l): (&mut [T], &Layout),
        grad: (&CpuStorage, &Layout),
        other: (&CpuStorage, &Layout),
    ) -> Result<()> {
        let name = self.name();
        let (grad, other) = sources::<T>(name, grad, other)?;
        let dst = destination::<T>(name, dst, l)?;
        let (k, pass) = (Consts::<T>::of(self.0), self.1);
        dst.par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK).zip(other.par_chunks(CHUNK)))
            .for_each(|(dst, (grad, other))| {
                for ((d, &grad), &o) in dst.iter_mut().zip(grad).zip(other) {
                    *d = match pass {
                        Pass::Velocity => (*d * k.mu + T::zero()) + k.g(grad, o),
                        Pass::Weight => {
                            let update = if k.nesterov {
                                k.g(grad, *d) + (o * k.mu + T::zero())
                            } else {
                                o
                            };
                            *d - (update * k.lr + T::zero())
                        }
                    };
                }
            });
        Ok(())
    }
}

impl InplaceOp3 for InPlace {
    fn name(&self) -> &'static str {
        match self.1 {
            Pass::Velocity => "sgd_momentum_velocity",
            Pass::Weight => "sgd_momentum_weight",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        match s1 {
            CpuStorage::F32(dst) => self.run::<f32>((dst, l1), (s2, l2), (s3, l3)),
            CpuStorage::F64(dst) => self.run::<f64>((dst, l1), (s2, l2), (s3, l3)),
            _ => candle_core::bail!("{}: f32 or f64 only", self.name()),
        }
    }
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

    /// In place and composed agree to the bit over three steps, for both dtypes, with and
    /// without Nesterov and weight decay, across several parallel chunks; the gradient is
    /// left as it was.
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
                let var = Var::from_tensor(&w0).unwrap();
                let mut wc = w0;
                let (mut vf, mut vc): (Option<Tensor>, Option<Tensor>) = (None, None);
                let mut grads = Vec::new();
                for k in 0..3 {
                    let g = uniform(&[3, CHUNK + 17], 10 + k, &dev)
                        .unwrap()
                        .to_dtype(dtype)
                        .unwrap();
                    grads.push((g.clone(), bits(&g)));
                    vf = Some(sgd_momentum_step(&var, &g, vf.take(), step).unwrap());
                    let (w, v) = composed(&wc, &g, vc.as_ref(), step).unwrap();
                    (wc, vc) = (w, Some(v));
                    let wf = var.as_tensor();
                    assert_eq!(bits(wf), bits(&wc), "{dtype:?} {step:?} step {k}: weights");
                    let (vf, vc) = (vf.as_ref().unwrap(), vc.as_ref().unwrap());
                    assert_eq!(bits(vf), bits(vc), "{dtype:?} {step:?} step {k}: velocity");
                }
                for (g, before) in &grads {
                    assert_eq!(&bits(g), before, "{dtype:?} {step:?}: a gradient changed");
                }
            }
        }
    }

    /// The formula by hand: w = 1, ∇ = 0.5, λ = 0.1, μ = 0.9, η = 0.1. First step:
    /// g = 0.6, v = 0.6, Nesterov w = 1 − 0.1·(0.6 + 0.54) = 0.886, plain 1 − 0.06 = 0.94.
    #[test]
    fn matches_the_formula() {
        let dev = Device::Cpu;
        let g = Tensor::new(&[0.5f64], &dev).unwrap();
        for (nesterov, want) in [(true, 0.886), (false, 0.94)] {
            let w = Var::new(&[1.0f64], &dev).unwrap();
            let step = SgdStep {
                momentum: 0.9,
                weight_decay: 0.1,
                nesterov,
                lr: 0.1,
            };
            let v = sgd_momentum_step(&w, &g, None, step).unwrap();
            let (w, v) = (
                w.to_vec1::<f64>().unwrap()[0],
                v.to_vec1::<f64>().unwrap()[0],
            );
            assert!((w - want).abs() < 1e-12, "{nesterov}: {w}");
            assert!((v - 0.6).abs() < 1e-12, "{v}");
        }
    }
}
