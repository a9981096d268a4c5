//! Nesterov accelerated gradient (NAG) descent, Section 2.1 of the paper.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use candle_nn::VarMap;

/// Settings of [`Nag`], with the paper's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NagConfig {
    /// Momentum μ (paper: 0.9).
    pub momentum: f64,
    /// Nesterov's update (the paper's NAG); `false`: plain momentum SGD,
    /// `w ← w − η·v` (PyTorch's `SGD(nesterov=False)`, MXNet's `sgd`).
    pub nesterov: bool,
    /// L2 weight decay λ (paper: 1e-4).
    pub weight_decay: f64,
    /// No bias decay (Section 3.1): apply λ only to convolution and fully-connected weights,
    /// not to biases nor to batch norm's γ and β.
    pub no_bias_decay: bool,
}

impl Default for NagConfig {
    fn default() -> Self {
        Self {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-4,
            no_bias_decay: false,
        }
    }
}

/// One parameter with its momentum buffer and its own weight decay.
struct Slot {
    name: String,
    var: Var,
    velocity: Option<Tensor>,
    weight_decay: f64,
    /// Multiplies the learning rate of this parameter (GluonCV's `lr_mult`; 1 by default).
    lr_mult: f64,
}

/// Nesterov accelerated gradient with L2 weight decay, as MXNet's `nag` and PyTorch's
/// `SGD(nesterov=True)` compute it:
///
/// g ← ∇ + λ·w,  v ← μ·v + g,  w ← w − η·(g + μ·v)
///
/// with v = 0 before the first step; without Nesterov (`nesterov = false`) the last step
/// is w ← w − η·v.
pub struct Nag {
    slots: Vec<Slot>,
    cfg: NagConfig,
}

