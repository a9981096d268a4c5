//! Faster R-CNN in the C4 layout (GluonCV's `faster_rcnn_resnet50_v1b_voc`): a zoo ResNet's
//! stem and stages 1–3 give the stride-16 feature map; the RPN proposes regions on it;
//! stage 4 runs on each region's RoIAlign crop, then global pooling, the class layer and
//! the class-specific box layer.
//!
//! Tensor names: `backbone.*` (the classifier's names under a prefix, so any zoo or Hub
//! ResNet loads without a renaming table), `rpn.{conv,cls,box}.{weight,bias}`,
//! `rcnn.{cls,box}.{weight,bias}`.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use ops::boxes::{batched_nms, nms, roi_align, RoiAlignParams};
use ops::Conv2dParams;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use training::recipe::DetectionConfig;
use zoo::models::Arch;
use zoo::{ModelSpec, ResNet};

use super::coder::{base_anchors, clip, decode, grid_anchors};
use super::data::DetectionBatch;
use super::targets::{rcnn_sample, rpn_targets};
use crate::TransferError;

/// The backbone's stride at the end of stage 3.
pub const FEATURE_STRIDE: f32 = 16.0;

pub use crate::backbone::BACKBONE;

/// A Faster R-CNN detector.
pub struct FasterRcnn {
    /// The ResNet (no classifier, batch norm frozen).
    pub backbone: ResNet,
    pub(super) rpn: [Tensor; 6],
    pub(super) rcnn: [Tensor; 4],
    pub(super) cfg: DetectionConfig,
    pub(super) anchors: Vec<[f32; 4]>,
    pub(super) classes: usize,
}

/// One image's detections, in the input image's (original) pixels, continuous 0-based.
#[derive(Debug, Clone, PartialEq)]
pub struct Detections {
    /// Boxes.
    pub boxes: Vec<[f32; 4]>,
    /// Object class of each (0-based, no background).
    pub classes: Vec<usize>,
    /// Scores.
    pub scores: Vec<f32>,
}

