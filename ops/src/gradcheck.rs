//! Finite-difference gradient checking and small deterministic test helpers.
//!
//! Public so that every crate can check its own composite layers the same way.

use candle_core::{DType, Device, Result, Tensor, Var};

/// A tensor of `shape` filled with values uniform in [-1, 1) from a fixed xorshift stream:
/// the same numbers on every platform and Candle version.
pub fn uniform(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let len = shape.iter().product::<usize>();
    let data: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, device)
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    a.to_dtype(DType::F64)?
        .sub(&b.to_dtype(DType::F64)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()
}

/// Panics unless `a` and `b` have the same shape and differ by at most `tol` times the
/// larger of 1 and `b`'s largest magnitude.
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64) {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let scale = b
        .to_dtype(DType::F64)
        .and_then(|t| t.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>())
        .expect("reference magnitude")
        .max(1.0);
    let diff = max_abs_diff(a, b).expect("difference");
    assert!(
        diff <= tol * scale,
        "max |a - b| = {diff:e} exceeds {tol:e} x {scale}"
    );
}

/// Checks the gradients that Candle's autograd gives for `f` at `inputs` against central
/// finite differences of step `eps`.
///
/// The scalar that is differentiated is `sum(f(inputs) ⊙ r)` for a fixed random `r`, so that
/// every output element contributes with a different weight. `inputs` should be f64. Fails
/// with the input index, element and both values when one differs by more than `tol`
/// (absolute, plus relative to the numeric value).
pub fn check_gradients<F>(inputs: &[Tensor], f: F, eps: f64, tol: f64) -> Result<()>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let vars = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<Result<Vec<_>>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors)?;
    let weights = uniform(out.dims(), 0xC0FFEE, out.device())?.to_dtype(out.dtype())?;
    let objective = |t: &Tensor| -> Result<f64> {
        t.mul(&weights)?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()
    };
    let grads = out.mul(&weights)?.sum_all()?.backward()?;

    for (index, input) in inputs.iter().enumerate() {
        let analytic = match grads.get(vars[index].as_tensor()) {
            Some(g) => g.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?,
            None => vec![0.0; input.elem_count()],
        };
        let base = input
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        for (k, &a) in analytic.iter().enumerate() {
            let probe = |delta: f64| -> Result<f64> {
                let mut values = base.clone();
                values[k] += delta;
                let moved = Tensor::from_vec(values, input.dims(), input.device())?
                    .to_dtype(input.dtype())?;
                let mut args = inputs.to_vec();
                args[index] = moved;
                objective(&f(&args)?)
            };
            let numeric = (probe(eps)? - probe(-eps)?) / (2.0 * eps);
            if (a - numeric).abs() > tol * (1.0 + numeric.abs()) {
                candle_core::bail!(
                    "gradient of input {index} at element {k}: autograd {a}, finite difference {numeric}"
                );
            }
        }
    }
    Ok(())
}
