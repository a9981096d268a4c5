//! Exporting a model: safetensors in timm's names, timm's `config.json`, and ONNX.
//!
//! `config.json` follows the layout timm writes to the Hub (`architecture`, `num_classes`,
//! `num_features`, `pretrained_cfg`), so `timm.create_model(name, pretrained=True,
//! pretrained_cfg_overlay=dict(file="model.safetensors"))` loads the weights and
//! `timm.data.resolve_data_config` reads the same preprocessing that `tricks predict` uses.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::models::Model;
use crate::registry::{FileRole, InputConfig};
use crate::{Result, ZooError};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportFormats {
    /// `model.safetensors` and `config.json`.
    pub safetensors: bool,
    /// `model.onnx`.
    pub onnx: bool,
}

/// Everything a model card and a registry entry need to say about the exported model.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportMeta {
    /// The pretrained tag (`gluon_in1k`, `shapes_tricks`); part of the checkpoint's name.
    pub tag: Option<String>,
    /// How to preprocess its input.
    pub input: InputConfig,
    /// Class names in output order, when known.
    pub labels: Option<Vec<String>>,
}

/// The files of an export: role, file name, path on disk.
pub type ExportedFiles = Vec<(FileRole, String, PathBuf)>;

/// timm's `config.json` for `model` with `meta`.
pub fn timm_config(model: &Model, meta: &ExportMeta) -> serde_json::Value {
    let spec = &model.spec;
    let input = &meta.input;
    let (ph, pw) = model.net.feature_size(input.size[1], input.size[2]);
    let pool_size = [ph, pw];
    let mut pretrained = json!({
        "input_size": input.size,
        "fixed_input_size": false,
        "interpolation": input.interpolation.as_str(),
        "crop_pct": input.crop_pct,
        "crop_mode": "center",
        "mean": input.mean,
        "std": input.std,
        "num_classes": spec.num_classes(),
        "pool_size": pool_size,
        "first_conv": spec.first_conv(),
        "classifier": spec.classifier_name(),
    });
    if let Some(tag) = &meta.tag {
        pretrained["tag"] = json!(tag);
    }
    let mut config = json!({
        "architecture": spec.name,
        "num_classes": spec.num_classes(),
        "num_features": spec.num_features(),
        "global_pool": "avg",
        "pretrained_cfg": pretrained,
    });
    if let Some(labels) = &meta.labels {
        config["label_names"] = json!(labels);
    }
    config
}

/// Writes `model` in the formats asked into `dir` (created if needed) and returns the files.
pub fn export(
    model: &Model,
    meta: &ExportMeta,
    formats: ExportFormats,
    dir: &Path,
) -> Result<ExportedFiles> {
    std::fs::create_dir_all(dir).map_err(|source| ZooError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    if formats.safetensors {
        let weights = dir.join("model.safetensors");
        crate::weights::save_weights(&model.vars, &weights)?;
        files.push((
            FileRole::Safetensors,
            "model.safetensors".to_string(),
            weights,
        ));
        let config = dir.join("config.json");
        let text =
            serde_json::to_string_pretty(&timm_config(model, meta)).expect("JSON values serialise");
        crate::local::write_atomically(&config, text.as_bytes())?;
        files.push((FileRole::Config, "config.json".to_string(), config));
    }
    if formats.onnx {
        let spec = &model.spec;
        let proto = crate::onnx::export(model.net.as_ref(), spec.in_chans(), spec.output_dims())?;
        let path = dir.join("model.onnx");
        crate::onnx::write(&proto, &path)?;
        files.push((FileRole::Onnx, "model.onnx".to_string(), path));
    }
    Ok(files)
}

/// The architecture, class count and input configuration that a timm `config.json` states.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmConfig {
    /// timm's architecture name.
    pub architecture: String,
    /// Output classes.
    pub num_classes: usize,
    /// Preprocessing.
    pub input: InputConfig,
    /// Class names, when the file lists them.
    pub labels: Option<Vec<String>>,
}