/// The losses of one batch.
#[derive(Debug)]
pub struct DetectionLoss {
    /// Their sum.
    pub total: Tensor,
    /// `rpn_cls`, `rpn_box`, `rcnn_cls`, `rcnn_box`.
    pub parts: [(&'static str, f64); 4],
}

/// `N(0, std²)` values from a stream seeded by `seed` and `name`.
fn normal(shape: &[usize], std: f64, seed: u64, name: &str) -> Vec<f32> {
    let h = name.bytes().fold(0xCBF2_9CE4_8422_2325u64 ^ seed, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01B3)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(h);
    let n = Normal::new(0.0, std).expect("std > 0");
    (0..shape.iter().product::<usize>())
        .map(|_| n.sample(&mut rng) as f32)
        .collect()
}

/// BCE with logits, averaged: `max(x, 0) − x·y + log(1 + e^{−|x|})`.
fn bce_with_logits(x: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    let softplus = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (x.relu()? - (x * y)? + softplus)?.mean_all()
}

/// Smooth-L1 with threshold `beta`, summed.
fn smooth_l1(d: &Tensor, beta: f64) -> candle_core::Result<Tensor> {
    let a = d.abs()?;
    let quad = (a.sqr()? * (0.5 / beta))?;
    let lin = (&a - 0.5 * beta)?;
    a.lt(beta)?.where_cond(&quad, &lin)?.sum_all()
}

fn conv(x: &Tensor, w: &Tensor, b: &Tensor, padding: usize) -> candle_core::Result<Tensor> {
    let p = Conv2dParams {
        padding,
        ..Default::default()
    };
    ops::conv2d(x, w, p)?.broadcast_add(&b.reshape((1, (), 1, 1))?)
}

impl FasterRcnn {
    /// A detector for `classes` object classes on the zoo ResNet `backbone`, its variables
    /// in `vars`: the backbone initialised from `seed` (then usually loaded with
    /// [`Self::load_backbone`]), the heads N(0, 0.01) (box layer N(0, 0.001)), biases 0.
    pub fn new(
        backbone: &str,
        classes: usize,
        cfg: &DetectionConfig,
        vars: &VarMap,
        seed: u64,
        device: &Device,
    ) -> Result<Self, TransferError> {
        let spec = ModelSpec::find(backbone)?;
        let Arch::ResNet(mut rc) = spec.arch else {
            return Err(TransferError::Config(format!(
                "the detector's backbone must be a ResNet; {backbone} is not"
            )));
        };
        rc.num_classes = 0;
        rc.output_stride = 32;
        rc.bn.frozen = true;
        let vb = VarBuilder::from_varmap(vars, DType::F32, device);
        let net = ResNet::new(&rc, vb.pp(BACKBONE))?;
        zoo::init::initialize(vars, seed, zoo::init::WeightInit::Kaiming)?;
        let c3 = net.stage_channels(3);
        let c4 = net.stage_channels(4);
        let a = cfg.anchors_per_position();
        let var = |name: &str, shape: &[usize], std: f64| -> Result<Tensor, TransferError> {
            let values = if std > 0.0 {
                normal(shape, std, seed, name)
            } else {
                vec![0.0; shape.iter().product()]
            };
            let init = Tensor::from_vec(values, shape, device)?;
            let t = vb.get_with_hints(shape, name, candle_nn::Init::Const(0.0))?;
            candle_core::Var::from_tensor(&t)?.set(&init)?;
            Ok(t)
        };
        let rc1 = cfg.rpn_channels;
        let rpn = [
            var("rpn.conv.weight", &[rc1, c3, 3, 3], 0.01)?,
            var("rpn.conv.bias", &[rc1], 0.0)?,
            var("rpn.cls.weight", &[a, rc1, 1, 1], 0.01)?,
            var("rpn.cls.bias", &[a], 0.0)?,
            var("rpn.box.weight", &[4 * a, rc1, 1, 1], 0.01)?,
            var("rpn.box.bias", &[4 * a], 0.0)?,
        ];
        let rcnn = [
            var("rcnn.cls.weight", &[classes + 1, c4], 0.01)?,
            var("rcnn.cls.bias", &[classes + 1], 0.0)?,
            var("rcnn.box.weight", &[4 * classes, c4], 0.001)?,
            var("rcnn.box.bias", &[4 * classes], 0.0)?,
        ];
        Ok(Self {
            anchors: base_anchors(FEATURE_STRIDE, &cfg.anchor_scales, &cfg.anchor_ratios),
            backbone: net,
            rpn,
            rcnn,
            cfg: cfg.clone(),
            classes,
        })
    }

    /// The head settings it was built with.
    pub fn config(&self) -> &DetectionConfig {
        &self.cfg
    }

    /// Object classes (background not counted).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The same detector over constant handles to the current values of `vars` (no copy),
    /// for inference: nothing records gradients, so the backbone's convolutions run with
    /// batch norm, shortcut and activation fused into their epilogues (as
    /// `zoo::models::Model::frozen` does for classifiers).
    pub fn frozen(&self, vars: &VarMap) -> Result<Self, TransferError> {
        let tensors = crate::backbone::frozen_backbone_tensors(vars);
        let device = self.rpn[0].device().clone();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        Ok(Self {
            backbone: ResNet::new(self.backbone.config(), vb)?,
            rpn: self.rpn.clone().map(|t| t.detach()),
            rcnn: self.rcnn.clone().map(|t| t.detach()),
            cfg: self.cfg.clone(),
            anchors: self.anchors.clone(),
            classes: self.classes,
        })
    }

    /// Copies a classifier's weights into `backbone.*` of `vars` (see
    /// [`crate::backbone::load_backbone`]).
    pub fn load_backbone(vars: &VarMap, path: &Path, model: &str) -> Result<(), TransferError> {
        crate::backbone::load_backbone(vars, path, model)
    }

    /// The variables of `vars` that train ([`Self::trains`]), in name order.
    pub fn trainable(&self, vars: &VarMap) -> Vec<(String, candle_core::Var)> {
        let mut all = training::optim::trainable_vars(vars);
        all.retain(|(name, _)| self.trains(name, vars));
        all
    }

    /// Whether variable `name` trains: not the stem, not the stages before
    /// `train_from_stage`, not batch norm (frozen, GluonCV's setting).
    pub fn trains(&self, name: &str, vars: &VarMap) -> bool {
        let Some(rest) = name.strip_prefix("backbone.") else {
            return true;
        };
        if rest.starts_with("conv1") || rest.starts_with("bn1") {
            return false;
        }
        let stage = rest
            .strip_prefix("layer")
            .and_then(|r| r.chars().next())
            .and_then(|c| c.to_digit(10))
            .unwrap_or(0) as usize;
        if stage < self.cfg.train_from_stage {
            return false;
        }
        // Batch norm's γ and β sit beside its running mean.
        let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
        !vars
            .data()
            .lock()
            .expect("varmap lock poisoned")
            .contains_key(&format!("{stem}.running_mean"))
    }

    /// The stride-16 feature map: stem and the frozen stages without a graph, the rest with.
    pub(super) fn features(&self, images: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let first = self.cfg.train_from_stage.clamp(1, 4);
        let frozen = self
            .backbone
            .forward_stages(images, train, true, 1..=first - 1)?
            .detach();
        if first > 3 {
            return Ok(frozen);
        }
        self.backbone
            .forward_stages(&frozen, train, false, first..=3)
    }

    /// RPN outputs: objectness logits `(HWA)` and deltas `(HWA, 4)` per image, position-
    /// major as [`grid_anchors`] orders anchors.
    fn rpn(&self, feat: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let [cw, cb, lw, lb, bw, bb] = &self.rpn;
        let r = conv(feat, cw, cb, 1)?.relu()?;
        let (n, _, h, w) = r.dims4()?;
        let a = self.cfg.anchors_per_position();
        let cls = conv(&r, lw, lb, 0)?
            .permute((0, 2, 3, 1))?
            .reshape((n, h * w * a))?;
        let bx = conv(&r, bw, bb, 0)?
            .permute((0, 2, 3, 1))?
            .reshape((n, h * w * a, 4))?;
        Ok((cls, bx))
    }

    /// Proposals of one image from its RPN outputs (no graph): decode, clip, drop small
    /// boxes, keep the `pre` best, NMS, keep `post`.
    fn proposals(
        &self,
        anchors: &[[f32; 4]],
        cls: &Tensor,
        deltas: &Tensor,
        size: (usize, usize),
        (pre, post): (usize, usize),
    ) -> candle_core::Result<Vec<[f32; 4]>> {
        let scores: Vec<f32> = cls.detach().to_vec1()?;
        let d: Vec<f32> = deltas.detach().flatten_all()?.to_vec1()?;
        let mut order: Vec<usize> = (0..anchors.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let min = self.cfg.rpn_min_size as f32;
        let (mut boxes, mut kept_scores) = (Vec::new(), Vec::new());
        for &i in &order {
            if boxes.len() == pre {
                break;
            }
            let b = clip(decode(&anchors[i], &d[i * 4..i * 4 + 4], [1.0; 4]), size);
            if b[2] - b[0] >= min && b[3] - b[1] >= min && scores[i].is_finite() {
                boxes.push(b);
                kept_scores.push(scores[i]);
            }
        }
        let keep = nms(&boxes, &kept_scores, self.cfg.rpn_nms as f32, post);
        Ok(keep.into_iter().map(|k| boxes[k]).collect())
    }

    /// Stage 4 on the RoIAlign crops of `rois (K, 5)`, pooled: `(K, C4)`.
    fn head_features(
        &self,
        feat: &Tensor,
        rois: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let s = self.cfg.roi_size;
        let p = RoiAlignParams {
            pooled: (s, s),
            spatial_scale: 1.0 / FEATURE_STRIDE as f64,
            sampling_ratio: self.cfg.roi_sampling_ratio,
            aligned: self.cfg.roi_aligned,
        };
        let crops = roi_align(feat, rois, p)?;
        let out = self.backbone.forward_stages(&crops, train, false, 4..=4)?;
        ops::global_avg_pool(&out)
    }

    fn rois(per_image: &[Vec<[f32; 4]>], device: &Device) -> candle_core::Result<Tensor> {
        let rows: Vec<f32> = per_image
            .iter()
            .enumerate()
            .flat_map(|(n, boxes)| {
                boxes
                    .iter()
                    .flat_map(move |b| [n as f32, b[0], b[1], b[2], b[3]])
            })
            .collect();
        let k = rows.len() / 5;
        Tensor::from_vec(rows, (k, 5), device)
    }

    /// The training losses of `batch`, sampling with `rng` (GluonCV's rules, see
    /// [`super::targets`]). Each loss is normalised by its sample count and averaged over
    /// the batch's images.
    pub fn loss(
        &self,
        batch: &DetectionBatch,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> candle_core::Result<DetectionLoss> {
        let images = batch.images.to_device(device)?;
        let feat = self.features(&images, true)?;
        let (_, _, fh, fw) = feat.dims4()?;
        let anchors = grid_anchors(&self.anchors, FEATURE_STRIDE, (fh, fw));
        let (cls, deltas) = self.rpn(&feat)?;
        let n = batch.samples.len();
        let (mut rpn_cls, mut rpn_box) = (Vec::new(), Vec::new());
        let mut regions = Vec::with_capacity(n);
        let (mut labels, mut targets, mut fg_index) = (Vec::new(), Vec::new(), Vec::new());
        for (i, s) in batch.samples.iter().enumerate() {
            let t = rpn_targets(rng, &anchors, &s.boxes, s.size, &self.cfg);
            let sampled: Vec<u32> = (0..anchors.len())
                .filter(|&k| t.labels[k] >= 0)
                .map(|k| k as u32)
                .collect();
            let y: Vec<f32> = sampled
                .iter()
                .map(|&k| t.labels[k as usize] as f32)
                .collect();
            if sampled.is_empty() {
                // No anchor lies inside the image: nothing for the RPN to learn here.
                rpn_cls.push(Tensor::zeros((), DType::F32, device)?);
            } else {
                let idx = Tensor::new(sampled.as_slice(), device)?;
                let logits = cls.get(i)?.index_select(&idx, 0)?;
                rpn_cls.push(bce_with_logits(
                    &logits,
                    &Tensor::new(y.as_slice(), device)?,
                )?);
            }
            let pos: Vec<u32> = (0..anchors.len())
                .filter(|&k| t.labels[k] == 1)
                .map(|k| k as u32)
                .collect();
            if pos.is_empty() {
                rpn_box.push(Tensor::zeros((), DType::F32, device)?);
            } else {
                let want: Vec<f32> = pos.iter().flat_map(|&k| t.deltas[k as usize]).collect();
                let pred = deltas
                    .get(i)?
                    .index_select(&Tensor::new(pos.as_slice(), device)?, 0)?;
                let d = (pred - Tensor::from_vec(want, (pos.len(), 4), device)?)?;
                rpn_box.push((smooth_l1(&d, 1.0 / 9.0)? / t.sampled.max(1) as f64)?);
            }
            let props = self.proposals(
                &anchors,
                &candle_nn::ops::sigmoid(&cls.get(i)?)?,
                &deltas.get(i)?,
                s.size,
                (self.cfg.rpn_pre_nms_train, self.cfg.rpn_post_nms_train),
            )?;
            let sample = rcnn_sample(rng, &props, &s.boxes, &s.classes, &self.cfg);
            let offset = labels.len();
            for (k, (&l, d)) in sample.labels.iter().zip(&sample.deltas).enumerate() {
                if l > 0 {
                    fg_index.push(((offset + k) * 4 * self.classes + (l - 1) * 4) as u32);
                    targets.extend_from_slice(d);
                }
            }
            labels.extend(sample.labels.iter().map(|&l| l as u32));
            regions.push(sample.boxes);
        }
        let rois = Self::rois(&regions, device)?;
        let pooled = self.head_features(&feat, &rois, true)?;
        let [cw, cb, bw, bb] = &self.rcnn;
        let logits = pooled.matmul(&cw.t()?)?.broadcast_add(cb)?;
        let boxes = pooled.matmul(&bw.t()?)?.broadcast_add(bb)?;
        let k = labels.len();
        let rcnn_cls =
            candle_nn::loss::cross_entropy(&logits, &Tensor::new(labels.as_slice(), device)?)?;
        let rcnn_box = if fg_index.is_empty() {
            Tensor::zeros((), DType::F32, device)?
        } else {
            let flat: Vec<u32> = fg_index
                .iter()
                .flat_map(|&i| [i, i + 1, i + 2, i + 3])
                .collect();
            let pred = boxes
                .flatten_all()?
                .index_select(&Tensor::new(flat.as_slice(), device)?, 0)?;
            let d = (pred - Tensor::new(targets.as_slice(), device)?)?;
            (smooth_l1(&d, 1.0)? / k as f64)?
        };
        let mean =
            |v: Vec<Tensor>| -> candle_core::Result<Tensor> { Tensor::stack(&v, 0)?.mean_all() };
        let (rpn_cls, rpn_box) = (mean(rpn_cls)?, mean(rpn_box)?);
        let scalar = |t: &Tensor| -> candle_core::Result<f64> { Ok(t.to_scalar::<f32>()? as f64) };
        let parts = [
            ("rpn_cls", scalar(&rpn_cls)?),
            ("rpn_box", scalar(&rpn_box)?),
            ("rcnn_cls", scalar(&rcnn_cls)?),
            ("rcnn_box", scalar(&rcnn_box)?),
        ];
        let total = (((rpn_cls + rpn_box)? + rcnn_cls)? + rcnn_box)?;
        Ok(DetectionLoss { total, parts })
    }

    /// Detections of every image of `batch`, mapped back to the original image sizes
    /// (`originals`, (height, width) per image): per-class NMS at `nms_threshold`, scores
    /// above `score_threshold`, at most `detections_per_image`.
    pub fn detect(
        &self,
        batch: &DetectionBatch,
        originals: &[(usize, usize)],
        device: &Device,
    ) -> candle_core::Result<Vec<Detections>> {
        let images = batch.images.to_device(device)?;
        let feat = self.features(&images, false)?;
        let (_, _, fh, fw) = feat.dims4()?;
        let anchors = grid_anchors(&self.anchors, FEATURE_STRIDE, (fh, fw));
        let (cls, deltas) = self.rpn(&feat)?;
        let mut regions = Vec::new();
        for (i, s) in batch.samples.iter().enumerate() {
            regions.push(self.proposals(
                &anchors,
                &candle_nn::ops::sigmoid(&cls.get(i)?)?,
                &deltas.get(i)?,
                s.size,
                (self.cfg.rpn_pre_nms_test, self.cfg.rpn_post_nms_test),
            )?);
        }
        let rois = Self::rois(&regions, device)?;
        if rois.dim(0)? == 0 {
            return Ok(vec![
                Detections {
                    boxes: vec![],
                    classes: vec![],
                    scores: vec![]
                };
                regions.len()
            ]);
        }
        let pooled = self.head_features(&feat, &rois, false)?;
        let [cw, cb, bw, bb] = &self.rcnn;
        let probs: Vec<f32> =
            candle_nn::ops::softmax(&pooled.matmul(&cw.t()?)?.broadcast_add(cb)?, D::Minus1)?
                .flatten_all()?
                .to_vec1()?;
        let box_deltas: Vec<f32> = pooled
            .matmul(&bw.t()?)?
            .broadcast_add(bb)?
            .flatten_all()?
            .to_vec1()?;
        let stds = self.cfg.box_stds.map(|s| s as f32);
        let (c1, c4) = (self.classes + 1, 4 * self.classes);
        let mut out = Vec::with_capacity(regions.len());
        let mut row = 0;
        for (i, props) in regions.iter().enumerate() {
            let s = &batch.samples[i];
            let (mut boxes, mut classes, mut scores) = (Vec::new(), Vec::new(), Vec::new());
            for p in props {
                for c in 0..self.classes {
                    let score = probs[row * c1 + c + 1];
                    if score > self.cfg.score_threshold as f32 {
                        let d = &box_deltas[row * c4 + c * 4..][..4];
                        boxes.push(clip(decode(p, d, stds), s.size));
                        classes.push(c);
                        scores.push(score);
                    }
                }
                row += 1;
            }
            let keep = batched_nms(
                &boxes,
                &scores,
                &classes,
                self.cfg.nms_threshold as f32,
                self.cfg.detections_per_image,
            );
            let inv = 1.0 / s.scale as f32;
            out.push(Detections {
                boxes: keep
                    .iter()
                    .map(|&k| clip(boxes[k].map(|v| v * inv), originals[i]))
                    .collect(),
                classes: keep.iter().map(|&k| classes[k]).collect(),
                scores: keep.iter().map(|&k| scores[k]).collect(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_l1_and_bce_by_hand() {
        let d = Tensor::new(&[0.05f32, -0.5, 2.0], &Device::Cpu).unwrap();
        // β = 0.1: 0.5·0.05²/0.1 = 0.0125; 0.5 − 0.05 = 0.45; 2 − 0.05 = 1.95.
        let v = smooth_l1(&d, 0.1).unwrap().to_scalar::<f32>().unwrap();
        assert!((v - (0.0125 + 0.45 + 1.95)).abs() < 1e-6, "{v}");
        let x = Tensor::new(&[0.0f32, 2.0], &Device::Cpu).unwrap();
        let y = Tensor::new(&[1.0f32, 0.0], &Device::Cpu).unwrap();
        // log 2 and log(1 + e²), averaged.
        let v = bce_with_logits(&x, &y).unwrap().to_scalar::<f32>().unwrap();
        let want = (2f32.ln() + (1.0 + 2f32.exp()).ln()) / 2.0;
        assert!((v - want).abs() < 1e-6);
    }
}
