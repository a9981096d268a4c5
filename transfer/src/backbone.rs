//! Zoo backbones under a task's heads: a classifier's weights copied into `backbone.*`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::TransferError;

/// The prefix of the backbone's tensors in a detector's or segmenter's weights.
pub const BACKBONE: &str = "backbone";

/// Copies a classifier's weights (a safetensors file of the backbone's architecture,
/// timm's names) into `backbone.*` of `vars`; its classifier (`fc.*`) is dropped, every
/// other variable (the heads) keeps its value. A tensor missing, misshapen or unknown is an
/// error. No renaming table: the prefix is the only difference.
pub fn load_backbone(vars: &VarMap, path: &Path, model: &str) -> Result<(), TransferError> {
    let file = zoo::weights::read_tensors(path, &Device::Cpu)?;
    let prefix = format!("{BACKBONE}.");
    let mut tensors: HashMap<String, Tensor> = file
        .into_iter()
        .filter(|(k, _)| !k.starts_with("fc."))
        .map(|(k, v)| (format!("{prefix}{k}"), v))
        .collect();
    for (name, var) in vars.data().lock().expect("varmap lock poisoned").iter() {
        if !name.starts_with(&prefix) {
            tensors.insert(name.clone(), var.as_tensor().copy()?);
        }
    }
    zoo::weights::load_tensors(vars, tensors, path, model)?;
    Ok(())
}

/// The backbone's tensors of `vars` without their prefix, as constant handles (no copy):
/// what an inference copy of a network is built over.
pub fn frozen_backbone_tensors(vars: &VarMap) -> HashMap<String, Tensor> {
    let prefix = format!("{BACKBONE}.");
    vars.data()
        .lock()
        .expect("varmap lock poisoned")
        .iter()
        .filter_map(|(name, var)| {
            name.strip_prefix(&prefix)
                .map(|n| (n.to_string(), var.as_tensor().detach()))
        })
        .collect()
}
