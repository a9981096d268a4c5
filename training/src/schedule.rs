//! Learning-rate schedules, computed per batch (Sections 2.1, 3.1 and 5.1).
//!
//! A schedule is a linear warmup followed by a decay, as GluonCV composes them: during the
//! first `warmup_iters` batches η grows linearly from 0 to the base rate; afterwards the
//! decay takes over, counting its own iterations from the end of the warmup.

use serde::{Deserialize, Serialize};

/// The learning rate of the paper's linear scaling rule (Section 3.1): 0.1 per 256 images
/// of (effective) batch.
pub fn linear_scaling(batch_size: usize) -> f64 {
    0.1 * batch_size as f64 / 256.0
}

/// How the learning rate decays after the warmup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Decay {
    /// Multiply by `factor` at each epoch in `epochs` (Section 2.1: 0.1 at 30, 60, 90).
    Step {
        /// Epochs at which the rate drops.
        epochs: Vec<usize>,
        /// The drop factor.
        factor: f64,
    },
    /// η_t = ½·(1 + cos(t·π / T))·η over the T batches after the warmup (Section 5.1).
    Cosine,
    /// η_t = (1 − t/T)^power·η over the T batches after the warmup (GluonCV's `poly`, the
    /// schedule of its segmentation recipes, power 0.9).
    Poly {
        /// The exponent.
        power: f64,
    },
}

/// A learning rate for every batch of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The rate after warmup, before any decay.
    pub base_lr: f64,
    /// Batches of linear warmup from 0.
    pub warmup_iters: usize,
    /// Batches per epoch (for epoch-based steps).
    pub iters_per_epoch: usize,
    /// Batches in the whole run.
    pub total_iters: usize,
    /// The decay after warmup.
    pub decay: Decay,
}

impl Schedule {
    /// The learning rate of batch `iter` (0-based).
    pub fn lr(&self, iter: usize) -> f64 {
        if iter < self.warmup_iters {
            return self.base_lr * iter as f64 / self.warmup_iters as f64;
        }
        match &self.decay {
            Decay::Step { epochs, factor } => {
                let epoch = iter / self.iters_per_epoch.max(1);
                let drops = epochs.iter().filter(|&&e| epoch >= e).count();
                self.base_lr * factor.powi(drops as i32)
            }
            Decay::Cosine => {
                let t = (iter - self.warmup_iters) as f64;
                let period = self.total_iters.saturating_sub(self.warmup_iters).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * t / period).cos()) * self.base_lr
            }
            Decay::Poly { power } => {
                let t = (iter - self.warmup_iters) as f64;
                let period = self.total_iters.saturating_sub(self.warmup_iters).max(1) as f64;
                (1.0 - t / period).max(0.0).powf(*power) * self.base_lr
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn poly_decays_to_zero_with_power_0_9() {
        let s = Schedule {
            base_lr: 0.01,
            warmup_iters: 0,
            iters_per_epoch: 10,
            total_iters: 100,
            decay: Decay::Poly { power: 0.9 },
        };
        close(s.lr(0), 0.01);
        // Halfway: 0.5^0.9 = 0.535886731…
        close(s.lr(50), 0.01 * 0.535_886_731_268_146_2);
        close(s.lr(99), 0.01 * 0.01f64.powf(0.9));
        close(s.lr(100), 0.0);
    }

    #[test]
    fn linear_scaling_rule() {
        close(linear_scaling(256), 0.1);
        close(linear_scaling(1024), 0.4);
        close(linear_scaling(32), 0.0125);
    }

    #[test]
    fn warmup_then_step_decay() {
        let s = Schedule {
            base_lr: 0.4,
            warmup_iters: 10,
            iters_per_epoch: 5,
            total_iters: 100,
            decay: Decay::Step {
                epochs: vec![4, 8],
                factor: 0.1,
            },
        };
        close(s.lr(0), 0.0);
        close(s.lr(5), 0.2);
        close(s.lr(10), 0.4);
        close(s.lr(19), 0.4); // epoch 3
        close(s.lr(20), 0.04); // epoch 4
        close(s.lr(39), 0.04);
        close(s.lr(40), 0.004); // epoch 8
    }

    #[test]
    fn cosine_after_warmup() {
        let s = Schedule {
            base_lr: 0.4,
            warmup_iters: 10,
            iters_per_epoch: 10,
            total_iters: 110,
            decay: Decay::Cosine,
        };
        close(s.lr(10), 0.4); // t = 0
        close(s.lr(60), 0.2); // t = T/2
        close(
            s.lr(35),
            0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos()) * 0.4,
        ); // t = T/4
        close(s.lr(110), 0.0); // t = T
        let no_warmup = Schedule {
            warmup_iters: 0,
            total_iters: 100,
            ..s
        };
        close(no_warmup.lr(0), 0.4);
        close(no_warmup.lr(50), 0.2);
    }
}