/// Reads a timm `config.json` (ours or one from the Hub), with timm's defaults for what it
/// leaves out.
pub fn read_timm_config(path: &Path) -> Result<TimmConfig> {
    let bad = |reason: String| ZooError::Registry {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ZooError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    if let Some(task) = value["task"].as_str().filter(|t| *t != "classification") {
        return Err(bad(format!(
            "describes a {task} model, not a classifier: this command takes a classifier"
        )));
    }
    let architecture = value["architecture"]
        .as_str()
        .ok_or_else(|| bad("no `architecture`".into()))?
        .to_string();
    let cfg = &value["pretrained_cfg"];
    let num_classes = value["num_classes"]
        .as_u64()
        .or_else(|| cfg["num_classes"].as_u64())
        .unwrap_or(1000) as usize;
    let mut input = InputConfig::imagenet(224);
    if let Some(size) = cfg["input_size"].as_array() {
        let dims: Vec<usize> = size
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as usize))
            .collect();
        input.size = dims
            .try_into()
            .map_err(|_| bad("input_size must be [C, H, W]".into()))?;
    }
    let triple = |key: &str, default: [f64; 3]| -> Result<[f64; 3]> {
        match cfg[key].as_array() {
            None => Ok(default),
            Some(values) => values
                .iter()
                .map(|v| {
                    v.as_f64()
                        .ok_or_else(|| bad(format!("{key} must hold numbers")))
                })
                .collect::<Result<Vec<f64>>>()?
                .try_into()
                .map_err(|_| bad(format!("{key} must hold three numbers"))),
        }
    };
    input.mean = triple("mean", input.mean)?;
    input.std = triple("std", input.std)?;
    if let Some(crop) = cfg["crop_pct"].as_f64() {
        input.crop_pct = crop;
    }
    if let Some(interp) = cfg["interpolation"].as_str() {
        input.interpolation = serde_json::from_value(json!(interp)).map_err(|_| {
            bad(format!(
                "interpolation `{interp}` is not nearest, bilinear or bicubic"
            ))
        })?;
    }
    let labels = value["label_names"]
        .as_array()
        .or_else(|| cfg["label_names"].as_array())
        .map(|names| {
            names
                .iter()
                .map(|n| n.as_str().unwrap_or_default().to_string())
                .collect()
        });
    Ok(TimmConfig {
        architecture,
        num_classes,
        input,
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{create_model, ModelSpec};
    use candle_core::Device;

    #[test]
    fn config_round_trips_through_the_reader() {
        let spec = ModelSpec::find("resnet10d_tiny")
            .unwrap()
            .with_num_classes(3);
        let model = create_model(&spec, &Device::Cpu, 0).unwrap();
        let meta = ExportMeta {
            tag: Some("shapes".into()),
            input: InputConfig::imagenet(64),
            labels: Some(vec!["a".into(), "b".into(), "c".into()]),
        };
        let dir = tempfile::tempdir().unwrap();
        let formats = ExportFormats {
            safetensors: true,
            onnx: true,
        };
        let files = export(&model, &meta, formats, dir.path()).unwrap();
        assert_eq!(files.len(), 3);
        let read = read_timm_config(&dir.path().join("config.json")).unwrap();
        assert_eq!(read.architecture, "resnet10d_tiny");
        assert_eq!(read.num_classes, 3);
        assert_eq!(read.input, meta.input);
        assert_eq!(read.labels, meta.labels);
        let onnx = crate::onnx::read(&dir.path().join("model.onnx")).unwrap();
        assert_eq!(onnx.opset_import[0].version, crate::onnx::OPSET);
    }

    #[test]
    fn truncated_onnx_is_a_clear_error() {
        let spec = ModelSpec::find("resnet10d_tiny")
            .unwrap()
            .with_num_classes(3);
        let model = create_model(&spec, &Device::Cpu, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let formats = ExportFormats {
            safetensors: false,
            onnx: true,
        };
        export(
            &model,
            &ExportMeta {
                tag: None,
                input: InputConfig::imagenet(64),
                labels: None,
            },
            formats,
            dir.path(),
        )
        .unwrap();
        let path = dir.path().join("model.onnx");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = crate::onnx::read(&path).unwrap_err().to_string();
        assert!(err.contains("model.onnx"), "{err}");
    }
}
