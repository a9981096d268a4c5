//! Initialisation of Section 2.1: Xavier uniform for convolution and fully-connected weights,
//! zero biases, batch norm γ = 1 and β = 0 (γ = 0 for zero-γ blocks, Section 3.1).
//!
//! The layers register their parameters with constant hints (γ, β, biases, running
//! statistics); [`xavier_uniform`] then fills every weight of rank ≥ 2 from a seeded stream,
//! so the same seed gives the same network on every machine.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;

/// Bound of Xavier (Glorot) uniform for a weight of `shape`: √(6 / (fan_in + fan_out)), with
/// fans counted over input/output channels times the kernel area. MXNet's
/// `Xavier(rnd_type='uniform', factor_type='avg', magnitude=3)`, used by the paper, is the
/// same bound.
pub fn xavier_bound(shape: &[usize]) -> f64 {
    let receptive: usize = shape.iter().skip(2).product();
    let fan_out = shape[0] * receptive;
    let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
    (6.0 / (fan_in + fan_out) as f64).sqrt()
}

/// SplitMix64: a tiny, well-mixed generator; one stream per parameter name.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn next_normal(&mut self) -> f64 {
        let u = 1.0 - self.next_f64(); // (0, 1]
        let v = self.next_f64();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn name_seed(seed: u64, name: &str) -> u64 {
    // FNV-1a over the name, mixed with the seed.
    name.bytes().fold(0xCBF2_9CE4_8422_2325 ^ seed, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01B3)
    })
}

/// How convolution weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum WeightInit {
    /// Xavier uniform, as Section 2.1 states.
    #[default]
    Xavier,
    /// timm's ResNet init: convolutions Kaiming normal with fan-out and ReLU gain (std
    /// √(2 / fan_out), close to GluonCV's `MSRAPrelu`, which its released training script
    /// uses), the classifier uniform in ±1/√fan_in (PyTorch's `nn.Linear` default).
    Kaiming,
}

/// Fills every variable named `*.weight` of rank ≥ 2 (convolution and classifier weights) with
/// Xavier uniform values drawn from a stream seeded by `seed` and the variable's name.
pub fn xavier_uniform(varmap: &VarMap, seed: u64) -> Result<()> {
    initialize(varmap, seed, WeightInit::Xavier)
}

/// Fills every variable named `*.weight` of rank ≥ 2 (convolutions and the classifier) by
/// `init`, from a stream seeded by `seed` and the variable's name.
pub fn initialize(varmap: &VarMap, seed: u64, init: WeightInit) -> Result<()> {
    let vars = varmap.data().lock().expect("varmap lock poisoned");
    for (name, var) in vars.iter() {
        let shape = var.dims().to_vec();
        if shape.len() < 2 || !name.ends_with(".weight") {
            continue;
        }
        let mut rng = SplitMix64(name_seed(seed, name));
        let n = var.elem_count();
        let data: Vec<f64> = if init == WeightInit::Kaiming && shape.len() == 4 {
            let fan_out = shape[0] * shape[2] * shape[3];
            let std = (2.0 / fan_out as f64).sqrt();
            (0..n).map(|_| rng.next_normal() * std).collect()
        } else if init == WeightInit::Kaiming {
            // PyTorch's default for `nn.Linear`: uniform in ±1/√fan_in.
            let bound = 1.0 / (shape[1] as f64).sqrt();
            (0..n)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) * bound)
                .collect()
        } else {
            let bound = xavier_bound(&shape);
            (0..n)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) * bound)
                .collect()
        };
        let t = Tensor::from_vec(data, shape, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaiming_has_the_fan_out_variance() -> Result<()> {
        let vm = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &vm,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        let w = vb.get_with_hints((64, 32, 3, 3), "conv.weight", candle_nn::Init::Const(0.))?;
        initialize(&vm, 3, WeightInit::Kaiming)?;
        let v: Vec<f32> = w.flatten_all()?.to_vec1()?;
        let var = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let expected = 2.0 / (64.0 * 9.0);
        assert!((var / expected - 1.0).abs() < 0.05, "{var} vs {expected}");
        Ok(())
    }

    #[test]
    fn bound_counts_kernel_area() {
        // conv 64 -> 128, 3x3: fan_in = 576, fan_out = 1152.
        assert!((xavier_bound(&[128, 64, 3, 3]) - (6.0f64 / 1728.0).sqrt()).abs() < 1e-15);
        // fc 2048 -> 1000.
        assert!((xavier_bound(&[1000, 2048]) - (6.0f64 / 3048.0).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn fills_weights_within_bound_deterministically() -> Result<()> {
        let fill = |seed| -> Result<Vec<f32>> {
            let vm = VarMap::new();
            let vb = candle_nn::VarBuilder::from_varmap(
                &vm,
                candle_core::DType::F32,
                &candle_core::Device::Cpu,
            );
            let w = vb.get_with_hints((16, 8, 3, 3), "conv.weight", candle_nn::Init::Const(0.))?;
            let g = vb.get_with_hints(16, "bn.weight", candle_nn::Init::Const(1.))?;
            xavier_uniform(&vm, seed)?;
            assert_eq!(
                g.to_vec1::<f32>()?,
                vec![1.0; 16],
                "rank-1 weights untouched"
            );
            w.flatten_all()?.to_vec1::<f32>()
        };
        let a = fill(7)?;
        let bound = xavier_bound(&[16, 8, 3, 3]) as f32;
        assert!(a.iter().all(|v| v.abs() <= bound));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1 * bound, "mean {mean}");
        assert_eq!(a, fill(7)?);
        assert_ne!(a, fill(8)?);
        Ok(())
    }
}
