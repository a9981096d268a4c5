//! The losses of the paper's refinements: label smoothing (Section 5.2), mixup (Section 5.4)
//! and knowledge distillation (Section 5.3), all as cross-entropy against a target
//! distribution.

use candle_core::{DType, Device, Result, Tensor, D};

/// Target distributions `(N, K)` with label smoothing (Section 5.2): 1 − ε on the true class
/// and ε/(K − 1) on every other one. ε = 0 gives one-hot targets. In f32.
pub fn smoothed_targets(
    labels: &[u32],
    classes: usize,
    eps: f64,
    device: &Device,
) -> Result<Tensor> {
    smoothed_targets_in(labels, classes, eps, DType::F32, device)
}

/// [`smoothed_targets`] in `dtype` (the values computed in f64, then rounded once).
pub fn smoothed_targets_in(
    labels: &[u32],
    classes: usize,
    eps: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if classes == 0 || (classes < 2 && eps > 0.0) {
        candle_core::bail!("label smoothing (ε = {eps}) needs at least two classes, got {classes}");
    }
    let off = eps / (classes - 1) as f64;
    let on = 1.0 - eps;
    let mut q = vec![off; labels.len() * classes];
    for (row, &label) in labels.iter().enumerate() {
        let label = label as usize;
        if label >= classes {
            candle_core::bail!("label {label} is outside 0..{classes}");
        }
        q[row * classes + label] = on;
    }
    Tensor::from_vec(q, (labels.len(), classes), device)?.to_dtype(dtype)
}

/// Mean over the batch of the cross-entropy −Σᵢ qᵢ·log softmax(z)ᵢ between target
/// distributions `q: (N, K)` and logits `z: (N, K)`.
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let targets = targets.to_dtype(log_p.dtype())?;
    (log_p * targets)?.sum(D::Minus1)?.neg()?.mean_all()
}

/// Knowledge distillation (Section 5.3, after Hinton et al.):
///
/// ℓ(p, softmax(z)) + T²·ℓ(softmax(r/T), softmax(z/T))
///
/// with `targets` p the true (possibly smoothed or mixed) distribution, `student` logits z,
/// `teacher` logits r (no gradient flows into them) and temperature T.
pub fn distillation_loss(
    student: &Tensor,
    targets: &Tensor,
    teacher: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let hard = soft_cross_entropy(student, targets)?;
    let teacher_p = candle_nn::ops::softmax(&(teacher.detach() / temperature)?, D::Minus1)?;
    let soft = soft_cross_entropy(&(student / temperature)?, &teacher_p)?;
    hard + (soft * (temperature * temperature))?
}

/// Mixup (Section 5.4): x̂ = λ·xᵢ + (1 − λ)·xⱼ and ŷ = λ·yᵢ + (1 − λ)·yⱼ, pairing each
/// sample with its mirror in the batch (j = N − 1 − i, as GluonCV does).
pub fn mixup(images: &Tensor, targets: &Tensor, lambda: f64) -> Result<(Tensor, Tensor)> {
    let mirror = |t: &Tensor| -> Result<Tensor> {
        let n = t.dim(0)?;
        let idx = Tensor::from_vec((0..n as u32).rev().collect::<Vec<_>>(), n, t.device())?;
        t.index_select(&idx, 0)
    };
    let mix = |t: &Tensor| -> Result<Tensor> { (t * lambda)? + (mirror(t)? * (1.0 - lambda))? };
    Ok((mix(images)?, mix(targets)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn smoothed_targets_follow_the_paper() -> Result<()> {
        let q = smoothed_targets(&[2, 0], 5, 0.1, &Device::Cpu)?;
        let v = values(&q);
        assert_eq!(v[..5], [0.025, 0.025, 0.9, 0.025, 0.025]);
        assert_eq!(v[5..], [0.9, 0.025, 0.025, 0.025, 0.025]);
        assert!(smoothed_targets(&[5], 5, 0.1, &Device::Cpu).is_err());
        Ok(())
    }

    #[test]
    fn smoothed_loss_on_hand_worked_logits() -> Result<()> {
        // z = (0, ln 2, ln 5): softmax = (1/8, 2/8, 5/8). True class 2, ε = 0.2, K = 3:
        // q = (0.1, 0.1, 0.8), loss = −(0.1·ln(1/8) + 0.1·ln(1/4) + 0.8·ln(5/8)).
        let z = Tensor::new(&[[0f32, 2f32.ln(), 5f32.ln()]], &Device::Cpu)?;
        let q = smoothed_targets(&[2], 3, 0.2, &Device::Cpu)?;
        let loss = soft_cross_entropy(&z, &q)?.to_scalar::<f32>()?;
        let expect = -(0.1 * (1f32 / 8.).ln() + 0.1 * 0.25f32.ln() + 0.8 * (5f32 / 8.).ln());
        assert!((loss - expect).abs() < 1e-6, "{loss} vs {expect}");
        // ε = 0 is ordinary cross-entropy.
        let hard = smoothed_targets(&[2], 3, 0.0, &Device::Cpu)?;
        let loss = soft_cross_entropy(&z, &hard)?.to_scalar::<f32>()?;
        assert!((loss + (5f32 / 8.).ln()).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn distillation_on_hand_worked_logits() -> Result<()> {
        // Student z = (0, ln 3): softmax (1/4, 3/4); at T = 2, z/T = (0, ln √3): (1/(1+√3), √3/(1+√3)).
        // Teacher r = (2 ln 3, 0): at T = 2, r/T = (ln 3, 0): softmax (3/4, 1/4).
        // True class 1, no smoothing.
        let z = Tensor::new(&[[0f32, 3f32.ln()]], &Device::Cpu)?;
        let r = Tensor::new(&[[2.0 * 3f32.ln(), 0f32]], &Device::Cpu)?;
        let p = smoothed_targets(&[1], 2, 0.0, &Device::Cpu)?;
        let loss = distillation_loss(&z, &p, &r, 2.0)?.to_scalar::<f32>()?;
        let s3 = 3f32.sqrt();
        let hard = -(0.75f32).ln();
        let soft = -(0.75 * (1. / (1. + s3)).ln() + 0.25 * (s3 / (1. + s3)).ln());
        let expect = hard + 4.0 * soft;
        assert!((loss - expect).abs() < 1e-5, "{loss} vs {expect}");
        Ok(())
    }

    #[test]
    fn mixup_mixes_images_and_labels_with_the_mirror() -> Result<()> {
        let x = Tensor::new(&[[1f32, 1.], [3., 5.], [10., 20.]], &Device::Cpu)?;
        let y = smoothed_targets(&[0, 1, 2], 3, 0.0, &Device::Cpu)?;
        let (xm, ym) = mixup(&x, &y, 0.75)?;
        // Row 0 pairs with row 2, row 1 with itself.
        assert_eq!(values(&xm), [3.25, 5.75, 3., 5., 7.75, 15.25]);
        assert_eq!(values(&ym), [0.75, 0., 0.25, 0., 1., 0., 0.25, 0., 0.75]);
        Ok(())
    }
}
