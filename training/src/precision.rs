//! Mixed-precision training (Section 3.2): compute in f16 or bf16, keep f32 master weights,
//! and for f16 scale the loss so that small gradients survive, adjusting the scale
//! dynamically.

use candle_core::{DType, Result, Tensor};

use crate::recipe::Precision;

impl Precision {
    /// The dtype the network computes in.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
            Precision::F64 => DType::F64,
        }
    }

    /// The dtype of the weights the optimiser updates (f32 master weights, or f64).
    pub fn weight_dtype(self) -> DType {
        match self {
            Precision::F64 => DType::F64,
            _ => DType::F32,
        }
    }

    /// The dtype losses and targets are computed in (f32 for every narrower compute).
    pub fn loss_dtype(self) -> DType {
        self.weight_dtype()
    }
}

/// Dynamic loss scaling: multiply the loss by `scale` before backward; if any gradient
/// overflows, skip the update and halve the scale; after `growth_interval` good updates in a
/// row, double it (PyTorch's `GradScaler`, Micikevicius et al. 2018).
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    /// Current scale (1 and fixed when scaling is off).
    pub scale: f64,
    /// Good updates since the last change of scale.
    pub good_steps: usize,
    /// Good updates in a row before the scale doubles.
    pub growth_interval: usize,
    enabled: bool,
}

impl LossScaler {
    /// Scaling for `precision`: on for f16 (initial scale 2¹⁶), off otherwise.
    pub fn new(precision: Precision) -> Self {
        Self::with_initial_scale(precision, None)
    }

    /// Scaling from `initial` when given (at any precision: in f32 or f64 a power of two
    /// scales and unscales exactly), else as [`Self::new`].
    pub fn with_initial_scale(precision: Precision, initial: Option<f64>) -> Self {
        let enabled = precision == Precision::F16 || initial.is_some();
        Self {
            scale: initial.unwrap_or(if enabled { 65536.0 } else { 1.0 }),
            good_steps: 0,
            growth_interval: 2000,
            enabled,
        }
    }

    /// Records whether the gradients of an update were all finite; returns whether the
    /// update should be applied.
    pub fn update(&mut self, finite: bool) -> bool {
        if !self.enabled {
            return finite;
        }
        if !finite {
            self.scale = (self.scale / 2.0).max(1.0);
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps >= self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}

/// Whether every gradient is finite (one reduction per tensor).
pub fn all_finite(grads: &[Option<Tensor>]) -> Result<bool> {
    for g in grads.iter().flatten() {
        let s = g.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
        if !s.is_finite() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn skips_and_halves_on_overflow_and_grows_after_a_run_of_good_steps() {
        let mut s = LossScaler::new(Precision::F16);
        s.growth_interval = 3;
        assert_eq!(s.scale, 65536.0);
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true) && s.update(true));
        assert_eq!((s.scale, s.good_steps), (32768.0, 2));
        assert!(!s.update(false)); // an overflow resets the run
        assert_eq!((s.scale, s.good_steps), (16384.0, 0));
        for _ in 0..3 {
            assert!(s.update(true));
        }
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
    }

    #[test]
    fn bf16_and_f32_do_not_scale() {
        for p in [Precision::F32, Precision::Bf16] {
            let mut s = LossScaler::new(p);
            assert_eq!(s.scale, 1.0);
            assert!(!s.update(false));
            assert_eq!(s.scale, 1.0);
        }
    }

    #[test]
    fn an_initial_scale_turns_scaling_on_at_any_precision() {
        let mut s = LossScaler::with_initial_scale(Precision::F32, Some(1024.0));
        assert_eq!(s.scale, 1024.0);
        assert!(!s.update(false));
        assert_eq!(s.scale, 512.0);
        assert_eq!(
            LossScaler::with_initial_scale(Precision::F16, None).scale,
            65536.0
        );
    }

    #[test]
    fn detects_non_finite_gradients() -> Result<()> {
        let ok = Tensor::new(&[1f32, 2.], &Device::Cpu)?;
        let bad = Tensor::new(&[1f32, f32::INFINITY], &Device::Cpu)?;
        assert!(all_finite(&[Some(ok.clone()), None])?);
        assert!(!all_finite(&[Some(ok), Some(bad)])?);
        Ok(())
    }
}
