//! Losses over dense predictions: per-pixel cross-entropy with an ignore label (FCN's loss,
//! Section 6.2; ADE20K's "other" pixels carry the ignore label).

use candle_core::{DType, Result, Tensor};

use crate::kernels::pixel_ce::PixelCrossEntropy;

/// Softmax cross-entropy of `logits (N, C, H, W)` against `labels (N, H, W)` (`u32`),
/// averaged over the pixels whose label is not `ignore` (PyTorch's
/// `F.cross_entropy(logits, labels, ignore_index=ignore)`), fused in one pass forward and
/// one backward. Every pixel ignored: 0, with a zero gradient (PyTorch gives NaN), so that
/// a crop of padding alone does not stop a run. A label that is neither a class nor
/// `ignore` is an error.
pub fn cross_entropy_2d(logits: &Tensor, labels: &Tensor, ignore: u32) -> Result<Tensor> {
    if labels.dtype() != DType::U32 {
        candle_core::bail!(
            "cross_entropy_2d: labels must be u32, got {:?}",
            labels.dtype()
        );
    }
    logits
        .contiguous()?
        .apply_op2(&labels.contiguous()?, PixelCrossEntropy { ignore })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{check_gradients, uniform};
    use candle_core::{Device, D};

    fn labels(values: &[u32], shape: (usize, usize, usize)) -> Tensor {
        Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn matches_the_composed_loss_and_ignores_the_ignore_label() {
        let x = (uniform(&[2, 4, 3, 2], 7, &Device::Cpu).unwrap() * 3.0).unwrap();
        let y: Vec<u32> = (0..12)
            .map(|i| if i % 5 == 0 { 255 } else { i % 4 })
            .collect();
        let ours = cross_entropy_2d(&x, &labels(&y, (2, 3, 2)), 255)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // log_softmax over the classes, the label's entry at each valid pixel, averaged.
        let flat = x.permute((0, 2, 3, 1)).unwrap().reshape((12, 4)).unwrap();
        let max = flat.max_keepdim(D::Minus1).unwrap();
        let shifted = flat.broadcast_sub(&max).unwrap();
        let lse = shifted
            .exp()
            .unwrap()
            .sum_keepdim(D::Minus1)
            .unwrap()
            .log()
            .unwrap();
        let logp: Vec<Vec<f32>> = shifted.broadcast_sub(&lse).unwrap().to_vec2().unwrap();
        let kept: Vec<f32> = y
            .iter()
            .enumerate()
            .filter(|(_, &l)| l != 255)
            .map(|(i, &l)| -logp[i][l as usize])
            .collect();
        let want = kept.iter().sum::<f32>() / kept.len() as f32;
        assert!((ours - want).abs() < 1e-6, "{ours} vs {want}");
        // By hand: two classes with equal logits cost ln 2.
        let z = Tensor::zeros((1, 2, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let v = cross_entropy_2d(&z, &labels(&[1], (1, 1, 1)), 255).unwrap();
        assert!((v.to_scalar::<f32>().unwrap() - 2f32.ln()).abs() < 1e-7);
        // Every pixel ignored: 0.
        let v = cross_entropy_2d(&z, &labels(&[255], (1, 1, 1)), 255).unwrap();
        assert_eq!(v.to_scalar::<f32>().unwrap(), 0.0);
        // A label that is no class.
        let e = cross_entropy_2d(&z, &labels(&[2], (1, 1, 1)), 255).unwrap_err();
        assert!(e.to_string().contains("label 2"), "{e}");
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = uniform(&[2, 3, 2, 3], 9, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let y = labels(&[0, 1, 2, 255, 1, 0, 2, 2, 255, 0, 1, 1], (2, 2, 3));
        check_gradients(
            std::slice::from_ref(&x),
            |t| cross_entropy_2d(&t[0], &y, 255),
            1e-6,
            1e-7,
        )
        .unwrap();
        let all = labels(&[255; 12], (2, 2, 3));
        check_gradients(
            std::slice::from_ref(&x),
            |t| cross_entropy_2d(&t[0], &all, 255),
            1e-6,
            1e-7,
        )
        .unwrap();
    }

    /// The f32 path (tiles, vectorised `exp`) against the f64 one, on an image larger than
    /// one parallel task with a partial last tile, logits up to ±60 and ignored pixels;
    /// bf16 against f32 loosely.
    #[test]
    fn f32_and_bf16_agree_with_f64() {
        let (n, c, h, w) = (2, 21, 70, 67);
        // Values bf16 holds exactly, so that every dtype scores the same logits.
        let x = (uniform(&[n, c, h, w], 3, &Device::Cpu).unwrap() * 60.0)
            .and_then(|x| x.to_dtype(DType::BF16)?.to_dtype(DType::F32))
            .unwrap();
        let y: Vec<u32> = (0..n * h * w)
            .map(|i| {
                if i % 11 == 0 {
                    255
                } else {
                    (i * 7 % 23 % c) as u32
                }
            })
            .collect();
        let y = labels(&y, (n, h, w));
        let loss_and_grad = |dtype: DType| {
            let v = candle_core::Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
            let loss = cross_entropy_2d(v.as_tensor(), &y, 255).unwrap();
            let grad = loss.backward().unwrap().get(v.as_tensor()).unwrap().clone();
            let loss = loss
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            let grad: Vec<f64> = grad
                .to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            (loss, grad)
        };
        let (want, want_grad) = loss_and_grad(DType::F64);
        let largest = want_grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        for (dtype, tol) in [(DType::F32, 1e-6), (DType::BF16, 1e-2)] {
            let (loss, grad) = loss_and_grad(dtype);
            assert!(
                (loss - want).abs() <= tol * want.abs(),
                "{dtype:?}: {loss} vs {want}"
            );
            let worst = grad
                .iter()
                .zip(&want_grad)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                worst <= tol * largest,
                "{dtype:?}: gradient off by {worst} of {largest}"
            );
        }
        // Ignored pixels get exactly 0.
        let (_, grad) = loss_and_grad(DType::F32);
        for (i, g) in grad.iter().enumerate() {
            let (b, p) = (i / (c * h * w), i % (h * w));
            if (b * h * w + p) % 11 == 0 {
                assert_eq!(*g, 0.0, "element {i}");
            }
        }
    }
}