/// The trainable variables of `vars` (batch-norm buffers and integer tensors excluded),
/// named, in name order.
pub fn trainable_vars(vars: &VarMap) -> Vec<(String, Var)> {
    let data = vars.data().lock().expect("varmap lock poisoned");
    let mut named: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, var)| !zoo::layers::is_buffer(name) && var.dtype().is_float())
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Whether `name` is a parameter that no-bias-decay exempts: anything of rank 1 (biases,
/// batch norm γ and β).
fn is_exempt_from_decay(var: &Var) -> bool {
    var.rank() <= 1
}

impl Nag {
    /// An optimiser over the trainable variables of `vars` (batch-norm buffers and integer
    /// tensors excluded), in name order.
    pub fn new(vars: &VarMap, cfg: NagConfig) -> Self {
        Self::from_vars(trainable_vars(vars), cfg)
    }

    /// An optimiser over the given named variables.
    pub fn from_vars(vars: Vec<(String, Var)>, cfg: NagConfig) -> Self {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let weight_decay = if cfg.no_bias_decay && is_exempt_from_decay(&var) {
                    0.0
                } else {
                    cfg.weight_decay
                };
                Slot {
                    name,
                    var,
                    velocity: None,
                    weight_decay,
                    lr_mult: 1.0,
                }
            })
            .collect();
        Self { slots, cfg }
    }

    /// Names of the parameters that get weight decay, and of those that do not.
    pub fn decay_split(&self) -> (Vec<&str>, Vec<&str>) {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.weight_decay > 0.0))
            .fold((vec![], vec![]), |(mut d, mut n), (name, decays)| {
                if decays {
                    d.push(name)
                } else {
                    n.push(name)
                }
                (d, n)
            })
    }

    /// The gradients in `grads` of this optimiser's parameters, in its order.
    pub fn gradients(&self, grads: &GradStore) -> Vec<Option<Tensor>> {
        self.slots
            .iter()
            .map(|s| grads.get(s.var.as_tensor()).cloned())
            .collect()
    }

    /// Applies one update with learning rate `lr`; parameters without a gradient in `grads`
    /// are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let grads = self.gradients(grads);
        self.apply(&grads, lr)
    }

    /// Applies one update with gradients given in this optimiser's order (as
    /// [`Nag::gradients`] returns them, possibly summed over several batches).
    pub fn apply(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let mu = self.cfg.momentum;
        for (slot, grad) in self.slots.iter_mut().zip(grads) {
            let Some(grad) = grad else {
                continue;
            };
            // In place on the CPU; the update records nothing in the graph either way.
            let step = ops::optim::SgdStep {
                momentum: mu,
                weight_decay: slot.weight_decay,
                nesterov: self.cfg.nesterov,
                lr: lr * slot.lr_mult,
            };
            let v = ops::optim::sgd_momentum_step(&slot.var, grad, slot.velocity.take(), step)?;
            slot.velocity = Some(v);
        }
        Ok(())
    }

    /// Gives each parameter the learning-rate multiplier `mult(name)` (GluonCV's
    /// `lr_mult`: FCN's heads learn at 10× the backbone's rate, Section 6.2).
    pub fn set_lr_multipliers(&mut self, mult: impl Fn(&str) -> f64) {
        for slot in &mut self.slots {
            slot.lr_mult = mult(&slot.name);
        }
    }

    /// The momentum buffers by parameter name (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.slots
            .iter()
            .filter_map(|s| s.velocity.as_ref().map(|v| (s.name.clone(), v.clone())))
            .collect()
    }

    /// Restores momentum buffers saved by [`Nag::state`]; `lookup` returns the buffer of a
    /// parameter name, if it had one.
    pub fn load_state(&mut self, lookup: impl Fn(&str) -> Option<Tensor>) -> Result<()> {
        for slot in &mut self.slots {
            slot.velocity = match lookup(&slot.name) {
                Some(v) if v.dims() == slot.var.dims() => {
                    Some(v.to_dtype(slot.var.dtype())?.to_device(slot.var.device())?)
                }
                Some(v) => candle_core::bail!(
                    "momentum of {} has shape {:?}, the parameter {:?}",
                    slot.name,
                    v.dims(),
                    slot.var.dims()
                ),
                None => None,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// On f(w) = ½·a·w² the update is linear: with g_t = (a + λ)·w_t, v_t = μ·v_{t−1} + g_t and
    /// w_{t+1} = w_t − η·(g_t + μ·v_t). Iterating that recurrence by hand gives the exact path.
    #[test]
    fn nag_on_a_quadratic_follows_the_closed_form() -> Result<()> {
        let (a, lambda, mu, lr) = (2.0f64, 0.1, 0.9, 0.05);
        let var = Var::new(&[1.0f64], &Device::Cpu)?;
        let cfg = NagConfig {
            momentum: mu,
            nesterov: true,
            weight_decay: lambda,
            no_bias_decay: false,
        };
        let mut nag = Nag::from_vars(vec![("w.weight".into(), var.clone())], cfg);
        let (mut w, mut v) = (1.0f64, 0.0f64);
        for _ in 0..5 {
            let loss = (var.as_tensor().sqr()? * (0.5 * a))?.sum_all()?;
            nag.step(&loss.backward()?, lr)?;
            let g = (a + lambda) * w;
            v = mu * v + g;
            w -= lr * (g + mu * v);
            let got = var.as_tensor().to_vec1::<f64>()?[0];
            assert!((got - w).abs() < 1e-15, "{got} vs {w}");
        }
        // Two steps by hand from w0 = 1: g0 = 2.1, v0 = 2.1, w1 = 1 − 0.05·(2.1 + 1.89) = 0.8005.
        let check = Var::new(&[1.0f64], &Device::Cpu)?;
        let mut nag = Nag::from_vars(vec![("w.weight".into(), check.clone())], cfg);
        let loss = (check.as_tensor().sqr()? * (0.5 * a))?.sum_all()?;
        nag.step(&loss.backward()?, lr)?;
        assert!((check.as_tensor().to_vec1::<f64>()?[0] - 0.8005).abs() < 1e-15);
        Ok(())
    }

    /// Plain momentum (GluonCV's detection SGD): v_t = μ·v_{t−1} + g_t, w_{t+1} = w_t − η·v_t.
    /// From w0 = 1 on ½·2·w² with λ = 0.1: g0 = 2.1, w1 = 1 − 0.05·2.1 = 0.895; then
    /// g1 = 2.1·0.895 = 1.8795, v1 = 0.9·2.1 + 1.8795 = 3.7695, w2 = 0.895 − 0.05·3.7695.
    #[test]
    fn plain_momentum_follows_the_hand_computed_path() -> Result<()> {
        let var = Var::new(&[1.0f64], &Device::Cpu)?;
        let cfg = NagConfig {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.1,
            no_bias_decay: false,
        };
        let mut sgd = Nag::from_vars(vec![("w.weight".into(), var.clone())], cfg);
        let mut expected = [0.895, 0.895 - 0.05 * 3.7695].into_iter();
        for _ in 0..2 {
            let loss = var.as_tensor().sqr()?.sum_all()?;
            sgd.step(&loss.backward()?, 0.05)?;
            let got = var.as_tensor().to_vec1::<f64>()?[0];
            let want = expected.next().unwrap();
            assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        }
        Ok(())
    }

    /// A multiplier scales one parameter's step and no other's (FCN's heads at 10×).
    #[test]
    fn learning_rate_multipliers_scale_their_parameters_steps() -> Result<()> {
        let (a, b) = (
            Var::new(&[1.0f64], &Device::Cpu)?,
            Var::new(&[1.0f64], &Device::Cpu)?,
        );
        let cfg = NagConfig {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            no_bias_decay: false,
        };
        let named = vec![
            ("backbone.w".into(), a.clone()),
            ("head.w".into(), b.clone()),
        ];
        let mut sgd = Nag::from_vars(named, cfg);
        sgd.set_lr_multipliers(|n| if n.starts_with("head") { 10.0 } else { 1.0 });
        // Loss w_a² + w_b²: both gradients 2; steps 0.01·2 and 0.1·2.
        let loss = (a.as_tensor().sqr()? + b.as_tensor().sqr()?)?.sum_all()?;
        sgd.step(&loss.backward()?, 0.01)?;
        assert!((a.as_tensor().to_vec1::<f64>()?[0] - 0.98).abs() < 1e-15);
        assert!((b.as_tensor().to_vec1::<f64>()?[0] - 0.8).abs() < 1e-15);
        Ok(())
    }

    /// The momentum buffers are plain values: were they computed from the variable, each
    /// would hold the previous step's in its graph and training would leak memory.
    #[test]
    fn velocities_keep_no_graph() -> Result<()> {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
        let mut nag = Nag::from_vars(vec![("w.weight".into(), var.clone())], NagConfig::default());
        for _ in 0..3 {
            let loss = var.as_tensor().sqr()?.sum_all()?;
            nag.step(&loss.backward()?, 0.1)?;
        }
        let state = nag.state();
        assert_eq!(state.len(), 1);
        assert!(!state[0].1.track_op(), "the velocity records a graph");
        Ok(())
    }

    #[test]
    fn no_bias_decay_exempts_rank_one_parameters() -> Result<()> {
        let d = Device::Cpu;
        let vars = vec![
            (
                "conv.weight".to_string(),
                Var::ones((2, 2, 1, 1), DType::F32, &d)?,
            ),
            ("bn.weight".to_string(), Var::ones(2, DType::F32, &d)?),
            ("fc.bias".to_string(), Var::ones(2, DType::F32, &d)?),
        ];
        let cfg = NagConfig {
            no_bias_decay: true,
            ..Default::default()
        };
        let nag = Nag::from_vars(vars.clone(), cfg);
        assert_eq!(
            nag.decay_split(),
            (vec!["conv.weight"], vec!["bn.weight", "fc.bias"])
        );
        let all = Nag::from_vars(vars, NagConfig::default());
        assert_eq!(all.decay_split().1.len(), 0);
        Ok(())
    }
}
