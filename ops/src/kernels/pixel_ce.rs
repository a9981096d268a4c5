//! Per-pixel softmax cross-entropy with an ignore label, fused: one pass over the
//! `(N, C, H, W)` logits computes each pixel's log-sum-exp and loss; the backward writes
//! `(softmax − one-hot) · g / valid` in one more pass, so the logits are never copied into a
//! `(N·H·W, C)` layout, exponentiated into a separate tensor or gathered.
//!
//! The logits are visited in tiles of [`TILE`] pixels of one image, the classes' planes
//! being contiguous along the pixels: a pass over the classes takes every pixel's maximum,
//! a second sums the exponentials, both vectorised over the tile's pixels while its
//! `C × TILE` logits stay in cache. f32, f16 and bf16 logits are computed in f32 with
//! [`exp_f32`], compiled for AVX-512 where the CPU has it; f64 in f64 with the standard
//! library's `exp` (the finite-difference checks run in f64).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use num_traits::{Float, ToPrimitive as _, Zero as _};
use rayon::prelude::*;

use crate::storage::{contiguous, dispatch_float, SharedMut};
use crate::vmath::{with_avx512, Lanes};

/// Pixels per tile.
const TILE: usize = 64;
/// Pixels per parallel task: a run of whole tiles of one image.
const CHUNK: usize = 64 * TILE;

/// One tile: pixels `p0..p0 + len` of an image's logits `(C, plane)`.
struct Tile<'a, T> {
    logits: &'a [T],
    plane: usize,
    classes: usize,
    p0: usize,
    len: usize,
}

impl<T: Lanes> Tile<'_, T> {
    /// Class `k`'s logits of the tile's pixels.
    #[inline(always)]
    fn row(&self, k: usize) -> &[T] {
        &self.logits[k * self.plane + self.p0..][..self.len]
    }

    /// Each pixel's largest logit, into `max`.
    #[inline(always)]
    fn max(&self, max: &mut [T::Lane]) {
        let max = &mut max[..self.len];
        max.fill(T::Lane::neg_infinity());
        for k in 0..self.classes {
            for (m, &v) in max.iter_mut().zip(self.row(k)) {
                *m = m.max(v.load());
            }
        }
    }

    /// Each pixel's `Σ_k exp(x_k − max)` into `sum`, the terms also into `terms`
    /// (`(C, TILE)`) where given.
    #[inline(always)]
    fn sum_exp(&self, max: &[T::Lane], sum: &mut [T::Lane], mut terms: Option<&mut [T::Lane]>) {
        let (max, sum) = (&max[..self.len], &mut sum[..self.len]);
        sum.fill(T::Lane::zero());
        for k in 0..self.classes {
            let row = self.row(k);
            match terms.as_deref_mut() {
                Some(terms) => {
                    let terms = &mut terms[k * TILE..][..self.len];
                    for (((s, e), &m), &v) in sum.iter_mut().zip(terms).zip(max).zip(row) {
                        *e = T::lane_exp(v.load() - m);
                        *s = *s + *e;
                    }
                }
                None => {
                    for ((s, &m), &v) in sum.iter_mut().zip(max).zip(row) {
                        *s = *s + T::lane_exp(v.load() - m);
                    }
                }
            }
        }
    }
}

/// The tiles of pixels `range` of image `b`.
fn tiles<'a, T>(
    x: &'a [T],
    (b, range): (usize, std::ops::Range<usize>),
    classes: usize,
    plane: usize,
) -> impl Iterator<Item = Tile<'a, T>> {
    let logits = &x[b * classes * plane..][..classes * plane];
    range.step_by(TILE).map(move |p0| Tile {
        logits,
        plane,
        classes,
        p0,
        len: TILE.min(plane - p0),
    })
}

/// The parallel tasks: (image, run of at most [`CHUNK`] of its pixels).
fn tasks(n: usize, plane: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    (0..n)
        .flat_map(|b| {
            (0..plane)
                .step_by(CHUNK)
                .map(move |p| (b, p..(p + CHUNK).min(plane)))
        })
        .collect()
}

