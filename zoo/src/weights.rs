//! Reading and writing a model's weights as safetensors in timm's names.
//!
//! Loading is strict, like `load_state_dict(strict=True)`: every tensor the model has must be
//! in the file with the right shape, and the file may hold nothing else, except that
//! `num_batches_tracked`, which timm checkpoints may lack, is optional. Saving writes a
//! temporary file and renames it, so a crash never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
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
    let mut tensors = read_tensors(path, &Device::Cpu)?;
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

/// Writes `tensors` to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over `path`.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let io = |source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = temporary_sibling(path);
    candle_core::safetensors::save(tensors, &tmp)?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
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

fn temporary_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tricks-zoo-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trip_is_exact_and_strict() -> Result<()> {
        let d = dir();
        let (vm, _) = tiny();
        let path = d.join("w.safetensors");
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
    fn truncated_or_garbage_files_are_clear_errors() {
        let d = dir();
        let (vm, _) = tiny();
        let path = d.join("t.safetensors");
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
        let path = d.join("n.safetensors");
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
