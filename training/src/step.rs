//! One optimisation step of an image classifier: forward in training mode, softmax
//! cross-entropy, backward, NAG update.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use zoo::Classifier;

use crate::optim::{Nag, NagConfig};

/// A classifier with its optimiser, stepped on one batch at a time.
pub struct TrainStep<'a> {
    net: &'a dyn Classifier,
    optimizer: Nag,
}

impl<'a> TrainStep<'a> {
    /// Trains the parameters in `vars` of `net` with NAG.
    pub fn new(net: &'a dyn Classifier, vars: &VarMap, cfg: NagConfig) -> Self {
        Self {
            net,
            optimizer: Nag::new(vars, cfg),
        }
    }

    /// One step on `images: (N, 3, H, W)` with integer `labels: (N,)`, at learning rate `lr`;
    /// returns the batch's loss before the update.
    pub fn step(&mut self, images: &Tensor, labels: &Tensor, lr: f64) -> Result<f32> {
        let logits = self.net.forward_t(images, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, labels)?;
        let value = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        if !value.is_finite() {
            candle_core::bail!("loss is {value}: the step was not applied");
        }
        let grads = loss.backward()?;
        self.optimizer.step(&grads, lr)?;
        Ok(value)
    }
}
