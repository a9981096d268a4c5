//! Reading and writing a model's weights as safetensors in timm's names.
//!
//! Loading is strict, like `load_state_dict(strict=True)`: every tensor the model has must be
//! in the file with the right shape, and the file may hold nothing else, except that
//! `num_batches_tracked`, which timm checkpoints may lack, is optional. Saving writes a
//! temporary file and renames it, so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::{Result, ZooError};

/// Reads every tensor of the safetensors file at `path` onto `device`.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| ZooError::BadWeightsFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Copies the tensors of the file at `path` into `vars` (converting the dtype), failing on a
/// missing, misshapen or unexpected tensor. `model` names the model in errors.
pub fn load_weights(vars: &VarMap, path: &Path, model: &str) -> Result<()> {
    load_tensors(vars, read_tensors(path, &Device::Cpu)?, path, model)
}

/// Copies `tensors`, read from `path`, into `vars` with the checks of [`load_weights`].
pub fn load_tensors(
    vars: &VarMap,
    mut tensors: HashMap<String, Tensor>,
    path: &Path,
    model: &str,
) -> Result<()> {
    let vars = vars.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    if !names.iter().any(|n| tensors.contains_key(n.as_str())) {
        return Err(ZooError::NoMatchingTensors {
            path: path.to_path_buf(),
            model: model.to_string(),
            example: tensors
                .keys()
                .min()
                .cloned()
                .unwrap_or_else(|| "none".into()),
        });
    }
    for name in names {
        let var = &vars[name];
        let Some(tensor) = tensors.remove(name.as_str()) else {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            return Err(ZooError::MissingTensor {
                path: path.to_path_buf(),
                name: name.clone(),
                model: model.to_string(),
            });
        };
        // timm stores num_batches_tracked as a scalar; some exporters as a 1-element vector.
        let tensor = if tensor.elem_count() == 1 && var.rank() == 0 {
            tensor.flatten_all()?.squeeze(0)?
        } else {
            tensor
        };
        if tensor.dims() != var.dims() {
            return Err(ZooError::ShapeMismatch {
                path: path.to_path_buf(),
                name: name.clone(),
                model: model.to_string(),
                found: tensor.dims().to_vec(),
                expected: var.dims().to_vec(),
            });
        }
        check_values(&tensor, name, var.dtype()).map_err(|reason| ZooError::BadTensor {
            path: path.to_path_buf(),
            name: name.clone(),
            reason,
        })?;
        var.set(&tensor.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    if let Some(example) = tensors.keys().min() {
        return Err(ZooError::UnexpectedTensors {
            path: path.to_path_buf(),
            model: model.to_string(),
            count: tensors.len(),
            example: example.clone(),
        });
    }
    Ok(())
}

/// Refuses what no trained network holds, before it reaches a model: integer tensors
/// where the model has floats (a cast would hide a wrong file), values that are not finite,
/// and negative batch-norm variances (`√(var + ε)` of them is NaN).
fn check_values(tensor: &Tensor, name: &str, want: DType) -> std::result::Result<(), String> {
    if want.is_float() && !tensor.dtype().is_float() {
        return Err(format!(
            "is stored as {:?}; the model needs floating point values",
            tensor.dtype()
        ));
    }
    if !tensor.dtype().is_float() {
        return Ok(());
    }
    let values = tensor
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| format!("cannot be read: {e}"))?;
    if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(format!("holds a non-finite value ({v} at flat index {i})"));
    }
    if name.ends_with("running_var") {
        if let Some((i, v)) = values.iter().enumerate().find(|(_, v)| **v < 0.0) {
            return Err(format!(
                "holds a negative variance ({v} at channel {i}): not batch-norm statistics"
            ));
        }
    }
    Ok(())
}