/// `(Σ losses, valid pixels)` over one task's pixels, `y` the image's labels.
#[inline(always)]
fn task_loss<T: Lanes>(
    x: &[T],
    task: (usize, std::ops::Range<usize>),
    y: &[u32],
    (classes, plane, ignore): (usize, usize, u32),
) -> (f64, usize) {
    let b = task.0;
    let (mut max, mut sum) = ([T::Lane::zero(); TILE], [T::Lane::zero(); TILE]);
    let (mut total, mut valid) = (0.0f64, 0usize);
    for tile in tiles(x, task, classes, plane) {
        tile.max(&mut max);
        tile.sum_exp(&max, &mut sum, None);
        for i in 0..tile.len {
            let p = tile.p0 + i;
            let label = y[b * plane + p];
            if label == ignore {
                continue;
            }
            let lse = max[i] + sum[i].ln();
            let picked = tile.logits[label as usize * plane + p].load();
            total += (lse - picked).to_f64().unwrap_or(f64::NAN);
            valid += 1;
        }
    }
    (total, valid)
}

/// Writes one task's gradient `(softmax − one-hot) · scale` (0 at ignored pixels) into
/// `out`, the whole `(N, C, H, W)` gradient.
///
/// # Safety
/// `out` must address `N·C·plane` elements; no other thread may write this task's pixels.
#[inline(always)]
unsafe fn task_grad<T: Lanes>(
    x: &[T],
    task: (usize, std::ops::Range<usize>),
    y: &[u32],
    (classes, plane, ignore): (usize, usize, u32),
    scale: T::Lane,
    out: SharedMut<T>,
) {
    let b = task.0;
    let (mut max, mut sum) = ([T::Lane::zero(); TILE], [T::Lane::zero(); TILE]);
    let mut factor = [T::Lane::zero(); TILE];
    let mut terms = vec![T::Lane::zero(); classes * TILE];
    for tile in tiles(x, task, classes, plane) {
        tile.max(&mut max);
        tile.sum_exp(&max, &mut sum, Some(&mut terms));
        let labels = &y[b * plane + tile.p0..][..tile.len];
        for ((f, &s), &label) in factor.iter_mut().zip(&sum).zip(labels) {
            *f = if label == ignore {
                T::Lane::zero()
            } else {
                scale / s
            };
        }
        let base = b * classes * plane + tile.p0;
        for k in 0..classes {
            let terms = &terms[k * TILE..][..tile.len];
            // SAFETY: class k's run of this tile's pixels lies inside `out` and is this
            // task's alone (the caller's promise).
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    out.at(base + k * plane).cast::<std::mem::MaybeUninit<T>>(),
                    tile.len,
                )
            };
            for ((d, &e), &f) in dst.iter_mut().zip(terms).zip(&factor[..tile.len]) {
                d.write(T::store(e * f));
            }
        }
        for (i, &label) in labels.iter().enumerate() {
            if label != ignore {
                let k = label as usize;
                let v = terms[k * TILE + i] * factor[i] - scale;
                // SAFETY: as above (the element was written in the loop above).
                unsafe { out.at(base + k * plane + i).write(T::store(v)) };
            }
        }
    }
}

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
        let dims = (c, plane, self.ignore);
        let out = dispatch_float!("cross_entropy_2d", s1, |T| {
            let x = contiguous::<T>(s1, l1, "cross_entropy_2d")?;
            let (sum, valid) = tasks(n, plane)
                .into_par_iter()
                .map(|task| with_avx512(|| task_loss(x, task, y, dims)))
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
        let dims = (c, plane, self.ignore);
        let out = dispatch_float!("cross_entropy_2d_backward", s1, |T| {
            let x = contiguous::<T>(s1, l1, "cross_entropy_2d_backward")?;
            let scale = <<T as Lanes>::Lane as num_traits::NumCast>::from(scale)
                .expect("a finite f64 converts to f32 or f64");
            let total = n * c * plane;
            let mut out: Vec<T> = Vec::with_capacity(total);
            let dst = SharedMut(out.as_mut_ptr());
            tasks(n, plane).into_par_iter().for_each(|task| {
                // SAFETY: `out` holds N·C·plane elements and the tasks' pixels are
                // disjoint.
                with_avx512(|| unsafe { task_grad(x, task, y, dims, scale, dst) })
            });
            // SAFETY: the tasks cover every pixel of every image, and each writes all
            // classes of its pixels.
            unsafe { out.set_len(total) };
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, h, w))))
    }
}
