//! Training checkpoints: weights, optimiser momentum, loss scale and progress in one
//! safetensors file, written atomically.
//!
//! Names: `model.<tensor>` (timm's names), `optim.<parameter>` (NAG momentum),
//! `state.epochs_done`, `state.loss_scale`, `state.good_steps`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::optim::Nag;
use crate::precision::LossScaler;
use crate::TrainingError;

/// Saves the run's state after `epochs_done` epochs. Refuses non-finite weights, so that a
/// diverged run never replaces its last good checkpoint.
pub fn save(
    path: &Path,
    vars: &VarMap,
    nag: &Nag,
    scaler: &LossScaler,
    epochs_done: usize,
) -> Result<(), TrainingError> {
    let mut tensors = HashMap::new();
    for (name, var) in vars.data().lock().expect("varmap lock poisoned").iter() {
        let t = var.as_tensor().detach();
        if t.dtype().is_float()
            && !t
                .to_dtype(DType::F32)?
                .sum_all()?
                .to_scalar::<f32>()?
                .is_finite()
        {
            return Err(TrainingError::Config(format!(
                "weights of {name} are not finite after epoch {epochs_done}: the checkpoint was not written"
            )));
        }
        tensors.insert(format!("model.{name}"), t);
    }
    for (name, v) in nag.state() {
        tensors.insert(format!("optim.{name}"), v);
    }
    let d = &Device::Cpu;
    tensors.insert(
        "state.epochs_done".into(),
        Tensor::new(epochs_done as i64, d)?,
    );
    tensors.insert("state.loss_scale".into(), Tensor::new(scaler.scale, d)?);
    tensors.insert(
        "state.good_steps".into(),
        Tensor::new(scaler.good_steps as i64, d)?,
    );
    zoo::weights::save_tensors(&tensors, path)?;
    Ok(())
}

/// Restores a checkpoint into the model's variables, the optimiser and the loss scaler;
/// returns the number of epochs it had completed.
pub fn load(
    path: &Path,
    vars: &VarMap,
    nag: &mut Nag,
    scaler: &mut LossScaler,
) -> Result<usize, TrainingError> {
    let mut tensors = zoo::weights::read_tensors(path, &Device::Cpu)?;
    let scalar =
        |tensors: &mut HashMap<String, Tensor>, name: &str| -> Result<f64, TrainingError> {
            let t = tensors.remove(name).ok_or_else(|| {
                TrainingError::data(path, format!("not a training checkpoint: no `{name}`"))
            })?;
            Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
        };
    let epochs_done = scalar(&mut tensors, "state.epochs_done")? as usize;
    scaler.scale = scalar(&mut tensors, "state.loss_scale")?;
    scaler.good_steps = scalar(&mut tensors, "state.good_steps")? as usize;
    let mut optim = HashMap::new();
    let mut model = HashMap::new();
    for (k, v) in tensors {
        if let Some(name) = k.strip_prefix("optim.") {
            optim.insert(name.to_string(), v);
        } else if let Some(name) = k.strip_prefix("model.") {
            model.insert(name.to_string(), v);
        }
    }
    zoo::weights::load_tensors(vars, model, path, "the run's model")?;
    nag.load_state(|name| optim.get(name).cloned())?;
    Ok(epochs_done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::NagConfig;
    use crate::recipe::Precision;
    use candle_nn::{Init, VarBuilder};

    fn setup() -> (VarMap, Nag, LossScaler) {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        vb.get_with_hints((2, 3), "fc.weight", Init::Const(0.5))
            .unwrap();
        vb.get_with_hints(2, "fc.bias", Init::Const(0.0)).unwrap();
        let nag = Nag::new(&vars, NagConfig::default());
        (vars, nag, LossScaler::new(Precision::F16))
    }

    #[test]
    fn round_trip_restores_weights_momentum_and_scale() -> Result<(), TrainingError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let (vars, mut nag, mut scaler) = setup();
        let w = vars.data().lock().unwrap()["fc.weight"].clone();
        let loss = w.as_tensor().sqr()?.sum_all()?;
        nag.step(&loss.backward()?, 0.1)?;
        scaler.update(false);
        save(&path, &vars, &nag, &scaler, 3)?;

        let (other, mut nag2, mut scaler2) = setup();
        assert_eq!(load(&path, &other, &mut nag2, &mut scaler2)?, 3);
        assert_eq!(scaler2, scaler);
        let a = other.data().lock().unwrap()["fc.weight"]
            .as_tensor()
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(a, w.as_tensor().flatten_all()?.to_vec1::<f32>()?);
        assert_eq!(nag2.state().len(), nag.state().len());
        Ok(())
    }

    #[test]
    fn non_finite_weights_never_replace_a_good_checkpoint() -> Result<(), TrainingError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let (vars, nag, scaler) = setup();
        save(&path, &vars, &nag, &scaler, 1)?;
        let good = std::fs::read(&path).unwrap();
        let w = vars.data().lock().unwrap()["fc.weight"].clone();
        w.set(&Tensor::new(
            &[[f32::NAN, 0., 0.], [0., 0., 0.]],
            &Device::Cpu,
        )?)?;
        let err = save(&path, &vars, &nag, &scaler, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not finite"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), good);
        Ok(())
    }
}
