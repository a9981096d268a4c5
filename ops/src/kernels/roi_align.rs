//! RoIAlign (Mask R-CNN; the pooling of Faster R-CNN's C4 head in GluonCV): each region of
//! interest is divided into `pooled × pooled` bins and each bin averages `grid × grid`
//! bilinear samples of the feature map, with the gradient with respect to the features.
//!
//! The arithmetic is torchvision's `roi_align` (and Caffe2's and MXNet's, which GluonCV
//! calls): `aligned = false` is the legacy convention (no half-pixel offset, regions at
//! least one feature pixel wide); `aligned = true` shifts by half a pixel (Detectron2).
//! A sample more than one pixel outside the map contributes zero; one within a pixel of the
//! border is clamped onto it.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::storage::{contiguous, dispatch_float, Elem};
use num_traits::Zero as _;

/// The settings of one RoIAlign.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignParams {
    /// Output height and width of each region (`output_size`).
    pub pooled: (usize, usize),
    /// Feature-map pixels per input pixel (1/16 for stride 16).
    pub spatial_scale: f64,
    /// Samples per bin side; 0: `ceil(region size / pooled)`, adaptively.
    pub sampling_ratio: usize,
    /// The half-pixel offset (`aligned=True`).
    pub aligned: bool,
}

/// One bilinear sample: four flat offsets into a feature plane and their weights (already
/// divided by the bin's sample count).
#[derive(Clone, Copy)]
struct Tap {
    bin: usize,
    at: [usize; 4],
    w: [f64; 4],
}

/// The samples of one region on an `h × w` map.
fn taps(roi: [f64; 4], p: &RoiAlignParams, h: usize, w: usize) -> Vec<Tap> {
    let (ph, pw) = p.pooled;
    let offset = if p.aligned { 0.5 } else { 0.0 };
    let [x1, y1, x2, y2] = roi;
    let (start_w, start_h) = (x1 * p.spatial_scale - offset, y1 * p.spatial_scale - offset);
    let (mut roi_w, mut roi_h) = (
        x2 * p.spatial_scale - offset - start_w,
        y2 * p.spatial_scale - offset - start_h,
    );
    if !p.aligned {
        roi_w = roi_w.max(1.0);
        roi_h = roi_h.max(1.0);
    }
    let (bin_h, bin_w) = (roi_h / ph as f64, roi_w / pw as f64);
    let grid = |bin: f64| match p.sampling_ratio {
        0 => (bin.ceil() as usize).max(1),
        s => s,
    };
    let (gh, gw) = (grid(bin_h), grid(bin_w));
    let count = (gh * gw).max(1) as f64;
    let mut out = Vec::with_capacity(ph * pw * gh * gw);
    for by in 0..ph {
        for bx in 0..pw {
            for iy in 0..gh {
                let y = start_h + by as f64 * bin_h + (iy as f64 + 0.5) * bin_h / gh as f64;
                for ix in 0..gw {
                    let x = start_w + bx as f64 * bin_w + (ix as f64 + 0.5) * bin_w / gw as f64;
                    if let Some((at, wts)) = bilinear(y, x, h, w) {
                        out.push(Tap {
                            bin: by * pw + bx,
                            at,
                            w: wts.map(|v| v / count),
                        });
                    }
                }
            }
        }
    }
    out
}

/// The four neighbours of `(y, x)` and their weights, or none when the point lies more than
/// one pixel outside the map.
fn bilinear(y: f64, x: f64, h: usize, w: usize) -> Option<([usize; 4], [f64; 4])> {
    if y < -1.0 || y > h as f64 || x < -1.0 || x > w as f64 {
        return None;
    }
    let axis = |v: f64, n: usize| -> (usize, usize, f64) {
        let v = v.max(0.0);
        let low = v.floor() as usize;
        if low >= n - 1 {
            (n - 1, n - 1, 0.0)
        } else {
            (low, low + 1, v - low as f64)
        }
    };
    let (y0, y1, ly) = axis(y, h);
    let (x0, x1, lx) = axis(x, w);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Some((
        [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1],
        [hy * hx, hy * lx, ly * hx, ly * lx],
    ))
}

