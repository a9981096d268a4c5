//! Per-pixel softmax cross-entropy with an ignore label, fused: one pass over the
//! `(N, C, H, W)` logits computes each pixel's log-sum-exp and loss; the backward writes
//! `(softmax − one-hot) · g / valid` in one more pass, so the logits are never copied into a
//! `(N·H·W, C)` layout, exponentiated into a separate tensor or gathered.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use num_traits::Zero as _;
use rayon::prelude::*;

use crate::storage::{contiguous, dispatch_float};

/// Reads the labels (`u32`, `(N, H, W)`), checking each is a class or the ignore label.
fn labels<'a>(s: &'a CpuStorage, l: &Layout, classes: usize, ignore: u32) -> Result<&'a [u32]> {
    let CpuStorage::U32(all) = s else {
        candle_core::bail!("cross_entropy_2d: labels must be u32");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("cross_entropy_2d: labels must be contiguous");
    };
    let labels = &all[start..end];
    if let Some((i, &bad)) = labels
        .iter()
        .enumerate()
        .find(|(_, &v)| v != ignore && v as usize >= classes)
    {
        candle_core::bail!(
            "cross_entropy_2d: pixel {i} has label {bad}, the logits have {classes} classes (ignore label {ignore})"
        );
    }
    Ok(labels)
}

/// The forward op: `(logits (N, C, H, W), labels (N, H, W))` → the mean loss over pixels
/// whose label is not `ignore` (0 when every pixel is ignored).
pub(crate) struct PixelCrossEntropy {
    pub ignore: u32,
}

impl CustomOp2 for PixelCrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy_2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        if l2.shape().dims() != [n, h, w] {
            candle_core::bail!(
                "cross_entropy_2d: labels {:?} for logits {:?}",
                l2.shape().dims(),
                l1.shape().dims()
            );
        }
        let y = labels(s2, l2, c, self.ignore)?;
        let plane = h * w;
        let ignore = self.ignore;
        let out = dispatch_float!("cross_entropy_2d", s1, |T| {
            let x = contiguous::<T>(s1, l1, "cross_entropy_2d")?;
            // Per image: (sum of losses, valid pixels).
            let (sum, valid) = (0..n)
                .into_par_iter()
                .map(|b| {
                    let logits = &x[b * c * plane..][..c * plane];
                    let mut sum = 0.0f64;
                    let mut valid = 0usize;
                    for p in 0..plane {
                        let label = y[b * plane + p];
                        if label == ignore {
                            continue;
                        }
                        let at = |k: usize| WithDType::to_f64(logits[k * plane + p]);
                        let max = (0..c).map(at).fold(f64::NEG_INFINITY, f64::max);
                        let lse = max + (0..c).map(|k| (at(k) - max).exp()).sum::<f64>().ln();
                        sum += lse - at(label as usize);
                        valid += 1;
                    }
                    (sum, valid)
                })
                .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            let mean = if valid == 0 { 0.0 } else { sum / valid as f64 };
            Ok::<_, candle_core::Error>(vec![<T as WithDType>::from_f64(mean)])
        })?;
        Ok((out, Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        labels: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let op = PixelCrossEntropyGrad {
            ignore: self.ignore,
            scale: g,
        };
        Ok((
            Some(logits.contiguous()?.apply_op2_no_bwd(labels, &op)?),
            None,
        ))
    }
}

/// The gradient with respect to the logits: `(softmax − one-hot) · scale / valid` at valid
/// pixels, 0 at ignored ones.
struct PixelCrossEntropyGrad {
    ignore: u32,
    scale: f64,
}

impl CustomOp2 for PixelCrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross_entropy_2d_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let y = labels(s2, l2, c, self.ignore)?;
        let plane = h * w;
        let valid = y.iter().filter(|&&v| v != self.ignore).count();
        let scale = if valid == 0 {
            0.0
        } else {
            self.scale / valid as f64
        };
        let ignore = self.ignore;
        let out = dispatch_float!("cross_entropy_2d_backward", s1, |T| {
            let x = contiguous::<T>(s1, l1, "cross_entropy_2d_backward")?;
            let mut out = vec![T::zero(); n * c * plane];
            out.par_chunks_mut(c * plane)
                .zip(x.par_chunks(c * plane))
                .enumerate()
                .for_each(|(b, (dst, logits))| {
                    for p in 0..plane {
                        let label = y[b * plane + p];
                        if label == ignore {
                            continue;
                        }
                        let at = |k: usize| WithDType::to_f64(logits[k * plane + p]);
                        let max = (0..c).map(at).fold(f64::NEG_INFINITY, f64::max);
                        let total: f64 = (0..c).map(|k| (at(k) - max).exp()).sum();
                        for k in 0..c {
                            let soft = (at(k) - max).exp() / total;
                            let hot = if k == label as usize { 1.0 } else { 0.0 };
                            dst[k * plane + p] = <T as WithDType>::from_f64((soft - hot) * scale);
                        }
                    }
                });
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, h, w))))
    }
}
