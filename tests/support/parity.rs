//! Comparing our tensors with timm's references: the relative error, and the gradients and
//! running statistics a fixture records after one training step.

#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// The variables of `vars` as read-only tensors, as `Model::frozen` builds networks for
/// inference (whose ResNets, MobileNets and Inceptions then take the blocked path where the
/// CPU has AVX-512F).
pub fn read_only(vars: &candle_nn::VarMap) -> HashMap<String, Tensor> {
    vars.data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect()
}

/// max |ours − theirs| relative to the reference's largest magnitude.
pub fn relative_error(ours: &Tensor, theirs: &Tensor) -> f64 {
    assert_eq!(ours.dims(), theirs.dims());
    let scale = theirs
        .abs()
        .and_then(|t| {
            t.flatten_all()?
                .max(0)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()
        })
        .unwrap();
    ops::gradcheck::max_abs_diff(ours, theirs).unwrap() / scale.max(1e-12)
}

/// Checks every `grad.<param>` of `expected` against `grads` (tolerance `grad_tol`) and
/// every `after_train.<buffer>` against the variables (tolerance `buffer_tol`); returns the
/// number of gradients checked and the worst gradient error.
pub fn check_step(
    name: &str,
    expected: &HashMap<String, Tensor>,
    grads: &GradStore,
    vars: &HashMap<String, Var>,
    grad_tol: f64,
    buffer_tol: f64,
) -> (usize, f64) {
    let (mut checked, mut worst) = (0, 0f64);
    for (key, reference) in expected {
        if let Some(param) = key.strip_prefix("grad.") {
            let var = &vars[param];
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {param}"));
            let err = relative_error(grad, reference);
            assert!(
                err <= grad_tol,
                "{name}: gradient of {param} differs by {err:e}"
            );
            worst = worst.max(err);
            checked += 1;
        } else if let Some(buffer) = key.strip_prefix("after_train.") {
            let err = relative_error(vars[buffer].as_tensor(), reference);
            assert!(
                err <= buffer_tol,
                "{name}: {buffer} after a training step differs by {err:e}"
            );
        }
    }
    assert!(
        checked > 20,
        "{name}: only {checked} gradients in the fixture"
    );
    (checked, worst)
}