/// Loads pretrained weights for fine-tuning: like [`load_weights`], except that when the
/// file's classifier (`{classifier}.weight`, `{classifier}.bias`) has another number of
/// classes than the model's, the model keeps its own freshly initialised classifier. Returns
/// whether the classifier was replaced.
pub fn load_for_finetuning(
    vars: &VarMap,
    path: &Path,
    model: &str,
    classifier: &str,
) -> Result<bool> {
    let mut tensors = read_tensors(path, &Device::Cpu)?;
    let weight = format!("{classifier}.weight");
    let ours = vars
        .data()
        .lock()
        .expect("varmap lock poisoned")
        .get(&weight)
        .map(|v| v.dims().to_vec());
    let theirs = tensors.get(&weight).map(|t| t.dims().to_vec());
    let replace = ours.is_some() && theirs.is_some() && ours != theirs;
    if replace {
        let prefix = format!("{classifier}.");
        tensors.retain(|k, _| !k.starts_with(&prefix));
        for (name, var) in vars.data().lock().expect("varmap lock poisoned").iter() {
            if name.starts_with(&prefix) {
                tensors.insert(name.clone(), var.as_tensor().copy()?);
            }
        }
    }
    align_aux_classifier(vars, &mut tensors)?;
    load_tensors(vars, tensors, path, model)?;
    Ok(replace)
}

/// Inception-V3's auxiliary classifier (`AuxLogits.*`) is optional on both sides of a
/// fine-tuning load: the file's is dropped when the model has none; the model keeps its own
/// (fresh) one when the file has none or its classes differ.
fn align_aux_classifier(vars: &VarMap, tensors: &mut HashMap<String, Tensor>) -> Result<()> {
    const AUX: &str = "AuxLogits.";
    let vars = vars.data().lock().expect("varmap lock poisoned");
    let ours: Vec<(&String, &candle_core::Var)> =
        vars.iter().filter(|(k, _)| k.starts_with(AUX)).collect();
    if ours.is_empty() {
        tensors.retain(|k, _| !k.starts_with(AUX));
        return Ok(());
    }
    for (name, var) in ours {
        let keep_ours = match tensors.get(name.as_str()) {
            None => true,
            Some(t) => name.starts_with("AuxLogits.fc.") && t.dims() != var.dims(),
        };
        if keep_ours {
            tensors.insert(name.clone(), var.as_tensor().copy()?);
        }
    }
    Ok(())
}