/// Reads `(K, 5)` regions `[batch index, x1, y1, x2, y2]`, checking the batch index.
fn regions<T: Elem>(rois: &[T], n: usize) -> Result<Vec<(usize, [f64; 4])>> {
    rois.chunks_exact(5)
        .enumerate()
        .map(|(k, r)| {
            let r: Vec<f64> = r.iter().map(|&v| WithDType::to_f64(v)).collect();
            let b = r[0];
            if !(b >= 0.0 && b < n as f64 && b.fract() == 0.0) {
                candle_core::bail!(
                    "roi_align: region {k} has batch index {b}, the batch has {n} images"
                );
            }
            if r[1..].iter().any(|v| !v.is_finite()) {
                candle_core::bail!(
                    "roi_align: region {k} has a non-finite coordinate {:?}",
                    &r[1..]
                );
            }
            Ok((b as usize, [r[1], r[2], r[3], r[4]]))
        })
        .collect()
}

/// The forward op: `(features (N, C, H, W), rois (K, 5))` → `(K, C, ph, pw)`.
pub(crate) struct RoiAlign(pub RoiAlignParams);

impl CustomOp2 for RoiAlign {
    fn name(&self) -> &'static str {
        "roi_align"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (k, _) = l2.shape().dims2()?;
        let p = self.0;
        let bins = p.pooled.0 * p.pooled.1;
        let out = dispatch_float!("roi_align", s1, |T| {
            let x = contiguous::<T>(s1, l1, "roi_align")?;
            let rois = regions(contiguous::<T>(s2, l2, "roi_align")?, n)?;
            let mut out = vec![T::zero(); k * c * bins];
            out.par_chunks_mut(c * bins)
                .zip(&rois)
                .for_each(|(dst, &(b, roi))| {
                    let taps = taps(roi, &p, h, w);
                    for (ch, dst) in dst.chunks_exact_mut(bins).enumerate() {
                        let plane = &x[(b * c + ch) * h * w..][..h * w];
                        let mut acc = vec![0.0f64; bins];
                        for t in &taps {
                            acc[t.bin] += (0..4)
                                .map(|i| t.w[i] * WithDType::to_f64(plane[t.at[i]]))
                                .sum::<f64>();
                        }
                        for (d, a) in dst.iter_mut().zip(acc) {
                            *d = <T as WithDType>::from_f64(a);
                        }
                    }
                });
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((k, c, p.pooled.0, p.pooled.1))))
    }

    fn bwd(
        &self,
        features: &Tensor,
        rois: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dims = features.dims4()?;
        let op = RoiAlignGrad {
            p: self.0,
            features: dims,
        };
        Ok((Some(grad.apply_op2_no_bwd(rois, &op)?), None))
    }
}

/// The gradient with respect to the features: each output gradient spread back onto the
/// four neighbours of each of its samples. Planes are independent, so each `(image,
/// channel)` plane gathers from every region of its image in parallel with the others.
struct RoiAlignGrad {
    p: RoiAlignParams,
    features: (usize, usize, usize, usize),
}

impl CustomOp2 for RoiAlignGrad {
    fn name(&self) -> &'static str {
        "roi_align_backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.features;
        let p = self.p;
        let bins = p.pooled.0 * p.pooled.1;
        let out = dispatch_float!("roi_align_backward", s1, |T| {
            let g = contiguous::<T>(s1, l1, "roi_align_backward")?;
            let rois = regions(contiguous::<T>(s2, l2, "roi_align_backward")?, n)?;
            let taps: Vec<(usize, Vec<Tap>)> = rois
                .par_iter()
                .map(|&(b, roi)| (b, taps(roi, &p, h, w)))
                .collect();
            let mut out = vec![T::zero(); n * c * h * w];
            out.par_chunks_mut(h * w)
                .enumerate()
                .for_each(|(plane, dst)| {
                    let (b, ch) = (plane / c, plane % c);
                    let mut acc = vec![0.0f64; h * w];
                    for (k, (rb, taps)) in taps.iter().enumerate() {
                        if *rb != b {
                            continue;
                        }
                        let gk = &g[(k * c + ch) * bins..][..bins];
                        for t in taps {
                            let v = WithDType::to_f64(gk[t.bin]);
                            for i in 0..4 {
                                acc[t.at[i]] += t.w[i] * v;
                            }
                        }
                    }
                    for (d, a) in dst.iter_mut().zip(acc) {
                        *d = <T as WithDType>::from_f64(a);
                    }
                });
            Ok::<_, candle_core::Error>(out)
        })?;
        Ok((out, Shape::from((n, c, h, w))))
    }
}