/// Writes `tensors` to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over `path`.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    // Serialised in memory and written by `atomic`: the safetensors crate's own writer
    // goes through a `.tmpXXXXXX` sibling of its own, which a killed run leaves behind.
    let bytes = safetensors::serialize(tensors.iter(), None).map_err(|e| ZooError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    crate::atomic::write(path, &bytes).map_err(|source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Saves every variable of `vars` (parameters and batch-norm buffers) to `path` atomically.
pub fn save_weights(vars: &VarMap, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = {
        let vars = vars.data().lock().expect("varmap lock poisoned");
        vars.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect()
    };
    save_tensors(&tensors, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NaN or infinite values, negative variances and integer weights are refused when
    /// loading, with the tensor's name.
    #[test]
    fn impossible_values_are_refused_by_tensor_name() {
        use crate::models::{create_model, ModelSpec};
        let spec = ModelSpec::find("resnet10d_tiny")
            .unwrap()
            .with_num_classes(3);
        let model = create_model(&spec, &Device::Cpu, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good: HashMap<String, Tensor> = model
            .vars
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().copy().unwrap()))
            .collect();
        type Edit = fn(&Tensor) -> Tensor;
        let cases: [(&str, Edit, &str); 4] = [
            ("fc.weight", |t| (t * f64::NAN).unwrap(), "non-finite"),
            (
                "conv1.0.weight",
                |t| (t + f64::INFINITY).unwrap(),
                "non-finite",
            ),
            (
                "bn1.running_var",
                |t| (t - 2.0).unwrap(),
                "negative variance",
            ),
            (
                "fc.weight",
                |t| t.to_dtype(DType::I64).unwrap(),
                "stored as I64",
            ),
        ];
        for (name, edit, expected) in cases {
            let mut tensors = good.clone();
            let t = edit(&tensors[name]);
            tensors.insert(name.to_string(), t);
            let path = dir.path().join("bad.safetensors");
            save_tensors(&tensors, &path).unwrap();
            let err = load_weights(&model.vars, &path, "resnet10d_tiny")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(name) && err.contains(expected),
                "{name}: {err}"
            );
        }
    }
    use crate::models::{create_model, ModelSpec};
    use crate::resnet::{ResNet, ResNetConfig, ResNetVariant};
    use candle_core::DType;
    use candle_nn::VarBuilder;

    fn tiny() -> (VarMap, ResNetConfig) {
        let mut cfg = ResNetConfig::new(18, ResNetVariant::D).unwrap();
        cfg.layers = [1, 1, 1, 1];
        cfg.channels = [4, 4, 8, 8];
        cfg.stem_width = 4;
        cfg.num_classes = 3;
        let vm = VarMap::new();
        ResNet::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        crate::init::xavier_uniform(&vm, 1).unwrap();
        (vm, cfg)
    }

    /// A temporary directory, removed when the test ends (they used to stay in /tmp).
    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn round_trip_is_exact_and_strict() -> Result<()> {
        let d = dir();
        let (vm, _) = tiny();
        let path = d.path().join("w.safetensors");
        save_weights(&vm, &path)?;
        let (other, _) = tiny();
        crate::init::xavier_uniform(&other, 2)?;
        load_weights(&other, &path, "tiny")?;
        let a = vm.data().lock().unwrap();
        let b = other.data().lock().unwrap();
        for (k, v) in a.iter() {
            let diff = v
                .as_tensor()
                .to_dtype(DType::F64)?
                .sub(&b[k].as_tensor().to_dtype(DType::F64)?)?
                .abs()?
                .sum_all()?
                .to_scalar::<f64>()?;
            assert_eq!(diff, 0.0, "{k}");
        }
        drop((a, b));

        // A different model's file is refused with the offending tensor named.
        let spec = ModelSpec::find("resnet18").unwrap().with_num_classes(3);
        let wrong = create_model(&spec, &Device::Cpu, 0)?;
        let err = load_weights(&wrong.vars, &path, "resnet18")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resnet18") && err.contains("w.safetensors"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn finetuning_replaces_a_classifier_of_another_size_only() -> Result<()> {
        let d = dir();
        let (vm, mut cfg) = tiny();
        let path = d.path().join("pre.safetensors");
        save_weights(&vm, &path)?;
        cfg.num_classes = 7;
        let other = VarMap::new();
        ResNet::new(
            &cfg,
            VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu),
        )?;
        crate::init::xavier_uniform(&other, 5)?;
        let fresh_fc = other.data().lock().unwrap()["fc.weight"]
            .as_tensor()
            .copy()?;
        assert!(load_for_finetuning(&other, &path, "tiny", "fc")?);
        let o = other.data().lock().unwrap();
        let a = vm.data().lock().unwrap();
        assert_eq!(
            crate::models::tests_support::diff(&o["fc.weight"], &fresh_fc),
            0.0
        );
        assert_eq!(
            crate::models::tests_support::diff(
                &o["conv1.0.weight"],
                a["conv1.0.weight"].as_tensor()
            ),
            0.0
        );
        drop((o, a));
        // Same number of classes: everything loads, nothing is replaced.
        assert!(!load_for_finetuning(&vm, &path, "tiny", "fc")?);
        Ok(())
    }

    #[test]
    fn truncated_or_garbage_files_are_clear_errors() {
        let d = dir();
        let (vm, _) = tiny();
        let path = d.path().join("t.safetensors");
        save_weights(&vm, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_weights(&vm, &path, "tiny").unwrap_err();
        assert!(matches!(err, ZooError::BadWeightsFile { .. }), "{err}");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = load_weights(&vm, &path, "tiny").unwrap_err();
        assert!(matches!(err, ZooError::BadWeightsFile { .. }), "{err}");
    }

    #[test]
    fn num_batches_tracked_is_optional_but_others_are_not() -> Result<()> {
        let d = dir();
        let (vm, _) = tiny();
        let mut tensors: HashMap<String, Tensor> = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.ends_with("num_batches_tracked"))
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let path = d.path().join("n.safetensors");
        save_tensors(&tensors, &path)?;
        load_weights(&vm, &path, "tiny")?;
        tensors.remove("fc.bias");
        save_tensors(&tensors, &path)?;
        let err = load_weights(&vm, &path, "tiny").unwrap_err().to_string();
        assert!(
            err.contains("`fc.bias`") && err.contains("missing"),
            "{err}"
        );
        Ok(())
    }
}
